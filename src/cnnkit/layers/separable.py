"""Factorised convolutions: depthwise, depthwise-separable and spatially separable.

* ``DepthwiseConv1D/2D/3D``: one kernel per input channel (``groups = C_in``), each
  channel giving ``depth_multiplier`` outputs; ``weight (Tensor[C_in * dm, 1, *k])``.
* ``SeparableConv1D/2D``: a depthwise convolution then a pointwise (1x1) one mixing
  the channels, one bias after the pointwise step (as Keras):
  ``depthwise_weight (Tensor[C_in * dm, 1, *k])``,
  ``pointwise_weight (Tensor[filters, C_in * dm, 1, ...])``, ``bias (Tensor[filters])``.
  Parameters: ``prod(k) C_in dm + C_in dm filters + filters``.
* ``SpatialSeparableConv2D``: a ``k x 1`` convolution then a ``1 x k`` one, the decks'
  factorisation of the Sobel kernel (seed 003)::

      K_x = [[+1, 0, -1], [+2, 0, -2], [+1, 0, -1]] = [+1, +2, +1]^T * [+1, 0, -1]

  With one intermediate channel it equals a dense ``k x k`` convolution whose kernel is
  the outer product of the two factors.

Strides, padding (``'valid'``, ``'same'``, ``'full'``, ints, pairs), dilation and
``padding_mode`` behave as in :mod:`cnnkit.layers.conv`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from cnnkit._core.errors import ShapeError
from cnnkit.layers.base import init_bias, initialize
from cnnkit.layers.conv import CONV_FNS, _WindowBase, check_initializer
from cnnkit.layers.padding import Plan, check_positive_int, pad_plan, resolve_pads
from cnnkit.ops import arithmetic

__all__ = [
    "DepthwiseConv1D",
    "DepthwiseConv2D",
    "DepthwiseConv3D",
    "SeparableConv1D",
    "SeparableConv2D",
    "SpatialSeparableConv2D",
]


class _DepthwiseBase(_WindowBase):
    """Shared depthwise step: ``weight``-like kernel ``(C_in * dm, 1, *k)``, groups = C_in."""

    def _depthwise_call(self, x: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
        pre, pad = self._plan if self._plan is not None else self._plan_for(x)
        shape = x.shape
        if pre is not None:
            x = self._pad_input(x, pre)
        try:
            return self._fn(
                x, weight, bias, self.strides, pad, self.dilation_rate, self.in_channels
            )
        except RuntimeError as err:
            self._raise_size_error(shape, err)
            raise

    def _keras_fans(self, c_in: int) -> tuple[int, int]:
        """Keras' fans of its ``(*k, C, depth_multiplier)`` depthwise kernel:
        ``(C prod(k), dm prod(k))`` (PyTorch's ``(C dm, 1, *k)`` would give
        ``(prod(k), C dm prod(k))``: a smaller glorot limit)."""
        receptive = math.prod(self.kernel_size)
        return c_in * receptive, self.depth_multiplier * receptive

    def _check_build(self, input_shape: tuple) -> int:
        c_in = input_shape[1]
        if c_in is None:
            raise ShapeError(
                f"{type(self).__name__} cannot build without the number of input channels; "
                f"received shape {input_shape}."
            )
        self._window_sizes(input_shape[2:])  # kernel larger than input -> ShapeError now
        return int(c_in)


class _DepthwiseND(_DepthwiseBase):
    def __init__(
        self,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = 1,
        padding: Any = "valid",
        depth_multiplier: int = 1,
        dilation_rate: int | Sequence[int] = 1,
        activation: str | Callable | None = None,
        use_bias: bool = True,
        depthwise_initializer: str | Callable = "glorot_uniform",
        bias_initializer: str | Callable = "zeros",
        padding_mode: str = "zeros",
        *,
        in_channels: int | None = None,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(input_shape=input_shape, name=name)
        owner = type(self).__name__
        self.depth_multiplier = check_positive_int(depth_multiplier, "depth_multiplier", owner)
        self._init_window(
            kernel_size, strides, padding, dilation_rate, padding_mode, activation, use_bias
        )
        self.depthwise_initializer = check_initializer(
            depthwise_initializer, "depthwise_initializer", owner
        )
        self.bias_initializer = check_initializer(bias_initializer, "bias_initializer", owner)
        self._fn = CONV_FNS[self.spatial_dims]
        self.weight: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None
        self._eager_build(in_channels)

    def _build(self, input_shape: tuple) -> None:
        c_in = self._check_build(input_shape)
        c_out = c_in * self.depth_multiplier
        self.weight = nn.Parameter(torch.empty(c_out, 1, *self.kernel_size))
        initialize(self.weight, self.depthwise_initializer, fans=self._keras_fans(c_in))
        if self.use_bias:
            self.bias = nn.Parameter(torch.empty(c_out))
            init_bias(self.bias, self.bias_initializer, int(self.weight[0].numel()))

    def call(self, x: torch.Tensor) -> torch.Tensor:
        """``x (Tensor[N, C, *spatial])`` -> ``Tensor[N, C * depth_multiplier, *out]``."""
        y = self._depthwise_call(x, self.weight, self.bias)
        return y if self._act is None or self.emit_logits else self._act(y)

    def _output_shape(self, input_shape: tuple) -> tuple:
        c = input_shape[1]
        c_out = None if c is None else c * self.depth_multiplier
        return (input_shape[0], c_out, *self._window_sizes(input_shape[2:]))

    def count_macs(self, input_shape: Sequence[int | None]) -> int:
        """``prod(k) * prod(out) * C_in * depth_multiplier`` per sample."""
        c_in = self._in_channels_of(input_shape)
        shape, _ = self._with_batch(input_shape)
        out = self._output_shape((None, c_in, *shape[2:]))[2:]
        c_out = c_in * self.depth_multiplier
        return arithmetic.conv_macs(c_in, c_out, self.kernel_size, out, groups=c_in)

    def get_config(self) -> dict[str, Any]:
        cfg = self._window_config()
        cfg["depth_multiplier"] = self.depth_multiplier
        cfg["depthwise_initializer"] = self.depthwise_initializer
        cfg["bias_initializer"] = self.bias_initializer
        return {**cfg, **self._common_config()}


class DepthwiseConv1D(_DepthwiseND):
    """Depthwise 1D convolution: ``x (Tensor[N, C, L])`` -> ``Tensor[N, C * dm, L_out]``.

    ``padding='causal'`` pads ``dilation_rate * (kernel_size - 1)`` before the sequence,
    as :class:`cnnkit.layers.Conv1D` (Keras 3 offers 'causal' only on ``Conv1D``).
    """

    spatial_dims = 1
    causal_allowed = True


class DepthwiseConv2D(_DepthwiseND):
    """Depthwise 2D convolution: ``x (Tensor[N, C, H, W])`` -> ``Tensor[N, C * dm, H', W']``.

    >>> DepthwiseConv2D(3, depth_multiplier=2)(torch.zeros(1, 4, 8, 8)).shape
    torch.Size([1, 8, 6, 6])
    """

    spatial_dims = 2


class DepthwiseConv3D(_DepthwiseND):
    """Depthwise 3D convolution: ``x (Tensor[N, C, D, H, W])`` -> ``Tensor[N, C * dm, ...]``."""

    spatial_dims = 3


class _SeparableND(_DepthwiseBase):
    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = 1,
        padding: Any = "valid",
        dilation_rate: int | Sequence[int] = 1,
        depth_multiplier: int = 1,
        activation: str | Callable | None = None,
        use_bias: bool = True,
        depthwise_initializer: str | Callable = "glorot_uniform",
        pointwise_initializer: str | Callable = "glorot_uniform",
        bias_initializer: str | Callable = "zeros",
        padding_mode: str = "zeros",
        *,
        in_channels: int | None = None,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(input_shape=input_shape, name=name)
        owner = type(self).__name__
        self.filters = check_positive_int(filters, "filters", owner)
        self.depth_multiplier = check_positive_int(depth_multiplier, "depth_multiplier", owner)
        self._init_window(
            kernel_size, strides, padding, dilation_rate, padding_mode, activation, use_bias
        )
        self.depthwise_initializer = check_initializer(
            depthwise_initializer, "depthwise_initializer", owner
        )
        self.pointwise_initializer = check_initializer(
            pointwise_initializer, "pointwise_initializer", owner
        )
        self.bias_initializer = check_initializer(bias_initializer, "bias_initializer", owner)
        self._fn = CONV_FNS[self.spatial_dims]
        self.depthwise_weight: nn.Parameter | None = None
        self.pointwise_weight: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None
        self._eager_build(in_channels)

    def _build(self, input_shape: tuple) -> None:
        c_in = self._check_build(input_shape)
        c_mid = c_in * self.depth_multiplier
        ones = (1,) * self.spatial_dims
        self.depthwise_weight = nn.Parameter(torch.empty(c_mid, 1, *self.kernel_size))
        initialize(self.depthwise_weight, self.depthwise_initializer, fans=self._keras_fans(c_in))
        self.pointwise_weight = nn.Parameter(torch.empty(self.filters, c_mid, *ones))
        initialize(self.pointwise_weight, self.pointwise_initializer)
        if self.use_bias:
            self.bias = nn.Parameter(torch.empty(self.filters))
            init_bias(self.bias, self.bias_initializer, c_mid)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        """``x (Tensor[N, C, *spatial])`` -> ``Tensor[N, filters, *out]``."""
        y = self._depthwise_call(x, self.depthwise_weight, None)
        y = self._fn(y, self.pointwise_weight, self.bias)
        return y if self._act is None or self.emit_logits else self._act(y)

    def _output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.filters, *self._window_sizes(input_shape[2:]))

    def count_macs(self, input_shape: Sequence[int | None]) -> int:
        """Depthwise ``prod(k) prod(out) C dm`` plus pointwise ``prod(out) C dm filters``."""
        c_in = self._in_channels_of(input_shape)
        shape, _ = self._with_batch(input_shape)
        out = self._output_shape((None, c_in, *shape[2:]))[2:]
        c_mid = c_in * self.depth_multiplier
        ones = (1,) * self.spatial_dims
        return arithmetic.conv_macs(
            c_in, c_mid, self.kernel_size, out, groups=c_in
        ) + arithmetic.conv_macs(c_mid, self.filters, ones, out)

    def get_config(self) -> dict[str, Any]:
        return {
            "filters": self.filters,
            **self._window_config(),
            "depth_multiplier": self.depth_multiplier,
            "depthwise_initializer": self.depthwise_initializer,
            "pointwise_initializer": self.pointwise_initializer,
            "bias_initializer": self.bias_initializer,
            **self._common_config(),
        }


class SeparableConv1D(_SeparableND):
    """Depthwise-separable 1D convolution: ``x (Tensor[N, C, L])`` -> ``Tensor[N, filters, L']``.

    ``padding='causal'`` pads ``dilation_rate * (kernel_size - 1)`` before the sequence,
    as :class:`cnnkit.layers.Conv1D` (Keras 3 offers 'causal' only on ``Conv1D``).
    """

    spatial_dims = 1
    causal_allowed = True


class SeparableConv2D(_SeparableND):
    """Depthwise-separable 2D convolution: ``x (Tensor[N, C, H, W])`` -> ``Tensor[N, filters, H', W']``.

    >>> sum(p.numel() for p in SeparableConv2D(64, 3, in_channels=32).parameters())
    2400
    """

    spatial_dims = 2


class SpatialSeparableConv2D(_WindowBase):
    """A ``k_h x 1`` convolution then a ``1 x k_w`` one (seed 003's Sobel factorisation).

    ``x (Tensor[N, C, H, W])`` -> ``Tensor[N, filters, H', W']``, the same size as a
    ``Conv2D(filters, kernel_size, ...)`` with the same strides, padding and dilation.

    Parameters: ``column_weight (Tensor[intermediate_filters, C_in, k_h, 1])``,
    ``row_weight (Tensor[filters, intermediate_filters, 1, k_w])`` and one
    ``bias (Tensor[filters])`` after the second step. ``intermediate_filters`` defaults
    to ``filters``. The height padding and stride belong to the first step, the width
    ones to the second.
    """

    spatial_dims = 2

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = 1,
        padding: Any = "valid",
        dilation_rate: int | Sequence[int] = 1,
        intermediate_filters: int | None = None,
        activation: str | Callable | None = None,
        use_bias: bool = True,
        kernel_initializer: str | Callable = "glorot_uniform",
        bias_initializer: str | Callable = "zeros",
        padding_mode: str = "zeros",
        *,
        in_channels: int | None = None,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(input_shape=input_shape, name=name)
        owner = type(self).__name__
        self.filters = check_positive_int(filters, "filters", owner)
        if intermediate_filters is None:
            intermediate_filters = self.filters
        self.intermediate_filters = check_positive_int(
            intermediate_filters, "intermediate_filters", owner
        )
        self._init_window(
            kernel_size, strides, padding, dilation_rate, padding_mode, activation, use_bias
        )
        self.kernel_initializer = check_initializer(kernel_initializer, "kernel_initializer", owner)
        self.bias_initializer = check_initializer(bias_initializer, "bias_initializer", owner)
        (sh, sw), (dh, dw) = self.strides, self.dilation_rate
        self._args1 = ((sh, 1), (dh, 1))
        self._args2 = ((1, sw), (1, dw))
        self._fn = CONV_FNS[2]
        self._splan: tuple[Plan, Plan] | None = None
        self._splans: dict[tuple, tuple[Plan, Plan]] = {}
        if self._static:
            self._splan = self._split(
                resolve_pads(
                    self.padding, (None, None), self.kernel_size, self.strides, self.dilation_rate
                )
            )
        self.column_weight: nn.Parameter | None = None
        self.row_weight: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None
        self._eager_build(in_channels)

    def _split(self, pads: list[tuple[int, int]]) -> tuple[Plan, Plan]:
        return (
            pad_plan([pads[0], (0, 0)], self.padding_mode),
            pad_plan([(0, 0), pads[1]], self.padding_mode),
        )

    def _build(self, input_shape: tuple) -> None:
        c_in = input_shape[1]
        if c_in is None:
            raise ShapeError(
                f"{type(self).__name__} cannot build without the number of input channels; "
                f"received shape {input_shape}."
            )
        self._window_sizes(input_shape[2:])
        kh, kw = self.kernel_size
        mid = self.intermediate_filters
        self.column_weight = nn.Parameter(torch.empty(mid, c_in, kh, 1))
        initialize(self.column_weight, self.kernel_initializer)
        self.row_weight = nn.Parameter(torch.empty(self.filters, mid, 1, kw))
        initialize(self.row_weight, self.kernel_initializer)
        if self.use_bias:
            self.bias = nn.Parameter(torch.empty(self.filters))
            init_bias(self.bias, self.bias_initializer, mid * kw)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        """``x (Tensor[N, C, H, W])`` -> ``Tensor[N, filters, H', W']``."""
        plans = self._splan
        if plans is None:
            key = x.shape[2:]
            plans = self._splans.get(key)
            if plans is None:
                plans = self._splans[key] = self._split(self._pads(tuple(key)))
        (pre1, pad1), (pre2, pad2) = plans
        shape = x.shape
        try:
            if pre1 is not None:
                x = self._pad_input(x, pre1)
            y = self._fn(x, self.column_weight, None, self._args1[0], pad1, self._args1[1])
            if pre2 is not None:
                y = self._pad_input(y, pre2)
            y = self._fn(y, self.row_weight, self.bias, self._args2[0], pad2, self._args2[1])
        except RuntimeError as err:
            self._raise_size_error(shape, err)
            raise
        return y if self._act is None or self.emit_logits else self._act(y)

    def _output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.filters, *self._window_sizes(input_shape[2:]))

    def count_macs(self, input_shape: Sequence[int | None]) -> int:
        """``k_h H' W C_in mid + k_w H' W' mid filters`` per sample (W: input width)."""
        c_in = self._in_channels_of(input_shape)
        shape, _ = self._with_batch(input_shape)
        h_out, w_out = self._output_shape((None, c_in, *shape[2:]))[2:]
        kh, kw = self.kernel_size
        mid = self.intermediate_filters
        return arithmetic.conv_macs(c_in, mid, (kh, 1), (h_out, shape[3])) + arithmetic.conv_macs(
            mid, self.filters, (1, kw), (h_out, w_out)
        )

    def receptive_field_layers(
        self,
    ) -> list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """Two windows: ``(k_h, 1)`` with the height stride, then ``(1, k_w)``."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.strides, self.dilation_rate
        return [((kh, 1), (sh, 1), (dh, 1)), ((1, kw), (1, sw), (1, dw))]

    def get_config(self) -> dict[str, Any]:
        return {
            "filters": self.filters,
            **self._window_config(),
            "intermediate_filters": self.intermediate_filters,
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
            **self._common_config(),
        }
