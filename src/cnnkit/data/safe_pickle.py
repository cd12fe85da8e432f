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

A pickle can also make a tiny file expand into a huge value without naming anything: its
memo lets it refer to an object built earlier, so a list holding the same list nine times,
nested a dozen levels, is 10^12 elements to anything that walks it (``np.asarray``). The
unpickler therefore also refuses, before building anything large:

- a file of more than :data:`MAX_PICKLE_OPCODES` opcodes (every object costs at least one,
  so this caps the objects created);
- a second reference (memo ``GET``/``BINGET``/``LONG_BINGET``) to a container (list, dict,
  tuple, set), an array, or a string/bytes over :data:`MAX_SHARED_BYTES`: plain data
  files never share these, so a file costs no more than its size. Shared numbers, short
  strings, dtypes and the allowed functions (how NumPy writes arrays) stay allowed.
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
import pickletools
import struct
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


#: the most opcodes a pickle may hold (CIFAR-100's training batch has about 250,000)
MAX_PICKLE_OPCODES = 2_000_000
#: the longest str/bytes a pickle may refer to twice (longer ones must be written once)
MAX_SHARED_BYTES = 256
_SHAREABLE = (int, float, complex, bool, type(None), np.dtype, np.generic)


class RestrictedUnpickler(pickle._Unpickler):
    """An unpickler that resolves only the names in :data:`ALLOWED` and refuses shared
    references to containers (see the module docstring).

    Built on the pure-Python ``pickle._Unpickler``, whose opcode table can be extended:
    the memo ``GET`` opcodes are replaced by ones that check what they share.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, *, source: str = "<pickle>", encoding: str = "bytes"):
        super().__init__(file, encoding=encoding)
        self.source = source

    def _shared(self, index: int) -> None:
        try:
            value = self.memo[index]
        except KeyError:
            raise pickle.UnpicklingError(f"memo key {index} is not defined") from None
        small = isinstance(value, (str, bytes)) and len(value) <= MAX_SHARED_BYTES
        if not (small or isinstance(value, _SHAREABLE) or _is_allowed(value)):
            size = f" of {len(value)}" if hasattr(value, "__len__") else ""
            raise CnnkitError(
                f"{self.source}: the pickle refers a second time to a {type(value).__name__}"
                f"{size} it built before (a shared reference); plain data files never do, and "
                "it is how a tiny file expands into a huge value, so it was refused."
            )
        self.append(value)

    def _load_get(self) -> None:
        self._shared(int(self.readline()[:-1]))

    def _load_binget(self) -> None:
        self._shared(self.read(1)[0])

    def _load_long_binget(self) -> None:
        self._shared(struct.unpack("<I", self.read(4))[0])

    dispatch[pickle.GET[0]] = _load_get
    dispatch[pickle.BINGET[0]] = _load_binget
    dispatch[pickle.LONG_BINGET[0]] = _load_long_binget

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


def _is_allowed(value: Any) -> bool:
    return any(value is fn for fn in ALLOWED.values())


def restricted_loads(data: bytes, *, source: str = "<pickle>", encoding: str = "bytes") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; errors name ``source``.

    ``encoding='bytes'`` keeps Python 2 ``str`` objects (as in the CIFAR files) as bytes.
    """
    try:
        # a first pass over the opcodes checks that every length field fits in the data, so
        # a damaged length cannot make the unpickler allocate gigabytes before it notices
        for count, _ in enumerate(pickletools.genops(io.BytesIO(data)), 1):
            if count > MAX_PICKLE_OPCODES:
                raise CnnkitError(
                    f"{source}: the pickle holds more than {MAX_PICKLE_OPCODES} opcodes "
                    "(MAX_PICKLE_OPCODES); a data file of arrays needs far fewer, so it was "
                    "refused before building anything."
                )
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
