"""Small PNG data URIs for the explain pages: arrays to images, downsampled, colour-mapped."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["array_to_data_uri", "colormap", "downsample", "plane", "tile", "to_display"]


def downsample(a: np.ndarray, max_side: int) -> np.ndarray:
    """Block-average ``a`` (``[H, W]`` or ``[H, W, 3]``) so its longer side is at most
    ``max_side`` (integer factors; nothing happens to small arrays)."""
    h, w = a.shape[:2]
    f = max(1, -(-max(h, w) // max_side))
    if f == 1:
        return a
    hh, ww = h // f * f, w // f * f
    a = a[:hh, :ww]
    shape = (hh // f, f, ww // f, f) + a.shape[2:]
    return a.reshape(shape).mean(axis=(1, 3))


def _unit(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def colormap(a: np.ndarray, name: str = "viridis", normalize: bool = True) -> np.ndarray:
    """``[H, W]`` values -> ``uint8 [H, W, 3]`` through a matplotlib colour map."""
    from matplotlib import colormaps

    v = _unit(a) if normalize else np.clip(np.asarray(a, dtype=np.float64), 0.0, 1.0)
    return (colormaps[name](v)[..., :3] * 255).round().astype(np.uint8)


STRIP_HEIGHT = 12


def plane(a: Any) -> np.ndarray:
    """A 2D view of a map: ``[H, W]`` as is, a 1D ``[L]`` as a strip of
    ``STRIP_HEIGHT`` rows, and of a volume ``[D, ..., H, W]`` the middle slices."""
    a = np.asarray(a.detach().cpu().float() if hasattr(a, "detach") else a, dtype=np.float64)
    while a.ndim > 2:
        a = a[a.shape[0] // 2]
    if a.ndim == 1:
        a = np.repeat(a[None, :], STRIP_HEIGHT, axis=0)
    return a


def to_display(x: Any) -> np.ndarray:
    """One input sample ``[C, *spatial]`` -> ``uint8`` gray ``[H, W]`` or RGB ``[H, W, 3]``,
    min-max scaled (a 1D signal becomes a strip, a volume its middle slice)."""
    a = np.asarray(x.detach().cpu().float() if hasattr(x, "detach") else x, dtype=np.float64)
    if a.shape[0] == 3 and a.ndim == 3:
        img = np.moveaxis(_unit(a), 0, -1)
        return (img * 255).round().astype(np.uint8)
    return (_unit(plane(a[0])) * 255).round().astype(np.uint8)


def array_to_data_uri(a: np.ndarray) -> str:
    """``uint8 [H, W]`` or ``[H, W, 3]`` -> ``data:image/png;base64,...``."""
    a = np.asarray(a)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0.0, 1.0) * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def tile(images: list[np.ndarray], ncols: int | None = None, gap: int = 1) -> np.ndarray:
    """Same-size ``uint8 [h, w, 3]`` images in a grid on white, ``gap`` pixels apart and
    around (``ncols`` default ``ceil(sqrt(n))``)."""
    n = len(images)
    h, w = images[0].shape[:2]
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = -(-n // ncols)
    out = np.full((nrows * (h + gap) + gap, ncols * (w + gap) + gap, 3), 255, dtype=np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, ncols)
        out[
            gap + r * (h + gap) : gap + r * (h + gap) + h,
            gap + c * (w + gap) : gap + c * (w + gap) + w,
        ] = img
    return out
