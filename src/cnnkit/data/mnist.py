"""MNIST and Fashion-MNIST from their four IDX files.

- MNIST: Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-based learning applied
  to document recognition", Proc. IEEE 86(11), 1998. 60,000 training and 10,000 test
  28x28 grey images of the digits 0-9.
- Fashion-MNIST: H. Xiao, K. Rasul, R. Vollgraf, "Fashion-MNIST: a Novel Image Dataset
  for Benchmarking Machine Learning Algorithms", arXiv:1708.07747, 2017. Same layout,
  ten clothing classes.

The folder holds the ``.gz`` files (checked against their known md5) or the same files
uncompressed (``train-images-idx3-ubyte`` or ``train-images.idx3-ubyte``; there is no
published checksum for those, so they are checked by their IDX header and size).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from cnnkit._core.errors import CnnkitError, check_choice
from cnnkit.data.base import ArrayDataset, JointTransform
from cnnkit.data.download import RemoteFile, dataset_folder, ensure_files
from cnnkit.data.idx import read_idx

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)

# md5 of the original gzipped files (as published with torchvision and the datasets)
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
_PREFIX = {"train": "train", "test": "t10k"}


def _stems(split: str) -> tuple[str, str]:
    p = _PREFIX[split]
    return f"{p}-images-idx3-ubyte", f"{p}-labels-idx1-ubyte"


def _raw_file(folder, stem: str):
    """An uncompressed copy: ``train-images-idx3-ubyte`` or ``train-images.idx3-ubyte``."""
    for name in (stem, stem.replace("-idx", ".idx", 1)):
        if (folder / name).is_file():
            return folder / name
    return None


def _idx_dataset(
    dataset: str,
    key: str,
    md5: dict[str, str],
    mirrors: tuple[str, ...],
    classes: list[str],
    root,
    split: str,
    download: bool,
    verify: bool,
    transform,
) -> ArrayDataset:
    split = check_choice(f"{dataset} split", split, _PREFIX)
    stems = _stems(split)
    markers = [s + ".gz" for s in stems] + list(stems)
    folder = dataset_folder(root, key, markers)
    # the .gz when present (md5-checked), else an uncompressed copy, else download the .gz
    paths = {s: folder / f"{s}.gz" for s in stems}
    needed = []
    for stem in stems:
        raw = _raw_file(folder, stem)
        if raw is not None and not paths[stem].is_file():
            paths[stem] = raw
        else:
            name = f"{stem}.gz"
            needed.append(RemoteFile(name, tuple(m + name for m in mirrors), md5=md5[name]))
    if needed:
        ensure_files(
            needed, folder, dataset=f"{dataset} ({split})", download=download, verify=verify
        )
    arrays = [(paths[s], read_idx(paths[s])) for s in stems]
    (ipath, images), (lpath, labels) = arrays
    if images.ndim != 3 or images.dtype != np.uint8:
        raise CnnkitError(
            f"{ipath}: expected uint8 images of shape (N, H, W), found {images.dtype} {images.shape}."
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise CnnkitError(
            f"{lpath}: expected {len(images)} labels (one per image in {ipath.name}), "
            f"found shape {labels.shape}."
        )
    if labels.size and int(labels.max()) >= len(classes):
        raise CnnkitError(f"{lpath}: label {int(labels.max())} is outside 0..{len(classes) - 1}.")
    x = torch.from_numpy(np.array(images)).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return ArrayDataset(
        x, y, scale=1 / 255, classes=classes, transform=transform, name=f"{key}/{split}"
    )


def mnist(
    root: str | os.PathLike | None = None,
    split: str = "train",
    download: bool = False,
    *,
    verify: bool = True,
    transform: JointTransform | None = None,
) -> ArrayDataset:
    """MNIST handwritten digits (LeCun et al. 1998): 28x28 grey images, 10 classes.

    Args:
        root: folder holding the four IDX files (or a folder with an ``mnist/``
            sub-folder holding them); default ``$CNNKIT_DATA/mnist`` or
            ``~/.cache/cnnkit/mnist``.
        split: ``'train'`` (60,000 images) or ``'test'`` (10,000).
        download: fetch missing files from the public mirrors (md5-verified).
        verify: check the ``.gz`` files against their known md5.
        transform: joint transform ``t(image, label) -> (image, label)`` per item.

    Returns:
        An :class:`ArrayDataset` with ``x`` = ``Tensor[N, 1, 28, 28]`` uint8 and ``y`` =
        ``Tensor[N]`` int64; items and ``tensors()`` give images as float32 in [0, 1].
    """
    return _idx_dataset(
        "MNIST", "mnist", MNIST_MD5, MNIST_MIRRORS, MNIST_CLASSES,
        root, split, download, verify, transform,
    )  # fmt: skip


def fashion_mnist(
    root: str | os.PathLike | None = None,
    split: str = "train",
    download: bool = False,
    *,
    verify: bool = True,
    transform: JointTransform | None = None,
) -> ArrayDataset:
    """Fashion-MNIST (Xiao et al. 2017): 28x28 grey clothing images, 10 classes.

    Same layout and arguments as :func:`mnist`; default folder ``fashion_mnist``.
    """
    return _idx_dataset(
        "Fashion-MNIST", "fashion_mnist", FASHION_MNIST_MD5, FASHION_MIRRORS,
        FASHION_MNIST_CLASSES, root, split, download, verify, transform,
    )  # fmt: skip
