"""Argument and target checks shared by the losses.

Each check costs at most one pass over the target and one host sync (``aminmax`` then
a comparison); the slow path that finds the offending value runs only on error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from cnnkit._core.errors import ConfigError, ShapeError, check_choice

REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: str) -> str:
    return check_choice("reduction", reduction, REDUCTIONS)


def reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def check_number(
    fn: str, name: str, value: object, lo: float = -math.inf, hi: float = math.inf
) -> float:
    """A finite float in ``[lo, hi]``, else ConfigError naming the value."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{fn}: {name} must be a number; received {value!r}.") from None
    if not (math.isfinite(v) and lo <= v <= hi):
        raise ConfigError(
            f"{fn}: {name} must be a finite number in [{lo}, {hi}]; received {value!r}."
        )
    return v


def as_tensor(x: object, ref: Tensor, name: str, fn: str) -> Tensor:
    """``x`` as a tensor on ``ref``'s device (NumPy arrays and lists are converted)."""
    if isinstance(x, Tensor):
        return x if x.device == ref.device else x.to(ref.device)
    if isinstance(x, (np.ndarray, np.generic, list, tuple, int, float, bool)):
        return torch.as_tensor(np.asarray(x), device=ref.device)
    raise ConfigError(f"{fn}: {name} must be a tensor or an array; received {type(x).__name__}.")


def check_logits(logits: object, fn: str, min_ndim: int = 1) -> Tensor:
    if not isinstance(logits, Tensor):
        raise ConfigError(f"{fn}: logits must be a torch.Tensor; received {type(logits).__name__}.")
    if not logits.is_floating_point():
        raise ConfigError(f"{fn}: logits must be a floating tensor; received dtype {logits.dtype}.")
    if logits.ndim < min_ndim:
        need = "(N, C, ...)" if min_ndim >= 2 else "at least 1 dimension"
        raise ShapeError(
            f"{fn}: logits must have shape {need}; received shape {tuple(logits.shape)}."
        )
    return logits


def index_shape(logits: Tensor) -> tuple[int, ...]:
    """The class-index target shape for logits ``(N, C, *spatial)`` (or ``(C,)``)."""
    shape = tuple(logits.shape)
    return shape[:1] + shape[2:] if len(shape) >= 2 else ()


def _squeeze_channel(target: Tensor, logits: Tensor) -> Tensor | None:
    """``target`` with the index shape, allowing a singleton channel ``(N, 1, ...)``."""
    want = index_shape(logits)
    if tuple(target.shape) == want:
        return target
    t = tuple(target.shape)
    if logits.ndim >= 2 and len(t) == logits.ndim and t[1] == 1 and t[:1] + t[2:] == want:
        return target.squeeze(1)
    return None


def first_bad(t: Tensor, bad: Tensor) -> object:
    """The first value of ``t`` where ``bad`` holds, as a Python number."""
    return t[bad].flatten()[0].item()


def check_finite(t: Tensor, name: str, fn: str, validate: bool = True) -> None:
    if validate and t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ConfigError(
            f"{fn}: {name} must be finite; received the value {first_bad(t, ~torch.isfinite(t))}."
        )


def check_range(
    t: Tensor, lo: float, hi: float, name: str, fn: str, hint: str = "", validate: bool = True
) -> None:
    """Every value of ``t`` finite and in ``[lo, hi]``, else ConfigError naming one."""
    if not validate or t.numel() == 0:
        return
    mn, mx = torch.aminmax(t.detach())
    if bool((mn >= lo) & (mx <= hi)):
        return
    bad = ~((t >= lo) & (t <= hi))
    raise ConfigError(
        f"{fn}: {name} must be finite and in [{lo}, {hi}]{hint}; received the value "
        f"{first_bad(t.detach(), bad)}."
    )


