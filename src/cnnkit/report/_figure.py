"""Headless matplotlib figures without pyplot: a ``Figure`` on an Agg canvas, saved as
PNG and dropped, so no global pyplot state (open figures, the backend) ever changes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit._core.errors import ShapeError

#: default resolution of saved plots (small files, quick tests)
DPI = 100


@contextlib.contextmanager
def figure(path: str | os.PathLike, figsize: tuple[float, float], dpi: int = DPI) -> Iterator[Any]:
    """Yield a fresh ``matplotlib.figure.Figure``; on exit save it to ``path`` (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    yield fig
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=dpi, bbox_inches="tight")
    fig.clear()


def to_numpy(a: Any) -> np.ndarray:
    """A NumPy array from a tensor, array or nested list."""
    if hasattr(a, "detach"):
        a = a.detach().float().cpu().numpy()
    return np.asarray(a)


def display_image(img: Any, size: tuple[int, int] | None = None) -> np.ndarray:
    """One image as ``[H, W]`` (gray) or ``[H, W, 3]`` floats in [0, 1] for ``imshow``.

    Accepts ``[H, W]``, ``[C, H, W]`` or ``[H, W, C]`` (C = 1 or 3; other channel counts
    are averaged to gray). ``size`` (H, W), when known, settles the layout.
    """
    a = to_numpy(img).astype(np.float64)
    if a.ndim == 3:
        size = tuple(size) if size is not None else None
        if size is not None and a.shape[1:] == size:
            channels_first = True
        elif size is not None and a.shape[:2] == size:
            channels_first = False
        else:
            channels_first = not (a.shape[-1] in (1, 3, 4) and a.shape[0] not in (1, 3, 4))
        if channels_first:
            a = np.moveaxis(a, 0, -1)
        if a.shape[-1] in (3, 4):
            a = a[..., :3]
        elif a.shape[-1] == 1:
            a = a[..., 0]
        else:
            a = a.mean(axis=-1)
    if a.ndim not in (2, 3):
        raise ShapeError(f"Expected an image [H, W], [C, H, W] or [H, W, C]; received {a.shape}.")
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if lo < 0 or hi > 1:
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return a


def batch(images: Any, per_sample_ndim: int, name: str) -> list[np.ndarray]:
    """Split ``images`` into a list of samples: one sample has ``per_sample_ndim`` dims,
    a batch one more."""
    a = to_numpy(images)
    if a.ndim == per_sample_ndim:
        return [a]
    if a.ndim == per_sample_ndim + 1:
        return list(a)
    raise ShapeError(
        f"{name} must have {per_sample_ndim} dims (one sample) or {per_sample_ndim + 1} "
        f"(a batch); received shape {a.shape}."
    )


def gray(img: np.ndarray) -> np.ndarray:
    """Luminance of a display image (for coloured overlays)."""
    return img if img.ndim == 2 else img @ np.array([0.299, 0.587, 0.114])
