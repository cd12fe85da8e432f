"""Zero padding and cropping in 1D, 2D and 3D (Keras names, channels-first tensors).

``ZeroPadding2D(padding)`` adds rows and columns of zeros around every channel;
``Cropping2D(cropping)`` removes them. The argument is Keras': an int (every side of
every spatial dim), a tuple with one int per spatial dim (symmetric), or one
``(before, after)`` pair per spatial dim (for 1D also a bare ``(before, after)``)::

    ZeroPadding2D(((1, 2), (3, 4)))   # 1 row on top, 2 below, 3 columns left, 4 right
    Cropping2D(((2, 2), (4, 4)))      # as Keras' cropping=((top, bottom), (left, right))

Both are parameter-free and work on ``x (Tensor[N, C, *spatial])``: the spatial axes
are the last ones (Keras' ``data_format='channels_first'``). A U-Net crops its
encoder features before concatenating them (seed 001's valid-padded U-Net).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from cnnkit._core.errors import ConfigError, ShapeError
from cnnkit.layers.base import Layer
from cnnkit.layers.padding import normalize_cropping, torch_pad_arg

__all__ = [
    "Permute",
    "Cropping1D",
    "Cropping2D",
    "Cropping3D",
    "ZeroPadding1D",
    "ZeroPadding2D",
    "ZeroPadding3D",
]


class _Border(Layer):
    """Shared argument handling of the padding and cropping layers."""

    spatial_dims = 2
    _what = "padding"

    def __init__(
        self, pairs: Any, *, input_shape: Sequence[int] | None = None, name: str | None = None
    ) -> None:
        super().__init__(input_shape=input_shape, name=name)
        self.pairs = normalize_cropping(pairs, self.spatial_dims, type(self).__name__, self._what)

    def _build(self, input_shape: tuple) -> None:
        self.in_channels = None  # works on any number of channels

    def get_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {self._what: self.pairs}
        if self.layer_name is not None:
            cfg["name"] = self.layer_name
        return cfg


class _ZeroPadding(_Border):
    def __init__(
        self,
        padding: Any = 1,
        *,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(padding, input_shape=input_shape, name=name)
        self.padding = self.pairs
        self._pad = torch_pad_arg(self.pairs)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self._pad)

    def _output_shape(self, input_shape: tuple) -> tuple:
        sizes = [None if n is None else n + b + a for n, (b, a) in zip(input_shape[2:], self.pairs)]
        return (*input_shape[:2], *sizes)


class _Cropping(_Border):
    _what = "cropping"

    def __init__(
        self,
        cropping: Any = 1,
        *,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(cropping, input_shape=input_shape, name=name)
        self.cropping = self.pairs
        crops = [slice(b, -a if a else None) for b, a in self.pairs]
        self._index = (slice(None), slice(None), *crops)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing():
            self._output_shape(tuple(x.shape))  # cropping everything -> ShapeError
        return x[self._index]

    def _output_shape(self, input_shape: tuple) -> tuple:
        sizes = []
        for n, (b, a) in zip(input_shape[2:], self.pairs):
            if n is not None and n - b - a < 1:
                raise ShapeError(
                    f"{type(self).__name__}(cropping={self.pairs}) crops {b} + {a} = {b + a} "
                    f"elements from a spatial size of {n} (input shape {tuple(input_shape)}); "
                    f"at least one must remain. Crop at most {n - 1} in total per dimension "
                    "or use a larger input."
                )
            sizes.append(None if n is None else n - b - a)
        return (*input_shape[:2], *sizes)


class ZeroPadding1D(_ZeroPadding):
    """Zeros before and after a sequence: ``x (Tensor[N, C, L])`` -> ``Tensor[N, C, L + b + a]``.

    ``padding``: an int (both sides, Keras' default 1) or a pair ``(before, after)``.

    >>> ZeroPadding1D((1, 2))(torch.ones(1, 1, 3))[0, 0].tolist()
    [0.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    """

    spatial_dims = 1


class ZeroPadding2D(_ZeroPadding):
    """Zero rows and columns around an image: ``x (Tensor[N, C, H, W])`` ->
    ``Tensor[N, C, H + top + bottom, W + left + right]``.

    ``padding``: an int, ``(symmetric_height, symmetric_width)`` or
    ``((top, bottom), (left, right))`` (Keras' default ``(1, 1)``).
    """

    spatial_dims = 2


class ZeroPadding3D(_ZeroPadding):
    """Zeros around a volume: ``x (Tensor[N, C, D, H, W])`` -> padded ``Tensor[N, C, ...]``.

    ``padding``: an int, three ints or three ``(before, after)`` pairs (default 1).
    """

    spatial_dims = 3


class Cropping1D(_Cropping):
    """Remove elements from both ends: ``x (Tensor[N, C, L])`` -> ``Tensor[N, C, L - b - a]``.

    ``cropping``: an int (both ends) or a pair ``(before, after)`` (Keras' default
    ``(1, 1)``). Cropping the whole sequence raises a ShapeError.
    """

    spatial_dims = 1


class Cropping2D(_Cropping):
    """Remove rows and columns: ``x (Tensor[N, C, H, W])`` ->
    ``Tensor[N, C, H - top - bottom, W - left - right]``.

    ``cropping``: an int, ``(symmetric_height, symmetric_width)`` or
    ``((top, bottom), (left, right))``; the default ``((0, 0), (0, 0))`` is Keras'.
    Cropping a whole dimension raises a ShapeError.
    """

    spatial_dims = 2

    def __init__(
        self,
        cropping: Any = ((0, 0), (0, 0)),
        *,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(cropping, input_shape=input_shape, name=name)


class Cropping3D(_Cropping):
    """Remove elements around a volume: ``x (Tensor[N, C, D, H, W])`` -> cropped
    ``Tensor[N, C, ...]``.

    ``cropping``: an int, three ints or three ``(before, after)`` pairs (default 1).
    """

    spatial_dims = 3


class Permute(Layer):
    """Reorder the non-batch axes (Keras ``Permute``): ``dims`` is a permutation of
    ``1..rank-1`` (1-indexed, the batch axis stays first).

    ``Permute((2, 3, 1))``: ``Tensor[N, C, H, W]`` -> ``Tensor[N, H, W, C]`` (channels-last).
    """

    spatial_dims = None
    min_rank = 2

    def __init__(
        self,
        dims: Sequence[int],
        *,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(input_shape=input_shape, name=name)
        ok = isinstance(dims, Sequence) and not isinstance(dims, str)
        vals = tuple(dims) if ok else ()
        if not ok or sorted(vals) != list(range(1, len(vals) + 1)) or not vals:
            raise ConfigError(
                f"Permute expects dims a permutation of 1..k (the non-batch axes, 1-indexed); "
                f"received {dims!r}."
            )
        self.dims = tuple(int(d) for d in vals)

    def _check_shape(self, shape: tuple) -> None:
        super()._check_shape(shape)
        if len(shape) != len(self.dims) + 1:
            raise ShapeError(
                f"Permute(dims={self.dims}) expects inputs of rank {len(self.dims) + 1} "
                f"(batch first); received shape {tuple(shape)}."
            )

    def _build(self, input_shape: tuple) -> None:
        self.in_channels = None

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, *self.dims)

    def _output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], *(input_shape[d] for d in self.dims))

    def get_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"dims": self.dims}
        if self.layer_name is not None:
            cfg["name"] = self.layer_name
        return cfg
