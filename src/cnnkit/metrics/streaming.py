"""Streaming metrics: accumulate over batches, reduce across ranks, compute at the end.

Each metric is an ``nn.Module`` whose state (counts, sums, a confusion matrix) lives on
the device of the data as tensors; :meth:`Metric.update` never calls ``.item()`` or
otherwise waits for the device, so it adds nothing to a training step. Call
:meth:`Metric.sync` once after the last update (it all-reduces the state when
``torch.distributed`` is initialised) and then :meth:`Metric.compute`, which returns a
Python float (or a NumPy array for per-class results and the confusion matrix).

Classification metrics accept ``y_pred`` as

- scores ``(N, C, ...)`` (logits or probabilities; the class is the argmax over axis 1),
- one binary score per sample ``(N,)``/``(N, 1)`` (probability, or logit with
  ``from_logits=True``; positive when above ``threshold``),
- class indices (an integer tensor of ``y_true``'s shape),

and ``y_true`` as class indices ``(N, ...)`` (``(N, 1)`` is fine) or one-hot ``(N, C)``
(a float ``y_true`` of ``y_pred``'s shape with more than two axes is read as per-element
binary targets, so for segmentation pass index masks ``(N, H, W)``).
The confusion-matrix metrics give the same numbers as :mod:`cnnkit.metrics.functional`
on the concatenated batches with ``num_classes`` set.
"""

from __future__ import annotations

import numpy as np
import torch

from cnnkit._core.errors import ConfigError, ShapeError, check_choice
from cnnkit.metrics._inputs import Counts, check_num_classes, check_same_shape, to_tensor
from cnnkit.metrics._streaming_base import (
    _LONG,
    Metric,
    _check_ignore,
    _check_threshold,
    _LabelChecks,
    _tensor,
    class_predictions,
)
from cnnkit.metrics.boxes import matched_box_iou_tensor
from cnnkit.metrics.functional import (
    AVERAGES,
    balanced_accuracy_from_counts,
    check_average,
    mean_iou_from_counts,
    score_from_counts,
    topk_hits,
)


class Accuracy(Metric):
    """Fraction of correct predictions (Keras's accuracy, binary or categorical).

    Args:
        threshold: binary scores above it count as class 1.
        from_logits: binary scores are logits (compared with ``logit(threshold)``).
        ignore_index: true label to skip (e.g. a void pixel class).
    """

    name = "accuracy"

    def __init__(self, threshold=0.5, from_logits=False, ignore_index=None, *, name=None):
        super().__init__(name=name)
        self.threshold = _check_threshold(threshold)
        self.from_logits = bool(from_logits)
        self.ignore_index = _check_ignore(ignore_index)
        self.add_state("correct", torch.zeros((), dtype=_LONG))
        self.add_state("total", torch.zeros((), dtype=_LONG))

    def update(self, y_pred, y_true):
        p, t, _ = class_predictions(y_pred, y_true, self.threshold, self.from_logits)
        self._start_update(p)
        if self.ignore_index is None:
            self.correct.add_((p == t).sum())
            self.total.add_(t.numel())
        else:
            keep = t != self.ignore_index
            self.correct.add_(((p == t) & keep).sum())
            self.total.add_(keep.sum())

    def compute(self) -> float:
        total = int(self.total)
        if total == 0:
            raise self._no_samples()
        return int(self.correct) / total


