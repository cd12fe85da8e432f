"""Classification and segmentation metrics as functions, with scikit-learn's names.

Seed 000 ("Confusion Matrix" and "IoU" slides) defines them from the confusion matrix
``CM`` (rows = true class, columns = predicted class, as scikit-learn)::

    Accuracy = (TP + TN) / (TP + TN + FP + FN)      TPR (recall) = TP / (TP + FN)
    PPV (precision) = TP / (TP + FP)                 TNR (specificity) = TN / (TN + FP)
    Balanced accuracy = (TPR + TNR) / 2              F1 = 2 PPV TPR / (PPV + TPR)
    FOR = FN / (FN + TN)                             IoU = TP / (TP + FP + FN)
    mean IoU = mean over classes of the per-class IoU (seed 000: (0.991 + 0.502) / 2)

Inputs are class indices, NumPy arrays or tensors of any shape (``y_true (N, H, W)``
and ``y_pred (N, H, W)`` score every pixel); they are flattened and counted with one
:func:`torch.bincount`. Scalars come back as Python floats, per-class values
(``average=None``) as NumPy arrays. ``average``, ``labels``, ``pos_label`` and
``zero_division`` behave as in scikit-learn, which the tests use as the reference.
Extra keywords: ``num_classes`` (the classes are ``0..num_classes-1``; labels outside
raise) and ``ignore_index`` (pixels whose true label equals it are skipped).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from cnnkit._core.errors import ConfigError, ShapeError, did_you_mean
from cnnkit.metrics._inputs import (
    Counts,
    UndefinedMetricWarning,
    as_indices,
    bincount_cm,
    check_labels,
    check_num_classes,
    check_range,
    count,
    divide,
    prepare,
    to_tensor,
    zero_division_value,
)

AVERAGES = ("binary", "micro", "macro", "weighted", None)
_SCORES = ("precision", "recall", "fbeta", "jaccard", "specificity", "false_omission_rate")


# --------------------------------------------------------------------- from counts
def _nanaverage(a: np.ndarray, weights: np.ndarray | None = None) -> float:
    """scikit-learn's ``_nanaverage``: the (weighted) mean ignoring NaNs."""
    if a.size == 0:
        return float("nan")
    keep = ~np.isnan(a)
    if not keep.any():
        return float("nan")
    if weights is None:
        return float(np.mean(a[keep]))
    w = np.asarray(weights, dtype=np.float64)[keep]
    if w.sum() == 0:
        return float(np.mean(a[keep]))
    return float(np.average(a[keep], weights=w))


def check_average(average: object) -> str | None:
    if average in AVERAGES and (average is None or isinstance(average, str)):
        return average
    raise ConfigError(
        f"Unknown average {average!r}; expected one of 'binary', 'micro', 'macro', "
        "'weighted' or None."
        + (did_you_mean(average, AVERAGES[:-1]) if isinstance(average, str) else "")
    )


def score_from_counts(
    c: Counts,
    metric: str,
    average: str | None,
    *,
    beta: float = 1.0,
    zero_division: object = "warn",
) -> float | np.ndarray:
    """One set-wise score from per-label counts ``c`` (labels already selected).

    ``metric``: 'precision', 'recall', 'fbeta', 'jaccard', 'specificity' or
    'false_omission_rate'. ``average=None`` returns the per-label array; 'binary'
    expects ``c`` to hold the positive label only.
    """
    zero_division_value(zero_division)
    tp, pred, true = (c.tp.astype(np.float64), c.pred.astype(np.float64), c.true.astype(np.float64))
    fp, fn = pred - tp, true - tp
    tn = c.total - tp - fp - fn
    if average == "micro":
        tp, pred, true, fp, fn, tn = (np.array([v.sum()]) for v in (tp, pred, true, fp, fn, tn))
    zd = zero_division
    if metric == "precision":
        vals = divide(tp, pred, zd, "Precision")
    elif metric == "recall":
        vals = divide(tp, true, zd, "Recall")
    elif metric == "fbeta":
        if np.isposinf(beta):
            vals = divide(tp, true, zd, "Recall")
        elif beta == 0:
            vals = divide(tp, pred, zd, "Precision")
        else:
            b2 = beta * beta
            vals = divide((1 + b2) * tp, b2 * true + pred, zd, "F-score")
    elif metric == "jaccard":
        vals = divide(tp, tp + fp + fn, zd, "Jaccard")
        if average is None:
            return vals
        w = true if average == "weighted" and true.any() else None
        return float(np.average(vals, weights=w))
    elif metric == "specificity":
        vals = divide(tn, tn + fp, zd, "Specificity")
    elif metric == "false_omission_rate":
        vals = divide(fn, fn + tn, zd, "False omission rate")
    else:
        raise ConfigError(f"Unknown metric {metric!r}; expected one of {_SCORES}.")
    if average is None:
        return vals
    return _nanaverage(vals, true if average == "weighted" else None)


