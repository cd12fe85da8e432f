"""Keeping a path read from a data file (or a folder listing) inside its folder."""

from __future__ import annotations

import os
from pathlib import Path, PurePath

from cnnkit._core.errors import CnnkitError, short_repr


def inside(root: str | os.PathLike, name: object, what: str) -> Path:
    """``root / name``, refused unless it stays inside ``root``.

    ``name`` comes from a file (a COCO ``file_name``, a VIA ``filename``) or a listing
    (a file found in a folder). An absolute path, a ``..`` that climbs out, or a symbolic
    link whose target lies outside ``root`` raises :class:`CnnkitError` naming ``what``
    (the entry), the name and the root. Links that stay inside are fine.
    """
    root = Path(root)
    if not isinstance(name, str | PurePath) or not str(name) or "\x00" in str(name):
        raise CnnkitError(
            f"{what}: the file name {short_repr(name, 80)} is not a relative path inside {root}."
        )
    if Path(name).is_absolute():
        raise CnnkitError(
            f"{what}: the file name {short_repr(str(name), 120)} is an absolute path; names "
            f"must be relative to {root} and stay inside it."
        )
    target = root / name
    try:
        resolved, base = target.resolve(), root.resolve()
    except (OSError, RuntimeError) as err:  # a link loop
        raise CnnkitError(
            f"{what}: {short_repr(str(name), 120)} cannot be resolved ({err})."
        ) from None
    if not resolved.is_relative_to(base):
        raise CnnkitError(
            f"{what}: {short_repr(str(name), 120)} leads outside {root} (to {short_repr(str(resolved), 120)}); "
            "names must stay inside it (no '..' that climbs out, no link that leaves it)."
        )
    return target