class TopKAccuracy(_LabelChecks):
    """Fraction of samples whose true class is among the ``k`` highest of ``y_pred (N, C, ...)``."""

    name = "top_k_accuracy"

    def __init__(self, k=5, ignore_index=None, *, name=None):
        super().__init__(name=name)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k must be a positive int; received {k!r}.")
        self.k = int(k)
        self.ignore_index = _check_ignore(ignore_index)
        self.add_state("correct", torch.zeros((), dtype=_LONG))
        self.add_state("total", torch.zeros((), dtype=_LONG))

    def update(self, y_pred, y_true):
        s = _tensor(y_pred, "y_pred")
        t = _tensor(y_true, "y_true", s.device)
        if not s.is_floating_point() or s.ndim < 2:
            raise ShapeError(
                f"TopKAccuracy needs scores y_pred (N, C, ...); received dtype {s.dtype} and "
                f"shape {tuple(s.shape)}."
            )
        if t.shape == s.shape:
            t = t.argmax(1)
        elif t.ndim == s.ndim and t.shape[1] == 1:
            t = t[:, 0]
        if t.ndim + 1 != s.ndim or s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[1:]:
            raise ShapeError(
                f"y_pred scores (N, C, ...) do not match y_true (N, ...); received y_pred "
                f"{tuple(s.shape)} and y_true {tuple(t.shape)}."
            )
        self._start_update(s)
        c = s.shape[1]
        t = t.reshape(-1).long()
        s = s.movedim(1, -1).reshape(-1, c)
        keep = None if self.ignore_index is None else t != self.ignore_index
        if self._checks_now(t):
            self._check_cpu(t, c, "y_true", keep)
            if keep is None:
                self.correct.add_(topk_hits(s, t, self.k).sum())
                self.total.add_(t.numel())
                return
            ok = keep
            t = torch.where(keep, t, 0)
        else:  # count bad labels for compute() instead of waiting for the device
            ok = (t >= 0) & (t < c)
            self.invalid.add_((~ok if keep is None else ~ok & keep).sum())
            if keep is not None:
                ok &= keep
            t = t.clamp(0, c - 1)
        self.correct.add_((topk_hits(s, t, self.k) & ok).sum())
        self.total.add_(ok.sum())

    def compute(self) -> float:
        self._check_flags()
        total = int(self.total)
        if total == 0:
            raise self._no_samples()
        return int(self.correct) / total


class ConfusionMatrix(_LabelChecks):
    """Accumulated confusion matrix (rows true, columns predicted), ``(C, C)`` int64.

    Args:
        num_classes: C; if None it is taken from the first scores ``(N, C, ...)`` seen
            (2 for binary scores).
        threshold, from_logits: for binary scores, as :class:`Accuracy`.
        ignore_index: true label to skip.
        normalize: as :func:`~cnnkit.metrics.confusion_matrix` (None, 'true', 'pred', 'all').
    """

    name = "confusion_matrix"

    def __init__(self, num_classes=None, *, threshold=0.5, from_logits=False,
                 ignore_index=None, normalize=None, name=None):  # fmt: skip
        super().__init__(name=name)
        self.num_classes = check_num_classes(num_classes)
        self.threshold = _check_threshold(threshold)
        self.from_logits = bool(from_logits)
        self.ignore_index = _check_ignore(ignore_index)
        self.normalize = normalize
        if normalize is not None:
            check_choice("normalize", normalize, ("true", "pred", "all"))
        if self.num_classes is not None:
            self._build(self.num_classes, None)

    def _build(self, n: int, device: torch.device | None) -> None:
        self.num_classes = n
        # the last bin collects ignored / invalid entries so no boolean indexing is needed
        self.add_state("cm", torch.zeros(n * n + 1, dtype=_LONG, device=device))

    def update(self, y_pred, y_true):
        p, t, implied = class_predictions(y_pred, y_true, self.threshold, self.from_logits)
        if self.num_classes is None:
            if implied is None:
                raise ConfigError(
                    f"{type(self).__name__}(num_classes=None) cannot infer the class count "
                    "from class-index predictions; pass num_classes."
                )
            self._build(implied, p.device)
        n = self.num_classes
        if implied is not None and implied != n:
            raise ShapeError(
                f"{type(self).__name__}(num_classes={n}) received y_pred implying {implied} "
                f"classes (shape {tuple(to_tensor(y_pred, 'y_pred').shape)})."
            )
        self._start_update(p)
        t, p = t.reshape(-1), p.reshape(-1)
        keep = None if self.ignore_index is None else t != self.ignore_index
        if self._checks_now(t):
            self._check_cpu(t, n, "y_true", keep)
            if implied is None:
                self._check_cpu(p, n, "y_pred", keep)
            idx = t * n + p
            if keep is not None:  # ignored entries go to the spare last bin
                idx = torch.where(keep, idx, n * n)
            self.cm.add_(torch.bincount(idx, minlength=n * n + 1))
            return
        # elsewhere: no check that waits for the device; bad labels are counted for
        # compute() and, like ignored ones, sent to the spare last bin. (bincount would
        # wait for the device to size its output, index_add_ does not.)
        bad = (t < 0) | (t >= n)
        if implied is None:
            bad |= (p < 0) | (p >= n)
        if keep is not None:
            bad &= keep
        self.invalid.add_(bad.sum())
        drop = bad if keep is None else bad | ~keep
        idx = torch.where(drop, n * n, t * n + p)
        self.cm.index_add_(0, idx, torch.ones_like(idx))

    def sync(self) -> None:
        if self.num_classes is None:
            raise ConfigError(
                f"{type(self).__name__}.sync() before any update(); nothing to reduce."
            )
        super().sync()

    def matrix(self) -> np.ndarray:
        """The raw count matrix ``(C, C)`` (checked: no invalid labels, not empty)."""
        if self.num_classes is None:
            raise self._no_samples()
        self._check_flags()
        n = self.num_classes
        cm = self.cm[: n * n].reshape(n, n).cpu().numpy().copy()  # no view of the state
        if cm.sum() == 0:
            raise self._no_samples()
        return cm

    def compute(self) -> np.ndarray:
        cm = self.matrix()
        if self.normalize is None:
            return cm
        axis = {"true": 1, "pred": 0, "all": None}[self.normalize]
        with np.errstate(all="ignore"):
            return np.nan_to_num(cm / cm.sum(axis=axis, keepdims=axis is not None))


