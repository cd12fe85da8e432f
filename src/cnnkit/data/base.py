"""The in-memory dataset the readers return: stored tensors, per-item conversion.

Small datasets (MNIST, CIFAR, ISBI, UCR, digits) are held whole in memory in their
compact stored dtype (``uint8`` images), converted to float one item at a time in
``__getitem__`` or all at once by :meth:`ArrayDataset.tensors` for in-memory training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from cnnkit._core.errors import ShapeError

JointTransform = Callable[[Any, Any], tuple[Any, Any]]


class ArrayDataset(Dataset):
    """Samples ``x[i]`` with targets ``y[i]``, both stored tensors.

    Args:
        x: stored inputs, e.g. ``Tensor[N, C, H, W]`` uint8 images or ``Tensor[N, C, T]``
            float32 series.
        y: stored targets with ``len(y) == N`` (class indices ``Tensor[N]``, masks
            ``Tensor[N, H, W]``), or ``None`` for unlabelled data.
        scale: ``x`` is returned as float32 times ``scale`` (``1/255`` maps uint8 pixels
            to [0, 1]); ``None`` returns float inputs unchanged.
        classes: class names, index = label.
        transform: joint transform ``t(x, y) -> (x, y)`` applied per item (and not by
            :meth:`tensors`); with ``y=None`` it is called as ``t(x, None)``.
        target_dtype: dtype of the returned targets (``torch.long`` for class indices
            and masks stored as uint8).

    ``ds[i]`` is ``(x_i, y_i)``, or ``x_i`` alone when ``y`` is ``None``.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None,
        *,
        scale: float | None = None,
        classes: Sequence[str] | None = None,
        transform: JointTransform | None = None,
        target_dtype: torch.dtype | None = torch.long,
        name: str = "dataset",
    ) -> None:
        if y is not None and len(y) != len(x):
            raise ShapeError(
                f"{name}: {len(x)} inputs but {len(y)} targets; they must pair up one to one."
            )
        self.x = x
        self.y = y
        self.scale = scale
        self.classes = list(classes) if classes is not None else None
        self.transform = transform
        self.target_dtype = target_dtype
        self.name = name

    def __len__(self) -> int:
        return len(self.x)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale is not None:
            return x.to(torch.float32).mul_(self.scale)
        return x if x.is_floating_point() else x.to(torch.float32)

    def _target(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.target_dtype is None else y.to(self.target_dtype)

    def __getitem__(self, index: int):
        xi = self._input(self.x[index])
        if self.y is None:
            return self.transform(xi, None)[0] if self.transform else xi
        yi = self._target(self.y[index])
        if self.transform is not None:
            xi, yi = self.transform(xi, yi)
        return xi, yi

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """All of it as ``(x float32, y)`` tensors, for ``Model.fit(x, y)`` in memory.

        The per-item ``transform`` is not applied (augment per batch instead).
        """
        y = None if self.y is None else self._target(self.y)
        return self._input(self.x), y

    @property
    def num_classes(self) -> int | None:
        return None if self.classes is None else len(self.classes)

    def __repr__(self) -> str:
        shape = tuple(self.x.shape)
        return f"{type(self).__name__}({self.name!r}, x={shape} {self.x.dtype}, n={len(self)})"
