"""Optimizers by Keras name, with Keras' default learning rates."""

from __future__ import annotations

import math
from typing import Any

import torch

from cnnkit._core.errors import ConfigError
from cnnkit.train.fastpath import make_adam

#: Keras' default learning rate of each optimizer name
DEFAULT_LEARNING_RATES = {"adam": 1e-3, "adamw": 1e-3, "sgd": 0.01, "rmsprop": 1e-3}


def check_learning_rate(learning_rate: Any) -> None:
    """None (the optimizer's default) or a finite number >= 0; 0.0 is legal (frozen)."""
    if learning_rate is None:
        return
    if (
        isinstance(learning_rate, bool)
        or not isinstance(learning_rate, int | float)
        or not math.isfinite(learning_rate)
        or learning_rate < 0
    ):
        raise ConfigError(
            "learning_rate must be a finite number >= 0 (0.0 freezes the weights); "
            f"received {learning_rate!r}."
        )


def make_optimizer(
    spec: Any, params, lr: float | None, fused: bool = True
) -> torch.optim.Optimizer:
    """``'adam'``, ``'adamw'``, ``'sgd'``, ``'rmsprop'`` (``lr=None``: Keras' default), an
    optimizer instance, or a callable ``params -> optimizer``."""
    if isinstance(spec, torch.optim.Optimizer):
        return spec
    if callable(spec) and not isinstance(spec, str):
        return spec(params)
    name = str(spec).lower()
    if name not in DEFAULT_LEARNING_RATES:
        raise ConfigError(
            f"Unknown optimizer {spec!r}; expected 'adam', 'adamw', 'sgd', 'rmsprop', a "
            "torch.optim.Optimizer or a callable params -> optimizer."
        )
    params = list(params)
    lr = DEFAULT_LEARNING_RATES[name] if lr is None else lr  # 0.0 stays 0.0
    if name in ("adam", "adamw"):  # fast path: fused=True where supported, else foreach
        return make_adam(params, lr, weight_decay_decoupled=name == "adamw", fused=fused)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.0, foreach=True)
    return torch.optim.RMSprop(params, lr=lr, foreach=True)
