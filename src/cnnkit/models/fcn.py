"""Fully convolutional networks FCN-32s, FCN-16s and FCN-8s (Long, Shelhamer & Darrell).

J. Long, E. Shelhamer, T. Darrell, "Fully Convolutional Networks for Semantic
Segmentation", CVPR 2015 (seed 000's FCN slides). VGG16's thirteen 3x3 convolutions
and five max-poolings, its fully connected layers turned into convolutions
(``fc6``: 7x7, 4096 maps; ``fc7``: 1x1, 4096 maps; seed 000: "1x1 convolution layers
make perfect sense"), a 1x1 ``score`` layer with one map per class, and learned
transposed convolutions ("deconvolution") initialised to bilinear interpolation that
bring the scores back to the input size:

* FCN-32s: one 64x64 stride-32 upsampling of ``score_fr``;
* FCN-16s: ``score_fr`` upsampled 2x (4x4, stride 2), added to a 1x1 score of
  ``pool4``, then upsampled 16x (32x32, stride 16);
* FCN-8s: the FCN-16s fusion upsampled 2x again, added to a 1x1 score of ``pool3``,
  then upsampled 8x (16x16, stride 8).

As in the paper's Caffe nets the first convolution pads by 100 and the pooling rounds
up, so every input size works (PASCAL VOC images are up to 500x500); each skip and the
final output are cropped at offsets derived from the layers' coordinate maps
(:func:`fcn_crop_offsets`: 19 for FCN-32s, 5 and 27 for FCN-16s, 5, 9 and 31 for
FCN-8s, the values of the authors' prototxts). The skip score layers start at zero,
so a fresh FCN-16s/8s predicts what its coarser parent does (Sec. 4.2).

``base_filters``, ``fc_units`` and ``fc_kernel`` shrink the net for CPU tests; the
defaults are the paper's (about 134M parameters for 21 classes).
"""

from __future__ import annotations

from fractions import Fraction

import torch
from torch import nn

from cnnkit._core.errors import ConfigError, ShapeError
from cnnkit.layers import Conv2D, Conv2DTranspose, Dropout, MaxPooling2D
from cnnkit.models.registry import register_model

__all__ = ["FCN", "bilinear_kernel", "fcn16s", "fcn32s", "fcn8s", "fcn_crop_offsets"]

#: VGG16's convolutions per block (configuration D of Simonyan & Zisserman).
VGG16_BLOCKS = (2, 2, 3, 3, 3)


