"""Transposed convolutions: ``Conv1DTranspose``, ``Conv2DTranspose``, ``Conv3DTranspose``.

A transposed convolution multiplies by ``K^T``, the transpose of the matrix ``K`` of a
convolution (seed 003): it maps the convolution's output size back to its input size
and is the gradient of that convolution with respect to its input. Weights follow
PyTorch: ``weight (Tensor[C_in, filters / groups, *kernel_size])``, ``bias (Tensor[filters])``.

Output size per dimension (``F_eff = d (F - 1) + 1``), as
:func:`cnnkit.ops.arithmetic.transposed_conv_output_size` computes it:

* ``padding='same'`` (Keras/TensorFlow): ``N S``; ``'valid'``: ``N S + max(F_eff - S, 0)``;
  ``'full'``: ``N S - (S + F_eff - 2)``.
* a string padding with an explicit ``output_padding``: Keras' formula
  ``(N - 1) S + F_eff - 2 pad + output_padding`` with ``pad`` = ``F_eff // 2``
  (``'same'``), ``0`` (``'valid'``) or ``F_eff - 1`` (``'full'``).
* an int, ints per dimension or ``(before, after)`` pairs: PyTorch's
  ``(N - 1) S - P_before - P_after + F_eff + output_padding``.

Values: the layer is exactly the adjoint (input gradient) of the matching convolution
on an input of the output size ``L``: ``'same'`` is TensorFlow's ``conv_transpose``
with ``'SAME'`` (the gradient of a Keras ``'same'`` convolution of ``L``, its odd extra
padding after), ``'valid'``/``'full'`` the gradient of the convolution padded by 0 /
``F_eff - 1``, and int pads are ``F.conv_transposeNd`` (asymmetric pairs crop the
difference). With ``'same'`` and an explicit ``output_padding`` the 'same' convolution
of ``L`` must give back ``N`` (``1 <= F_eff % 2 + output_padding <= S``), else the
arguments are rejected as TensorFlow rejects them.

Padding is always zeros (as ``F.conv_transposeNd``). Transposed layers are not counted in
receptive fields (``receptive_field_layers()`` returns ``[]``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit._core.errors import ConfigError, ShapeError
from cnnkit.layers.base import Layer, get_activation, init_bias, initialize
from cnnkit.layers.conv import check_initializer
from cnnkit.layers.padding import (
    adjoint_pads,
    check_positive_int,
    normalize_tuple,
    torch_plan,
    window_args,
)
from cnnkit.ops import arithmetic

__all__ = ["Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"]

_TRANSPOSED_FNS: dict[int, Callable[..., torch.Tensor]] = {
    1: F.conv_transpose1d,
    2: F.conv_transpose2d,
    3: F.conv_transpose3d,
}


class _ConvNDTranspose(Layer):
    """N-D transposed convolution; see the module docstring. Use Conv{1,2,3}DTranspose."""

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = 1,
        padding: Any = "valid",
        output_padding: int | Sequence[int] | None = None,
        dilation_rate: int | Sequence[int] = 1,
        groups: int = 1,
        activation: str | Callable | None = None,
        use_bias: bool = True,
        kernel_initializer: str | Callable = "glorot_uniform",
        bias_initializer: str | Callable = "zeros",
        *,
        in_channels: int | None = None,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(input_shape=input_shape, name=name)
        nd = self.spatial_dims
        owner = type(self).__name__
        self.filters = check_positive_int(filters, "filters", owner)
        self.groups = check_positive_int(groups, "groups", owner)
        if self.filters % self.groups:
            raise ConfigError(
                f"{owner}: groups={self.groups} must divide filters={self.filters} "
                f"({self.filters} % {self.groups} = {self.filters % self.groups})."
            )
        self.kernel_size, self.strides, self.dilation_rate, self.padding = window_args(
            owner, nd, kernel_size, strides, dilation_rate, padding
        )
        self.output_padding = (
            None
            if output_padding is None
            else normalize_tuple(output_padding, nd, f"{owner} output_padding", minimum=0)
        )
        if not isinstance(use_bias, bool):
            raise ConfigError(f"{owner} expects use_bias True or False; received {use_bias!r}.")
        self.use_bias = use_bias
        self._activation_arg = activation
        self.activation, self._act = get_activation(activation)
        self.kernel_initializer = check_initializer(kernel_initializer, "kernel_initializer", owner)
        self.bias_initializer = check_initializer(bias_initializer, "bias_initializer", owner)
        self._fn = _TRANSPOSED_FNS[nd]
        self._pad, self._out_pad, self._crop = self._plan()
        self.weight: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None
        if in_channels is not None:
            in_channels = check_positive_int(in_channels, "in_channels", owner)
        if self.input_shape is not None:
            shape, _ = self._with_batch(self.input_shape)
            if in_channels is not None and shape[1] != in_channels:
                raise ConfigError(
                    f"{owner} received in_channels={in_channels} but input_shape="
                    f"{self.input_shape} has {shape[1]} channels."
                )
            self.build(shape)
        elif in_channels is not None:
            self.build((None, in_channels) + (None,) * nd)

    def _plan(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple | None]:
        owner = type(self).__name__
        nd = self.spatial_dims
        ops = self.output_padding if self.output_padding is not None else (None,) * nd
        specs = [self.padding] * nd if isinstance(self.padding, str) else list(self.padding)
        pads, out_pads, crops = [], [], []
        for k, s, d, op, spec in zip(
            self.kernel_size, self.strides, self.dilation_rate, ops, specs
        ):
            k_eff = d * (k - 1) + 1
            if op is not None and op >= max(s, d):
                raise ConfigError(
                    f"{owner}: output_padding must be smaller than the stride or the dilation "
                    f"(max({s}, {d}) = {max(s, d)}); received output_padding={self.output_padding}."
                )
            if spec == "same" and op is not None and not 1 <= k_eff % 2 + op <= s:
                raise ConfigError(
                    f"{owner}: padding='same' with output_padding={op} and a kernel of "
                    f"F_eff = {k_eff} gives (N - 1)*{s} + {k_eff % 2 + op} outputs, which a 'same' "
                    f"convolution with stride {s} does not map back to N (TensorFlow rejects it "
                    f"too). Use output_padding between {1 - k_eff % 2} and {s - k_eff % 2}, "
                    "or output_padding=None for N*stride."
                )
            p, q, cb, ca = torch_plan(*adjoint_pads(spec, op, k, s, d))
            pads.append(p)
            out_pads.append(q)
            crops.append(slice(cb, -ca if ca else None))
        crop = None
        if any(c.start or c.stop for c in crops):
            crop = (slice(None), slice(None), *crops)
        return tuple(pads), tuple(out_pads), crop

    def _build(self, input_shape: tuple) -> None:
        c_in = input_shape[1]
        if c_in is None:
            raise ShapeError(
                f"{type(self).__name__} cannot build without the number of input channels; "
                f"received shape {input_shape}."
            )
        self._check_groups(c_in)
        self._sizes(input_shape[2:])
        self.weight = nn.Parameter(
            torch.empty(c_in, self.filters // self.groups, *self.kernel_size)
        )
        # PyTorch's (C_in, filters, *k) read as (out, in, *k) gives Keras' fans of its
        # (*k, filters, C_in) kernel: fan_in = filters * prod(k), fan_out = C_in * prod(k)
        initialize(self.weight, self.kernel_initializer)
        if self.use_bias:
            self.bias = nn.Parameter(torch.empty(self.filters))
            fan_in = self.filters // self.groups * math.prod(self.kernel_size)
            init_bias(self.bias, self.bias_initializer, fan_in)

    def _check_groups(self, in_channels: int) -> None:
        if in_channels % self.groups:
            raise ShapeError(
                f"{type(self).__name__}: groups={self.groups} must divide the input channels; "
                f"received {in_channels} input channels ({in_channels} % {self.groups} = "
                f"{in_channels % self.groups})."
            )

    def call(self, x: torch.Tensor) -> torch.Tensor:
        """``x (Tensor[N, C_in, *spatial])`` -> ``Tensor[N, filters, *out_spatial]``."""
        try:
            y = self._fn(
                x,
                self.weight,
                self.bias,
                self.strides,
                self._pad,
                self._out_pad,
                self.groups,
                self.dilation_rate,
            )
        except RuntimeError as err:
            self._raise_size_error(tuple(x.shape), err)
            raise
        if self._crop is not None:
            y = y[self._crop]
        if self._act is not None and not self.emit_logits:
            y = self._act(y)
        return y

    def _size_error(self, shape: tuple) -> ShapeError | None:
        try:
            self._output_shape(shape)
        except ShapeError as err:
            return err
        return None

    def _raise_size_error(self, shape: tuple, err: Exception) -> None:
        error = self._size_error(shape)
        if error is not None:
            raise error from err

    def _sizes(self, sizes: Sequence[int | None]) -> tuple[int | None, ...]:
        specs = [self.padding] * len(sizes) if isinstance(self.padding, str) else self.padding
        ops = self.output_padding or (None,) * len(sizes)
        out = []
        for n, k, s, p, op, d in zip(
            sizes, self.kernel_size, self.strides, specs, ops, self.dilation_rate
        ):
            if n is None:
                out.append(None)
                continue
            try:
                out.append(arithmetic.transposed_conv_output_size(n, k, s, p, op, d))
            except ShapeError as err:
                raise ShapeError(
                    f"{type(self).__name__} (kernel_size={self.kernel_size}, strides="
                    f"{self.strides}, padding={self.padding!r}, output_padding="
                    f"{self.output_padding}) cannot take spatial input sizes {tuple(sizes)}: {err}"
                ) from None
        return tuple(out)

    def _output_shape(self, input_shape: tuple) -> tuple:
        c_in = input_shape[1]
        if c_in is not None and not self.built:
            self._check_groups(c_in)
        return (input_shape[0], self.filters, *self._sizes(input_shape[2:]))

    def count_macs(self, input_shape: Sequence[int | None]) -> int:
        """``prod(F) * prod(N_in) * C_in * filters / groups`` per sample (each input
        element scatters one kernel per output channel of its group)."""
        shape, _ = self._with_batch(input_shape)
        c_in = shape[1] if shape[1] is not None else self.in_channels
        if c_in is None or any(n is None for n in shape[2:]):
            raise ShapeError(
                f"{type(self).__name__}.count_macs needs the channels and spatial sizes; "
                f"received {tuple(input_shape)}."
            )
        self._output_shape((None, c_in, *shape[2:]))
        return arithmetic.conv_macs(c_in, self.filters, self.kernel_size, shape[2:], self.groups)

    def receptive_field_layers(self) -> list:
        """``[]``: transposed (upsampling) layers are not counted in receptive fields.

        A transposed convolution with stride ``S`` spreads each input over ``F_eff``
        outputs ``S`` apart (a fractional jump of ``1/S``), which the decks' receptive
        field recursion for downsampling stacks does not describe.
        """
        return []

    def get_config(self) -> dict[str, Any]:
        act = self._activation_arg
        return {
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "output_padding": self.output_padding,
            "dilation_rate": self.dilation_rate,
            "groups": self.groups,
            "activation": act.lower() if isinstance(act, str) else act,
            "use_bias": self.use_bias,
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
            "in_channels": self.in_channels,
            "input_shape": self.input_shape,
            "name": self.layer_name,
        }


class Conv1DTranspose(_ConvNDTranspose):
    """1D transposed convolution: ``x (Tensor[N, C, L])`` -> ``Tensor[N, filters, L_out]``.

    >>> Conv1DTranspose(2, 3, in_channels=1)(torch.zeros(1, 1, 4)).shape  # seed 003: 4 -> 6
    torch.Size([1, 2, 6])
    """

    spatial_dims = 1


class Conv2DTranspose(_ConvNDTranspose):
    """2D transposed convolution: ``x (Tensor[N, C, H, W])`` -> ``Tensor[N, filters, H', W']``.

    >>> Conv2DTranspose(8, 3, strides=2, padding="same")(torch.zeros(1, 4, 5, 5)).shape
    torch.Size([1, 8, 10, 10])
    """

    spatial_dims = 2


class Conv3DTranspose(_ConvNDTranspose):
    """3D transposed convolution: ``x (Tensor[N, C, D, H, W])`` -> ``Tensor[N, filters, ...]``."""

    spatial_dims = 3
