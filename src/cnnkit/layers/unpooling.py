"""Max unpooling in 1D, 2D and 3D: put pooled values back where the maxima were.

Seed 000 ("Max Pooling: remember which element was max!"): a max-pooling layer with
``return_indices=True`` remembers where each maximum came from; the paired unpooling
layer writes each value of its input at that position of a zero tensor::

    pool = MaxPooling2D(2, return_indices=True)
    y, indices = pool(x)                      # (N, C, H/2, W/2) twice
    x_up = MaxUnpooling2D(2)(y, indices)      # (N, C, H, W), zeros except at the maxima

The default output size is PyTorch's ``(n - 1) * stride + pool_size - 2 * padding`` per
dim; when pooling floored an odd size away (or used ``padding='same'``) pass
``output_size=x.shape`` (a full shape or the spatial sizes, as ``F.max_unpool2d``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from cnnkit._core.errors import ConfigError, ShapeError
from cnnkit.layers.base import Layer
from cnnkit.layers.padding import normalize_tuple, pool_args

__all__ = ["MaxUnpooling1D", "MaxUnpooling2D", "MaxUnpooling3D"]


class _MaxUnpooling(Layer):
    """Shared machinery of MaxUnpooling1D/2D/3D."""

    spatial_dims = 2
    _fn = staticmethod(F.max_unpool2d)

    def __init__(
        self,
        pool_size: int | Sequence[int] = 2,
        strides: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
        *,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(input_shape=input_shape, name=name)
        n = self.spatial_dims
        cls = type(self).__name__
        self.pool_size, self.strides, _ = pool_args(cls, n, pool_size, strides, "valid")
        self.padding = normalize_tuple(padding, n, f"{cls} padding", minimum=0)

    def _build(self, input_shape: tuple) -> None:
        self.in_channels = None  # works on any number of channels

    def _default_sizes(self, sizes: Sequence[int | None], shape: tuple) -> tuple:
        out = []
        for n, k, s, p in zip(sizes, self.pool_size, self.strides, self.padding):
            if n is None:
                out.append(None)
                continue
            m = (n - 1) * s + k - 2 * p
            if m < 1:
                raise ShapeError(
                    f"{type(self).__name__}: input shape {tuple(shape)} gives output size "
                    f"({n} - 1)*{s} + {k} - 2*{p} = {m}; it must be positive. Reduce the padding."
                )
            out.append(m)
        return tuple(out)

    def _output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:2], *self._default_sizes(input_shape[2:], input_shape))

    def call(
        self,
        x: torch.Tensor,
        indices: torch.Tensor,
        output_size: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Unpool ``x (Tensor[N, C, *spatial])`` with ``indices`` of the same shape.

        ``output_size``: the full output shape or its spatial sizes; each size must lie
        within ``stride - 1`` of the default ``(n - 1) * stride + pool_size - 2 * padding``.
        """
        if not isinstance(indices, torch.Tensor) or indices.shape != x.shape:
            got = (
                tuple(indices.shape)
                if isinstance(indices, torch.Tensor)
                else type(indices).__name__
            )
            raise ShapeError(
                f"{type(self).__name__} needs indices of the pooled input's shape "
                f"{tuple(x.shape)}; received indices of shape {got}. Pass the indices returned "
                "with it by the paired pooling layer (return_indices=True)."
            )
        if indices.dtype != torch.int64:
            if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
                raise ConfigError(
                    f"{type(self).__name__} needs integer indices; received dtype {indices.dtype}."
                )
            indices = indices.long()
        if output_size is not None:
            output_size = self._check_output_size(x, output_size)
        try:
            return self._fn(x, indices, self.pool_size, self.strides, self.padding, output_size)
        except RuntimeError as err:
            if "invalid max index" not in str(err):
                raise
            size = output_size or self._default_sizes(x.shape[2:], tuple(x.shape))
            raise ShapeError(
                f"{type(self).__name__}: an index points outside the output's spatial size "
                f"{tuple(size)} ({err}). When pooling floored part of the input away or padded "
                "it, pass output_size=x.shape of the pooled input."
            ) from None

    def _check_output_size(self, x: torch.Tensor, output_size: Sequence[int]) -> tuple[int, ...]:
        n = self.spatial_dims
        size = tuple(output_size)
        cls = type(self).__name__
        if len(size) == n + 2:
            if tuple(size[:2]) != tuple(x.shape[:2]):
                raise ShapeError(
                    f"{cls} output_size {size} has batch and channels {tuple(size[:2])}; the "
                    f"input has {tuple(x.shape[:2])}."
                )
            size = size[2:]
        elif len(size) != n:
            raise ShapeError(
                f"{cls} output_size must have {n} spatial sizes or {n + 2} entries (a full "
                f"shape); received {tuple(output_size)}."
            )
        default = self._default_sizes(x.shape[2:], tuple(x.shape))
        for got, want, s in zip(size, default, self.strides):
            if not want - s < got < want + s:
                raise ShapeError(
                    f"{cls} output_size {tuple(output_size)} does not fit an input of shape "
                    f"{tuple(x.shape)}: each size must lie between default - (stride - 1) and "
                    f"default + (stride - 1), default {default}, strides {self.strides}."
                )
        return tuple(int(v) for v in size)

    def receptive_field_layers(self) -> list:
        """``[]``: unpooling only moves values; it adds no window to the receptive field."""
        return []

    def get_config(self) -> dict[str, Any]:
        return {
            "pool_size": self.pool_size,
            "strides": self.strides,
            "padding": self.padding,
            "name": self.layer_name,
        }


class MaxUnpooling1D(_MaxUnpooling):
    """Inverse of :class:`MaxPooling1D` with its indices (seed 000).

    Call as ``layer(y, indices, output_size=None)``; ``y (Tensor[N, C, L])`` ->
    ``(Tensor[N, C, L_out])``, zeros except at the remembered positions.
    """

    spatial_dims = 1
    _fn = staticmethod(F.max_unpool1d)


class MaxUnpooling2D(_MaxUnpooling):
    """Inverse of :class:`MaxPooling2D` with its indices (seed 000: "remember which
    element was max").

    Call as ``layer(y, indices, output_size=None)``; ``y (Tensor[N, C, H, W])`` ->
    ``(Tensor[N, C, H_out, W_out])``, zeros except at the remembered positions.
    """

    spatial_dims = 2
    _fn = staticmethod(F.max_unpool2d)


class MaxUnpooling3D(_MaxUnpooling):
    """Inverse of :class:`MaxPooling3D` with its indices.

    Call as ``layer(y, indices, output_size=None)``; ``y (Tensor[N, C, D, H, W])`` ->
    ``(Tensor[N, C, D_out, H_out, W_out])``.
    """

    spatial_dims = 3
    _fn = staticmethod(F.max_unpool3d)