def bilinear_kernel(size: int) -> torch.Tensor:
    """The ``size x size`` kernel of bilinear upsampling by ``(size + 1) // 2``, as the
    FCN code's ``upsample_filt``: ``(1 - |i - c| / f) (1 - |j - c| / f)``."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = torch.arange(size, dtype=torch.float64)
    filt = 1 - (og - center).abs() / factor
    return (filt[:, None] * filt[None, :]).float()


def _bilinear_init(weight: torch.Tensor) -> None:
    """Transposed-conv weight ``(C_in, C_out, k, k)``: channel c -> c bilinear, others 0."""
    with torch.no_grad():
        weight.zero_()
        if weight.device.type == "meta":
            return
        kernel = bilinear_kernel(weight.shape[-1]).to(weight.dtype)
        for c in range(min(weight.shape[0], weight.shape[1])):
            weight[c, c] = kernel


# ------------------------------------------------------------------------ crop offsets


def _conv_map(kernel: int, stride: int, pad: int) -> tuple[Fraction, Fraction]:
    """Coordinate map of a conv/pool layer: input coordinate = a * output + b."""
    return Fraction(stride), Fraction(kernel - 1, 2) - pad


def _deconv_map(kernel: int, stride: int) -> tuple[Fraction, Fraction]:
    """A transposed convolution inverts the map of its convolution."""
    a, b = _conv_map(kernel, stride, 0)
    return 1 / a, -b / a


def _compose(outer: tuple[Fraction, Fraction], inner: tuple[Fraction, Fraction]):
    """``outer`` maps layer L to the data, ``inner`` maps layer L+1 to layer L."""
    return outer[0] * inner[0], outer[0] * inner[1] + outer[1]


def _offset(big: tuple[Fraction, Fraction], small: tuple[Fraction, Fraction]) -> int:
    if big[0] != small[0]:
        raise ShapeError(f"cannot align maps of scales {big[0]} and {small[0]}.")
    off = (small[1] - big[1]) / big[0]
    if off.denominator != 1 or off < 0:
        raise ShapeError(f"the crop offset {off} is not a non-negative integer.")
    return int(off)


def fcn_crop_offsets(fc_kernel: int = 7, input_padding: int = 100) -> dict[str, int]:
    """Crop offsets of FCN's skips and outputs, from the layers' coordinate maps.

    Each layer maps its output coordinate ``x`` to ``a x + b`` in its input (Caffe's
    ``coord_map``: ``a = stride``, ``b = (kernel - 1) / 2 - pad``; a transposed
    convolution inverts its convolution's map); composing them back to the data gives
    where each map's first pixel lies, and the difference is the crop offset.

    >>> fcn_crop_offsets()
    {'upscore32': 19, 'score_pool4': 5, 'upscore16': 27, 'score_pool3': 9, 'upscore8': 31}
    """
    m = (Fraction(1), Fraction(0))
    pools = []
    for block, n_conv in enumerate(VGG16_BLOCKS):
        for i in range(n_conv):
            m = _compose(m, _conv_map(3, 1, input_padding if block == 0 and i == 0 else 1))
        m = _compose(m, _conv_map(2, 2, 0))
        pools.append(m)
    score = _compose(pools[-1], _conv_map(fc_kernel, 1, 0))  # fc7 and score_fr are 1x1
    data = (Fraction(1), Fraction(0))
    up2 = _compose(score, _deconv_map(4, 2))
    up4 = _compose(up2, _deconv_map(4, 2))
    return {
        "upscore32": _offset(_compose(score, _deconv_map(64, 32)), data),
        "score_pool4": _offset(pools[3], up2),
        "upscore16": _offset(_compose(up2, _deconv_map(32, 16)), data),
        "score_pool3": _offset(pools[2], up4),
        "upscore8": _offset(_compose(up4, _deconv_map(16, 8)), data),
    }


def _crop(x: torch.Tensor, offset: int, like: torch.Tensor | tuple[int, int], what: str):
    h, w = like.shape[-2:] if isinstance(like, torch.Tensor) else like
    if x.shape[-2] < offset + h or x.shape[-1] < offset + w:
        raise ShapeError(
            f"FCN {what}: a map of spatial size {tuple(x.shape[-2:])} cannot be cropped at "
            f"offset {offset} to {(h, w)}; the input is too small for input_padding and "
            "fc_kernel (the paper's input_padding=100 works for every size)."
        )
    return x[..., offset : offset + h, offset : offset + w]


# ------------------------------------------------------------------------ the network


class FCN(nn.Module):
    """FCN-32s / 16s / 8s on a VGG16 backbone.

    Args:
        num_classes: score maps (21 for PASCAL VOC: 20 classes + background).
        in_channels: input channels (3 for RGB).
        output_stride: 32, 16 or 8 (FCN-32s, -16s, -8s).
        base_filters: first block's width; blocks use ``b, 2b, 4b, 8b, 8b`` (64 in VGG16).
        fc_units: width of ``fc6``/``fc7`` (4096).
        fc_kernel: ``fc6``'s kernel (7: VGG16's fc6 on 7x7 pool5 maps).
        input_padding: zero padding of the first convolution (100).
        dropout: dropout after ``fc6`` and ``fc7`` (0.5).

    Shapes: ``x (Tensor[N, C, H, W])`` -> logits ``(Tensor[N, num_classes, H, W])`` for
    any ``H, W`` (the paper trains on PASCAL VOC images up to 500x500).
    """

    def __init__(
        self,
        num_classes: int = 21,
        in_channels: int = 3,
        output_stride: int = 32,
        base_filters: int = 64,
        fc_units: int = 4096,
        fc_kernel: int = 7,
        input_padding: int = 100,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ConfigError(f"FCN output_stride must be 8, 16 or 32; received {output_stride!r}.")
        for name, v in (("num_classes", num_classes), ("in_channels", in_channels)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"FCN expects {name} a positive int; received {v!r}.")
        self.output_stride = output_stride
        self.offsets = fcn_crop_offsets(fc_kernel, input_padding)
        widths = [base_filters * m for m in (1, 2, 4, 8, 8)]
        blocks = []
        c = in_channels
        for b, (n_conv, f) in enumerate(zip(VGG16_BLOCKS, widths)):
            layers: list[nn.Module] = []
            for i in range(n_conv):
                pad = input_padding if b == 0 and i == 0 else 1
                layers.append(Conv2D(f, 3, padding=pad, activation="relu", in_channels=c))
                c = f
            layers.append(MaxPooling2D(2, padding="same"))  # Caffe pools round up
            blocks.append(nn.Sequential(*layers))
        #: VGG16's convolutional part (``pool1`` ... ``pool5``)
        self.features = nn.Sequential(*blocks)
        self.fc6 = Conv2D(fc_units, fc_kernel, activation="relu", in_channels=c)
        self.drop6 = Dropout(dropout)
        self.fc7 = Conv2D(fc_units, 1, activation="relu", in_channels=fc_units)
        self.drop7 = Dropout(dropout)
        self.score_fr = Conv2D(num_classes, 1, in_channels=fc_units)
        k = num_classes

        def up(size: int, stride: int) -> Conv2DTranspose:
            return Conv2DTranspose(
                k, size, strides=stride, use_bias=False, kernel_initializer=_bilinear_init,
                in_channels=k,
            )  # fmt: skip

        if output_stride == 32:
            self.upscore = up(64, 32)
        else:
            self.upscore2 = up(4, 2)
            self.score_pool4 = Conv2D(k, 1, kernel_initializer="zeros", in_channels=widths[3])
            if output_stride == 16:
                self.upscore = up(32, 16)
            else:
                self.upscore_pool4 = up(4, 2)
                self.score_pool3 = Conv2D(k, 1, kernel_initializer="zeros", in_channels=widths[2])
                self.upscore = up(16, 8)
        self.default_input_shape = (in_channels, 500, 500)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (Tensor[N, C, H, W])`` -> per-pixel logits ``(Tensor[N, K, H, W])``."""
        if x.dim() != 4:
            raise ShapeError(
                f"FCN expects a 4-D input (N, C, H, W); received shape {tuple(x.shape)}."
            )
        size = tuple(x.shape[-2:])
        pools = []
        h = x
        for block in self.features:
            h = block(h)
            pools.append(h)
        h = self.drop7(self.fc7(self.drop6(self.fc6(h))))
        score = self.score_fr(h)
        if self.output_stride == 32:
            return _crop(self.upscore(score), self.offsets["upscore32"], size, "upscore")
        up2 = self.upscore2(score)
        fuse = up2 + _crop(self.score_pool4(pools[3]), self.offsets["score_pool4"], up2, "pool4")
        if self.output_stride == 16:
            return _crop(self.upscore(fuse), self.offsets["upscore16"], size, "upscore")
        up4 = self.upscore_pool4(fuse)
        fuse = up4 + _crop(self.score_pool3(pools[2]), self.offsets["score_pool3"], up4, "pool3")
        return _crop(self.upscore(fuse), self.offsets["upscore8"], size, "upscore")


