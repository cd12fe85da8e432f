"""Volumetric segmentation: 3D U-Net (Cicek et al.) and V-Net (Milletari et al.).

Seed 003's 3D convolutions: a kernel that moves in x, y and z over ``(C, D, H, W)``
volumes, e.g. "tumor segmentation on MRI scans [Milletari Fausto et al., 2016]".

* Ö. Çiçek, A. Abdulkadir, S. S. Lienkamp, T. Brox, O. Ronneberger, "3D U-Net:
  Learning Dense Volumetric Segmentation from Sparse Annotation", MICCAI 2016
  (arXiv:1606.06650). U-Net in 3D: per level two valid 3x3x3 convolutions, each with
  batch normalisation before its ReLU, the channels doubled *before* each 2x2x2
  max-pooling (32->64, 64->128, 128->256, 256->512: no bottlenecks); on the way up a
  2x2x2 stride-2 up-convolution, concatenation with the cropped level, two 3x3x3
  convolutions; a 1x1x1 convolution to 3 labels. A 132x132x116 tile with 3 channels
  gives a 44x44x28 output; 19,069,955 parameters (convolutions, not counting batch
  normalisation; the up-convolutions have no bias).
* F. Milletari, N. Navab, S.-A. Ahmadi, "V-Net: Fully Convolutional Neural Networks
  for Volumetric Medical Image Segmentation", 3DV 2016 (arXiv:1606.04797). 'Same'
  5x5x5 convolutions with PReLU in residual stages (1, 2, 3, 3, 3 convolutions on the
  way down, 3, 3, 2, 1 on the way up: each stage adds its input to its output),
  downsampling by 2x2x2 stride-2 convolutions that double the channels (16, 32, 64,
  128, 256) instead of pooling, transposed convolutions up, the fine-grained features
  of the left stages concatenated on the right, a 1x1x1 convolution to 2 maps. Input
  128x128x64 (sides multiples of 16), output the same size.

Both take ``base_filters`` and ``depth`` (and V-Net ``kernel_size``) small enough to
train on CPU on synthetic volumes, e.g. ``unet3d(base_filters=4, depth=3,
padding='same')`` or ``vnet(base_filters=4, depth=3, kernel_size=3)``.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnkit._core.errors import ConfigError, ShapeError, check_choice
from cnnkit.layers import Activation, BatchNormalization, Conv3D, Conv3DTranspose, MaxPooling3D
from cnnkit.models.registry import register_model
from cnnkit.models.unet import center_crop, unet_output_size

__all__ = ["UNet3D", "VNet", "unet3d", "vnet"]


def _check_ints(owner: str, **values: object) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{owner} expects {name} a positive int; received {v!r}.")


def _bn(channels: int) -> BatchNormalization:
    bn = BatchNormalization()
    bn.build((None, channels, None, None, None))
    return bn


def _check_volume(owner: str, x: torch.Tensor) -> None:
    if x.dim() != 5:
        raise ShapeError(
            f"{owner} expects a 5-D input (N, C, D, H, W); received shape {tuple(x.shape)}."
        )


# ------------------------------------------------------------------------ 3D U-Net


def _conv_block(c_in: int, widths: tuple[int, int], padding: str, batch_norm: bool):
    layers: list[nn.Module] = []
    for f in widths:
        layers.append(Conv3D(f, 3, padding=padding, in_channels=c_in))
        if batch_norm:
            layers.append(_bn(f))
        layers.append(Activation("relu"))
        c_in = f
    return nn.Sequential(*layers)


class UNet3D(nn.Module):
    """3D U-Net (see the module docstring).

    Args:
        num_classes: output maps (3 labels in the paper).
        in_channels: input channels (3 in the paper).
        base_filters: first convolution's width (32); level ``l`` has
            ``base * 2**l -> base * 2**(l + 1)`` maps.
        depth: levels including the bottom one (4: three poolings).
        padding: ``'valid'`` (the paper: 132x132x116 -> 44x44x28) or ``'same'``.
        batch_norm: batch normalisation before every ReLU (True, as the paper).

    Shapes: ``x (Tensor[N, C, D, H, W])`` -> logits ``(Tensor[N, K, D', H', W'])``,
    each side through :func:`cnnkit.models.unet.unet_output_size` (``'valid'``) or
    unchanged (``'same'``, multiples of ``2 ** (depth - 1)``).
    """

    def __init__(
        self,
        num_classes: int = 3,
        in_channels: int = 3,
        base_filters: int = 32,
        depth: int = 4,
        padding: str = "valid",
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        _check_ints("unet3d", num_classes=num_classes, in_channels=in_channels,
                    base_filters=base_filters, depth=depth)  # fmt: skip
        self.padding = check_choice("unet3d padding", padding, ("valid", "same"))
        self.depth = depth
        b = base_filters
        self.down = nn.ModuleList()
        c = in_channels
        for level in range(depth):
            widths = (b * 2**level, b * 2 ** (level + 1))
            self.down.append(_conv_block(c, widths, padding, batch_norm))
            c = widths[1]
        self.pool = MaxPooling3D(2)
        self.up = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for level in reversed(range(depth - 1)):
            skip = b * 2 ** (level + 1)
            self.up.append(Conv3DTranspose(c, 2, strides=2, use_bias=False, in_channels=c))
            self.up_blocks.append(_conv_block(c + skip, (skip, skip), padding, batch_norm))
            c = skip
        self.head = Conv3D(num_classes, 1, in_channels=c)
        self.default_input_shape = (
            (in_channels, 116, 132, 132) if padding == "valid" else (in_channels, 64, 64, 64)
        )

    def output_size(self, n: int) -> int:
        """Output side for input side ``n``: ``'valid'`` 116 -> 28, 132 -> 44."""
        return unet_output_size(n, self.depth, self.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (Tensor[N, C, D, H, W])`` -> per-voxel logits ``(Tensor[N, K, D', H', W'])``."""
        _check_volume("unet3d", x)
        for n in x.shape[2:]:
            self.output_size(int(n))  # ShapeError with the arithmetic and nearby sizes
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.depth - 1:
                skips.append(x)
                x = self.pool(x)
        for up, block in zip(self.up, self.up_blocks):
            x = up(x)
            x = block(torch.cat([x, center_crop(skips.pop(), x.shape[2:])], dim=1))
        return self.head(x)


# ------------------------------------------------------------------------ V-Net


def _act(kind: str, channels: int) -> nn.Module:
    if kind == "prelu":
        return nn.PReLU(channels)  # one slope per channel, as the paper's Caffe PReLU
    return Activation(kind)


class _ResidualStage(nn.Module):
    """``n`` 'same' convolutions (each [BN] + activation); output = act(convs(x) + x)."""

    def __init__(self, c_in, channels, n, kernel, activation, batch_norm) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = c_in
        for _ in range(n):
            layers.append(Conv3D(channels, kernel, padding="same", in_channels=c))
            if batch_norm:
                layers.append(_bn(channels))
            layers.append(_act(activation, channels))
            c = channels
        self.convs = nn.Sequential(*layers)
        self.repeat = channels // c_in if channels % c_in == 0 else 0
        # the first stage's input (e.g. 1 channel) is repeated to the stage's width, as in
        # the paper; widths that are no multiple of it get a 1x1x1 projection instead
        self.project = (
            None if self.repeat else Conv3D(channels, 1, use_bias=False, in_channels=c_in)
        )
        self.out_act = _act(activation, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x.repeat(1, self.repeat, 1, 1, 1) if self.project is None else self.project(x)
        return self.out_act(self.convs(x) + shortcut)


class VNet(nn.Module):
    """V-Net (see the module docstring).

    Args:
        num_classes: output maps (2: foreground and background).
        in_channels: input channels (1 for MRI).
        base_filters: first stage's channels (16), doubled per level.
        depth: number of levels (5: four downsamplings).
        kernel_size: the stages' convolutions (5).
        convs_per_stage: convolutions per level (default ``min(level + 1, 3)``: the
            paper's 1, 2, 3, 3, 3), used on both sides.
        activation: ``'prelu'`` (the paper's), ``'relu'`` or ``'elu'``.
        batch_norm: batch normalisation after each convolution (not in the paper).

    Shapes: ``x (Tensor[N, C, D, H, W])`` -> logits ``(Tensor[N, K, D, H, W])``, sides
    multiples of ``2 ** (depth - 1)`` (the paper: 64x128x128).
    """

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 1,
        base_filters: int = 16,
        depth: int = 5,
        kernel_size: int = 5,
        convs_per_stage: tuple[int, ...] | None = None,
        activation: str = "prelu",
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        _check_ints("vnet", num_classes=num_classes, in_channels=in_channels,
                    base_filters=base_filters, depth=depth, kernel_size=kernel_size)  # fmt: skip
        check_choice("vnet activation", activation, ("prelu", "relu", "elu"))
        counts = (
            tuple(min(level + 1, 3) for level in range(depth))
            if convs_per_stage is None
            else tuple(convs_per_stage)
        )
        if len(counts) != depth or any(not isinstance(n, int) or n < 1 for n in counts):
            raise ConfigError(
                f"vnet convs_per_stage needs {depth} positive ints (one per level); received "
                f"{convs_per_stage!r}."
            )
        self.depth = depth
        self.total_stride = 2 ** (depth - 1)
        widths = [base_filters * 2**level for level in range(depth)]
        k, act, bn = kernel_size, activation, batch_norm
        self.left = nn.ModuleList([_ResidualStage(in_channels, widths[0], counts[0], k, act, bn)])
        self.down = nn.ModuleList()
        for level in range(1, depth):
            c = widths[level - 1]
            down: list[nn.Module] = [Conv3D(widths[level], 2, strides=2, in_channels=c)]
            if bn:
                down.append(_bn(widths[level]))
            down.append(_act(act, widths[level]))
            self.down.append(nn.Sequential(*down))
            self.left.append(
                _ResidualStage(widths[level], widths[level], counts[level], k, act, bn)
            )
        self.up = nn.ModuleList()
        self.right = nn.ModuleList()
        c = widths[-1]
        for level in reversed(range(depth - 1)):
            half = widths[level]
            up: list[nn.Module] = [Conv3DTranspose(half, 2, strides=2, in_channels=c)]
            if bn:
                up.append(_bn(half))
            up.append(_act(act, half))
            self.up.append(nn.Sequential(*up))
            self.right.append(_ResidualStage(2 * half, 2 * half, counts[level], k, act, bn))
            c = 2 * half
        self.head = Conv3D(num_classes, 1, in_channels=c)
        self.default_input_shape = (in_channels, 64, 128, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (Tensor[N, C, D, H, W])`` -> per-voxel logits ``(Tensor[N, K, D, H, W])``."""
        _check_volume("vnet", x)
        if any(n % self.total_stride for n in x.shape[2:]):
            raise ShapeError(
                f"vnet with depth={self.depth} needs sides that are multiples of "
                f"{self.total_stride}; received shape {tuple(x.shape)}."
            )
        x = self.left[0](x)
        skips = [x]
        for down, stage in zip(self.down, self.left[1:]):
            x = stage(down(x))
            skips.append(x)
        skips.pop()  # the bottom stage feeds the first up-convolution directly
        for up, stage in zip(self.up, self.right):
            x = stage(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


@register_model("unet3d")
def unet3d(
    num_classes: int = 3,
    in_channels: int = 3,
    base_filters: int = 32,
    depth: int = 4,
    padding: str = "valid",
    batch_norm: bool = True,
) -> UNet3D:
    """3D U-Net (Çiçek et al. 2016): input ``(N, 3, 116, 132, 132)`` -> logits
    ``(N, 3, 28, 44, 44)``; ``base_filters=4, depth=3, padding='same'`` trains on CPU."""
    return UNet3D(num_classes, in_channels, base_filters, depth, padding, batch_norm)


@register_model("vnet")
def vnet(
    num_classes: int = 2,
    in_channels: int = 1,
    base_filters: int = 16,
    depth: int = 5,
    kernel_size: int = 5,
    convs_per_stage: tuple[int, ...] | None = None,
    activation: str = "prelu",
    batch_norm: bool = False,
) -> VNet:
    """V-Net (Milletari et al. 2016): input ``(N, 1, 64, 128, 128)`` -> logits of the same
    size; ``base_filters=4, depth=3, kernel_size=3`` trains on CPU."""
    return VNet(num_classes, in_channels, base_filters, depth, kernel_size, convs_per_stage,
                activation, batch_norm)  # fmt: skip
