"""cnnkit's exception types.

Every error cnnkit raises on bad input is one of these, and its message names the
value received and what would work.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CnnkitError(Exception):
    """Base class of every error cnnkit raises on purpose."""


class ShapeError(CnnkitError, ValueError):
    """A shape, size or channel count that does not fit the operation.

    Subclasses ``ValueError`` so code that catches ``ValueError`` keeps working.
    """


class ConfigError(CnnkitError, ValueError):
    """An argument or configuration value that is not allowed."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A ``" Did you mean 'x'?"`` suffix for an unknown name, or ``""``."""
    close = difflib.get_close_matches(str(name), list(choices), n=3, cutoff=0.5)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


def check_choice(kind: str, value: object, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ConfigError naming both."""
    choices = list(choices)
    if isinstance(value, str) and value in choices:
        return value
    raise ConfigError(
        f"Unknown {kind} {value!r}; expected one of {', '.join(repr(c) for c in choices)}."
        + (did_you_mean(value, choices) if isinstance(value, str) else "")
    )
