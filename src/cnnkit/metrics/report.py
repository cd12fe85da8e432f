"""Every metric of seed 000 at once, from a confusion matrix."""

from __future__ import annotations

import numpy as np
import torch

from cnnkit._core.errors import ConfigError, ShapeError
from cnnkit.metrics._inputs import Counts
from cnnkit.metrics.functional import (
    balanced_accuracy_from_counts,
    mean_iou_from_counts,
    score_from_counts,
)

#: report() key prefix -> the set-wise score it is computed with.
_PER_CLASS = {
    "precision": "precision",
    "recall": "recall",
    "f1": "fbeta",
    "dice": "fbeta",
    "specificity": "specificity",
    "false_omission_rate": "false_omission_rate",
    "iou": "jaccard",
}


def report(cm: object, pos_label: int = 1, zero_division: float = 0.0) -> dict[str, object]:
    """All metrics of a confusion matrix ``cm`` (rows = true class, columns = predicted).

    Args:
        cm: square matrix of counts ``(C, C)``, NumPy or tensor, e.g. from
            :func:`~cnnkit.metrics.confusion_matrix` with ``num_classes``.
        pos_label: the positive class when ``C == 2`` (seed 000's "True" class, put at
            index 1 as scikit-learn's ``pos_label=1``).
        zero_division: value of a per-class score whose denominator is 0 (0, 1 or nan).

    Returns a dict with

    - ``confusion_matrix`` (the int64 matrix), ``num_classes``, ``support`` (per-class
      true counts), ``accuracy``, ``balanced_accuracy``, ``mean_iou`` (mean per-class IoU
      over the classes present in truth or prediction);
    - for each of ``precision``, ``recall``, ``f1``, ``dice``, ``specificity``,
      ``false_omission_rate`` and ``iou``: ``<name>_per_class`` (NumPy array over classes
      0..C-1), ``<name>_macro``, ``<name>_micro`` and ``<name>_weighted`` (support
      weighted) floats;
    - ``precision``, ``recall``, ``f1``, ``dice``, ``specificity``,
      ``false_omission_rate``: floats, the ``pos_label`` class's value for a 2x2 matrix
      (as scikit-learn's ``average='binary'``), the macro average otherwise;
    - ``iou``: the per-class IoU array (same as ``iou_per_class``).

    Seed 000 (TP 18508, FN 53, FP 112, TN 166 -> ``[[166, 112], [53, 18508]]``) gives
    accuracy 0.991, recall 0.997, precision 0.994, balanced accuracy 0.80, F1 0.9956,
    false omission rate 0.24 and mean IoU 0.746.
    """
    m = cm.detach().cpu().numpy() if isinstance(cm, torch.Tensor) else np.asarray(cm)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ShapeError(f"cm must be a square (C, C) matrix; received shape {m.shape}.")
    if m.dtype.kind not in "biuf" or (m.dtype.kind == "f" and not np.all(m == np.round(m))):
        raise ConfigError(f"cm must hold integer counts; received dtype {m.dtype}.")
    m = m.astype(np.int64)
    if (m < 0).any():
        raise ConfigError(f"cm must hold counts >= 0; received the entry {int(m.min())}.")
    if m.sum() == 0:
        raise ShapeError("cm is all zeros (no samples); nothing to report.")
    n = m.shape[0]
    if n == 2 and pos_label not in (0, 1):
        raise ConfigError(f"pos_label must be 0 or 1 for a 2x2 matrix; received {pos_label!r}.")
    c = Counts.from_cm(m)
    out: dict[str, object] = {
        "confusion_matrix": m,
        "num_classes": n,
        "support": c.true.copy(),
        "accuracy": float(c.tp.sum() / c.total),
        "balanced_accuracy": balanced_accuracy_from_counts(c),
        "mean_iou": mean_iou_from_counts(c),
    }
    for key, metric in _PER_CLASS.items():
        per_class = score_from_counts(c, metric, None, zero_division=zero_division)
        out[f"{key}_per_class"] = per_class
        for avg in ("macro", "micro", "weighted"):
            out[f"{key}_{avg}"] = score_from_counts(c, metric, avg, zero_division=zero_division)
        if key == "iou":
            out["iou"] = per_class
        else:
            out[key] = float(per_class[pos_label]) if n == 2 else out[f"{key}_macro"]
    return out
