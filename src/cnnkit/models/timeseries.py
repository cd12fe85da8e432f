"""1D CNNs for time series (seed 003's sensor-data and dilated-convolution slides).

* ``fcn1d`` and ``resnet1d``: Wang, Yan & Oates (2017), "Time Series Classification from
  Scratch with Deep Neural Networks: A Strong Baseline" (IJCNN), the UCR archive
  baselines the decks draw: convolutions with batch norm and ReLU, global average
  pooling, a softmax layer.
* ``tcn``: Bai, Kolter & Koltun (2018), "An Empirical Evaluation of Generic Convolutional
  and Recurrent Networks for Sequence Modeling": residual blocks of dilated causal
  convolutions (dilations 1, 2, 4, ...), so the receptive field grows exponentially
  with depth while an output never sees a later input.

Inputs are ``x (Tensor[N, C, L])`` (channels = sensor axes, 1 for the univariate UCR
sets). Every net ends in a global pooling (or, for the TCN, its last time step), so
it takes any length: the UCR sets GunPoint (150), ECG200 (96) and Coffee (286) run
through the same model. Outputs are logits (the losses apply the softmax).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cnnkit._core.errors import ConfigError, check_choice
from cnnkit.layers import (
    BatchNormalization,
    Conv1D,
    Dense,
    Dropout,
    GlobalAveragePooling1D,
    GlobalMaxPooling1D,
)
from cnnkit.models.base import ImageClassifier
from cnnkit.models.registry import register_model
from cnnkit.ops.arithmetic import receptive_field

__all__ = [
    "LastTimeStep",
    "ResidualBlock1D",
    "TemporalBlock",
    "fcn1d",
    "resnet1d",
    "tcn",
    "tcn_receptive_field",
]


def _bn(channels: int, momentum: float) -> BatchNormalization:
    return BatchNormalization(momentum=momentum).build((None, channels, None))


def _conv_bn_relu(c_in: int, filters: int, kernel: int, bn_momentum: float) -> nn.Sequential:
    """Conv1D ('same', bias as in the authors' Keras code) -> BatchNormalization -> ReLU."""
    return nn.Sequential(
        Conv1D(filters, kernel, padding="same", in_channels=c_in),
        _bn(filters, bn_momentum),
        nn.ReLU(),
    )


def _gap_head(channels: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(GlobalAveragePooling1D(), Dense(num_classes, in_features=channels))


@register_model("fcn1d")
def fcn1d(
    num_classes: int = 2,
    in_channels: int = 1,
    filters: Sequence[int] = (128, 256, 128),
    kernel_sizes: Sequence[int] = (8, 5, 3),
    length: int = 150,
    bn_momentum: float = 0.9,
) -> ImageClassifier:
    """Wang et al. (2017)'s fully convolutional network (FCN) for time series.

    Three blocks of Conv1D (128, 256, 128 filters; kernels 8, 5, 3; stride 1; 'same'
    padding) -> BatchNormalization -> ReLU, then global average pooling and a dense
    softmax layer (here: logits). ``length`` only sets ``default_input_shape``
    (GunPoint's 150); any length works. ``bn_momentum`` has Keras' meaning; its default
    0.9 is PyTorch's 0.1 (the authors' Keras code kept Keras' 0.99, whose running
    statistics lag far behind the batch statistics in short runs).
    264,962 parameters for one channel and 2 classes.

    Input ``x (Tensor[N, in_channels, L])``; output ``Tensor[N, num_classes]``.
    Stages ``block1``, ``block2``, ``block3``; ``last_conv`` is block 3's convolution.
    """
    if len(filters) != len(kernel_sizes):
        raise ConfigError(
            f"fcn1d needs one kernel size per block; received filters={tuple(filters)} and "
            f"kernel_sizes={tuple(kernel_sizes)}."
        )
    stages = []
    c = in_channels
    for i, (f, k) in enumerate(zip(filters, kernel_sizes), start=1):
        stages.append((f"block{i}", _conv_bn_relu(c, f, k, bn_momentum)))
        c = f
    return ImageClassifier(stages, _gap_head(c, num_classes), (in_channels, length))


class ResidualBlock1D(nn.Module):
    """Wang et al. (2017)'s residual block: three Conv1D-BN(-ReLU) units (kernels 8, 5, 3,
    the last without ReLU) added to the shortcut, then ReLU.

    The shortcut is a 1x1 convolution + batch norm when the channel count changes, else
    a batch norm of the input (as the authors' code). ``x (Tensor[N, C, L])`` ->
    ``Tensor[N, filters, L]``.
    """

    def __init__(
        self,
        in_channels: int,
        filters: int,
        kernel_sizes: Sequence[int] = (8, 5, 3),
        bn_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        # the shortcut is registered first so that the main path's last conv is the
        # block's last convolution (what ``last_conv_of`` reports)
        if in_channels != filters:
            self.shortcut = nn.Sequential(
                Conv1D(filters, 1, in_channels=in_channels),
                _bn(filters, bn_momentum),
            )
        else:
            self.shortcut = nn.Sequential(_bn(filters, bn_momentum))
        units: list[nn.Module] = []
        c = in_channels
        for i, k in enumerate(kernel_sizes):
            unit = _conv_bn_relu(c, filters, k, bn_momentum)
            if i == len(kernel_sizes) - 1:
                unit = unit[:2]  # no ReLU before the addition
            units.extend(unit)
            c = filters
        self.main = nn.Sequential(*units)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.main(x) + self.shortcut(x))


@register_model("resnet1d")
def resnet1d(
    num_classes: int = 2,
    in_channels: int = 1,
    filters: Sequence[int] = (64, 128, 128),
    kernel_sizes: Sequence[int] = (8, 5, 3),
    length: int = 150,
    bn_momentum: float = 0.9,
) -> ImageClassifier:
    """Wang et al. (2017)'s ResNet for time series: three residual blocks of 64, 128 and
    128 filters (each three convolutions with kernels 8, 5, 3 and batch norm), global
    average pooling, a dense softmax layer (here: logits).

    Input ``x (Tensor[N, in_channels, L])`` (``length`` only sets
    ``default_input_shape``); output ``Tensor[N, num_classes]``. Stages ``block1`` to
    ``block3``. 504,258 parameters for one channel and 2 classes. (A batch norm of the raw
    input, found in some versions of the authors' code, is left out.)
    """
    stages = []
    c = in_channels
    for i, f in enumerate(filters, start=1):
        stages.append((f"block{i}", ResidualBlock1D(c, f, kernel_sizes, bn_momentum)))
        c = f
    return ImageClassifier(stages, _gap_head(c, num_classes), (in_channels, length))


# --------------------------------------------------------------------------- TCN


class TemporalBlock(nn.Module):
    """Bai et al. (2018)'s residual block: two dilated causal convolutions, each followed
    by ReLU and dropout (with optional weight normalisation), added to the input (through
    a 1x1 convolution when the channel count changes), then ReLU.

    Causal: each convolution pads ``(kernel_size - 1) * dilation`` zeros on the left
    only (``Conv1D(padding=((k - 1) * d, 0))``), so output ``t`` depends on inputs
    ``<= t`` and the length is kept. ``x (Tensor[N, C, L])`` -> ``Tensor[N, filters, L]``.
    """

    def __init__(
        self,
        in_channels: int,
        filters: int,
        kernel_size: int,
        dilation: int,
        dropout: float = 0.0,
        weight_norm: bool = True,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.downsample = (
            Conv1D(filters, 1, kernel_initializer=_normal_001, in_channels=in_channels)
            if in_channels != filters
            else None
        )
        pad = ((kernel_size - 1) * dilation, 0)
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(2):
            conv = Conv1D(
                filters,
                kernel_size,
                padding=pad,
                dilation_rate=dilation,
                kernel_initializer=_normal_001,
                bias_initializer="torch",
                in_channels=c,
            )
            if weight_norm:
                conv = nn.utils.parametrizations.weight_norm(conv)
            layers += [conv, nn.ReLU(), Dropout(dropout)]
            c = filters
        self.net = nn.Sequential(*layers)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = x if self.downsample is None else self.downsample(x)
        return self.relu(self.net(x) + res)


def _normal_001(weight: torch.Tensor) -> None:
    """N(0, 0.01), the reference implementation's initialisation."""
    nn.init.normal_(weight, 0.0, 0.01)


class LastTimeStep(nn.Module):
    """``x (Tensor[N, C, L])`` -> ``x[:, :, -1] (Tensor[N, C])``: the output that has
    seen the whole (causal) sequence."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, -1]


def tcn_receptive_field(kernel_size: int, levels: int) -> int:
    """Input steps one TCN output sees: two causal convolutions per level with dilation
    ``2**i``, by :func:`cnnkit.ops.arithmetic.receptive_field`
    (``1 + 2 (k - 1)(2**levels - 1)``)."""
    specs = [(kernel_size, 1, 2**i) for i in range(levels) for _ in range(2)]
    return receptive_field(specs)[-1].receptive_field


_TCN_POOLING = {"last": LastTimeStep, "avg": GlobalAveragePooling1D, "max": GlobalMaxPooling1D}


@register_model("tcn")
def tcn(
    num_classes: int = 10,
    in_channels: int = 1,
    channels: Sequence[int] = (25,) * 8,
    kernel_size: int = 7,
    dropout: float = 0.05,
    weight_norm: bool = True,
    pooling: str = "last",
    length: int = 784,
) -> ImageClassifier:
    """Bai, Kolter & Koltun (2018)'s temporal convolutional network for classification.

    One :class:`TemporalBlock` per entry of ``channels`` with dilation ``2**i``; the
    defaults are the paper's sequential-MNIST setting (8 levels of 25 channels, kernel
    7, dropout 0.05, weight norm; input ``(1, 784)``, the pixels one at a time), whose
    receptive field of 3,061 steps covers the 784 pixels. The head reads the last time
    step (``pooling='last'``, as the paper) or a global average/max over time, then a
    dense layer (logits).

    Input ``x (Tensor[N, in_channels, L])`` for any ``L`` (``length`` only sets
    ``default_input_shape``); ``forward_features`` returns the causal sequence
    ``Tensor[N, channels[-1], L]``; output ``Tensor[N, num_classes]``. The model's
    ``receptive_field`` attribute holds the steps one output sees. 66,910 parameters
    with the defaults (weight norm adds one gain per output channel of each causal
    convolution).
    """
    pool = _TCN_POOLING[check_choice("tcn pooling", pooling, _TCN_POOLING)]
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
        raise ConfigError(f"tcn expects kernel_size a positive int; received {kernel_size!r}.")
    if not channels:
        raise ConfigError("tcn needs at least one level; received channels=().")
    stages = []
    c = in_channels
    for i, f in enumerate(channels):
        block = TemporalBlock(c, f, kernel_size, 2**i, dropout, weight_norm)
        stages.append((f"level{i + 1}", block))
        c = f
    head = nn.Sequential(pool(), Dense(num_classes, in_features=c))
    model = ImageClassifier(stages, head, (in_channels, length))
    model.receptive_field = tcn_receptive_field(kernel_size, len(channels))
    return model