def _select(
    y_true: object,
    y_pred: object,
    average: object,
    labels: object,
    pos_label: object,
    num_classes: object,
    ignore_index: int | None,
) -> Counts:
    """Counts of the labels a set-wise metric averages over, as scikit-learn picks them."""
    average = check_average(average)
    num_classes = check_num_classes(num_classes)
    labels = check_labels(labels, num_classes)
    t, p = prepare(y_true, y_pred, ignore_index)
    n = check_range(t, p, num_classes)
    if average == "binary":
        if isinstance(pos_label, bool) or not isinstance(pos_label, (int, np.integer)):
            raise ConfigError(f"pos_label must be a class index (int); received {pos_label!r}.")
        if pos_label < 0 or (num_classes is not None and pos_label >= num_classes):
            raise ConfigError(
                f"pos_label={pos_label} is not a valid class index"
                + (f" for num_classes={num_classes}." if num_classes else ".")
            )
        n = max(n, int(pos_label) + 1)
    c = count(t, p, n)
    present = c.present
    if average == "binary":
        if len(present) > 2 or (num_classes is not None and num_classes > 2):
            found = (
                f"num_classes={num_classes}" if len(present) <= 2 else f"labels {_short(present)}"
            )
            raise ConfigError(
                f"Target is multiclass but average='binary' ({found}). Please choose another "
                "average setting, one of [None, 'micro', 'macro', 'weighted']."
            )
        if pos_label not in present and len(present) >= 2:
            raise ConfigError(
                f"pos_label={pos_label} is not a valid label. It should be one of {present.tolist()}"
            )
        return c.take(np.array([pos_label]))
    if labels is not None:
        return c.take(labels)
    if num_classes is not None:
        return c.take(np.arange(num_classes))
    return c.take(present)


def _short(a: np.ndarray) -> str:
    a = a.tolist()
    return str(a) if len(a) <= 10 else str(a[:10])[:-1] + ", ...]"


def _setwise(metric, y_true, y_pred, labels, pos_label, average, zero_division, num_classes,
             ignore_index, beta=1.0):  # fmt: skip
    c = _select(y_true, y_pred, average, labels, pos_label, num_classes, ignore_index)
    return score_from_counts(c, metric, average, beta=beta, zero_division=zero_division)


