"""Explaining what a CNN looks at: class activation maps (seed 003), Grad-CAM, feature
maps and filters as image grids."""

from cnnkit.interpret.cam import cam, grad_cam
from cnnkit.interpret.features import (
    feature_map_grid,
    feature_maps,
    filter_grid,
    filters,
    make_grid,
)

__all__ = [
    "cam",
    "feature_map_grid",
    "feature_maps",
    "filter_grid",
    "filters",
    "grad_cam",
    "make_grid",
]
