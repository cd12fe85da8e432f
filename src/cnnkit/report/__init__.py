"""Plots of a run and its self-contained ``report.html`` (matplotlib, headless)."""

from cnnkit.report.html import format_value, write_run_report
from cnnkit.report.plots import (
    ERROR_COLOURS,
    plot_cam,
    plot_confusion_matrix,
    plot_feature_maps,
    plot_filters,
    plot_history,
    plot_instances,
    plot_per_class,
    plot_segmentation,
    read_history_csv,
    segmentation_errors,
)

__all__ = [
    "ERROR_COLOURS",
    "format_value",
    "plot_cam",
    "plot_confusion_matrix",
    "plot_feature_maps",
    "plot_filters",
    "plot_history",
    "plot_instances",
    "plot_per_class",
    "plot_segmentation",
    "read_history_csv",
    "segmentation_errors",
    "write_run_report",
]