class _FromConfusion(ConfusionMatrix):
    """A score computed from the accumulated confusion matrix."""

    metric = ""

    def __init__(self, num_classes=None, average="auto", *, pos_label=1, zero_division=0.0,
                 threshold=0.5, from_logits=False, ignore_index=None, name=None):  # fmt: skip
        super().__init__(num_classes, threshold=threshold, from_logits=from_logits,
                         ignore_index=ignore_index, name=name)  # fmt: skip
        if average != "auto":
            check_average(average)
        self.average = average
        if average == "binary" and self.num_classes not in (None, 2):
            raise ConfigError(
                f"average='binary' needs num_classes=2; received num_classes={self.num_classes}."
                " Use 'macro', 'micro', 'weighted' or None."
            )
        if isinstance(pos_label, bool) or not isinstance(pos_label, (int, np.integer)):
            raise ConfigError(f"pos_label must be a class index; received {pos_label!r}.")
        self.pos_label = int(pos_label)
        self.zero_division = zero_division

    def _resolved_average(self) -> str | None:
        if self.average == "auto":
            return "binary" if self.num_classes == 2 else "macro"
        return self.average

    def compute(self) -> float | np.ndarray:
        c = Counts.from_cm(self.matrix())
        average = self._resolved_average()
        if average == "binary":
            if self.num_classes != 2 or self.pos_label not in (0, 1):
                raise ConfigError(
                    f"average='binary' needs 2 classes and pos_label 0 or 1; received "
                    f"num_classes={self.num_classes}, pos_label={self.pos_label}."
                )
            c = c.take(np.array([self.pos_label]))
        return score_from_counts(c, self.metric, average, zero_division=self.zero_division)


class Precision(_FromConfusion):
    """Precision ``TP / (TP + FP)``; ``average='auto'`` is 'binary' for 2 classes, else 'macro'."""

    name, metric = "precision", "precision"


class Recall(_FromConfusion):
    """Recall ``TP / (TP + FN)``; averages as :class:`Precision`."""

    name, metric = "recall", "recall"


