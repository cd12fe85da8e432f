"""The model registry: ``create(name, ...)``, ``list_models()``, ``register_model``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from cnnkit._core.errors import ConfigError
from cnnkit._core.registry import Registry

MODELS = Registry("model")


def register_model(
    name: str | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under ``name`` (default: the function's name); duplicates are refused.

    >>> @register_model("tiny_cnn")
    ... def tiny_cnn(num_classes=10, in_channels=1): ...
    """
    return MODELS.register(name)


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return MODELS.names()


def create(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model, e.g. ``create('cifar_cnn', num_classes=10, in_channels=3)``.

    The result is built: no lazy parameters remain.
    """
    builder = MODELS.get(name)
    try:
        model = builder(**kwargs)
    except TypeError as err:
        if "unexpected keyword argument" in str(err):
            import inspect

            params = ", ".join(inspect.signature(builder).parameters)
            raise ConfigError(f"{name}: {err}; it accepts: {params}.") from None
        raise
    model.cnnkit_spec = {"name": name, "kwargs": dict(kwargs)}
    return model
