"""Metrics of seed 000 ("Confusion Matrix" and "IoU" slides): functions and streaming modules.

Functions (:mod:`cnnkit.metrics.functional`) take ``(y_true, y_pred)`` class indices of
any shape and use scikit-learn's names; :func:`report` gives them all from a confusion
matrix. Streaming modules (:mod:`cnnkit.metrics.streaming`) take ``(y_pred, y_true)``
batches, keep their state on the device and feed ``compile(metrics=[...])`` through
:func:`get_metric`.
"""

from cnnkit.metrics._inputs import UndefinedMetricWarning
from cnnkit.metrics.boxes import box_iou, matched_box_iou, mean_box_iou
from cnnkit.metrics.functional import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    dice_score,
    f1_score,
    false_omission_rate,
    fbeta_score,
    jaccard_score,
    mean_iou,
    precision_score,
    recall_score,
    specificity_score,
    top_k_accuracy_score,
)
from cnnkit.metrics.report import report
from cnnkit.metrics.streaming import (
    Accuracy,
    BalancedAccuracy,
    BoxIoU,
    ConfusionMatrix,
    Dice,
    F1Score,
    FalseOmissionRate,
    JaccardIndex,
    MeanAbsoluteError,
    MeanIoU,
    MeanMetric,
    MeanSquaredError,
    Metric,
    Precision,
    Recall,
    Specificity,
    TopKAccuracy,
    get_metric,
    metric_names,
)

__all__ = [
    "UndefinedMetricWarning",
    "accuracy_score",
    "balanced_accuracy_score",
    "box_iou",
    "confusion_matrix",
    "dice_score",
    "f1_score",
    "false_omission_rate",
    "fbeta_score",
    "jaccard_score",
    "matched_box_iou",
    "mean_box_iou",
    "mean_iou",
    "precision_score",
    "recall_score",
    "report",
    "specificity_score",
    "top_k_accuracy_score",
    "Accuracy",
    "BalancedAccuracy",
    "BoxIoU",
    "ConfusionMatrix",
    "Dice",
    "F1Score",
    "FalseOmissionRate",
    "JaccardIndex",
    "MeanAbsoluteError",
    "MeanIoU",
    "MeanMetric",
    "MeanSquaredError",
    "Metric",
    "Precision",
    "Recall",
    "Specificity",
    "TopKAccuracy",
    "get_metric",
    "metric_names",
]
from cnnkit.metrics.detection import detection_map  # noqa: E402
