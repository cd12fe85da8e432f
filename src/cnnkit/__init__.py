"""cnnkit: the operations, architectures and workflow of a CNN course, on PyTorch.

``import cnnkit`` is light: the torch-based parts (``Sequential``, ``Model``,
``summary``, ...) load on first use, so ``cnnkit.ops.arithmetic`` works without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from cnnkit._core import __version__
from cnnkit._core.errors import CnnkitError, ConfigError, ShapeError

_LAZY = {
    "Sequential": "cnnkit.train.sequential",
    "Model": "cnnkit.train.model",
    "History": "cnnkit.train.model",
    "load": "cnnkit.train.loading",
    "from_keras": "cnnkit.train.keras_import",
    "seed_everything": "cnnkit.train.seed",
    "summary": "cnnkit.layers.summary",
    "set_trainable": "cnnkit.layers.trainable",
}
_SUBPACKAGES = (
    "layers",
    "models",
    "ops",
    "losses",
    "metrics",
    "data",
    "train",
    "callbacks",
    "interpret",
    "report",
)

__all__ = ["CnnkitError", "ConfigError", "ShapeError", "__version__", *_LAZY, *_SUBPACKAGES]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        value = importlib.import_module(f"cnnkit.{name}")
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'cnnkit' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
