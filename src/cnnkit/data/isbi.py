"""The ISBI 2012 EM segmentation challenge data, as used by the original U-Net.

O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015; data: I. Arganda-Carreras et al., "Crowdsourcing the creation
of image segmentation algorithms for connectomics", Front. Neuroanat. 9:142, 2015.

30 training slices (serial-section TEM of the Drosophila larva ventral nerve cord,
512x512) with membrane labels, and 30 unlabelled test slices. Two layouts are read:

- the challenge's multi-page TIFF stacks ``train-volume.tif``, ``train-labels.tif``,
  ``test-volume.tif``;
- per-slice PNGs ``train/image/<i>.png``, ``train/label/<i>.png``, ``test/<i>.png``
  (slice index = file number), as exported by e.g. zhixuhao/unet.

Label images are binary: **0 (black) = membrane, 255 (white) = cell interior** (about
22% of the training pixels are membrane). The returned masks are 0/1 with
``positive='membrane'`` (default: 1 = membrane, 0 = cell), or with ``positive='cell'``
1 = cell interior (the PNG value / 255, zhixuhao/unet's convention).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from cnnkit._core.errors import CnnkitError, check_choice
from cnnkit._core.paths import inside
from cnnkit.data.base import ArrayDataset, JointTransform
from cnnkit.data.download import dataset_folder
from cnnkit.data.images import load_frames, load_image

_STACKS = {"train": ("train-volume.tif", "train-labels.tif"), "test": ("test-volume.tif", None)}
_SLICES = {"train": ("train/image", "train/label"), "test": ("test", None)}
MEMBRANE, CELL = 0, 255


def _numbered_pngs(folder: Path) -> list[Path]:
    files = [
        inside(folder, p.name, "isbi2012: slice")  # no link out of the folder
        for p in folder.iterdir()
        if p.suffix.lower() == ".png" and p.stem.isdigit()
    ]
    files.sort(key=lambda p: int(p.stem))
    if not files:
        raise CnnkitError(f"isbi2012: no <number>.png slices in {folder}.")
    numbers = [int(p.stem) for p in files]
    if numbers != list(range(len(files))):
        raise CnnkitError(
            f"isbi2012: slices in {folder} should be numbered 0..{len(files) - 1}; found "
            f"{numbers[:5]}...{numbers[-3:]}."
        )
    return files


def _grey_stack(frames: list[np.ndarray], source: str) -> np.ndarray:
    shapes = {f.shape for f in frames}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise CnnkitError(f"{source}: expected grey slices of one size; found shapes {shapes}.")
    stack = np.stack(frames)
    if stack.dtype != np.uint8:
        raise CnnkitError(f"{source}: expected 8-bit slices, found {stack.dtype}.")
    return stack


def _labels(stack: np.ndarray, source: str, positive: str) -> np.ndarray:
    values = np.unique(stack)
    extra = np.setdiff1d(values, [MEMBRANE, CELL])
    if extra.size:
        raise CnnkitError(
            f"{source}: label value {int(extra[0])} (of {extra.tolist()[:8]}) is neither "
            f"{MEMBRANE} (membrane) nor {CELL} (cell interior)."
        )
    target = MEMBRANE if positive == "membrane" else CELL
    return (stack == target).astype(np.uint8)


def isbi2012(
    root: str | os.PathLike | None = None,
    split: str = "train",
    *,
    positive: str = "membrane",
    transform: JointTransform | None = None,
) -> ArrayDataset:
    """ISBI 2012 EM slices (the U-Net paper's data), from TIFF stacks or PNG slices.

    Args:
        root: folder with ``train-volume.tif``/``train-labels.tif``/``test-volume.tif`` or
            with ``train/image``, ``train/label``, ``test``; or a folder with an
            ``isbi2012/`` sub-folder holding them. Default ``$CNNKIT_DATA/isbi2012``.
        split: ``'train'`` (30 labelled slices) or ``'test'`` (30 slices, no labels).
        positive: which class is 1 in the masks: ``'membrane'`` or ``'cell'``.
        transform: joint transform ``t(image, mask) -> (image, mask)`` per item.

    Returns:
        :class:`ArrayDataset` with ``x`` = ``Tensor[30, 1, 512, 512]`` uint8 (items float in
        [0, 1]) and ``y`` = ``Tensor[30, 512, 512]`` uint8 0/1 (items int64), or ``y=None``
        for the test split (items are the image alone).
    """
    split = check_choice("isbi2012 split", split, ("train", "test"))
    positive = check_choice("isbi2012 positive", positive, ("membrane", "cell"))
    markers = ["train-volume.tif", "test-volume.tif", "train", "test"]
    folder = dataset_folder(root, "isbi2012", markers)
    volume_name, labels_name = _STACKS[split]
    image_dir, label_dir = _SLICES[split]
    if (folder / volume_name).is_file():
        source = str(folder / volume_name)
        images = _grey_stack(load_frames(folder / volume_name), source)
        labels = None
        if labels_name is not None:
            lsource = str(folder / labels_name)
            if not (folder / labels_name).is_file():
                raise CnnkitError(f"isbi2012: {lsource} is missing (next to {volume_name}).")
            labels = _labels(
                _grey_stack(load_frames(folder / labels_name), lsource), lsource, positive
            )
    elif (folder / image_dir).is_dir():
        source = str(folder / image_dir)
        files = _numbered_pngs(folder / image_dir)
        images = _grey_stack([load_image(p, "L") for p in files], source)
        labels = None
        if label_dir is not None:
            lsource = str(folder / label_dir)
            lfiles = _numbered_pngs(folder / label_dir)
            if len(lfiles) != len(files):
                raise CnnkitError(
                    f"isbi2012: {len(files)} images in {source} but {len(lfiles)} labels in {lsource}."
                )
            labels = np.stack([_labels(load_image(p, "L"), str(p), positive) for p in lfiles])
    else:
        raise CnnkitError(
            f"isbi2012: no {split} data in {folder}: expected {volume_name}"
            + (f" and {labels_name}" if labels_name else "")
            + f" (multi-page TIFF) or the PNG slices {folder / image_dir}/<i>.png"
            + (f" and {folder / label_dir}/<i>.png" if label_dir else "")
            + ". The stacks are published by the challenge (https://imagej.net/events/isbi-2012-"
            "segmentation-challenge) and mirrored in e.g. github.com/zhixuhao/unet (data/membrane)."
        )
    if labels is not None and labels.shape != images.shape:
        raise CnnkitError(
            f"isbi2012: images {images.shape} and labels {labels.shape} do not match ({source})."
        )
    x = torch.from_numpy(images).unsqueeze(1)
    y = None if labels is None else torch.from_numpy(labels)
    classes = ["cell", "membrane"] if positive == "membrane" else ["membrane", "cell"]
    return ArrayDataset(
        x, y, scale=1 / 255, classes=classes, transform=transform, name=f"isbi2012/{split}"
    )