def index_target(
    logits: Tensor,
    target: object,
    fn: str,
    ignore_index: int | None = None,
    allow_soft: bool = True,
    validate: bool = True,
) -> tuple[str, Tensor]:
    """Classify and check a classification target.

    Returns ``('index', LongTensor[N, *spatial])`` for class indices (integer, or float
    with integral values; a singleton channel ``(N, 1, ...)`` is squeezed), or
    ``('soft', Tensor like logits)`` for one-hot / probability targets of the logits'
    shape. Raises ShapeError on a shape that is neither, ConfigError on a class index
    outside ``[0, C)`` (other than ``ignore_index``) or a non-finite target.
    """
    t = as_tensor(target, logits, "target", fn)
    n_cls = logits.shape[1] if logits.ndim >= 2 else logits.shape[0]
    if t.dtype == torch.bool:
        t = t.long()
    if allow_soft and tuple(t.shape) == tuple(logits.shape):
        t = t.to(logits.dtype)
        check_finite(t, "target", fn, validate)
        return "soft", t
    idx = _squeeze_channel(t, logits)
    if idx is None:
        soft = (
            f" or one-hot/probability targets of shape {tuple(logits.shape)}" if allow_soft else ""
        )
        raise ShapeError(
            f"{fn}: logits of shape {tuple(logits.shape)} need class-index targets of shape "
            f"{index_shape(logits)}{soft}; received target shape {tuple(t.shape)}."
        )
    if idx.is_floating_point():
        if validate:
            check_finite(idx, "target", fn)
            frac = idx != torch.round(idx)
            if bool(frac.any()):
                raise ConfigError(
                    f"{fn}: class-index targets must be integers; received the value "
                    f"{first_bad(idx, frac)}."
                )
        idx = idx.long()
    elif idx.dtype != torch.long:
        idx = idx.long()
    if validate and idx.numel():
        mn, mx = torch.aminmax(idx)
        if not bool((mn >= 0) & (mx < n_cls)):
            bad = (idx < 0) | (idx >= n_cls)
            if ignore_index is not None:
                bad &= idx != ignore_index
            if bool(bad.any()):
                ign = f" or ignore_index={ignore_index}" if ignore_index is not None else ""
                raise ConfigError(
                    f"{fn}: class-index target out of range: received the label "
                    f"{first_bad(idx, bad)}, but logits have C={n_cls} classes "
                    f"(labels must be in [0, {n_cls - 1}]{ign})."
                )
    return "index", idx


def match_shape(pred: Tensor, target: object, fn: str, pred_name: str = "logits") -> Tensor:
    """``target`` as a tensor of ``pred``'s shape and dtype.

    Shapes that differ only by singleton dimensions (``(N, 1)`` vs ``(N,)``) are
    reconciled; anything else raises ShapeError (no silent broadcasting).
    """
    t = as_tensor(target, pred, "target", fn)
    if tuple(t.shape) != tuple(pred.shape):
        squeeze = [s for s in t.shape if s != 1] == [s for s in pred.shape if s != 1]
        if not (squeeze and t.numel() == pred.numel()):
            raise ShapeError(
                f"{fn}: target must have the shape of the {pred_name} {tuple(pred.shape)}; "
                f"received target shape {tuple(t.shape)}."
            )
        t = t.reshape(pred.shape)
    return t.to(pred.dtype)


def class_weights(
    weight: object, n_cls: int, ref: Tensor, fn: str, name: str = "weight"
) -> Tensor | None:
    """Per-class weights as a 1-D tensor of length C on ``ref``'s device and dtype."""
    if weight is None:
        return None
    if isinstance(weight, (int, float)) and not isinstance(weight, bool):
        raise ConfigError(
            f"{fn}: {name} must be a sequence of {n_cls} per-class weights; received {weight!r}."
        )
    w = as_tensor(weight, ref, name, fn).to(ref.dtype)
    if w.ndim != 1 or w.shape[0] != n_cls:
        raise ShapeError(
            f"{fn}: {name} must hold one weight per class (C={n_cls}); "
            f"received shape {tuple(w.shape)}."
        )
    check_range(w, 0.0, math.inf, name, fn)
    return w


def channel_vector(v: Tensor, logits: Tensor) -> Tensor:
    """Reshape a per-channel vector ``(C,)`` to broadcast along dim 1 of ``logits``."""
    if v.ndim == 1 and logits.ndim > 2:
        return v.reshape((-1,) + (1,) * (logits.ndim - 2))
    return v


def is_sequence(x: object) -> bool:
    return isinstance(x, (Sequence, np.ndarray, Tensor)) and not isinstance(x, str)
