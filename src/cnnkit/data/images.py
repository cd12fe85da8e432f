"""Decoding image files with Pillow, with errors that name the file.

Pillow decodes lazily: a truncated JPEG or PNG opens fine and fails on first access.
:func:`load_image` forces the decode, so a bad file fails here, naming the path.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageSequence, UnidentifiedImageError

from cnnkit._core.errors import CnnkitError

#: what a file that does not decode raises (DecompressionBombError: over Pillow's pixel limit)
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    Image.DecompressionBombError,
)

IMAGE_EXTENSIONS = (
    ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
)  # fmt: skip


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def load_image(path: str | os.PathLike, mode: str | None = None) -> np.ndarray:
    """Decode ``path`` into a NumPy array ``(H, W)`` or ``(H, W, C)``.

    ``mode`` converts with Pillow (``'RGB'``, ``'L'``, ...); ``None`` keeps the stored
    mode, so palette (``'P'``) images give their palette indices. Raises
    :class:`CnnkitError` naming the file when it does not decode.
    """
    try:
        with Image.open(path) as im:
            im.load()
            if mode is not None and im.mode != mode:
                im = im.convert(mode)
            return np.array(im)
    except _DECODE_ERRORS as err:
        raise CnnkitError(f"{path}: cannot decode the image ({err}).") from err


def load_frames(path: str | os.PathLike) -> list[np.ndarray]:
    """Every page of a multi-page image (TIFF stack) as a list of arrays."""
    try:
        with Image.open(path) as im:
            return [np.array(frame) for frame in ImageSequence.Iterator(im)]
    except _DECODE_ERRORS as err:
        raise CnnkitError(f"{path}: cannot decode the image stack ({err}).") from err


def to_chw_float(image: np.ndarray) -> torch.Tensor:
    """``(H, W)`` or ``(H, W, C)`` uint8 -> ``Tensor[C, H, W]`` float32 in [0, 1]."""
    if image.ndim == 2:
        image = image[:, :, None]
    t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    if t.dtype == torch.uint8:
        return t.to(torch.float32) / 255
    if t.dtype == torch.uint16 or image.dtype == np.uint16:
        return t.to(torch.float32) / 65535
    return t.to(torch.float32)
