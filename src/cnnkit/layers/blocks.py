"""Blocks of layers: the ``Inception`` module (seed 003) and the ``ResidualBlock``.

Both are :class:`~cnnkit.layers.base.Layer`s: their children (``Conv2D``,
``MaxPooling2D``, ``BatchNormalization``) are created when the input channels are known
(at build or first call), ``summary`` shows each block as one row with the sum of its
children's parameters and MACs, and ``receptive_field_layers`` reports the longest path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from cnnkit._core.errors import ConfigError
from cnnkit.layers.base import Layer, get_activation
from cnnkit.layers.conv import Conv2D
from cnnkit.layers.core import Activation
from cnnkit.layers.normalization import BatchNormalization
from cnnkit.layers.pooling import MaxPooling2D

__all__ = ["Inception", "ResidualBlock"]

RFLayers = list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


def _pos(value: Any, name: str, owner: str, optional: bool = False) -> int | None:
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        what = "a positive int or None" if optional else "a positive int"
        raise ConfigError(f"{owner} expects {name} {what}; received {value!r}.")
    return int(value)


def _check_bool(value: Any, name: str, owner: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{owner} expects {name} True or False; received {value!r}.")
    return value


def _macs_through(modules: Sequence[nn.Module], shape: tuple) -> tuple[int, tuple]:
    """MACs and output shape of a chain of built cnnkit layers (nested nn.Sequential ok)."""
    macs = 0
    for m in modules:
        if isinstance(m, nn.Sequential):
            inner, shape = _macs_through(list(m), shape)
            macs += inner
        else:
            macs += m.count_macs(shape)
            shape = tuple(m.compute_output_shape(shape))
    return macs, shape


def _shape_through(modules: Sequence[nn.Module], shape: tuple) -> tuple:
    return _macs_through(modules, shape)[1]


class Inception(Layer):
    """GoogLeNet's inception module: parallel 1x1, 3x3 and 5x5 convolutions and a 3x3
    max pooling (stride 1), all with ``'same'`` padding, concatenated on the channels.

    Without reductions it is seed 003's naive module: on a 28x28x256 input
    ``Inception(128, 192, 96)`` gives 28x28x(128 + 192 + 96 + 256) = 28x28x672. With
    ``reduce_3x3``/``reduce_5x5`` a 1x1 convolution first thins the input of the 3x3/5x5
    convolutions and ``pool_projection`` a 1x1 convolution follows the pooling (the
    dimension-reduced module; GoogLeNet's 3a is
    ``Inception(64, 128, 32, pool_projection=32, reduce_3x3=96, reduce_5x5=16)`` on 192
    channels, giving 256). Every convolution is followed by ``activation`` (after a
    ``BatchNormalization`` when ``batch_norm``, like torchvision's ``BasicConv2d``).

    Args:
        filters_1x1, filters_3x3, filters_5x5: output channels of the three conv branches.
        pool_projection: output channels of the 1x1 after the pooling (``None``: the
            pooled input passes unchanged).
        reduce_3x3, reduce_5x5: channels of the 1x1 reductions (``None``: none).
        activation: after every convolution (default ``'relu'``).
        batch_norm: conv -> BatchNormalization -> activation (``bn_epsilon``).
        use_bias: biases of the convolutions.

    Shapes: ``x (Tensor[N, C, H, W])`` -> ``Tensor[N, filters_1x1 + filters_3x3 +
    filters_5x5 + (pool_projection or C), H, W]``. Children: ``branch1x1``,
    ``branch3x3``, ``branch5x5``, ``branch_pool`` (``nn.Sequential``s).
    """

    spatial_dims = 2

    def __init__(
        self,
        filters_1x1: int,
        filters_3x3: int,
        filters_5x5: int,
        pool_projection: int | None = None,
        reduce_3x3: int | None = None,
        reduce_5x5: int | None = None,
        activation: str | Callable | None = "relu",
        *,
        batch_norm: bool = False,
        use_bias: bool = True,
        bn_epsilon: float = 1e-3,
        kernel_initializer: str | Callable = "glorot_uniform",
        in_channels: int | None = None,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(input_shape=input_shape, name=name)
        owner = "Inception"
        self.filters_1x1 = _pos(filters_1x1, "filters_1x1", owner)
        self.filters_3x3 = _pos(filters_3x3, "filters_3x3", owner)
        self.filters_5x5 = _pos(filters_5x5, "filters_5x5", owner)
        self.pool_projection = _pos(pool_projection, "pool_projection", owner, optional=True)
        self.reduce_3x3 = _pos(reduce_3x3, "reduce_3x3", owner, optional=True)
        self.reduce_5x5 = _pos(reduce_5x5, "reduce_5x5", owner, optional=True)
        get_activation(activation)  # validates the name
        self.activation = activation
        self.batch_norm = _check_bool(batch_norm, "batch_norm", owner)
        self.use_bias = _check_bool(use_bias, "use_bias", owner)
        self.bn_epsilon = float(bn_epsilon)
        self.kernel_initializer = kernel_initializer
        self._in_channels_arg = _pos(in_channels, "in_channels", owner, optional=True)
        self.branch1x1: nn.Sequential | None = None
        self.branch3x3: nn.Sequential | None = None
        self.branch5x5: nn.Sequential | None = None
        self.branch_pool: nn.Sequential | None = None
        if self.input_shape is not None:
            self.build(self.input_shape)
        elif in_channels is not None:
            self.build((None, in_channels, None, None))

    def _unit(self, c_in: int, filters: int, kernel: int) -> list[nn.Module]:
        conv = Conv2D(
            filters,
            kernel,
            padding="same",
            activation=None if self.batch_norm else self.activation,
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            in_channels=c_in,
        )
        if not self.batch_norm:
            return [conv]
        bn = BatchNormalization(epsilon=self.bn_epsilon).build((None, filters, None, None))
        return [conv, bn, Activation(self.activation)]

    def _build(self, input_shape: tuple) -> None:
        c = int(input_shape[1])
        self.branch1x1 = nn.Sequential(*self._unit(c, self.filters_1x1, 1))
        for attr, reduce, filters, k in (
            ("branch3x3", self.reduce_3x3, self.filters_3x3, 3),
            ("branch5x5", self.reduce_5x5, self.filters_5x5, 5),
        ):
            mods = self._unit(c, reduce, 1) if reduce else []
            mods += self._unit(reduce or c, filters, k)
            setattr(self, attr, nn.Sequential(*mods))
        pool: list[nn.Module] = [MaxPooling2D(3, strides=1, padding="same")]
        if self.pool_projection:
            pool += self._unit(c, self.pool_projection, 1)
        self.branch_pool = nn.Sequential(*pool)

    def _branches(self) -> list[nn.Sequential]:
        return [self.branch1x1, self.branch3x3, self.branch5x5, self.branch_pool]

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.branch1x1(x), self.branch3x3(x), self.branch5x5(x), self.branch_pool(x)], 1
        )

    def _output_shape(self, input_shape: tuple) -> tuple:
        if self.built:
            outs = [_shape_through(list(b), input_shape) for b in self._branches()]
            channels = sum(o[1] for o in outs)
            return (input_shape[0], channels, *outs[0][2:])
        c = input_shape[1]
        last = self.pool_projection or c
        channels = (
            None if last is None else self.filters_1x1 + self.filters_3x3 + self.filters_5x5 + last
        )
        return (input_shape[0], channels, *input_shape[2:])  # 'same', stride 1

    def count_macs(self, input_shape: Sequence[int | None]) -> int:
        """Sum of the convolutions' MACs (builds the block if needed)."""
        shape, _ = self._with_batch(input_shape)
        if not self.built:
            self.build(shape)
        return sum(_macs_through(list(b), shape)[0] for b in self._branches())

    def receptive_field_layers(self) -> RFLayers:
        """The longest branch: the 5x5 convolution (the 1x1 reduction adds nothing)."""
        return [((5, 5), (1, 1), (1, 1))]

    def get_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "filters_1x1": self.filters_1x1,
            "filters_3x3": self.filters_3x3,
            "filters_5x5": self.filters_5x5,
            "pool_projection": self.pool_projection,
            "reduce_3x3": self.reduce_3x3,
            "reduce_5x5": self.reduce_5x5,
            "activation": self.activation,
            "batch_norm": self.batch_norm,
            "use_bias": self.use_bias,
            "bn_epsilon": self.bn_epsilon,
            "kernel_initializer": self.kernel_initializer,
        }
        if self._in_channels_arg is not None:
            cfg["in_channels"] = self._in_channels_arg
        if self.input_shape is not None:
            cfg["input_shape"] = list(self.input_shape)
        if self.layer_name is not None:
            cfg["name"] = self.layer_name
        return cfg


