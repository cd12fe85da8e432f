"""Convolution layers: ``Conv1D``, ``Conv2D``, ``Conv3D`` (Keras names, PyTorch layouts).

A convolution slides a kernel over the input and takes a weighted sum at every
position (the decks' ``ConvolvedFeature(i, j)`` formula, a cross-correlation as in
every deep-learning framework). Output size per dimension (seed 002 / seed 004)::

    M = floor((N - F_eff + P_before + P_after) / S) + 1,    F_eff = d (F - 1) + 1

Padding is ``'valid'`` (none), ``'same'`` (TensorFlow/Keras: ``ceil(N / S)`` outputs
for any stride, the odd extra element padded after), ``'full'`` (``F_eff - 1`` on both
sides), an int, one int per dimension, or one ``(before, after)`` pair per dimension.
``padding_mode`` chooses what is padded: ``'zeros'``, ``'reflect'``, ``'replicate'`` or
``'circular'``.

Weights follow PyTorch: ``weight (Tensor[filters, C_in / groups, *kernel_size])`` and
``bias (Tensor[filters])``, so ``F.conv2d(x, layer.weight, layer.bias, ...)`` is the
reference. Symmetric zero padding goes straight into the functional op; only an
asymmetric remainder (Keras' ``'same'`` with an even kernel or a stride > 1) or a
non-zero ``padding_mode`` costs an ``F.pad``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit._core.errors import ConfigError, ShapeError, check_choice
from cnnkit.layers.base import Layer, get_activation, init_bias, initialize
from cnnkit.layers.padding import (
    Plan,
    check_positive_int,
    is_static,
    pad_plan,
    padding_specs,
    resolve_pads,
    window_args,
)
from cnnkit.ops import arithmetic

__all__ = ["Conv1D", "Conv2D", "Conv3D"]

CONV_FNS: dict[int, Callable[..., torch.Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_TORCH_PAD_MODE = {
    "zeros": "constant",
    "reflect": "reflect",
    "replicate": "replicate",
    "circular": "circular",
}


def check_initializer(initializer: Any, name: str, owner: str) -> Any:
    """Validate an initializer name (or callable) eagerly by trying it on a tiny tensor."""
    if callable(initializer) and not isinstance(initializer, str):
        return initializer
    try:
        initialize(torch.empty(1, 1, 1), initializer)
    except ConfigError as err:
        raise ConfigError(f"{owner} {name}: {err}") from None
    return initializer


class _WindowBase(Layer):
    """Shared machinery of sliding-window convolutions: arguments, padding plans, sizes.

    Subclasses set ``spatial_dims``, create their parameters in ``_build`` and use
    ``self._plan_for(x)`` to get ``(pre_pad, op_padding)`` in ``call``.
    """

    #: whether ``padding='causal'`` is accepted (the 1D layers, as Keras' Conv1D)
    causal_allowed = False

    def _init_window(
        self,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int],
        padding: Any,
        dilation_rate: int | Sequence[int],
        padding_mode: str,
        activation: str | Callable | None,
        use_bias: bool,
    ) -> None:
        nd = self.spatial_dims
        owner = type(self).__name__
        self.kernel_size, self.strides, self.dilation_rate, self.padding = window_args(
            owner, nd, kernel_size, strides, dilation_rate, padding, causal=self.causal_allowed
        )
        self.padding_mode = check_choice(f"{owner} padding_mode", padding_mode, PADDING_MODES)
        if not isinstance(use_bias, bool):
            raise ConfigError(f"{owner} expects use_bias True or False; received {use_bias!r}.")
        self.use_bias = use_bias
        self._activation_arg = activation
        self.activation, self._act = get_activation(activation)
        self._torch_pad_mode = _TORCH_PAD_MODE[self.padding_mode]
        # pads are static unless Keras' 'same' meets a stride > 1 (then they depend on N)
        self._static = is_static(self.padding, self.strides)
        self._plan: Plan | None = None
        self._plans: dict[tuple, Plan] = {}
        if self._static:
            pads = resolve_pads(
                self.padding, (None,) * nd, self.kernel_size, self.strides, self.dilation_rate
            )
            self._plan = pad_plan(pads, self.padding_mode)

    def _eager_build(self, in_channels: int | None) -> None:
        """Build now when ``in_channels`` or ``input_shape`` was given (PyTorch style)."""
        if in_channels is not None:
            in_channels = check_positive_int(in_channels, "in_channels", type(self).__name__)
        if self.input_shape is not None:
            shape, _ = self._with_batch(self.input_shape)
            if in_channels is not None and shape[1] != in_channels:
                raise ConfigError(
                    f"{type(self).__name__} received in_channels={in_channels} but "
                    f"input_shape={self.input_shape} has {shape[1]} channels."
                )
            self.build(shape)
        elif in_channels is not None:
            self.build((None, in_channels) + (None,) * self.spatial_dims)

    # ------------------------------------------------------------------ padding

    def _pads(self, sizes: Sequence[int | None]) -> list[tuple[int, int]]:
        return resolve_pads(self.padding, sizes, self.kernel_size, self.strides, self.dilation_rate)

    def _plan_for(self, x: torch.Tensor) -> Plan:
        if self._plan is not None:
            return self._plan
        key = x.shape[2:]
        plan = self._plans.get(key)
        if plan is None:
            plan = pad_plan(self._pads(tuple(key)), self.padding_mode)
            self._plans[key] = plan
        return plan

    def _pad_input(self, x: torch.Tensor, pre: list[int]) -> torch.Tensor:
        try:
            return F.pad(x, pre, mode=self._torch_pad_mode)
        except (RuntimeError, NotImplementedError) as err:
            raise ShapeError(
                f"{type(self).__name__} with padding_mode={self.padding_mode!r} cannot pad input "
                f"of shape {tuple(x.shape)} by {pre} (F.pad order, last dim first): {err}. "
                "'reflect' needs each pad smaller than the input size; use 'replicate' or "
                "'zeros', or a larger input."
            ) from None

    # ------------------------------------------------------------------ sizes

    def _window_sizes(self, sizes: Sequence[int | None]) -> tuple[int | None, ...]:
        """Floored output sizes (PyTorch/Keras) for spatial input sizes."""
        specs = padding_specs(self.padding, self.kernel_size, self.dilation_rate)
        out = []
        for n, k, s, p, d in zip(sizes, self.kernel_size, self.strides, specs, self.dilation_rate):
            if n is None:
                out.append(None)
                continue
            try:
                out.append(arithmetic.conv_output_size(n, k, s, p, d, floor=True))
            except ShapeError as err:
                raise ShapeError(
                    f"{type(self).__name__} (kernel_size={self.kernel_size}, "
                    f"strides={self.strides}, padding={self.padding!r}, "
                    f"dilation_rate={self.dilation_rate}) cannot take spatial input sizes "
                    f"{tuple(sizes)}: {err}"
                ) from None
        return tuple(out)

    def _size_error(self, shape: Sequence[int]) -> ShapeError | None:
        """A descriptive ShapeError for a failed op, or None to re-raise torch's own."""
        try:
            self._output_shape(tuple(shape))
        except ShapeError as err:
            return err
        return None

    def _raise_size_error(self, shape: Sequence[int], err: Exception) -> None:
        """Raise a descriptive ShapeError for a failed op if the sizes explain it."""
        error = self._size_error(shape)
        if error is not None:
            raise error from err

    def _check_groups(self, in_channels: int, groups: int) -> None:
        if in_channels % groups:
            raise ShapeError(
                f"{type(self).__name__}: groups={groups} must divide the input channels; "
                f"received {in_channels} input channels ({in_channels} % {groups} = "
                f"{in_channels % groups}). Use groups in "
                f"{[g for g in range(1, in_channels + 1) if in_channels % g == 0]}."
            )

    def _in_channels_of(self, input_shape: Sequence[int | None]) -> int:
        shape, _ = self._with_batch(input_shape)
        c = shape[1] if shape[1] is not None else self.in_channels
        if c is None:
            raise ShapeError(
                f"{type(self).__name__} needs the number of input channels; received shape "
                f"{tuple(input_shape)}."
            )
        return int(c)

    def receptive_field_layers(
        self,
    ) -> list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """One window: ``[(kernel_size, strides, dilation_rate)]``."""
        return [(self.kernel_size, self.strides, self.dilation_rate)]

    def _window_config(self) -> dict[str, Any]:
        return {
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "dilation_rate": self.dilation_rate,
        }

    def _common_config(self) -> dict[str, Any]:
        return {
            "activation": self._activation_arg
            if not isinstance(self._activation_arg, str)
            else self._activation_arg.lower(),
            "use_bias": self.use_bias,
            "padding_mode": self.padding_mode,
            "in_channels": self.in_channels,
            "input_shape": self.input_shape,
            "name": self.layer_name,
        }


