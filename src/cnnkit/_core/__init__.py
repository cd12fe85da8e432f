"""Shared foundations: error types, the registry, small shared types. Imports torch at most."""

from cnnkit._core.errors import CnnkitError, ConfigError, ShapeError
from cnnkit._core.registry import Registry

__version__ = "0.1.0"

__all__ = ["CnnkitError", "ConfigError", "ShapeError", "Registry"]
