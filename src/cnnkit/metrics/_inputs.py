"""Input checking and counting shared by the functional metrics.

Every functional metric turns ``(y_true, y_pred)`` into two flat ``int64`` tensors of
class indices (:func:`prepare`), then into per-class counts (:func:`count`) read off a
confusion matrix built with one :func:`torch.bincount` over ``n * y_true + y_pred``.
That is one pass over the data, so millions of pixels cost a few milliseconds.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from cnnkit._core.errors import ConfigError, ShapeError

#: Largest class index accepted without ``num_classes`` (the counts are dense arrays).
MAX_LABEL = 2**24
#: Above this many classes the per-class counts come from three 1D bincounts instead of
#: a dense ``n x n`` confusion matrix (same numbers, O(n) memory).
DENSE_CM_LIMIT = 4096


class UndefinedMetricWarning(UserWarning):
    """A metric is ill-defined (a zero denominator) and was set to ``zero_division``."""


def to_tensor(x: object, name: str) -> torch.Tensor:
    """``x`` (NumPy array, tensor, list or scalar) as a tensor, without copying if possible."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise ConfigError(
            f"{name} must hold numbers (class indices or scores); received an array of "
            f"dtype {arr.dtype}. Encode string labels as 0..C-1 first."
        )
    if arr.dtype.byteorder not in "=|" or arr.dtype == np.uint16 or arr.dtype == np.uint32:
        arr = arr.astype(np.int64 if arr.dtype.kind in "iu" else np.float64)
    return torch.from_numpy(np.ascontiguousarray(arr))


def as_indices(x: object, name: str) -> torch.Tensor:
    """Class indices as an ``int64`` tensor (same shape); floats must be integral."""
    t = to_tensor(x, name)
    if t.dtype == torch.bool:
        return t.long()
    if t.is_floating_point():
        if t.numel() and not bool(torch.all(torch.isfinite(t) & (t == torch.round(t)))):
            bad = t[~(torch.isfinite(t) & (t == torch.round(t)))].flatten()[0].item()
            raise ConfigError(
                f"{name} must hold class indices (integers); received the value {bad!r}. "
                "For scores or probabilities take argmax over the class axis first."
            )
        return t.long()
    if t.is_complex():
        raise ConfigError(f"{name} must hold class indices; received dtype {t.dtype}.")
    return t.long()


def check_same_shape(a: torch.Tensor, b: torch.Tensor, na: str, nb: str) -> None:
    """Raise ShapeError unless ``a`` and ``b`` have the same shape (up to size-1 axes)."""
    if a.shape == b.shape:
        return
    if a.numel() == b.numel() and a.squeeze().shape == b.squeeze().shape:
        return
    raise ShapeError(
        f"{na} and {nb} must have the same shape; received {na} of shape {tuple(a.shape)} "
        f"and {nb} of shape {tuple(b.shape)}. If {nb} holds scores (N, C, ...), take "
        "argmax over axis 1 first."
    )