class _ConvND(_WindowBase):
    """N-D convolution; see the module docstring. Use Conv1D, Conv2D or Conv3D."""

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = 1,
        padding: Any = "valid",
        dilation_rate: int | Sequence[int] = 1,
        groups: int = 1,
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
        self.groups = check_positive_int(groups, "groups", owner)
        if self.filters % self.groups:
            raise ConfigError(
                f"{owner}: groups={self.groups} must divide filters={self.filters} "
                f"({self.filters} % {self.groups} = {self.filters % self.groups})."
            )
        self._init_window(
            kernel_size, strides, padding, dilation_rate, padding_mode, activation, use_bias
        )
        self.kernel_initializer = check_initializer(kernel_initializer, "kernel_initializer", owner)
        self.bias_initializer = check_initializer(bias_initializer, "bias_initializer", owner)
        self._fn = CONV_FNS[self.spatial_dims]
        self.weight: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None
        self._eager_build(in_channels)

    def _build(self, input_shape: tuple) -> None:
        c_in = input_shape[1]
        if c_in is None:
            raise ShapeError(
                f"{type(self).__name__} cannot build without the number of input channels; "
                f"received shape {input_shape}."
            )
        self._check_groups(c_in, self.groups)
        self._window_sizes(input_shape[2:])  # kernel larger than input -> ShapeError now
        self.weight = nn.Parameter(
            torch.empty(self.filters, c_in // self.groups, *self.kernel_size)
        )
        initialize(self.weight, self.kernel_initializer)
        if self.use_bias:
            self.bias = nn.Parameter(torch.empty(self.filters))
            fan_in = c_in // self.groups * math.prod(self.kernel_size)
            init_bias(self.bias, self.bias_initializer, fan_in)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        """``x (Tensor[N, C_in, *spatial])`` -> ``Tensor[N, filters, *out_spatial]``."""
        pre, pad = self._plan if self._plan is not None else self._plan_for(x)
        if pre is not None:
            x = self._pad_input(x, pre)
        try:
            y = self._fn(
                x, self.weight, self.bias, self.strides, pad, self.dilation_rate, self.groups
            )
        except RuntimeError as err:
            self._raise_size_error(x.shape if pre is None else self._unpadded(x, pre), err)
            raise
        if self._act is not None and not self.emit_logits:
            y = self._act(y)
        return y

    @staticmethod
    def _unpadded(x: torch.Tensor, pre: list[int]) -> tuple:
        sizes = list(x.shape)
        for i in range(len(pre) // 2):
            sizes[-1 - i] -= pre[2 * i] + pre[2 * i + 1]
        return tuple(sizes)

    def _output_shape(self, input_shape: tuple) -> tuple:
        c_in = input_shape[1]
        if c_in is not None and not self.built:
            self._check_groups(c_in, self.groups)
        return (input_shape[0], self.filters, *self._window_sizes(input_shape[2:]))

    def count_macs(self, input_shape: Sequence[int | None]) -> int:
        """Multiply-accumulates per sample: ``prod(F) * prod(out) * C_in/groups * filters``."""
        c_in = self._in_channels_of(input_shape)
        shape, _ = self._with_batch(input_shape)
        out = self._output_shape((None, c_in, *shape[2:]))[2:]
        return arithmetic.conv_macs(c_in, self.filters, self.kernel_size, out, self.groups)

    def get_config(self) -> dict[str, Any]:
        return {
            "filters": self.filters,
            **self._window_config(),
            "groups": self.groups,
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
            **self._common_config(),
        }


class Conv1D(_ConvND):
    """1D convolution over ``x (Tensor[N, C, L])`` -> ``Tensor[N, filters, L_out]``.

    ``padding='causal'`` (Keras): ``dilation_rate * (kernel_size - 1)`` zeros before the
    sequence and none after, so ``output[t]`` sees only ``x[:t + 1]``.

    >>> Conv1D(8, 3, padding="same", in_channels=4)(torch.zeros(2, 4, 10)).shape
    torch.Size([2, 8, 10])
    """

    spatial_dims = 1
    causal_allowed = True


class Conv2D(_ConvND):
    """2D convolution over ``x (Tensor[N, C, H, W])`` -> ``Tensor[N, filters, H_out, W_out]``.

    Seed 004's padding example: a 6x6 image, the vertical-edge kernel and
    ``padding=1`` (or ``'same'``) keep the 6x6 size.

    >>> Conv2D(32, 3, activation="relu")(torch.zeros(1, 3, 32, 32)).shape
    torch.Size([1, 32, 30, 30])
    """

    spatial_dims = 2


class Conv3D(_ConvND):
    """3D convolution over ``x (Tensor[N, C, D, H, W])`` -> ``Tensor[N, filters, D', H', W']``."""

    spatial_dims = 3
