"""Loading pickled data files without running the code a pickle can carry.

A pickle can name any importable callable (``os.system``, ``subprocess.Popen``, ...) and
have it called while loading. :class:`RestrictedUnpickler` resolves only the names that
plain NumPy arrays need, so a file can hold dicts, lists, tuples, strings, bytes, numbers
and ``numpy.ndarray``s, and anything else is refused before it is called:

- ``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``,
  ``numpy.ndarray``, ``numpy.dtype`` (an array's ``__reduce__``);
- ``numpy.core.multiarray.scalar`` / ``numpy._core.multiarray.scalar`` (NumPy scalars);
- ``numpy.core.numeric._frombuffer`` / ``numpy._core.numeric._frombuffer`` (arrays at
  pickle protocol 5);
- ``_codecs.encode`` with the latin-1 codec only (how Python 3 writes ``bytes`` at
  pickle protocol 2).

Dicts, lists, tuples, strings, bytes and numbers need no name lookup at all.
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
import pickletools
from typing import Any

import numpy as np

from cnnkit._core.errors import CnnkitError

_RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]
_SCALAR = np.float64(0).__reduce__()[0]
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]  # protocol 5 arrays


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"_codecs.encode with codec {encoding!r} is not allowed")
    return codecs.encode(text, "latin1")


ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` that resolves only the names in :data:`ALLOWED`."""

    def __init__(self, file, *, source: str = "<pickle>", encoding: str = "bytes"):
        super().__init__(file, encoding=encoding)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise CnnkitError(
                f"{self.source}: the pickle asks for {module}.{name}; only plain arrays, "
                "lists, dicts, strings and numbers are allowed, so it was refused without "
                "running it (the file is not a plain data file, or it is malicious)."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise CnnkitError(f"{self.source}: the pickle uses persistent ids; refused.")


def restricted_loads(data: bytes, *, source: str = "<pickle>", encoding: str = "bytes") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; errors name ``source``.

    ``encoding='bytes'`` keeps Python 2 ``str`` objects (as in the CIFAR files) as bytes.
    """
    try:
        # a first pass over the opcodes checks that every length field fits in the data, so
        # a damaged length cannot make the unpickler allocate gigabytes before it notices
        for _ in pickletools.genops(io.BytesIO(data)):
            pass
        return RestrictedUnpickler(io.BytesIO(data), source=source, encoding=encoding).load()
    except CnnkitError:
        raise
    except (
        pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
        MemoryError, OverflowError, RecursionError,
    ) as err:  # fmt: skip
        raise CnnkitError(f"{source}: truncated or not a valid pickle ({err!r}).") from err


def restricted_load(path: str | os.PathLike, *, encoding: str = "bytes") -> Any:
    """Unpickle the file at ``path`` with :class:`RestrictedUnpickler`."""
    with open(path, "rb") as f:
        data = f.read()
    return restricted_loads(data, source=str(path), encoding=encoding)
