"""Optimizers by Keras name, with Keras' default learning rates."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from cnnkit._core.errors import CnnkitError, ConfigError
from cnnkit.train.arguments import shown
from cnnkit.train.fastpath import make_adam

#: Keras' default learning rate of each optimizer name
DEFAULT_LEARNING_RATES = {"adam": 1e-3, "adamw": 1e-3, "sgd": 0.01, "rmsprop": 1e-3}


def check_learning_rate(learning_rate: Any, where: str = "learning_rate") -> None:
    """None (the optimizer's default) or a finite number >= 0 (a NumPy float too); 0.0 is
    legal (frozen)."""
    if learning_rate is None:
        return
    if isinstance(learning_rate, torch.Tensor) and learning_rate.numel() == 1:
        learning_rate = learning_rate.item()  # torch optimizers take a tensor rate
    if (
        isinstance(learning_rate, bool)
        or not isinstance(learning_rate, numbers.Real)
        or not math.isfinite(learning_rate)
        or learning_rate < 0
    ):
        raise ConfigError(
            f"{where} must be a finite number >= 0 (0.0 freezes the weights); "
            f"received {shown(learning_rate)}."
        )


def check_group_rates(optimizer: torch.optim.Optimizer, what: str) -> None:
    """Every parameter group's ``lr`` of ``optimizer`` is a finite number >= 0."""
    for i, group in enumerate(optimizer.param_groups):
        check_learning_rate(group.get("lr"), f"the learning rate of {what} (param group {i})")


def check_optimizer(spec: Any, learning_rate: Any) -> None:
    """At ``compile``: the learning rate and everything about the optimizer that is known
    before the model's parameters are: a name or :class:`Named` one is built once on a
    stand-in parameter (unknown names, bad options), an instance's rates are read. A
    callable is checked when ``fit`` calls it."""
    check_learning_rate(learning_rate)
    if learning_rate is not None and (
        isinstance(spec, torch.optim.Optimizer) or (callable(spec) and not isinstance(spec, Named))
    ):
        what = (
            f"the {type(spec).__name__} instance passed as optimizer, whose param groups "
            f"already have lr={[g.get('lr') for g in spec.param_groups][:4]}"
            if isinstance(spec, torch.optim.Optimizer)
            else f"the optimizer callable {getattr(spec, '__name__', type(spec).__name__)!r}"
        )
        raise ConfigError(
            f"compile(learning_rate={learning_rate!r}) would be ignored by {what}; set the "
            "rate where the optimizer is built (torch.optim.SGD(params, lr=...)), or pass "
            "an optimizer name ('adam', 'sgd', ...) with learning_rate."
        )
    if isinstance(spec, torch.optim.Optimizer):
        check_group_rates(spec, f"the {type(spec).__name__} passed as optimizer")
    elif isinstance(spec, str | Named):
        make_optimizer(spec, [torch.nn.Parameter(torch.zeros(1))], learning_rate, fused=False)


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
        rate = [k for k in ("lr", "learning_rate") if k in options]
        if rate:
            raise ConfigError(
                f"optimizer {spec!r} got the learning rate as option {rate[0]!r} "
                f"({options[rate[0]]!r}); pass it as compile(learning_rate=...) (a recipe's "
                "compile.learning_rate), where it is checked and applies to every optimizer."
            )
    if callable(spec) and not isinstance(spec, str):
        return _from_callable(spec, params)
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


def _from_callable(make: Any, params) -> torch.optim.Optimizer:
    """``make(params)``: torch's own argument errors and bad rates named as cnnkit errors."""
    name = getattr(make, "__name__", type(make).__name__)
    try:
        optimizer = make(params)
    except CnnkitError:
        raise
    except ValueError as err:  # torch.optim: "Invalid learning rate: -0.1", ...
        raise ConfigError(
            f"the optimizer callable {name!r} was refused by torch ({str(err)[:200]}); check "
            "the learning rate (a finite number >= 0) and the options it passes."
        ) from None
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError(
            f"the optimizer callable {name!r} must return a torch.optim.Optimizer; it "
            f"returned a {type(optimizer).__name__}."
        )
    check_group_rates(optimizer, f"the optimizer {name!r} built")
    return optimizer
