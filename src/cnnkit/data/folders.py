"""Image files in folders: classification (one sub-folder per class) and segmentation.

- :func:`image_folder` follows torchvision's ``ImageFolder`` layout:
  ``root/<class name>/<image>``, classes in sorted order.
- :func:`segmentation_folder` pairs ``images/<stem>.<ext>`` with ``masks/<stem>.<ext>``;
  masks are class-index images (``L``/``P``/``I`` modes, the value or palette index is
  the class, as in PASCAL VOC's ``SegmentationClass`` PNGs) or RGB images whose colours
  map to classes through ``palette``.

Images are decoded per item (so large sets stay on disk) into float32 ``[C, H, W]`` in
[0, 1]; masks into int64 ``[H, W]``. A file that does not decode, a mask value outside the
class range, or a colour not in the palette raises :class:`CnnkitError` naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cnnkit._core.errors import CnnkitError, ConfigError
from cnnkit._core.paths import inside
from cnnkit.data.base import JointTransform
from cnnkit.data.images import is_image_file, load_image, to_chw_float


class ImageFolderDataset(Dataset):
    """``(image Tensor[C, H, W] float32, label int)`` pairs from ``root/<class>/<file>``."""

    def __init__(self, samples, classes, mode, transform):
        self.samples = samples
        self.classes = classes
        self.mode = mode
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        image = to_chw_float(load_image(path, self.mode))
        label = torch.tensor(label, dtype=torch.long)
        if self.transform is not None:
            image, label = self.transform(image, label)
        return image, label

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]


def image_folder(
    root: str | os.PathLike,
    *,
    mode: str | None = "RGB",
    transform: JointTransform | None = None,
) -> ImageFolderDataset:
    """Classification images stored as ``root/<class name>/<image file>``.

    Args:
        root: the folder of class sub-folders; classes are the sub-folder names, sorted
            (label ``i`` = ``classes[i]``).
        mode: Pillow mode every image is converted to (``'RGB'``, ``'L'``), or ``None``.
        transform: joint transform ``t(image, label) -> (image, label)`` per item.
    """
    root = Path(root)
    if not root.is_dir():
        raise CnnkitError(f"image_folder: {root} is not a folder.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise CnnkitError(
            f"image_folder: {root} has no class sub-folders; expected the layout root/<class>/<image>."
        )
    samples = []
    for label, name in enumerate(classes):
        folder = inside(root, name, f"image_folder: class folder {name!r}")
        files = sorted(p for p in folder.rglob("*") if is_image_file(p))
        # a link may point anywhere: every file must resolve inside root
        samples += [(inside(root, p.relative_to(root), "image_folder"), label) for p in files]
    if not samples:
        raise CnnkitError(f"image_folder: no image files under {root}/<class>/.")
    return ImageFolderDataset(samples, classes, mode, transform)


class SegmentationFolderDataset(Dataset):
    """``(image Tensor[C, H, W] float32, mask Tensor[H, W] int64)`` pairs."""

    def __init__(self, pairs, palette, num_classes, ignore_index, mode, transform):
        self.pairs = pairs
        self.palette = palette
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mode = mode
        self.transform = transform
        if palette is not None:
            codes = _colour_codes(np.asarray(palette, dtype=np.int64))
            self._order = np.argsort(codes)
            self._codes = codes[self._order]

    def __len__(self) -> int:
        return len(self.pairs)

    def _classes_from_colours(self, mask: np.ndarray, path: Path) -> np.ndarray:
        if mask.ndim != 3 or mask.shape[2] < 3:
            raise CnnkitError(
                f"{path}: a palette mask must be an RGB image; found shape {mask.shape}."
            )
        codes = _colour_codes(mask[..., :3].astype(np.int64))
        pos = np.clip(np.searchsorted(self._codes, codes), 0, len(self._codes) - 1)
        unknown = self._codes[pos] != codes
        if unknown.any():
            colours = np.unique(codes[unknown])
            shown = ", ".join(str(tuple(int(c) for c in _decode(v))) for v in colours[:5])
            raise CnnkitError(
                f"{path}: {int(unknown.sum())} pixels have colours not in the palette "
                f"(e.g. {shown}); the palette has {len(self._codes)} colours."
            )
        return self._order[pos]

    def load_mask(self, index: int) -> torch.Tensor:
        path = self.pairs[index][1]
        if self.palette is not None:
            mask = self._classes_from_colours(load_image(path, "RGB"), path)
        else:
            mask = load_image(path)
            if mask.ndim != 2:
                raise CnnkitError(
                    f"{path}: a class-index mask must have one channel (modes L, P, I); found "
                    f"shape {mask.shape}. For colour masks pass palette=[(r, g, b), ...]."
                )
        mask = mask.astype(np.int64)
        if self.num_classes is not None:
            bad = (mask < 0) | (mask >= self.num_classes)
            ignore = ""
            if self.ignore_index is not None:
                bad &= mask != self.ignore_index
                ignore = f" or the ignore_index {self.ignore_index}"
            if bad.any():
                values = np.unique(mask[bad])
                raise CnnkitError(
                    f"{path}: mask value {int(values[0])} (of {values.tolist()[:8]}) is outside "
                    f"the class range 0..{self.num_classes - 1}{ignore}."
                )
        return torch.from_numpy(mask)

    def __getitem__(self, index: int):
        image_path, mask_path = self.pairs[index]
        image = to_chw_float(load_image(image_path, self.mode))
        mask = self.load_mask(index)
        if tuple(mask.shape) != tuple(image.shape[1:]):
            raise CnnkitError(
                f"{mask_path}: mask is {tuple(mask.shape)} but its image {image_path.name} is "
                f"{tuple(image.shape[1:])} (H, W)."
            )
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask


def _colour_codes(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _decode(code: int) -> tuple[int, int, int]:
    return (code >> 16) & 255, (code >> 8) & 255, code & 255


def segmentation_folder(
    images: str | os.PathLike,
    masks: str | os.PathLike,
    palette: Sequence[Sequence[int]] | None = None,
    num_classes: int | None = None,
    *,
    ignore_index: int | None = None,
    mode: str | None = "RGB",
    transform: JointTransform | None = None,
) -> SegmentationFolderDataset:
    """Semantic segmentation pairs: ``images/<stem>.*`` with ``masks/<stem>.*``.

    Args:
        images: folder of images (any Pillow format).
        masks: folder of masks with the same file stems.
        palette: ``[(r, g, b), ...]``, colour ``i`` = class ``i``, for RGB masks; ``None``
            reads masks as class indices (grey value or palette index).
        num_classes: mask values must lie in ``0..num_classes-1`` (or equal
            ``ignore_index``); defaults to ``len(palette)`` with a palette, else unchecked.
        ignore_index: a mask value allowed outside the class range (e.g. VOC's 255).
        mode: Pillow mode images are converted to (``None`` keeps theirs).
        transform: joint transform ``t(image, mask) -> (image, mask)`` per item.

    Pairs are matched by stem when the dataset is built; an image without a mask is an
    error naming it. Masks are checked when loaded.
    """
    images, masks = Path(images), Path(masks)
    for folder in (images, masks):
        if not folder.is_dir():
            raise CnnkitError(f"segmentation_folder: {folder} is not a folder.")
    if palette is not None:
        palette = [tuple(int(v) for v in c) for c in palette]
        if any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in palette):
            raise ConfigError(f"palette must be (r, g, b) triples in 0..255; received {palette}.")
        if len(set(palette)) != len(palette):
            raise ConfigError(f"palette colours must be distinct; received {palette}.")
        num_classes = len(palette) if num_classes is None else num_classes
    mask_by_stem = {}
    for p in sorted(masks.iterdir()):
        if is_image_file(p):
            if p.stem in mask_by_stem:
                raise CnnkitError(f"segmentation_folder: two masks for {p.stem!r} in {masks}.")
            mask_by_stem[p.stem] = inside(masks, p.name, "segmentation_folder: mask")
    pairs = []
    for p in sorted(images.iterdir()):
        if not is_image_file(p):
            continue
        inside(images, p.name, "segmentation_folder: image")  # no link out of the folder
        if p.stem not in mask_by_stem:
            raise CnnkitError(f"segmentation_folder: image {p} has no mask {p.stem}.* in {masks}.")
        pairs.append((p, mask_by_stem[p.stem]))
    if not pairs:
        raise CnnkitError(f"segmentation_folder: no image files in {images}.")
    return SegmentationFolderDataset(pairs, palette, num_classes, ignore_index, mode, transform)
