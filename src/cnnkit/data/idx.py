"""The IDX file format of MNIST and Fashion-MNIST, gzipped or not.

Format (LeCun et al., http://yann.lecun.com/exdb/mnist/): two zero bytes, a type byte
(0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the number
of dimensions, then each dimension as a big-endian uint32, then the data in C order,
big-endian. A file whose data does not fill its dimensions exactly is refused.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from cnnkit._core.errors import CnnkitError

_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"
#: the most dimensions an IDX header may announce (MNIST uses 1 and 3)
MAX_DIMS = 8
#: the largest decompressed IDX payload read, in bytes (MNIST's training images: 47 MB)
MAX_IDX_BYTES = 4 << 30


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(2)
    if head != _GZIP_MAGIC:
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            # read the header, then no more than it announces (plus one byte, to notice
            # extra data): a gzip bomb stops there, or at MAX_IDX_BYTES
            head = f.read(4)
            head += f.read(4 * head[3]) if len(head) == 4 else b""
            data = head + f.read(min(_declared_bytes(head), MAX_IDX_BYTES) + 1)
    except (EOFError, OSError, zlib.error) as err:
        raise CnnkitError(
            f"{path}: the gzip stream is truncated or corrupt ({err}); delete the file and "
            "fetch it again (download=True)."
        ) from err
    if len(data) > MAX_IDX_BYTES:
        raise CnnkitError(
            f"{path}: decompresses to more than {MAX_IDX_BYTES} bytes (MAX_IDX_BYTES); not an "
            "IDX file cnnkit reads."
        )
    return data


def _declared_bytes(head: bytes) -> int:
    """The data size an IDX header announces (Python ints), or MAX_IDX_BYTES if unclear."""
    if len(head) < 4 or head[2] not in _TYPES or len(head) < 4 + 4 * head[3]:
        return MAX_IDX_BYTES
    dims = [int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(head[3])]
    return math.prod(dims) * np.dtype(_TYPES[head[2]]).itemsize


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """An IDX payload (uncompressed bytes) -> a native-endian array of its shape."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise CnnkitError(
            f"{source}: not an IDX file (the first two bytes are {data[:2]!r}, expected b'\\x00\\x00')."
        )
    code, ndim = data[2], data[3]
    if code not in _TYPES:
        raise CnnkitError(
            f"{source}: unknown IDX type byte 0x{code:02x}; expected one of "
            + ", ".join(f"0x{c:02x}" for c in _TYPES)
            + "."
        )
    if ndim > MAX_DIMS:
        raise CnnkitError(
            f"{source}: the IDX header announces {ndim} dimensions; expected at most {MAX_DIMS}."
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CnnkitError(f"{source}: truncated IDX header ({len(data)} bytes).")
    if len(data) - header > MAX_IDX_BYTES:
        raise CnnkitError(
            f"{source}: more than {MAX_IDX_BYTES} bytes of data (MAX_IDX_BYTES); not an IDX "
            "file cnnkit reads."
        )
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_TYPES[code])
    expected = math.prod(dims) * dtype.itemsize  # Python ints: no int64 overflow to 0
    if len(data) - header != expected:
        raise CnnkitError(
            f"{source}: the header announces shape {dims} ({expected} bytes of data) but the "
            f"file holds {len(data) - header}: truncated or corrupt; delete it and download it again."
        )
    arr = np.frombuffer(data, dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False) if dtype.itemsize > 1 else arr


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw, detected by content) into a NumPy array."""
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path))
