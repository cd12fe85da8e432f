"""MNIST-1D: a small 1-D benchmark generated from ten digit-like templates.

S. Greydanus, D. Kobak, "Scaling Down Deep Learning with MNIST-1D", ICML 2024
(arXiv:2011.14439). Each sample is one of ten 12-point templates, padded, scaled,
translated, sheared, with correlated and iid noise added, resampled to 40 points; the
default 5,000 samples split 4,000 train / 1,000 test.

Generation uses the authors' ``mnist1d`` package (``pip install 'cnnkit[mnist1d]'``);
the result is cached as an ``.npz`` (no pickle) under ``<root>/mnist1d/`` because the
generator runs a Python loop per sample.
"""

from __future__ import annotations

import os
import random
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from cnnkit._core.errors import CnnkitError, check_choice
from cnnkit.data.base import ArrayDataset, JointTransform
from cnnkit.data.download import default_root


def _generate(num_samples: int, seed: int) -> dict[str, np.ndarray]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:
        raise CnnkitError(
            "mnist1d() generates the data with the 'mnist1d' package, which is not "
            f"installed ({err}); run: pip install 'cnnkit[mnist1d]' (or pip install mnist1d)."
        ) from None
    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    # the generator seeds NumPy's and Python's global RNGs: give the caller theirs back
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}


def mnist1d(
    split: str = "train",
    *,
    num_samples: int = 5000,
    seed: int = 42,
    root: str | os.PathLike | None = None,
    cache: bool = True,
    transform: JointTransform | None = None,
) -> ArrayDataset:
    """MNIST-1D (Greydanus & Kobak) as ``x`` = ``Tensor[N, 1, 40]`` float32, ``y`` in 0..9.

    Args:
        split: ``'train'`` (80% of ``num_samples``) or ``'test'`` (20%).
        num_samples: total samples generated (the paper's default 5,000).
        seed: the generator's seed (the paper's data uses 42).
        root: cache folder parent (default ``$CNNKIT_DATA`` or ``~/.cache/cnnkit``).
        cache: read/write ``mnist1d_n<num_samples>_seed<seed>.npz`` under ``root/mnist1d``.
        transform: joint transform ``t(x, y) -> (x, y)`` per item.
    """
    split = check_choice("mnist1d split", split, ("train", "test"))
    folder = (Path(root).expanduser() if root is not None else default_root()) / "mnist1d"
    path = folder / f"mnist1d_n{num_samples}_seed{seed}.npz"
    data = None
    if cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                data = {k: f[k] for k in ("x", "y", "x_test", "y_test")}
            if any(len(data[x]) != len(data[y]) or data[x].ndim != 2
                   for x, y in (("x", "y"), ("x_test", "y_test"))):  # fmt: skip
                data = None
        except (OSError, ValueError, KeyError, EOFError, MemoryError, zipfile.BadZipFile,
                zlib.error):  # fmt: skip
            data = None  # a damaged cache is regenerated, never used
    if data is None:
        data = _generate(num_samples, seed)
        if cache:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, **data)
            os.replace(tmp, path)
    x, y = (data["x"], data["y"]) if split == "train" else (data["x_test"], data["y_test"])
    return ArrayDataset(
        torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).unsqueeze(1),
        torch.from_numpy(np.asarray(y, dtype=np.int64)),
        classes=[str(d) for d in range(10)],
        transform=transform,
        name=f"mnist1d/{split}",
    )