def prepare(
    y_true: object, y_pred: object, ignore_index: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat ``int64`` class-index tensors of ``y_true`` and ``y_pred``, checked.

    Pixels whose true label equals ``ignore_index`` are dropped. Raises ShapeError on a
    shape mismatch or empty input, ConfigError on negative labels.
    """
    t = as_indices(y_true, "y_true")
    p = as_indices(y_pred, "y_pred")
    check_same_shape(t, p, "y_true", "y_pred")
    if t.numel() == 0:
        raise ShapeError(
            f"y_true and y_pred are empty (shape {tuple(t.shape)}); need at least one sample."
        )
    t = t.reshape(-1)
    p = p.reshape(-1).to(t.device)
    if ignore_index is not None:
        if not isinstance(ignore_index, (int, np.integer)) or isinstance(ignore_index, bool):
            raise ConfigError(f"ignore_index must be an int or None; received {ignore_index!r}.")
        keep = t != int(ignore_index)
        t, p = t[keep], p[keep]
        if t.numel() == 0:
            raise ShapeError(
                f"Every element of y_true equals ignore_index={ignore_index}; nothing to score."
            )
    for name, v in (("y_true", t), ("y_pred", p)):
        lo = int(v.min())
        if lo < 0:
            raise ConfigError(
                f"{name} must hold class indices >= 0; received the label {lo}."
                + (" Pass ignore_index to skip a void label." if name == "y_true" else "")
            )
    return t, p


def check_num_classes(num_classes: object) -> int | None:
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ConfigError(f"num_classes must be a positive int or None; received {num_classes!r}.")
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1; received {num_classes}.")
    return int(num_classes)


def check_labels(labels: object, num_classes: int | None) -> np.ndarray | None:
    """``labels`` as a unique non-negative int64 array (order kept), or None."""
    if labels is None:
        return None
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.size == 0:
        raise ConfigError(
            f"labels must be a non-empty 1D list of class indices; received {labels!r}."
        )
    if arr.dtype.kind == "f" and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iub":
        raise ConfigError(f"labels must be class indices (ints); received {labels!r}.")
    arr = arr.astype(np.int64)
    if arr.min() < 0:
        raise ConfigError(f"labels must be >= 0; received {arr.tolist()}.")
    if len(np.unique(arr)) != arr.size:
        raise ConfigError(f"labels must be unique; received {arr.tolist()}.")
    if num_classes is not None and arr.max() >= num_classes:
        raise ConfigError(f"labels must be < num_classes={num_classes}; received {arr.tolist()}.")
    return arr


def check_range(t: torch.Tensor, p: torch.Tensor, num_classes: int | None) -> int:
    """The class count ``n`` to count over; checks labels against ``num_classes``."""
    hi = max(int(t.max()), int(p.max()))
    if num_classes is not None:
        if hi >= num_classes:
            name = "y_true" if int(t.max()) == hi else "y_pred"
            raise ConfigError(
                f"{name} contains the label {hi} but num_classes={num_classes} "
                f"(labels must be in [0, {num_classes - 1}])."
            )
        return num_classes
    if hi >= MAX_LABEL:
        raise ConfigError(
            f"Class index {hi} is too large; encode labels as 0..C-1 or pass num_classes."
        )
    return hi + 1


@dataclass
class Counts:
    """Per-class counts, indexed by class 0..n-1 (one-vs-rest view of the confusion matrix)."""

    tp: np.ndarray
    pred: np.ndarray  # predicted as the class: tp + fp
    true: np.ndarray  # truly the class (support): tp + fn
    total: int

    @property
    def n(self) -> int:
        return len(self.tp)

    @property
    def present(self) -> np.ndarray:
        """Classes that occur in y_true or y_pred (scikit-learn's ``unique_labels``)."""
        return np.flatnonzero(self.true + self.pred)

    def take(self, labels: np.ndarray) -> Counts:
        """Counts of ``labels`` (in that order); labels >= n count zero."""
        labels = np.asarray(labels, dtype=np.int64)
        pad = max(0, int(labels.max()) + 1 - self.n) if labels.size else 0

        def sel(a: np.ndarray) -> np.ndarray:
            return np.concatenate([a, np.zeros(pad, np.int64)])[labels]

        return Counts(sel(self.tp), sel(self.pred), sel(self.true), self.total)

    @classmethod
    def from_cm(cls, cm: np.ndarray) -> Counts:
        cm = np.asarray(cm)
        return cls(np.diag(cm).copy(), cm.sum(axis=0), cm.sum(axis=1), int(cm.sum()))


def bincount_cm(t: torch.Tensor, p: torch.Tensor, n: int) -> torch.Tensor:
    """The ``n x n`` confusion matrix (rows true, columns predicted) of flat index tensors."""
    return torch.bincount(t * n + p, minlength=n * n).reshape(n, n)


def count(t: torch.Tensor, p: torch.Tensor, n: int) -> Counts:
    """Per-class counts of flat index tensors with labels in ``[0, n)``."""
    if n <= DENSE_CM_LIMIT:
        return Counts.from_cm(bincount_cm(t, p, n).cpu().numpy())
    tp = torch.bincount(t[t == p], minlength=n)
    return Counts(
        tp.cpu().numpy(),
        torch.bincount(p, minlength=n).cpu().numpy(),
        torch.bincount(t, minlength=n).cpu().numpy(),
        int(t.numel()),
    )


def divide(num: np.ndarray, den: np.ndarray, zero_division: object, what: str) -> np.ndarray:
    """``num / den`` as float64, entries with ``den == 0`` set as scikit-learn does.

    ``zero_division``: ``'warn'`` (0 and an :class:`UndefinedMetricWarning`), 0, 1 or nan.
    """
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    mask = den == 0
    out = num / np.where(mask, 1.0, den)
    if mask.any():
        out[mask] = zero_division_value(zero_division)
        if isinstance(zero_division, str):
            warnings.warn(
                f"{what} is ill-defined and being set to 0.0 for {int(mask.sum())} label(s) "
                "(a zero denominator). Use zero_division to control this.",
                UndefinedMetricWarning,
                stacklevel=4,
            )
    return out


def zero_division_value(zero_division: object) -> float:
    if isinstance(zero_division, str):
        if zero_division == "warn":
            return 0.0
    elif isinstance(zero_division, (int, float, np.floating, np.integer)) and not isinstance(
        zero_division, bool
    ):
        if zero_division in (0, 1):
            return float(zero_division)
        if np.isnan(zero_division):
            return float("nan")
    raise ConfigError(f"zero_division must be 'warn', 0, 1 or np.nan; received {zero_division!r}.")
