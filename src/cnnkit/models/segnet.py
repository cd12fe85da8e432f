"""SegNet (Badrinarayanan, Kendall & Cipolla): an encoder-decoder that unpools with the
encoder's max-pooling indices.

V. Badrinarayanan, A. Kendall, R. Cipolla, "SegNet: A Deep Convolutional
Encoder-Decoder Architecture for Image Segmentation", IEEE TPAMI 39(12), 2017
(arXiv:1511.00561; seed 000's SegNet slide, seed 002's "Max Unpooling").

The encoder is VGG16's thirteen 3x3 convolutions, each followed by batch
normalisation and ReLU, and five 2x2 max-poolings that *remember where each maximum
was* (``MaxPooling2D(2, return_indices=True)``). The decoder mirrors it: each stage
starts with :class:`cnnkit.layers.MaxUnpooling2D`, which writes every value back at
the position its encoder pooling took the maximum from (zeros elsewhere, a sparse
map), and densifies the result with 3x3 convolutions. The last decoder convolution
gives one score map per class; the paper applies a softmax to it, cnnkit returns the
logits. CamVid inputs are 360x480 (11 classes); about 29.5M parameters.

Inputs whose sides are multiples of 32 go through unchanged; other sizes work too,
because each unpooling is told the size its pooling saw (the row or column a floored
pooling dropped comes back as zeros).

:func:`vgg_encoder_stages` builds the encoder shared with DeconvNet.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnkit._core.errors import ConfigError, ShapeError
from cnnkit.layers import Activation, BatchNormalization, Conv2D, MaxPooling2D, MaxUnpooling2D
from cnnkit.models.registry import register_model

__all__ = ["SegNet", "conv_bn_relu", "segnet", "vgg_encoder_stages"]

#: VGG16's convolutions per stage
VGG16_STAGES = (2, 2, 3, 3, 3)


def _positive(name: str, value: object, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{owner} expects {name} a positive int; received {value!r}.")
    return value


def conv_bn_relu(c_in: int, filters: int, batch_norm: bool = True) -> nn.Sequential:
    """3x3 'same' convolution -> batch normalisation (optional) -> ReLU, built eagerly."""
    layers: list[nn.Module] = [Conv2D(filters, 3, padding="same", in_channels=c_in)]
    if batch_norm:
        bn = BatchNormalization()
        bn.build((None, filters, None, None))
        layers.append(bn)
    layers.append(Activation("relu"))
    return nn.Sequential(*layers)


def vgg_encoder_stages(
    in_channels: int, base_filters: int = 64, batch_norm: bool = True
) -> tuple[nn.ModuleList, list[int]]:
    """VGG16's five convolution stages (widths ``b, 2b, 4b, 8b, 8b``) without pooling.

    Returns the stages and their widths.
    """
    widths = [base_filters * m for m in (1, 2, 4, 8, 8)]
    stages = nn.ModuleList()
    c = in_channels
    for n_conv, f in zip(VGG16_STAGES, widths):
        convs = []
        for _ in range(n_conv):
            convs.append(conv_bn_relu(c, f, batch_norm))
            c = f
        stages.append(nn.Sequential(*convs))
    return stages, widths


class SegNet(nn.Module):
    """SegNet: VGG16-BN encoder, index-unpooling decoder (see the module docstring).

    Args:
        num_classes: output score maps (11 for CamVid, 37 for SUN RGB-D).
        in_channels: input channels.
        base_filters: first stage's width (64); stages use ``b, 2b, 4b, 8b, 8b``.
        batch_norm: batch normalisation after every convolution but the last (True).

    Shapes: ``x (Tensor[N, C, H, W])`` -> logits ``(Tensor[N, num_classes, H, W])``;
    ``H, W`` multiples of 32 (CamVid's 360x480 works too, see the module docstring).

    Attributes ``pools[i]`` and ``unpools[i]`` are the pooling and unpooling of stage
    ``i`` (0 = full resolution); ``unpools[i]`` receives ``pools[i]``'s indices.
    """

    def __init__(
        self,
        num_classes: int = 11,
        in_channels: int = 3,
        base_filters: int = 64,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        _positive("num_classes", num_classes, "SegNet")
        _positive("in_channels", in_channels, "SegNet")
        _positive("base_filters", base_filters, "SegNet")
        self.encoder, widths = vgg_encoder_stages(in_channels, base_filters, batch_norm)
        self.pools = nn.ModuleList(MaxPooling2D(2, return_indices=True) for _ in widths)
        self.unpools = nn.ModuleList(MaxUnpooling2D(2) for _ in widths)
        # decoder stage i mirrors encoder stage i: same number of convolutions, the
        # last one narrowing to the next (shallower) stage's width
        decoder = []
        for i, (n_conv, f) in enumerate(zip(VGG16_STAGES, widths)):
            out = widths[i - 1] if i > 0 else None
            convs: list[nn.Module] = []
            for j in range(n_conv):
                last = j == n_conv - 1
                if last and out is None:  # conv1_1_D: the class scores
                    convs.append(Conv2D(num_classes, 3, padding="same", in_channels=f))
                else:
                    convs.append(conv_bn_relu(f, out if last else f, batch_norm))
            decoder.append(nn.Sequential(*convs))
        self.decoder = nn.ModuleList(decoder)
        self.default_input_shape = (in_channels, 360, 480)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (Tensor[N, C, H, W])`` -> per-pixel logits ``(Tensor[N, K, H, W])``."""
        if x.dim() != 4:
            raise ShapeError(
                f"SegNet expects a 4-D input (N, C, H, W); received shape {tuple(x.shape)}."
            )
        if min(x.shape[-2:]) < 32:
            raise ShapeError(
                f"SegNet pools five times; sides must be at least 32, e.g. multiples of 32; "
                f"received shape {tuple(x.shape)}."
            )
        sizes, indices = [], []
        for stage, pool in zip(self.encoder, self.pools):
            x = stage(x)
            sizes.append(x.shape[-2:])
            x, idx = pool(x)
            indices.append(idx)
        for i in reversed(range(len(self.decoder))):
            x = self.unpools[i](x, indices[i], output_size=sizes[i])
            x = self.decoder[i](x)
        return x


@register_model("segnet")
def segnet(
    num_classes: int = 11, in_channels: int = 3, base_filters: int = 64, batch_norm: bool = True
) -> SegNet:
    """SegNet (Badrinarayanan et al. 2017): VGG16-BN encoder whose max-pooling indices
    drive the decoder's unpooling. Input ``(N, 3, 360, 480)`` (CamVid) or any sides that
    are multiples of 32; ``base_filters=8`` gives a CPU-sized net."""
    return SegNet(num_classes, in_channels, base_filters, batch_norm)