class F1Score(_FromConfusion):
    """F1 ``2 TP / (2 TP + FP + FN)``; averages as :class:`Precision`."""

    name, metric = "f1", "fbeta"


class Dice(_FromConfusion):
    """Dice coefficient (equal to F1); averages as :class:`Precision`."""

    name, metric = "dice", "fbeta"


class Specificity(_FromConfusion):
    """Specificity ``TN / (TN + FP)``; averages as :class:`Precision`."""

    name, metric = "specificity", "specificity"


class FalseOmissionRate(_FromConfusion):
    """False omission rate ``FN / (FN + TN)``; averages as :class:`Precision`."""

    name, metric, higher_is_better = "false_omission_rate", "false_omission_rate", False


class JaccardIndex(_FromConfusion):
    """IoU ``TP / (TP + FP + FN)`` with scikit-learn's ``jaccard_score`` averages."""

    name, metric = "jaccard", "jaccard"


class BalancedAccuracy(ConfusionMatrix):
    """Mean per-class recall over the classes present in the targets."""

    name = "balanced_accuracy"

    def compute(self) -> float:
        return balanced_accuracy_from_counts(Counts.from_cm(self.matrix()))


class MeanIoU(ConfusionMatrix):
    """Mean per-class IoU over the classes present in truth or prediction (segmentation)."""

    name = "mean_iou"

    def compute(self) -> float:
        return mean_iou_from_counts(Counts.from_cm(self.matrix()))


class _MeanError(Metric):
    power = 1
    higher_is_better = False

    def __init__(self, *, name=None):
        super().__init__(name=name)
        self.add_state("sum", torch.zeros((), dtype=torch.float64))
        self.add_state("count", torch.zeros((), dtype=_LONG))

    def update(self, y_pred, y_true):
        p = _tensor(y_pred, "y_pred")
        t = _tensor(y_true, "y_true", p.device)
        check_same_shape(t, p, "y_true", "y_pred")
        self._start_update(p)
        d = p.reshape(t.shape).double() - t.double()
        self.sum.add_((d * d).sum() if self.power == 2 else d.abs().sum())
        self.count.add_(d.numel())

    def compute(self) -> float:
        n = int(self.count)
        if n == 0:
            raise self._no_samples()
        return float(self.sum) / n


class MeanSquaredError(_MeanError):
    """Mean over all elements of ``(y_pred - y_true)^2``."""

    name, power = "mse", 2


class MeanAbsoluteError(_MeanError):
    """Mean over all elements of ``|y_pred - y_true|``."""

    name, power = "mae", 1


class BoxIoU(Metric):
    """Mean IoU of predicted boxes ``(N, 4)`` with their true boxes ``(N, 4)`` (x1, y1, x2, y2)."""

    name = "box_iou"

    def __init__(self, *, name=None):
        super().__init__(name=name)
        self.add_state("sum", torch.zeros((), dtype=torch.float64))
        self.add_state("count", torch.zeros((), dtype=_LONG))

    def update(self, y_pred, y_true):
        p = _tensor(y_pred, "y_pred")
        t = _tensor(y_true, "y_true", p.device)
        if p.shape != t.shape or p.ndim < 1 or p.shape[-1] != 4:
            raise ShapeError(
                f"BoxIoU expects y_pred and y_true of the same shape (N, 4); received "
                f"{tuple(p.shape)} and {tuple(t.shape)}."
            )
        self._start_update(p)
        iou = matched_box_iou_tensor(p.double(), t.double())
        self.sum.add_(iou.sum())
        self.count.add_(iou.numel())

    def compute(self) -> float:
        n = int(self.count)
        if n == 0:
            raise self._no_samples()
        return float(self.sum) / n


