"""Xception (Chollet, "Xception: deep learning with depthwise separable convolutions",
CVPR 2017), as Keras applications builds it, for ``x (Tensor[N, 3, 299, 299])``.

Keras' block names (``block1`` ... ``block14``) are the stages:

* entry flow: ``block1`` = 3x3/2 conv 32 (valid) -> BN -> ReLU -> 3x3 conv 64 (valid) ->
  BN -> ReLU (299 -> 147); ``block2`` ... ``block4``: residual blocks of two separable
  3x3 convolutions (128, 256, 728 maps) and a 3x3/2 max pooling, the shortcut a 1x1/2
  convolution with BN (147 -> 74 -> 37 -> 19);
* middle flow: ``block5`` ... ``block12``: ReLU -> separable 3x3 728 -> BN, three
  times, plus the identity;
* exit flow: ``block13``: separable 728, separable 1024, 3x3/2 max pooling, 1x1/2
  shortcut (19 -> 10); ``block14``: separable 1536 -> BN -> ReLU -> separable 2048 -> BN
  -> ReLU (10x10x2048);
* head: global average pooling -> dense (logits; Keras ends in softmax, cnnkit's
  classifiers return logits and the loss applies the softmax).

Every separable convolution is :class:`cnnkit.layers.SeparableConv2D` without bias (a
depthwise 3x3, then a pointwise 1x1; the BN after it has the offset). Each residual
block starts with a ReLU except ``block2``; its shortcut reads the block's input before
that ReLU (Keras' graph). Parameters: 22,855,952 trainable for 1000 classes, and
54,528 batch-norm moving statistics, which Keras counts as non-trainable parameters
(22,910,480 in ``keras.applications.Xception().count_params()``); PyTorch holds them as
buffers.

The pretrained weights (``create("xception", weights="imagenet")``) are timm's
``legacy_xception`` (the Keras ImageNet weights, ported to PyTorch by Cadene), in timm's
key layout; the modules here mirror timm's (``rep``, ``skip``, ``skipbn`` in each block)
and :mod:`cnnkit.models.weights` maps the names. Two details follow timm rather than
TensorFlow, so that timm's weights give timm's outputs: the batch norms use PyTorch's
epsilon 1e-5 (Keras: 1e-3; ``bn_epsilon``), and the stride-2 max poolings pad one
row/column on both sides (TensorFlow's 'same' pads only after the input when its size is
even: 74x74 -> 37x37 either way, but the windows are shifted by one pixel).
"""

from __future__ import annotations

import torch
from torch import nn

from cnnkit._core.errors import ConfigError
from cnnkit.layers import (
    Activation,
    BatchNormalization,
    Conv2D,
    Dense,
    GlobalAveragePooling2D,
    MaxPooling2D,
    SeparableConv2D,
)
from cnnkit.models.base import ImageClassifier
from cnnkit.models.registry import register_model

__all__ = ["XceptionBlock", "xception"]


def _bn(channels: int, epsilon: float, momentum: float) -> BatchNormalization:
    return BatchNormalization(momentum=momentum, epsilon=epsilon).build(
        (None, channels, None, None)
    )


def _sep(c_in: int, filters: int) -> SeparableConv2D:
    return SeparableConv2D(filters, 3, padding=1, use_bias=False, in_channels=c_in)


class XceptionBlock(nn.Module):
    """One residual block of Xception: ``rep(x) + shortcut(x)``.

    ``rep``: ``reps`` times ReLU -> separable 3x3 -> BN (without the first ReLU when
    ``start_with_relu`` is false), then a 3x3/``strides`` max pooling when ``strides`` >
    1. The separable convolutions grow to ``out_channels`` at the first one
    (``grow_first``) or the last one. ``skip``/``skipbn``: a 1x1/``strides`` convolution
    and BN when the shape changes, else ``None`` (the identity).

    Shapes: ``x (Tensor[N, in_channels, H, W])`` -> ``Tensor[N, out_channels,
    ceil(H / strides), ceil(W / strides)]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        reps: int,
        strides: int = 1,
        start_with_relu: bool = True,
        grow_first: bool = True,
        bn_epsilon: float = 1e-5,
        bn_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(reps):
            if grow_first:
                c_in, c_out = (in_channels if i == 0 else out_channels), out_channels
            else:
                c_in, c_out = in_channels, (in_channels if i < reps - 1 else out_channels)
            if i or start_with_relu:
                layers.append(Activation("relu"))
            layers += [_sep(c_in, c_out), _bn(c_out, bn_epsilon, bn_momentum)]
        if strides != 1:
            layers.append(MaxPooling2D(3, strides=strides, padding=1))
        self.rep = nn.Sequential(*layers)
        self.skip: Conv2D | None = None
        self.skipbn: BatchNormalization | None = None
        if out_channels != in_channels or strides != 1:
            self.skip = Conv2D(
                out_channels, 1, strides=strides, use_bias=False, in_channels=in_channels
            )
            self.skipbn = _bn(out_channels, bn_epsilon, bn_momentum)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.skip is None else self.skipbn(self.skip(x))
        return self.rep(x) + shortcut


#: (in, out, reps, strides, start_with_relu, grow_first) of Keras' block2 ... block13
BLOCKS: tuple[tuple[int, int, int, int, bool, bool], ...] = (
    (64, 128, 2, 2, False, True),
    (128, 256, 2, 2, True, True),
    (256, 728, 2, 2, True, True),
    *((728, 728, 3, 1, True, True),) * 8,
    (728, 1024, 2, 2, True, False),
)


@register_model("xception")
def xception(
    num_classes: int = 1000,
    in_channels: int = 3,
    bn_epsilon: float = 1e-5,
    bn_momentum: float = 0.9,
) -> ImageClassifier:
    """Xception (Chollet 2017; ``keras.applications.Xception``, timm's
    ``legacy_xception``) for ``x (Tensor[N, in_channels, 299, 299])`` (any side >= 71)
    -> logits ``Tensor[N, num_classes]``.

    Args:
        bn_epsilon: of every batch norm (1e-5 as timm's port of the Keras weights;
            Keras: 1e-3).
        bn_momentum: Keras meaning (0.9 = PyTorch's 0.1; Keras: 0.99).
    """
    for name, v in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"xception expects {name} a positive int; received {v!r}.")
    bn = dict(bn_epsilon=bn_epsilon, bn_momentum=bn_momentum)
    block1 = nn.Sequential(
        Conv2D(32, 3, strides=2, use_bias=False, in_channels=in_channels),
        _bn(32, bn_epsilon, bn_momentum),
        Activation("relu"),
        Conv2D(64, 3, use_bias=False, in_channels=32),
        _bn(64, bn_epsilon, bn_momentum),
        Activation("relu"),
    )
    stages: list[tuple[str, nn.Module]] = [("block1", block1)]
    for i, (c_in, c_out, reps, strides, relu_first, grow_first) in enumerate(BLOCKS, start=2):
        block = XceptionBlock(c_in, c_out, reps, strides, relu_first, grow_first, **bn)
        stages.append((f"block{i}", block))
    block14 = nn.Sequential(
        _sep(1024, 1536),
        _bn(1536, bn_epsilon, bn_momentum),
        Activation("relu"),
        _sep(1536, 2048),
        _bn(2048, bn_epsilon, bn_momentum),
        Activation("relu"),
    )
    stages.append(("block14", block14))
    head = nn.Sequential(GlobalAveragePooling2D(), Dense(num_classes, in_features=2048))
    model = ImageClassifier(stages, head, (in_channels, 299, 299))
    model.name = "xception"
    return model