@register_model("fcn32s")
def fcn32s(
    num_classes: int = 21,
    in_channels: int = 3,
    base_filters: int = 64,
    fc_units: int = 4096,
    fc_kernel: int = 7,
    input_padding: int = 100,
    dropout: float = 0.5,
) -> FCN:
    """FCN-32s (Long et al. 2015): VGG16, ``score_fr`` upsampled 32x at once.

    Input ``(N, 3, H, W)`` of any size (paper: PASCAL VOC, up to 500x500); the
    arguments are :class:`FCN`'s.
    """
    return FCN(num_classes, in_channels, 32, base_filters, fc_units, fc_kernel, input_padding,
               dropout)  # fmt: skip


@register_model("fcn16s")
def fcn16s(
    num_classes: int = 21,
    in_channels: int = 3,
    base_filters: int = 64,
    fc_units: int = 4096,
    fc_kernel: int = 7,
    input_padding: int = 100,
    dropout: float = 0.5,
) -> FCN:
    """FCN-16s (Long et al. 2015): FCN-32s plus a ``pool4`` skip.

    Input ``(N, 3, H, W)`` of any size (paper: PASCAL VOC, up to 500x500); the
    arguments are :class:`FCN`'s.
    """
    return FCN(num_classes, in_channels, 16, base_filters, fc_units, fc_kernel, input_padding,
               dropout)  # fmt: skip


@register_model("fcn8s")
def fcn8s(
    num_classes: int = 21,
    in_channels: int = 3,
    base_filters: int = 64,
    fc_units: int = 4096,
    fc_kernel: int = 7,
    input_padding: int = 100,
    dropout: float = 0.5,
) -> FCN:
    """FCN-8s (Long et al. 2015): FCN-16s plus a ``pool3`` skip.

    Input ``(N, 3, H, W)`` of any size (paper: PASCAL VOC, up to 500x500); the
    arguments are :class:`FCN`'s.
    """
    return FCN(num_classes, in_channels, 8, base_filters, fc_units, fc_kernel, input_padding,
               dropout)  # fmt: skip