# ----------------------------------------------------------------- public functions
def confusion_matrix(
    y_true: object,
    y_pred: object,
    num_classes: int | None = None,
    labels: object = None,
    normalize: str | None = None,
    ignore_index: int | None = None,
) -> np.ndarray:
    """The confusion matrix ``C[i, j]`` = number of samples of true class i predicted as j.

    Args:
        y_true, y_pred: class indices, any shape (same for both).
        num_classes: the matrix is ``num_classes x num_classes`` (labels must be below it).
        labels: the classes to index the matrix with, in this order (others dropped).
        normalize: None (counts, int64), 'true' (rows sum to 1), 'pred' (columns) or
            'all'; zero rows/columns stay 0, as scikit-learn.
        ignore_index: skip samples whose true label equals it.

    Without ``num_classes`` or ``labels`` the classes are those present in ``y_true`` or
    ``y_pred`` (scikit-learn's default), so a class absent from both has no row. Pass
    ``num_classes`` for a fixed-size matrix.
    """
    if normalize not in ("true", "pred", "all", None):
        raise ConfigError(
            f"Unknown normalize {normalize!r}; expected 'true', 'pred', 'all' or None."
            + (
                did_you_mean(normalize, ("true", "pred", "all"))
                if isinstance(normalize, str)
                else ""
            )
        )
    num_classes = check_num_classes(num_classes)
    labels = check_labels(labels, num_classes)
    t, p = prepare(y_true, y_pred, ignore_index)
    n = check_range(t, p, num_classes)
    if labels is None and num_classes is None:
        present = torch.bincount(t, minlength=n) + torch.bincount(p, minlength=n)
        labels = torch.nonzero(present).flatten().cpu().numpy()
        if len(labels) == n:
            labels = None
    if labels is None:
        cm = bincount_cm(t, p, n)
    else:
        if not bool(torch.isin(t, torch.as_tensor(labels, device=t.device)).any()):
            raise ConfigError(
                f"At least one label specified must be in y_true; received labels {_short(labels)}."
            )
        size = max(n, int(labels.max()) + 1)
        lut = torch.full((size,), len(labels), dtype=torch.long, device=t.device)
        lut[torch.as_tensor(labels, device=t.device)] = torch.arange(len(labels), device=t.device)
        ti, pi = lut[t], lut[p]
        keep = (ti < len(labels)) & (pi < len(labels))
        cm = bincount_cm(ti[keep], pi[keep], len(labels))
    cm = cm.cpu().numpy().astype(np.int64)
    if normalize is None:
        return cm
    with np.errstate(all="ignore"):
        if normalize == "true":
            out = cm / cm.sum(axis=1, keepdims=True)
        elif normalize == "pred":
            out = cm / cm.sum(axis=0, keepdims=True)
        else:
            out = cm / cm.sum()
    return np.nan_to_num(out)


def accuracy_score(
    y_true: object,
    y_pred: object,
    *,
    normalize: bool = True,
    num_classes: int | None = None,
    ignore_index: int | None = None,
) -> float:
    """Fraction (or with ``normalize=False`` the number) of correct predictions."""
    t, p = prepare(y_true, y_pred, ignore_index)
    check_range(t, p, check_num_classes(num_classes))
    correct = int((t == p).sum())
    return correct / t.numel() if normalize else float(correct)


def balanced_accuracy_score(
    y_true: object,
    y_pred: object,
    *,
    adjusted: bool = False,
    num_classes: int | None = None,
    ignore_index: int | None = None,
) -> float:
    """Mean per-class recall over the classes present in ``y_true`` (seed 000: 0.80).

    For two classes this is ``(TPR + TNR) / 2``. ``adjusted=True`` rescales so chance
    scores 0, as scikit-learn.
    """
    t, p = prepare(y_true, y_pred, ignore_index)
    c = count(t, p, check_range(t, p, check_num_classes(num_classes)))
    return balanced_accuracy_from_counts(c, adjusted=adjusted)


def balanced_accuracy_from_counts(c: Counts, adjusted: bool = False) -> float:
    keep = c.true > 0
    if (c.pred[~keep] > 0).any():
        warnings.warn("y_pred contains classes not in y_true", UserWarning, stacklevel=3)
    per_class = c.tp[keep] / c.true[keep]
    score = float(np.mean(per_class)) if per_class.size else float("nan")
    if adjusted:
        chance = 1.0 / per_class.size
        score = (score - chance) / (1.0 - chance)
    return score


def precision_score(y_true, y_pred, *, labels=None, pos_label=1, average="binary",
                    zero_division="warn", num_classes=None, ignore_index=None):  # fmt: skip
    """Precision (PPV) ``TP / (TP + FP)``; seed 000's positive class: 0.994."""
    return _setwise("precision", y_true, y_pred, labels, pos_label, average, zero_division,
                    num_classes, ignore_index)  # fmt: skip


def recall_score(y_true, y_pred, *, labels=None, pos_label=1, average="binary",
                 zero_division="warn", num_classes=None, ignore_index=None):  # fmt: skip
    """Recall (TPR, sensitivity) ``TP / (TP + FN)``; seed 000: 0.997."""
    return _setwise("recall", y_true, y_pred, labels, pos_label, average, zero_division,
                    num_classes, ignore_index)  # fmt: skip


