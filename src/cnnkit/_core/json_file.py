"""JSON files from elsewhere, read with a size bound: one reader for every JSON file
cnnkit parses (model.json, checkpoint manifests, a run folder's metrics, COCO
annotations, pretrained manifests).

``read_json(path, max_bytes, what)`` checks the size before reading, and turns every way a
file can be wrong into a :class:`CnnkitError` naming it: too large, not UTF-8, not JSON,
nested deeper than Python's parser can follow (``[[[[...`` is a ``RecursionError`` in
``json``), or unreadable. A missing file is ``FileNotFoundError`` for the caller to word.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cnnkit._core.errors import CnnkitError, short

#: the largest file of a run folder cnnkit reads back (metrics.json with a confusion
#: matrix of 1,000 classes is about 10 MB; history.csv, environment.json, summaries)
MAX_RUN_FILE_BYTES = 64 << 20


def check_size(path: Path, max_bytes: int, what: str, hint: str = "") -> None:
    """A ``CnnkitError`` when ``path`` holds more than ``max_bytes`` bytes (``OSError``
    passes through); ``what`` names the kind of file, ``hint`` e.g. which constant to raise."""
    size = path.stat().st_size
    if size > max_bytes:
        raise CnnkitError(
            f"{path} is {size} bytes, over the limit of {max_bytes} for {what}"
            + (f" ({hint})" if hint else "")
            + "."
        )


def read_json(path: str | os.PathLike, max_bytes: int, what: str, hint: str = "") -> Any:
    """The parsed JSON of ``path``, at most ``max_bytes`` long (checked before reading).

    ``what`` names the kind of file in messages (``'a cnnkit model.json'``); ``hint`` is
    added to the size message (e.g. which constant to raise)."""
    path = Path(path)
    try:
        check_size(path, max_bytes, what, hint)
        with open(path, encoding="utf-8") as fh:
            text = fh.read(max_bytes + 1)  # the file may grow between stat and read
    except FileNotFoundError:
        raise
    except OSError as err:
        raise CnnkitError(f"{path} cannot be read: {err}.") from None
    except UnicodeDecodeError as err:
        raise CnnkitError(f"{path} is damaged: not UTF-8 text ({err.reason}).") from None
    if len(text) > max_bytes:
        raise CnnkitError(f"{path} grew over the limit of {max_bytes} bytes while read.")
    try:
        return json.loads(text)
    except ValueError as err:
        raise CnnkitError(f"{path} is damaged: not valid JSON ({short(str(err), 200)}).") from None
    except RecursionError:
        raise CnnkitError(f"{path}: the JSON is nested too deeply to be {what}.") from None
