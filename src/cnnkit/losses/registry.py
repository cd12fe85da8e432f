"""Keras loss names -> callables ``loss(logits, target)`` that take logits.

``compile(loss='categorical_crossentropy')`` in the decks pairs a softmax output with
one-hot targets; cnnkit computes every loss from the logits (the output before the
final softmax / sigmoid), which is stable and avoids a double softmax.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import Tensor

from cnnkit._core.errors import ConfigError, ShapeError, check_choice, did_you_mean
from cnnkit.losses._checks import as_tensor, check_logits
from cnnkit.losses.classification import (
    binary_cross_entropy,
    cross_entropy,
    focal_loss,
)
from cnnkit.losses.regression import huber, mae, mse, smooth_l1_loss
from cnnkit.losses.segmentation import dice_loss

__all__ = ["get_loss", "list_losses"]

LossFn = Callable[[Tensor, Tensor], Tensor]


def categorical_crossentropy(logits: Tensor, target: Tensor, **kwargs: Any) -> Tensor:
    """Keras' ``categorical_crossentropy`` from logits: one-hot / probability targets of
    the logits' shape ``(N, C, ...)``."""
    check_logits(logits, "categorical_crossentropy")
    t = as_tensor(target, logits, "target", "categorical_crossentropy")
    if tuple(t.shape) != tuple(logits.shape):
        raise ShapeError(
            "categorical_crossentropy expects one-hot targets of the logits' shape "
            f"{tuple(logits.shape)}; received target shape {tuple(t.shape)}. For class-index "
            "targets use 'sparse_categorical_crossentropy'."
        )
    return cross_entropy(logits, t, **kwargs)


def sparse_categorical_crossentropy(logits: Tensor, target: Tensor, **kwargs: Any) -> Tensor:
    """Keras' ``sparse_categorical_crossentropy`` from logits: class-index targets
    ``(N, ...)`` (or ``(N, 1, ...)``)."""
    check_logits(logits, "sparse_categorical_crossentropy")
    t = as_tensor(target, logits, "target", "sparse_categorical_crossentropy")
    if tuple(t.shape) == tuple(logits.shape) and logits.ndim >= 2 and logits.shape[1] > 1:
        raise ShapeError(
            "sparse_categorical_crossentropy expects class-index targets of shape "
            f"{tuple(logits.shape[:1]) + tuple(logits.shape[2:])}; received one-hot-shaped "
            f"targets {tuple(t.shape)}. For one-hot targets use 'categorical_crossentropy'."
        )
    return cross_entropy(logits, t, **kwargs)


_LOSSES: dict[str, Callable[..., Tensor]] = {
    "categorical_crossentropy": categorical_crossentropy,
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
    "binary_crossentropy": binary_cross_entropy,
    "mse": mse,
    "mae": mae,
    "huber": huber,
    "dice": dice_loss,
    "focal": focal_loss,
    "smooth_l1": smooth_l1_loss,
    "cross_entropy": cross_entropy,
}
_ALIASES = {
    "mean_squared_error": "mse",
    "mean_absolute_error": "mae",
    "huber_loss": "huber",
    "dice_loss": "dice",
    "focal_loss": "focal",
    "smooth_l1_loss": "smooth_l1",
    "binary_cross_entropy": "binary_crossentropy",
}


def list_losses() -> list[str]:
    """Every name :func:`get_loss` accepts."""
    return sorted(set(_LOSSES) | set(_ALIASES))


def _check_kwargs(fn: Callable[..., Any], name: str, kwargs: dict[str, Any]) -> None:
    target = (
        cross_entropy if fn in (categorical_crossentropy, sparse_categorical_crossentropy) else fn
    )
    params = [
        p.name
        for p in list(inspect.signature(target).parameters.values())[2:]
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    for key in kwargs:
        if key not in params:
            raise ConfigError(
                f"Loss {name!r} takes no argument {key!r}; it accepts {', '.join(params)}."
                + did_you_mean(key, params)
            )


def get_loss(name_or_callable: str | LossFn, **kwargs: Any) -> LossFn:
    """A loss ``loss(logits, target) -> Tensor`` from a Keras name or a callable.

    Names: 'categorical_crossentropy' (one-hot targets), 'sparse_categorical_crossentropy'
    (class-index targets), 'binary_crossentropy', 'mse' / 'mean_squared_error',
    'mae' / 'mean_absolute_error', 'huber', 'dice', 'focal', 'smooth_l1', 'cross_entropy'
    (either target form); see :func:`list_losses`. Every returned loss takes LOGITS.
    ``kwargs`` are bound to the loss (``get_loss('focal', gamma=3.0)``); a callable is
    returned as is (or with the kwargs bound).
    """
    if callable(name_or_callable) and not isinstance(name_or_callable, str):
        if not kwargs:
            return name_or_callable
        fn, canonical = name_or_callable, getattr(name_or_callable, "__name__", "loss")
    elif isinstance(name_or_callable, str):
        key = name_or_callable.strip().lower()
        key = _ALIASES.get(key, key)
        if key not in _LOSSES:
            check_choice("loss", name_or_callable, list_losses())
        fn, canonical = _LOSSES[key], key
        _check_kwargs(fn, canonical, kwargs)
    else:
        raise ConfigError(
            "loss must be a name (one of "
            + ", ".join(repr(n) for n in list_losses())
            + f") or a callable loss(logits, target); received {name_or_callable!r}."
        )

    bound = dict(kwargs)

    def loss(logits: Tensor, target: Tensor) -> Tensor:
        return fn(logits, target, **bound)

    loss.__name__ = canonical
    loss.__qualname__ = canonical
    loss.__doc__ = fn.__doc__
    return loss