class MeanMetric(Metric):
    """Batch-size weighted mean of ``fn(y_true, y_pred)`` (a Keras-style metric function)."""

    def __init__(self, fn, *, name=None):
        if not callable(fn):
            raise ConfigError(f"fn must be callable; received {fn!r}.")
        super().__init__(name=name or getattr(fn, "__name__", type(fn).__name__))
        self.fn = fn
        self.add_state("sum", torch.zeros((), dtype=torch.float64))
        self.add_state("count", torch.zeros((), dtype=_LONG))

    def update(self, y_pred, y_true):
        v = torch.as_tensor(self.fn(y_true, y_pred))
        self._start_update(v)
        n = len(y_true) if hasattr(y_true, "__len__") else 1
        self.sum.add_(v.detach().double().mean() * n)
        self.count.add_(n)

    def compute(self) -> float:
        n = int(self.count)
        if n == 0:
            raise self._no_samples()
        return float(self.sum) / n


_BY_NAME = {
    "accuracy": Accuracy, "acc": Accuracy, "binary_accuracy": Accuracy,
    "categorical_accuracy": Accuracy, "sparse_categorical_accuracy": Accuracy,
    "top_k_accuracy": TopKAccuracy, "top_k_categorical_accuracy": TopKAccuracy,
    "sparse_top_k_categorical_accuracy": TopKAccuracy,
    "precision": Precision, "recall": Recall, "f1": F1Score, "f1_score": F1Score,
    "specificity": Specificity, "false_omission_rate": FalseOmissionRate,
    "mean_iou": MeanIoU, "iou": MeanIoU, "jaccard": JaccardIndex, "dice": Dice,
    "balanced_accuracy": BalancedAccuracy, "confusion_matrix": ConfusionMatrix,
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError, "box_iou": BoxIoU,
}  # fmt: skip
_WITH_CLASSES = (ConfusionMatrix,)


def metric_names() -> list[str]:
    """The names :func:`get_metric` knows."""
    return sorted(_BY_NAME)


def get_metric(name_or_obj: object, num_classes: int | None = None) -> Metric:
    """A fresh streaming metric for a Keras-style name, or ``name_or_obj`` itself.

    Names: ``'accuracy'``/``'acc'``, ``'top_k_accuracy'`` (k=5), ``'precision'``,
    ``'recall'``, ``'f1'``, ``'specificity'``, ``'mean_iou'``/``'iou'``, ``'dice'``,
    ``'balanced_accuracy'``, ``'confusion_matrix'``, ``'mse'``, ``'mae'``, ``'box_iou'``
    and Keras's long names (see :func:`metric_names`). The metric's ``name`` is the
    name given (the key ``evaluate()`` reports). ``num_classes`` goes to the
    confusion-matrix metrics (else inferred from the first scores). A :class:`Metric`
    instance is returned as is, a Metric subclass is instantiated, any other callable
    ``fn(y_true, y_pred)`` is averaged over batches (:class:`MeanMetric`).
    """
    if isinstance(name_or_obj, Metric):
        return name_or_obj
    if isinstance(name_or_obj, str):
        key = name_or_obj.lower()
        if key not in _BY_NAME:
            check_choice("metric", name_or_obj, metric_names())
        cls = _BY_NAME[key]
        if issubclass(cls, _WITH_CLASSES):
            return cls(num_classes=num_classes, name=name_or_obj)
        return cls(name=name_or_obj)
    if isinstance(name_or_obj, type) and issubclass(name_or_obj, Metric):
        if issubclass(name_or_obj, _WITH_CLASSES):
            return name_or_obj(num_classes=num_classes)
        return name_or_obj()
    if callable(name_or_obj):
        return MeanMetric(name_or_obj)
    raise ConfigError(
        f"A metric must be a name, a Metric or a callable; received {name_or_obj!r} "
        f"({type(name_or_obj).__name__})."
    )


__all__ = [
    "AVERAGES", "Metric", "Accuracy", "TopKAccuracy", "ConfusionMatrix", "Precision", "Recall",
    "F1Score", "Dice", "Specificity", "FalseOmissionRate", "JaccardIndex", "BalancedAccuracy",
    "MeanIoU", "MeanSquaredError", "MeanAbsoluteError", "BoxIoU", "MeanMetric", "get_metric",
    "metric_names", "class_predictions",
]  # fmt: skip
