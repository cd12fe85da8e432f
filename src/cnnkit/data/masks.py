"""Instance masks from COCO-style annotations: run-length encoding and polygons.

COCO's RLE (T.-Y. Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014;
the ``pycocotools`` mask API) stores a binary ``H x W`` mask in column-major (Fortran)
order as alternating run lengths, starting with a run of zeros (possibly of length 0).
The *compressed* form writes the counts as a string: from the fourth count on, each is
replaced by its difference to the count two before, and every value is cut into 5-bit
groups (low first), each as the character ``48 + group``, with bit 0x20 set while more
groups follow and bit 0x10 of the last group carrying the sign.

Polygons are ``[x0, y0, x1, y1, ...]`` in pixel coordinates, pixel ``(row i, column j)``
covering ``[j, j+1) x [i, i+1)``. :func:`polygons_to_mask` sets the pixels whose centre
``(j + 0.5, i + 0.5)`` is inside (even-odd rule, half-open so that a pixel on an edge
shared by two touching polygons belongs to exactly one). ``pycocotools`` rasterises on a
5x upsampled grid instead; the two agree to within boundary pixels (IoU above 0.99 on the
balloon polygons).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cnnkit._core.errors import CnnkitError


def rle_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO counts of a binary ``(H, W)`` mask (column-major runs, zeros first)."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    return ([0] + counts) if flat[0] else counts


def counts_to_string(counts: Sequence[int]) -> str:
    """COCO's compressed RLE string of a list of counts (``pycocotools``' ``rleToString``)."""
    out = []
    for i, count in enumerate(counts):
        x = int(count)
        if i > 2:
            x -= int(counts[i - 2])
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift: negative values end at -1
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def string_to_counts(s: str | bytes) -> list[int]:
    """Counts of a compressed COCO RLE string (``pycocotools``' ``rleFrString``)."""
    if isinstance(s, bytes):
        s = s.decode("ascii")
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise CnnkitError(f"RLE string ends inside a count: {s[:40]!r}...")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise CnnkitError(f"RLE string has the invalid character {s[p]!r} at {p}.")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_encode(mask: np.ndarray, compressed: bool = True) -> dict:
    """A binary ``(H, W)`` mask -> ``{'size': [H, W], 'counts': str | list[int]}``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise CnnkitError(f"rle_encode needs one (H, W) mask; received shape {mask.shape}.")
    counts = rle_counts(mask)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])],
            "counts": counts_to_string(counts) if compressed else counts}  # fmt: skip


def rle_decode(rle: dict) -> np.ndarray:
    """``{'size': [H, W], 'counts': str | bytes | list[int]}`` -> uint8 ``(H, W)`` 0/1 mask."""
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError) as err:
        raise CnnkitError(
            f"an RLE needs 'size': [H, W] and 'counts'; received {rle!r:.80}."
        ) from err
    if isinstance(counts, (str, bytes)):
        counts = string_to_counts(counts)
    counts = np.asarray(counts, dtype=np.int64)
    if (counts < 0).any() or counts.sum() != h * w:
        raise CnnkitError(
            f"RLE counts sum to {int(counts.sum())} (min {int(counts.min(initial=0))}) but the "
            f"mask has {h} x {w} = {h * w} pixels."
        )
    values = (np.arange(len(counts)) % 2).astype(np.uint8)
    flat = np.repeat(values, counts)
    return flat.reshape((w, h)).T.copy()


def _fill_polygon(out: np.ndarray, xy: np.ndarray) -> None:
    """XOR one polygon (points ``(P, 2)``) into ``out`` by pixel centres, even-odd."""
    h, w = out.shape
    x0, y0 = xy[:, 0], xy[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    r_lo = max(int(np.floor(y0.min() - 0.5)), 0)
    r_hi = min(int(np.ceil(y0.max() - 0.5)) + 1, h)
    if r_lo >= r_hi:
        return
    yc = np.arange(r_lo, r_hi, dtype=np.float64)[:, None] + 0.5
    lo, hi = np.minimum(y0, y1), np.maximum(y0, y1)
    crosses = (yc >= lo) & (yc < hi)
    dy = np.where(y1 != y0, y1 - y0, 1.0)
    xc = x0 + (yc - y0) / dy * (x1 - x0)
    c_lo = max(int(np.floor(x0.min() - 0.5)), 0)
    c_hi = min(int(np.ceil(x0.max() - 0.5)) + 1, w)
    if c_lo >= c_hi:
        return
    # first column whose centre j + 0.5 is at or right of each crossing (window-relative)
    col = np.clip(np.ceil(xc - 0.5) - c_lo, 0, c_hi - c_lo).astype(np.int64)
    rows, edges = np.nonzero(crosses)
    # toggle the inside/outside parity at each crossing, then accumulate along the row
    toggles = np.zeros((r_hi - r_lo, c_hi - c_lo + 1), dtype=np.int32)
    np.add.at(toggles, (rows, col[rows, edges]), 1)
    inside = (np.cumsum(toggles, axis=1)[:, :-1] & 1).astype(bool)
    out[r_lo:r_hi, c_lo:c_hi] ^= inside


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """COCO polygons (each ``[x0, y0, x1, y1, ...]``) -> uint8 ``(H, W)`` union mask.

    Each polygon is filled by the even-odd rule at pixel centres; the parts of an object
    (several polygons) are united.
    """
    mask = np.zeros((height, width), dtype=bool)
    for poly in polygons:
        xy = np.asarray(poly, dtype=np.float64).reshape(-1)
        if xy.size < 6 or xy.size % 2:
            raise CnnkitError(
                f"a polygon needs at least 3 (x, y) points as a flat list; received {xy.size} "
                "numbers."
            )
        part = np.zeros_like(mask)
        _fill_polygon(part, xy.reshape(-1, 2))
        mask |= part
    return mask.astype(np.uint8)
