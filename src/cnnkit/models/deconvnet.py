"""DeconvNet (Noh, Hong & Han): a VGG16 encoder mirrored by unpooling and deconvolution.

H. Noh, S. Hong, B. Han, "Learning Deconvolution Network for Semantic Segmentation",
ICCV 2015 (arXiv:1505.04366; seed 000's "Deconvolution" slide and comparison table:
72.5% mean IoU on PASCAL VOC 2012).

Table 1 of the paper, for 224x224 inputs: VGG16's thirteen 3x3 convolutions and five
2x2 max-poolings (each pooling remembers its "switches", the max locations), ``fc6``
as a 7x7 convolution (4096 maps, 7x7 -> 1x1), ``fc7`` 1x1 (4096), then the mirror
image: ``deconv-fc6`` (7x7 transposed convolution, 1x1 -> 7x7, 512 maps) and, per
stage, :class:`cnnkit.layers.MaxUnpooling2D` with that stage's switches followed by
3x3 transposed convolutions ("deconvolution" layers) with the encoder's widths in
reverse; a final 1x1 convolution gives the class scores (21 for PASCAL VOC). Batch
normalisation follows every convolution and deconvolution (Sec. 4.1), then ReLU.

``fc_kernel`` is ``fc6``'s kernel: 7 needs inputs of at least 224 (pool5 at least 7x7);
any side that is a multiple of 32 and at least ``32 * fc_kernel`` works, because
``deconv-fc6`` gives back the size ``fc6`` took. :func:`deconvnet_small` (8-filter
stages, 64-unit fc layers, ``fc_kernel=2``) trains on CPU on 64x64 inputs.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnkit._core.errors import ConfigError, ShapeError
from cnnkit.layers import (
    Activation,
    BatchNormalization,
    Conv2D,
    Conv2DTranspose,
    MaxPooling2D,
    MaxUnpooling2D,
)
from cnnkit.models.registry import register_model
from cnnkit.models.segnet import VGG16_STAGES, vgg_encoder_stages

__all__ = ["DeconvNet", "deconvnet", "deconvnet_small"]


def _bn_relu(filters: int, batch_norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = []
    if batch_norm:
        bn = BatchNormalization()
        bn.build((None, filters, None, None))
        layers.append(bn)
    layers.append(Activation("relu"))
    return layers


def _deconv(c_in: int, filters: int, kernel: int, padding: str, batch_norm: bool):
    layer = Conv2DTranspose(filters, kernel, padding=padding, in_channels=c_in)
    return nn.Sequential(layer, *_bn_relu(filters, batch_norm))


class DeconvNet(nn.Module):
    """DeconvNet (see the module docstring).

    Args:
        num_classes: output score maps (21 for PASCAL VOC).
        in_channels: input channels.
        base_filters: first stage's width (64); stages use ``b, 2b, 4b, 8b, 8b``.
        fc_units: width of ``fc6``/``fc7`` (4096).
        fc_kernel: ``fc6``'s (and ``deconv-fc6``'s) kernel (7).
        batch_norm: batch normalisation after every (de)convolution but the scores (True).

    Shapes: ``x (Tensor[N, C, H, W])`` -> logits ``(Tensor[N, num_classes, H, W])``,
    ``H, W`` multiples of 32 and at least ``32 * fc_kernel`` (224 by default).
    """

    def __init__(
        self,
        num_classes: int = 21,
        in_channels: int = 3,
        base_filters: int = 64,
        fc_units: int = 4096,
        fc_kernel: int = 7,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        for name, v in (
            ("num_classes", num_classes),
            ("in_channels", in_channels),
            ("base_filters", base_filters),
            ("fc_units", fc_units),
            ("fc_kernel", fc_kernel),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"DeconvNet expects {name} a positive int; received {v!r}.")
        self.fc_kernel = fc_kernel
        self.encoder, widths = vgg_encoder_stages(in_channels, base_filters, batch_norm)
        self.pools = nn.ModuleList(MaxPooling2D(2, return_indices=True) for _ in widths)
        top = widths[-1]
        self.fc6 = nn.Sequential(
            Conv2D(fc_units, fc_kernel, in_channels=top), *_bn_relu(fc_units, batch_norm)
        )
        self.fc7 = nn.Sequential(
            Conv2D(fc_units, 1, in_channels=fc_units), *_bn_relu(fc_units, batch_norm)
        )
        self.deconv_fc6 = _deconv(fc_units, top, fc_kernel, "valid", batch_norm)
        self.unpools = nn.ModuleList(MaxUnpooling2D(2) for _ in widths)
        decoder = []
        for i, (n_conv, f) in enumerate(zip(VGG16_STAGES, widths)):
            out = widths[i - 1] if i > 0 else f  # deconv1_2 keeps 64 maps
            layers = [
                _deconv(f, out if j == n_conv - 1 else f, 3, "same", batch_norm)
                for j in range(n_conv)
            ]
            decoder.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList(decoder)
        self.score = Conv2D(num_classes, 1, in_channels=widths[0])
        self.default_input_shape = (in_channels, 32 * fc_kernel, 32 * fc_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (Tensor[N, C, H, W])`` -> per-pixel logits ``(Tensor[N, K, H, W])``."""
        if x.dim() != 4:
            raise ShapeError(
                f"DeconvNet expects a 4-D input (N, C, H, W); received shape {tuple(x.shape)}."
            )
        h, w = x.shape[-2:]
        if h % 32 or w % 32 or min(h, w) < 32 * self.fc_kernel:
            raise ShapeError(
                f"DeconvNet needs sides that are multiples of 32 and at least "
                f"32 * fc_kernel = {32 * self.fc_kernel} (pool5 must cover fc6's "
                f"{self.fc_kernel}x{self.fc_kernel} kernel); received shape {tuple(x.shape)}."
            )
        indices = []
        for stage, pool in zip(self.encoder, self.pools):
            x, idx = pool(stage(x))
            indices.append(idx)
        x = self.deconv_fc6(self.fc7(self.fc6(x)))
        for i in reversed(range(len(self.decoder))):
            x = self.decoder[i](self.unpools[i](x, indices[i]))
        return self.score(x)


@register_model("deconvnet")
def deconvnet(
    num_classes: int = 21,
    in_channels: int = 3,
    base_filters: int = 64,
    fc_units: int = 4096,
    fc_kernel: int = 7,
    batch_norm: bool = True,
) -> DeconvNet:
    """DeconvNet (Noh et al. 2015), Table 1: input ``(N, 3, 224, 224)``; sides that are
    multiples of 32 and at least ``32 * fc_kernel`` work."""
    return DeconvNet(num_classes, in_channels, base_filters, fc_units, fc_kernel, batch_norm)


@register_model("deconvnet_small")
def deconvnet_small(
    num_classes: int = 21,
    in_channels: int = 3,
    base_filters: int = 8,
    fc_units: int = 64,
    fc_kernel: int = 2,
    batch_norm: bool = True,
) -> DeconvNet:
    """DeconvNet's layout at CPU size: 8..64-filter stages, 64-unit ``fc6``/``fc7`` with a
    2x2 ``fc6``; input ``(N, 3, 64, 64)`` or any multiple of 32 from 64 on."""
    return DeconvNet(num_classes, in_channels, base_filters, fc_units, fc_kernel, batch_norm)
