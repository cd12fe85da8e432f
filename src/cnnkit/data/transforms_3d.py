"""Augmentation of volumes and clips Tensor[C, D, H, W] (3D CNNs): flips and crops.

Called as ``t(x, target)`` and returning ``(x, target)``. ``x`` is Tensor[C, T, H, W] (a
video clip, as in C3D, Tran et al. 2015) or Tensor[C, D, H, W] (a volume). A target that is
a tensor with three or four dimensions is a voxel mask Tensor[D, H, W] / Tensor[K, D, H, W]
and gets the same flip or crop; a dict's ``'mask'`` and ``'masks'`` do too; labels (None,
ints, tensors with at most one dimension) and other dict values pass through.

Flipping the time axis reverses a clip, which changes the meaning of actions: for video
use ``RandomFlip3D(dims=(-1,))`` (left-right only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from cnnkit._core.errors import ConfigError, ShapeError

__all__ = ["CenterCrop3D", "RandomCrop3D", "RandomFlip3D"]


class _Volume:
    """Base: validate x and target, then apply one draw to every part via :meth:`apply`."""

    def __call__(self, x: Any, target: Any = None) -> tuple[torch.Tensor, Any]:
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ShapeError(f"{type(self).__name__} needs Tensor[C, T, H, W]; received {got}.")
        spatial = tuple(x.shape[1:])

        def check(name: str, m: Any) -> torch.Tensor:
            if (
                not isinstance(m, torch.Tensor)
                or m.ndim not in (3, 4)
                or tuple(m.shape[-3:]) != spatial
            ):
                got = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
                raise ShapeError(
                    f"{name} must be a voxel mask Tensor[D, H, W] or Tensor[K, D, H, W] with "
                    f"(D, H, W) = {spatial} like the input; received {got}."
                )
            return m

        op = self.draw(spatial)
        if isinstance(target, torch.Tensor) and target.ndim >= 2:
            target = op(check("target", target))
        elif isinstance(target, Mapping):
            target = dict(target)
            for key in ("mask", "masks"):
                if key in target:
                    target[key] = op(check(f"target[{key!r}]", target[key]))
        return op(x), target

    def draw(self, spatial: tuple[int, int, int]):
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def _size3(size: int | Sequence[int]) -> tuple[int, int, int]:
    size = (size,) * 3 if isinstance(size, int) else tuple(size)
    if len(size) != 3 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ConfigError(f"size must be an int or (D, H, W) of positive ints; received {size!r}.")
    return size  # type: ignore[return-value]


class RandomFlip3D(_Volume):
    """Flip each axis in ``dims`` independently with probability ``p``.

    Args:
        p: flip probability per axis.
        dims: axes among the last three (-3 = T/D, -2 = H, -1 = W; 1, 2, 3 also accepted).
    """

    def __init__(self, p: float = 0.5, dims: Sequence[int] = (-3, -2, -1)):
        self.p = float(p)
        dims = tuple(dims)
        if not dims or any(d not in (-3, -2, -1, 1, 2, 3) for d in dims):
            raise ConfigError(f"dims must be among -3, -2, -1 (or 1, 2, 3); received {dims!r}.")
        self.dims = tuple(sorted({d - 4 if d > 0 else d for d in dims}))

    def draw(self, spatial):
        flips = [d for d, r in zip(self.dims, torch.rand(len(self.dims))) if r < self.p]
        return (lambda t: t.flip(flips)) if flips else (lambda t: t)


class RandomCrop3D(_Volume):
    """Crop a uniformly placed ``size = (D, H, W)`` window (an int means a cube)."""

    def __init__(self, size: int | Sequence[int]):
        self.size = _size3(size)

    def offsets(self, spatial):
        return [int(torch.randint(0, n - s + 1, ())) for n, s in zip(spatial, self.size)]

    def draw(self, spatial):
        if any(s > n for s, n in zip(self.size, spatial)):
            raise ShapeError(
                f"{type(self).__name__} size {self.size} exceeds the input's (D, H, W) = {spatial}."
            )
        (a, b, c), (d, h, w) = self.offsets(spatial), self.size
        return lambda t: t[..., a : a + d, b : b + h, c : c + w]


class CenterCrop3D(RandomCrop3D):
    """Crop the central ``size = (D, H, W)`` window."""

    def offsets(self, spatial):
        return [(n - s) // 2 for n, s in zip(spatial, self.size)]
