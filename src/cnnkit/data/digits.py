"""scikit-learn's bundled 8x8 handwritten digits: the dataset that needs no network.

The UCI "Optical Recognition of Handwritten Digits" data (E. Alpaydin, C. Kaynak, 1998):
1,797 images of 8x8 pixels with values 0..16 (counts of set pixels in 4x4 blocks of
32x32 bitmaps), ten classes, shipped inside scikit-learn (``sklearn.datasets.load_digits``).
Optionally resized (bilinear) to the 28x28 or 32x32 inputs of the MNIST/CIFAR decks.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cnnkit._core.errors import ConfigError, check_choice
from cnnkit.data.base import ArrayDataset, JointTransform


def digits(
    size: int | tuple[int, int] | None = None,
    split: str | None = None,
    *,
    test_size: float = 0.25,
    seed: int = 0,
    transform: JointTransform | None = None,
) -> ArrayDataset:
    """The 1,797 scikit-learn digits as ``x`` = ``Tensor[N, 1, S, S]`` float32 in [0, 1].

    Args:
        size: output side (``28``, ``32``, or ``(H, W)``); ``None`` keeps 8x8. Resizing is
            bilinear (``align_corners=False``), so values stay in [0, 1].
        split: ``None`` for all 1,797 images, else ``'train'`` or ``'test'``: a split
            stratified by class (scikit-learn's ``train_test_split``).
        test_size: fraction of images in the test split.
        seed: the split's random state.
        transform: joint transform ``t(image, label) -> (image, label)`` per item.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    if size is not None:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if len(hw) != 2 or min(hw) < 1:
            raise ConfigError(f"size must be a positive int or (H, W); received {size!r}.")
        x = F.interpolate(x, size=hw, mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    if split is not None:
        split = check_choice("digits split", split, ("train", "test"))
        if not 0.0 < test_size < 1.0:
            raise ConfigError(f"test_size must lie in (0, 1); received {test_size}.")
        from sklearn.model_selection import train_test_split

        train_idx, test_idx = train_test_split(
            np.arange(len(y)), test_size=test_size, random_state=seed, stratify=y.numpy()
        )
        idx = torch.from_numpy(np.sort(train_idx if split == "train" else test_idx))
        x, y = x[idx], y[idx]
    return ArrayDataset(
        x.contiguous(),
        y,
        classes=[str(d) for d in range(10)],
        transform=transform,
        name=f"digits/{split or 'all'}",
    )
