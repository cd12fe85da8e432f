"""The UCR time-series classification archive.

H. A. Dau et al., "The UCR Time Series Archive", IEEE/CAA J. Autom. Sinica 6(6), 2019
(the 2018 release); used by Z. Wang, W. Yan, T. Oates, "Time series classification from
scratch with deep neural networks: A strong baseline", IJCNN 2017 (FCN, ResNet).

Each dataset has a TRAIN and a TEST file, one series per row, the class label first:

- 2018 release: ``<Name>/<Name>_TRAIN.tsv`` (tab-separated; variable-length series are
  padded with ``NaN``, which is kept);
- older releases: ``<Name>_TRAIN.txt`` (whitespace-separated, timeseriesclassification.com)
  or ``<Name>_TRAIN`` (comma-separated, the 2015 archive).

Labels (e.g. ``1, 2`` or ``-1, 1``) are remapped to ``0..K-1`` in sorted order of the
labels found in TRAIN and TEST together, so both splits share one mapping.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from cnnkit._core.errors import CnnkitError, check_choice
from cnnkit.data.base import ArrayDataset, JointTransform
from cnnkit.data.download import default_root

_SUFFIXES = (".tsv", ".txt", "")


def _find(root: Path, name: str, split: str) -> Path | None:
    tag = split.upper()
    for folder in (root / name, root):
        for suffix in _SUFFIXES:
            path = folder / f"{name}_{tag}{suffix}"
            if path.is_file():
                return path
    return None


def read_ucr_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One UCR file -> ``(series float32 (N, T), raw labels float64 (N,))``."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline()
    except UnicodeDecodeError as err:
        raise CnnkitError(
            f"{path}: not a UCR text table (it does not decode as UTF-8: {err}); expected rows "
            "'label, x_1, ..., x_T' as text."
        ) from None
    delimiter = "\t" if "\t" in first else ("," if "," in first else None)
    try:
        table = np.loadtxt(path, delimiter=delimiter, dtype=np.float64, ndmin=2)
    except (ValueError, UnicodeDecodeError) as err:
        raise CnnkitError(
            f"{path}: not a UCR table (label then values per row, separated by tabs, commas "
            f"or spaces): {err}."
        ) from err
    if table.shape[1] < 2 or table.shape[0] == 0:
        raise CnnkitError(
            f"{path}: expected rows 'label, x_1, ..., x_T'; found shape {table.shape}."
        )
    labels = table[:, 0]
    if np.isnan(labels).any():
        raise CnnkitError(f"{path}: row {int(np.flatnonzero(np.isnan(labels))[0])} has no label.")
    return table[:, 1:].astype(np.float32), labels


def ucr(
    root: str | os.PathLike | None,
    name: str,
    split: str = "train",
    znorm: bool = False,
    *,
    transform: JointTransform | None = None,
) -> ArrayDataset:
    """A dataset of the UCR archive, e.g. ``ucr(root, 'GunPoint', 'train')``.

    Args:
        root: folder holding ``<name>/<name>_TRAIN.tsv`` (or the files directly, or the
            older ``.txt`` / extension-less files); ``None`` means ``$CNNKIT_DATA/ucr``.
        name: the dataset's name as in the archive (``'GunPoint'``, ``'ECG200'``, ...).
        split: ``'train'`` or ``'test'``.
        znorm: z-normalise every series on its own (mean 0, standard deviation 1 over
            time, NaN padding ignored), as the archive's datasets are meant to be used.
        transform: joint transform ``t(series, label) -> (series, label)`` per item.

    Returns:
        :class:`ArrayDataset` with ``x`` = ``Tensor[N, 1, T]`` float32 (one channel, for
        ``Conv1D``) and ``y`` = ``Tensor[N]`` int64 in ``0..K-1``; ``classes`` holds the
        original label of each index.
    """
    split = check_choice("UCR split", split, ("train", "test"))
    root = Path(root).expanduser() if root is not None else default_root() / "ucr"
    path = _find(root, name, split)
    if path is None:
        raise CnnkitError(
            f"UCR dataset {name!r}: no {name}_{split.upper()}.tsv (or .txt) in {root / name} or "
            f"{root}. The archive is at https://www.cs.ucr.edu/~eamonn/time_series_data_2018/ "
            f"(UCRArchive_2018.zip, password on the page); put {name}/{name}_TRAIN.tsv and "
            f"{name}_TEST.tsv under {root}."
        )
    x, raw = read_ucr_file(path)
    other = _find(root, name, "test" if split == "train" else "train")
    all_labels = raw if other is None else np.concatenate([raw, read_ucr_file(other)[1]])
    values = np.unique(all_labels)
    y = np.searchsorted(values, raw).astype(np.int64)
    if znorm:
        mean = np.nanmean(x, axis=1, keepdims=True)
        std = np.nanstd(x, axis=1, keepdims=True)
        x = (x - mean) / np.where(std > 0, std, 1.0)
    classes = [str(int(v)) if float(v).is_integer() else str(v) for v in values]
    return ArrayDataset(
        torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).unsqueeze(1),
        torch.from_numpy(y),
        classes=classes,
        transform=transform,
        name=f"ucr/{name}/{split}",
    )
