"""Upsampling ("unpooling") in 1D, 2D and 3D by integer factors (seed 002).

``UpSampling2D(size=2, interpolation=...)`` repeats or interpolates each feature map
to ``size`` times its height and width:

* ``'nearest'`` (Keras' default): every value fills a ``size`` block (seed 002's
  "Nearest Neighbor": ``[[1, 2], [3, 4]] -> [[1, 1, 2, 2], [1, 1, 2, 2], ...]``);
* ``'bed_of_nails'`` (seed 002): zeros, with each value at the top-left corner of its
  block (``[[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]]``);
* ``'linear'``: linear interpolation for the rank (``'linear'`` in 1D, ``'bilinear'`` in
  2D, ``'trilinear'`` in 3D); ``'bilinear'`` and ``'trilinear'`` are accepted in 2D
  and 3D only. Half-pixel centres (``align_corners=False``), as Keras/TF2 resize;
* ``'bicubic'`` (2D only): PyTorch's bicubic (cubic coefficient -0.75; TensorFlow's
  uses -0.5, so values differ slightly from Keras).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from cnnkit._core.errors import ConfigError, did_you_mean
from cnnkit.layers.base import Layer
from cnnkit.layers.padding import normalize_tuple

__all__ = ["UpSampling1D", "UpSampling2D", "UpSampling3D"]

INTERPOLATIONS = ("nearest", "linear", "bilinear", "trilinear", "bicubic", "bed_of_nails")
_LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}


class _UpSampling(Layer):
    """Shared machinery of UpSampling1D/2D/3D."""

    spatial_dims = 2

    def __init__(
        self,
        size: int | Sequence[int] = 2,
        interpolation: str = "nearest",
        *,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(input_shape=input_shape, name=name)
        n = self.spatial_dims
        cls = type(self).__name__
        self.size = normalize_tuple(size, n, f"{cls} size")
        self.interpolation = _check_interpolation(cls, interpolation, n)
        self._scale = tuple(float(s) for s in self.size)
        if self.interpolation == "nearest":
            # 'nearest-exact' equals 'nearest' for integer factors and its source index
            # floor((i + 0.5) / s) stays clear of rounding at block edges
            self._mode = "nearest-exact"
        elif self.interpolation == "bed_of_nails":
            self._mode = None
            self._nails = (Ellipsis, *(slice(None, None, s) for s in self.size))
        elif self.interpolation == "linear":
            self._mode = _LINEAR[n]
        else:
            self._mode = self.interpolation

    def _build(self, input_shape: tuple) -> None:
        self.in_channels = None  # works on any number of channels

    def _output_shape(self, input_shape: tuple) -> tuple:
        sp = tuple(None if n is None else n * s for n, s in zip(input_shape[2:], self.size))
        return (*input_shape[:2], *sp)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        if self._mode is None:
            out = x.new_zeros((*x.shape[:2], *(n * s for n, s in zip(x.shape[2:], self.size))))
            out[self._nails] = x
            return out
        if self._mode == "nearest-exact":
            return F.interpolate(x, scale_factor=self._scale, mode="nearest-exact")
        return F.interpolate(x, scale_factor=self._scale, mode=self._mode, align_corners=False)

    def receptive_field_layers(self) -> list:
        """``[]``: upsampling adds no window to the receptive field."""
        return []

    def get_config(self) -> dict[str, Any]:
        return {"size": self.size, "interpolation": self.interpolation, "name": self.layer_name}


def _check_interpolation(cls: str, interpolation: Any, n: int) -> str:
    if not isinstance(interpolation, str):
        raise ConfigError(
            f"{cls} interpolation must be one of {', '.join(map(repr, INTERPOLATIONS))}; "
            f"received {interpolation!r}."
        )
    mode = interpolation.lower().replace("-", "_")
    if mode == "bed_of_nails" or mode in ("nearest", "linear"):
        return mode
    if mode in ("bilinear", "trilinear", "bicubic"):
        ok = {"bilinear": 2, "trilinear": 3, "bicubic": 2}[mode]
        if n == ok:
            return mode
        raise ConfigError(
            f"{cls} does not support interpolation={interpolation!r}, which is for "
            f"{ok}D inputs (UpSampling{ok}D); for {n}D inputs use 'linear' "
            f"(= {_LINEAR[n]!r}), 'nearest' or 'bed_of_nails'."
        )
    raise ConfigError(
        f"{cls} got unknown interpolation {interpolation!r}; expected one of "
        f"{', '.join(map(repr, INTERPOLATIONS))}." + did_you_mean(mode, INTERPOLATIONS)
    )


class UpSampling1D(_UpSampling):
    """Repeat (or interpolate) each sequence ``size`` times (Keras' UpSampling1D).

    Args:
        size: integer factor.
        interpolation: ``'nearest'``, ``'linear'`` or ``'bed_of_nails'``.

    Shapes: ``x (Tensor[N, C, L])`` -> ``(Tensor[N, C, L * size])``.
    """

    spatial_dims = 1


class UpSampling2D(_UpSampling):
    """Upsample each feature map by ``size`` (seed 002's unpooling; seed 000's U-Net).

    Args:
        size: an int or ``(size_h, size_w)``.
        interpolation: ``'nearest'``, ``'linear'`` (= ``'bilinear'``), ``'bilinear'``,
            ``'bicubic'`` or ``'bed_of_nails'``.

    Shapes: ``x (Tensor[N, C, H, W])`` -> ``(Tensor[N, C, H * size_h, W * size_w])``.

    >>> x = torch.tensor([[[[1., 2], [3, 4]]]])
    >>> UpSampling2D(2, interpolation="bed_of_nails")(x)[0, 0].tolist()[:2]
    [[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    """

    spatial_dims = 2


class UpSampling3D(_UpSampling):
    """Upsample each 3D feature volume by ``size``.

    Args:
        size: an int or ``(size_d, size_h, size_w)``.
        interpolation: ``'nearest'``, ``'linear'`` (= ``'trilinear'``), ``'trilinear'``
            or ``'bed_of_nails'``.

    Shapes: ``x (Tensor[N, C, D, H, W])`` -> ``(Tensor[N, C, D * s_d, H * s_h, W * s_w])``.
    """

    spatial_dims = 3