def fbeta_score(y_true, y_pred, *, beta, labels=None, pos_label=1, average="binary",
                zero_division="warn", num_classes=None, ignore_index=None):  # fmt: skip
    """F-beta ``(1 + b^2) TP / ((1 + b^2) TP + b^2 FN + FP)``."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta >= 0:
        raise ConfigError(f"beta must be a number >= 0; received {beta!r}.")
    return _setwise("fbeta", y_true, y_pred, labels, pos_label, average, zero_division,
                    num_classes, ignore_index, beta=float(beta))  # fmt: skip


def f1_score(y_true, y_pred, *, labels=None, pos_label=1, average="binary",
             zero_division="warn", num_classes=None, ignore_index=None):  # fmt: skip
    """F1 ``2 PPV TPR / (PPV + TPR)``; seed 000: 0.9956 (the deck truncates to 0.995)."""
    return _setwise("fbeta", y_true, y_pred, labels, pos_label, average, zero_division,
                    num_classes, ignore_index)  # fmt: skip


def dice_score(y_true, y_pred, *, labels=None, pos_label=1, average="binary",
               zero_division="warn", num_classes=None, ignore_index=None):  # fmt: skip
    """Dice coefficient ``2 |A n B| / (|A| + |B|) = 2 TP / (2 TP + FP + FN)`` (equals F1)."""
    return _setwise("fbeta", y_true, y_pred, labels, pos_label, average, zero_division,
                    num_classes, ignore_index)  # fmt: skip


def jaccard_score(y_true, y_pred, *, labels=None, pos_label=1, average="binary",
                  zero_division="warn", num_classes=None, ignore_index=None):  # fmt: skip
    """Jaccard index / IoU ``|A n B| / |A u B| = TP / (TP + FP + FN)`` (seed 000 IoU slide)."""
    return _setwise("jaccard", y_true, y_pred, labels, pos_label, average, zero_division,
                    num_classes, ignore_index)  # fmt: skip


def specificity_score(y_true, y_pred, *, labels=None, pos_label=1, average="binary",
                      zero_division="warn", num_classes=None, ignore_index=None):  # fmt: skip
    """Specificity (TNR) ``TN / (TN + FP)``, one-vs-rest per class; seed 000: 0.597.

    Averages as :func:`recall_score` ('weighted' weights by each class's support).
    """
    return _setwise("specificity", y_true, y_pred, labels, pos_label, average, zero_division,
                    num_classes, ignore_index)  # fmt: skip


def false_omission_rate(y_true, y_pred, *, labels=None, pos_label=1, average="binary",
                        zero_division="warn", num_classes=None, ignore_index=None):  # fmt: skip
    """False omission rate ``FOR = FN / (FN + TN)`` (= 1 - NPV); seed 000: 0.24."""
    return _setwise("false_omission_rate", y_true, y_pred, labels, pos_label, average,
                    zero_division, num_classes, ignore_index)  # fmt: skip


def mean_iou(
    y_true: object,
    y_pred: object,
    num_classes: int | None = None,
    ignore_index: int | None = None,
) -> float:
    """Mean over classes of the per-class IoU ``TP / (TP + FP + FN)``.

    Classes absent from both ``y_true`` and ``y_pred`` (IoU 0/0) are left out of the
    mean; pixels whose true label is ``ignore_index`` are skipped. Seed 000's two-class
    example: (18508/18673 + 166/331) / 2 = 0.746.
    """
    t, p = prepare(y_true, y_pred, ignore_index)
    c = count(t, p, check_range(t, p, check_num_classes(num_classes)))
    return mean_iou_from_counts(c)


def mean_iou_from_counts(c: Counts) -> float:
    union = c.true + c.pred - c.tp
    keep = union > 0
    return float(np.mean(c.tp[keep] / union[keep])) if keep.any() else float("nan")


def top_k_accuracy_score(
    y_true: object,
    y_score: object,
    k: int = 2,
    *,
    normalize: bool = True,
    labels: object = None,
) -> float:
    """Fraction of samples whose true class is among the ``k`` highest scores.

    Args:
        y_true: class indices ``(N, ...)``.
        y_score: scores ``(N, C, ...)`` (column j scores class j, or ``labels[j]``), or for
            two classes ``(N,)`` scores of the positive class.
        k: how many top classes count as a hit.
        normalize: fraction (True) or number (False) of hits.
        labels: the sorted classes the columns of ``y_score`` stand for.

    Ties are broken as scikit-learn (a stable sort, reversed: among equal scores the
    higher column ranks first).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be a positive int; received {k!r}.")
    t = as_indices(y_true, "y_true")
    s = to_tensor(y_score, "y_score")
    if not s.is_floating_point():
        s = s.double()
    s = s.to(t.device)
    if t.numel() == 0:
        raise ShapeError(f"y_true is empty (shape {tuple(t.shape)}); need at least one sample.")
    binary = s.shape == t.shape or (s.ndim == t.ndim + 1 and s.shape[1] == 1 and s.ndim == 2)
    n_cols = 2 if binary else (s.shape[1] if s.ndim == t.ndim + 1 else -1)
    if not binary and (
        s.ndim != t.ndim + 1 or s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[1:]
    ):
        raise ShapeError(
            f"y_score must have shape (N, C, ...) for y_true of shape (N, ...), or y_true's "
            f"shape for binary scores; received y_true {tuple(t.shape)} and y_score "
            f"{tuple(s.shape)}."
        )
    t = t.reshape(-1)
    if labels is not None:
        lab = check_labels(labels, None)
        if not np.array_equal(np.sort(lab), lab):
            raise ConfigError(f"labels must be sorted; received {lab.tolist()}.")
        if len(lab) != n_cols:
            raise ConfigError(
                f"Number of given labels ({len(lab)}) not equal to the number of classes "
                f"in y_score ({n_cols})."
            )
        lab_t = torch.as_tensor(lab, device=t.device)
        pos = torch.searchsorted(lab_t, t).clamp(max=len(lab) - 1)
        if not bool((lab_t[pos] == t).all()):
            raise ConfigError(
                f"y_true contains labels not in labels={lab.tolist()} "
                f"(e.g. {int(t[lab_t[pos] != t][0])})."
            )
        t = pos
    elif binary:
        classes = torch.unique(t)
        if len(classes) > 2:
            raise ShapeError(
                f"y_true has {len(classes)} classes but y_score {tuple(s.shape)} holds one "
                "score per sample; pass scores of shape (N, C)."
            )
        t = torch.searchsorted(classes, t) if int(classes.max()) > 1 else t
    if k >= n_cols:
        warnings.warn(
            f"'k' ({k}) greater than or equal to 'n_classes' ({n_cols}) will result in a "
            "perfect score and is therefore meaningless.",
            UndefinedMetricWarning,
            stacklevel=2,
        )
    if binary:
        s = s.reshape(-1)
        if k == 1:
            thr = 0.5 if bool((s.min() >= 0) & (s.max() <= 1)) else 0.0
            hits = (s > thr).long() == t
        else:
            hits = torch.ones_like(t, dtype=torch.bool)
    else:
        if int(t.min()) < 0 or int(t.max()) >= n_cols:
            bad = int(t.min()) if int(t.min()) < 0 else int(t.max())
            raise ConfigError(
                f"y_true contains the label {bad} but y_score has {n_cols} classes "
                f"(labels must be in [0, {n_cols - 1}])."
            )
        s = s.movedim(1, -1).reshape(-1, n_cols)
        hits = topk_hits(s, t, int(k))
    n_hits = int(hits.sum())
    return n_hits / hits.numel() if normalize else float(n_hits)


def topk_hits(scores: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """Bool ``(N,)``: is ``target`` in the top ``k`` of ``scores (N, C)`` (sklearn's ties)."""
    own = scores.gather(1, target.unsqueeze(1))
    cols = torch.arange(scores.shape[1], device=scores.device)
    rank = (scores > own).sum(1) + ((scores == own) & (cols > target.unsqueeze(1))).sum(1)
    return rank < k