class ResidualBlock(Layer):
    """ResNet's residual block: ``y = act(F(x) + shortcut(x))``.

    ``F`` is two 3x3 convolutions (basic block) or, with ``bottleneck=True``, 1x1 ->
    3x3 -> 1x1 with ``filters * expansion`` outputs; each convolution is followed by
    ``BatchNormalization`` and all but the last by ``activation``. The stride is on the
    (first) 3x3 convolution, as in torchvision. The shortcut is the identity, or the
    projection ``W_s x`` (a 1x1 convolution with the block's stride, then batch norm)
    when the stride or the channel count changes. Convolutions have no bias
    (``use_bias=False``): the batch norm that follows has its own offset.

    Args:
        filters: channels of the 3x3 convolutions (output channels of a basic block).
        strides: stride of the block (2 halves the spatial size: ``ceil(H / 2)``).
        bottleneck: use 1x1-3x3-1x1 with ``filters * expansion`` output channels.
        expansion: output channels factor of the bottleneck (4 in ResNet-50).
        bn_epsilon, bn_momentum: of every ``BatchNormalization`` (Keras meaning).

    Shapes: ``x (Tensor[N, C, H, W])`` -> ``Tensor[N, filters (* expansion),
    ceil(H / strides), ceil(W / strides)]``. Children: ``conv1``, ``bn1``, ``conv2``,
    ``bn2`` (``conv3``, ``bn3``), ``shortcut`` (``None`` for the identity).
    """

    spatial_dims = 2

    def __init__(
        self,
        filters: int,
        strides: int = 1,
        bottleneck: bool = False,
        expansion: int = 4,
        activation: str | Callable | None = "relu",
        *,
        use_bias: bool = False,
        bn_epsilon: float = 1e-3,
        bn_momentum: float = 0.99,
        kernel_initializer: str | Callable = "he_normal",
        in_channels: int | None = None,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(input_shape=input_shape, name=name)
        owner = "ResidualBlock"
        self.filters = _pos(filters, "filters", owner)
        self.strides = _pos(strides, "strides", owner)
        self.bottleneck = _check_bool(bottleneck, "bottleneck", owner)
        self.expansion = _pos(expansion, "expansion", owner)
        self.activation = activation
        _, self._act = get_activation(activation)
        self.use_bias = _check_bool(use_bias, "use_bias", owner)
        self.bn_epsilon = float(bn_epsilon)
        self.bn_momentum = float(bn_momentum)
        self.kernel_initializer = kernel_initializer
        self._in_channels_arg = _pos(in_channels, "in_channels", owner, optional=True)
        self.out_channels = self.filters * (self.expansion if self.bottleneck else 1)
        self.conv1: Conv2D | None = None
        self.bn1: BatchNormalization | None = None
        self.conv2: Conv2D | None = None
        self.bn2: BatchNormalization | None = None
        self.conv3: Conv2D | None = None
        self.bn3: BatchNormalization | None = None
        self.shortcut: nn.Sequential | None = None
        if self.input_shape is not None:
            self.build(self.input_shape)
        elif in_channels is not None:
            self.build((None, in_channels, None, None))

    def _conv(self, c_in: int, filters: int, kernel: int, strides: int = 1) -> Conv2D:
        return Conv2D(
            filters,
            kernel,
            strides=strides,
            padding=kernel // 2,  # symmetric, as torchvision (ceil(H / stride) outputs)
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            in_channels=c_in,
        )

    def _bn(self, channels: int) -> BatchNormalization:
        bn = BatchNormalization(momentum=self.bn_momentum, epsilon=self.bn_epsilon)
        return bn.build((None, channels, None, None))

    def _build(self, input_shape: tuple) -> None:
        c, f = int(input_shape[1]), self.filters
        if self.bottleneck:
            self.conv1 = self._conv(c, f, 1)
            self.bn1 = self._bn(f)
            self.conv2 = self._conv(f, f, 3, self.strides)
            self.bn2 = self._bn(f)
            self.conv3 = self._conv(f, self.out_channels, 1)
            self.bn3 = self._bn(self.out_channels)
        else:
            self.conv1 = self._conv(c, f, 3, self.strides)
            self.bn1 = self._bn(f)
            self.conv2 = self._conv(f, f, 3)
            self.bn2 = self._bn(f)
        if self.strides != 1 or c != self.out_channels:
            self.shortcut = nn.Sequential(
                self._conv(c, self.out_channels, 1, self.strides), self._bn(self.out_channels)
            )

    def _main(self) -> list[nn.Module]:
        mods: list[nn.Module] = [self.conv1, self.bn1, self.conv2, self.bn2]
        if self.bottleneck:
            mods += [self.conv3, self.bn3]
        return mods

    def call(self, x: torch.Tensor) -> torch.Tensor:
        act = self._act
        out = self.bn1(self.conv1(x))
        if act is not None:
            out = act(out)
        out = self.bn2(self.conv2(out))
        if self.bottleneck:
            if act is not None:
                out = act(out)
            out = self.bn3(self.conv3(out))
        out = out + (x if self.shortcut is None else self.shortcut(x))
        return out if act is None else act(out)

    def _output_shape(self, input_shape: tuple) -> tuple:
        if self.built:
            return _shape_through(self._main(), input_shape)
        s = self.strides
        spatial = tuple(None if n is None else -(-n // s) for n in input_shape[2:])
        return (input_shape[0], self.out_channels, *spatial)

    def count_macs(self, input_shape: Sequence[int | None]) -> int:
        """Sum of the convolutions' MACs, shortcut included (builds the block if needed)."""
        shape, _ = self._with_batch(input_shape)
        if not self.built:
            self.build(shape)
        macs = _macs_through(self._main(), shape)[0]
        if self.shortcut is not None:
            macs += _macs_through(list(self.shortcut), shape)[0]
        return macs

    def receptive_field_layers(self) -> RFLayers:
        """The main path's convolutions (longer than the 1x1 shortcut)."""
        s = (self.strides, self.strides)
        one, three = ((1, 1), (1, 1), (1, 1)), ((3, 3), (1, 1), (1, 1))
        if self.bottleneck:
            return [one, ((3, 3), s, (1, 1)), one]
        return [((3, 3), s, (1, 1)), three]

    def get_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "filters": self.filters,
            "strides": self.strides,
            "bottleneck": self.bottleneck,
            "expansion": self.expansion,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "bn_epsilon": self.bn_epsilon,
            "bn_momentum": self.bn_momentum,
            "kernel_initializer": self.kernel_initializer,
        }
        if self._in_channels_arg is not None:
            cfg["in_channels"] = self._in_channels_arg
        if self.input_shape is not None:
            cfg["input_shape"] = list(self.input_shape)
        if self.layer_name is not None:
            cfg["name"] = self.layer_name
        return cfg
