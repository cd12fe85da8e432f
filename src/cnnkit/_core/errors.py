"""cnnkit's exception types.

Every error cnnkit raises on bad input is one of these, and its message names the
value received and what would work.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator


class CnnkitError(Exception):
    """Base class of every error cnnkit raises on purpose.

    Raised as such for problems with files and runs: a damaged or altered saved model or
    checkpoint (the SHA-256 recorded in its ``model.json`` differs; the message names the
    file), a folder holding a pickle instead of safetensors + JSON, a dataset file that is
    truncated or does not decode (IDX, CIFAR, UCR, COCO/VIA JSON, images), an unsafe
    archive member, a download whose checksum differs, a model that cannot be exported to
    ONNX, a NaN loss during ``fit``. Catch ``CnnkitError`` to handle every deliberate
    cnnkit error; its message names the received value and what would work.
    """


class ShapeError(CnnkitError, ValueError):
    """A shape, size or channel count that does not fit the operation.

    Examples: an input of the wrong rank or channel count for a layer, a non-integral
    output size (``conv_output_size(7, 3, stride=3)``), a kernel or pool window larger
    than its (padded) input, a non-float input to a conv or dense layer, a crop larger than
    the image, outputs and targets that do not pair up.

    Subclasses ``ValueError`` so code that catches ``ValueError`` keeps working.
    """


class ConfigError(CnnkitError, ValueError):
    """An argument or configuration value that is not allowed.

    Examples: unknown names (model, loss, metric, optimizer, padding, recipe keys; with
    a "did you mean"), zero or negative sizes, rates outside their range, labels outside
    ``[0, C)``, masks with unknown classes, boxes with ``x2 < x1``, NaN/inf targets,
    empty datasets, YAML files that are not safe plain data (aliases, over 1 MB or over
    10,000 values: see :mod:`cnnkit._core.safe_yaml`).

    Subclasses ``ValueError`` so code that catches ``ValueError`` keeps working.
    """


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


def short_repr(value: object, limit: int = 200) -> str:
    """``repr(value)``, cut to at most ``limit`` characters (ending ``...``).

    Built piece by piece and stopped at the limit, so a huge or deeply nested user value
    (a list of a billion items, a YAML bomb) costs no more than ``limit`` characters; a
    value whose repr fits is returned exactly as ``repr`` writes it.
    """
    out: list[str] = []
    size = 0
    for piece in _repr_pieces(value, 0):
        out.append(piece)
        size += len(piece)
        if size > limit:
            return "".join(out)[: max(limit - 3, 0)] + "..."
    return "".join(out)


def _repr_pieces(value: object, depth: int) -> Iterator[str]:
    if depth > 20:
        yield "..."
        return
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        if isinstance(value, dict):
            open_, close = "{", "}"
        elif isinstance(value, list):
            open_, close = "[", "]"
        elif isinstance(value, tuple):
            open_, close = "(", ",)" if len(value) == 1 else ")"
        else:
            if not value:
                yield f"{type(value).__name__}()"
                return
            open_, close = (
                ("{", "}") if type(value) is set else (f"{type(value).__name__}({{", "})")
            )
        yield open_
        for i, item in enumerate(value.items() if isinstance(value, dict) else value):
            if i:
                yield ", "
            if isinstance(value, dict):
                yield from _repr_pieces(item[0], depth + 1)
                yield ": "
                item = item[1]
            yield from _repr_pieces(item, depth + 1)
        yield close
        return
    if isinstance(value, (str, bytes)) and len(value) > 4096:
        value = value[:4096]  # the cut value's repr is as long as the limit can show
    try:
        yield repr(value)
    except Exception:  # an int too long to print, a broken __repr__
        yield f"<{type(value).__name__}>"


def short(value: object, limit: int = 80) -> str:
    """:func:`short_repr` with a shorter default: a value read from a file, in a message."""
    return short_repr(value, limit)
