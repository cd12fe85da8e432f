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


class Named:
    """An optimizer by name with options for its torch class, e.g. ``Named('sgd',
    momentum=0.9, weight_decay=1e-4)`` (a recipe's ``optimizer: {name: sgd, args: ...}``);
    ``compile``'s ``learning_rate`` applies as for a plain name."""

    def __init__(self, name: str, **options: Any) -> None:
        self.name, self.options = name, options

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"Named({self.name!r}{', ' if args else ''}{args})"


#: the torch classes of the names whose options pass straight through
_PLAIN = {"sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop}


def make_optimizer(
    spec: Any, params, lr: float | None, fused: bool = True
) -> torch.optim.Optimizer:
    """``'adam'``, ``'adamw'``, ``'sgd'``, ``'rmsprop'`` (``lr=None``: Keras' default), a
    :class:`Named` one with options, an optimizer instance, or a callable ``params ->
    optimizer``."""
    if isinstance(spec, torch.optim.Optimizer):
        return spec
    options: dict[str, Any] = {}
    if isinstance(spec, Named):
        spec, options = spec.name, dict(spec.options)
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
        if options:
            raise ConfigError(
                f"options {sorted(options)} are taken by 'sgd' and 'rmsprop'; for {name} pass "
                "a callable params -> torch.optim optimizer."
            )
        return make_adam(params, lr, weight_decay_decoupled=name == "adamw", fused=fused)
    options = {"momentum": 0.0, **options} if name == "sgd" else options
    try:
        return _PLAIN[name](params, lr=lr, foreach=True, **options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"optimizer {name!r} with options {options}: {err}") from None
