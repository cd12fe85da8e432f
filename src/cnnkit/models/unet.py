"""U-Net (Ronneberger, Fischer & Brox 2015), its 'same'-padded variants and the Keras
U-Net of seed 001, with overlap-tile prediction for large images.

O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for Biomedical
Image Segmentation", MICCAI 2015, LNCS 9351, pp. 234-241 (arXiv:1505.04597; seeds
000-003). The original network (Fig. 1):

* contracting path: per level two unpadded ("valid") 3x3 convolutions with ReLU, then
  2x2 max-pooling with stride 2; 64, 128, 256, 512 and 1024 feature maps;
* expansive path: a 2x2 up-convolution (transposed convolution, stride 2) halving the
  maps, concatenation with the *cropped* map of the same level of the contracting
  path (the valid convolutions lose the border), two valid 3x3 convolutions with ReLU;
* a final 1x1 convolution to ``num_classes`` (2) maps; weights drawn from
  ``N(0, 2 / fan_in)`` (``he_normal``); dropout at the end of the contracting path.

A 572x572 input gives a 388x388 output: each output pixel sees the 92-pixel border
around it, which the overlap-tile strategy (:func:`predict_tiled`, Fig. 2) supplies by
mirroring the image at its border. :func:`unet_output_size` and
:func:`unet_input_size` do the size arithmetic with :mod:`cnnkit.ops.arithmetic`.

``unet(padding='same', depth=..., base_filters=..., dropout=...)`` keeps the input size
(sides must be multiples of ``2 ** (depth - 1)``); :func:`unet_small` is seed 001's
Keras U-Net layer for layer (1,941,105 parameters on 128x128x3 inputs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from cnnkit._core.errors import ConfigError, ShapeError, check_choice
from cnnkit.layers import (
    Activation,
    BatchNormalization,
    Conv2D,
    Conv2DTranspose,
    Dropout,
    MaxPooling2D,
)
from cnnkit.models.registry import register_model
from cnnkit.ops.arithmetic import conv_output_size, pool_output_size, transposed_conv_output_size

__all__ = [
    "UNet",
    "center_crop",
    "mirror_pad",
    "predict_tiled",
    "unet",
    "unet_input_size",
    "unet_output_size",
    "unet_small",
]


def center_crop(x: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Crop the trailing ``len(sizes)`` dims of ``x`` to ``sizes``, centred (U-Net's
    "copy and crop"); the odd pixel, if any, goes from the end."""
    slices = []
    for have, want in zip(x.shape[-len(sizes) :], sizes):
        if want > have:
            raise ShapeError(f"cannot crop a map of size {have} to {want}.")
        start = (have - want) // 2
        slices.append(slice(start, start + want))
    return x[(..., *slices)]


# ------------------------------------------------------------------------ size arithmetic


def unet_output_size(n: int, depth: int = 5, padding: str = "valid") -> int:
    """Output side of a U-Net with ``depth`` levels for input side ``n``.

    Raises :class:`ShapeError` (with the nearest sizes that work) when a pooling would
    meet an odd size. ``unet_output_size(572) == 388`` (Fig. 1).
    """
    try:
        m = n
        for _ in range(depth - 1):
            m = conv_output_size(conv_output_size(m, 3, 1, padding), 3, 1, padding)
            m = pool_output_size(m, 2)  # raises on an odd size
        m = conv_output_size(conv_output_size(m, 3, 1, padding), 3, 1, padding)
        for _ in range(depth - 1):
            m = transposed_conv_output_size(m, 2, 2, "valid")
            m = conv_output_size(conv_output_size(m, 3, 1, padding), 3, 1, padding)
    except ShapeError as err:
        near = _nearest_inputs(n, depth, padding)
        raise ShapeError(
            f"A U-Net with depth={depth} and padding={padding!r} cannot take a side of {n}: "
            f"{err} Sides that work near {n}: {near}."
        ) from None
    return m


def _nearest_inputs(n: int, depth: int, padding: str) -> list[int]:
    step = 2 ** (depth - 1) * 2
    below = [m for m in range(n - 1, max(n - step, 0), -1) if _works_quiet(m, depth, padding)]
    above = [m for m in range(n + 1, n + step + 1) if _works_quiet(m, depth, padding)]
    return below[:1] + above[:1]


def _works_quiet(n: int, depth: int, padding: str) -> bool:
    """Whether side ``n`` passes, checked without building error messages."""
    loss = 0 if padding == "same" else 4  # two 3x3 convolutions
    m = n
    for _ in range(depth - 1):
        m -= loss
        if m < 2 or m % 2:
            return False
        m //= 2
    m -= loss
    if m < 1:
        return False
    for _ in range(depth - 1):
        m = 2 * m - loss
        if m < 1:
            return False
    return True


def _invert_quiet(output_size: int, depth: int, padding: str) -> int | None:
    n = output_size
    if padding != "same":
        for _ in range(depth - 1):  # undo the expansive path: (n + 4) / 2
            n += 4
            if n % 2:
                return None
            n //= 2
        n += 4  # bottleneck
        for _ in range(depth - 1):  # undo the contracting path: 2 n + 4
            n = 2 * n + 4
    return n if _works_quiet(n, depth, padding) else None


def unet_input_size(output_size: int, depth: int = 5, padding: str = "valid") -> int:
    """The input side that gives ``output_size`` (``unet_input_size(388) == 572``).

    Raises :class:`ShapeError`, naming output sides that work, when no input gives
    exactly ``output_size``.
    """
    n = _invert_quiet(output_size, depth, padding)
    if n is None or unet_output_size(n, depth, padding) != output_size:
        span = 2**depth
        near = [o for o in range(max(output_size - span, 1), output_size + span)
                if _invert_quiet(o, depth, padding) is not None]  # fmt: skip
        below = [o for o in near if o < output_size][-1:]
        above = [o for o in near if o > output_size][:1]
        raise ShapeError(
            f"No input gives a U-Net output side of {output_size} (depth={depth}, "
            f"padding={padding!r}); output sides that work near it: {below + above}."
        )
    return n


# ------------------------------------------------------------------------ the network


class _Rescale(nn.Module):
    """Multiply the input by a constant (Keras' ``Lambda(lambda x: x / 255)``)."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


def _double_conv(c_in, filters, padding, batch_norm, dropout, initializer) -> nn.Sequential:
    """Two 3x3 convolutions with ReLU (batch normalisation before ReLU if asked), with
    seed 001's dropout between them when ``dropout > 0``."""
    layers: list[nn.Module] = []
    c = c_in
    for i in range(2):
        act = None if batch_norm else "relu"
        layers.append(
            Conv2D(filters, 3, padding=padding, activation=act,
                   kernel_initializer=initializer, in_channels=c)
        )  # fmt: skip
        if batch_norm:
            bn = BatchNormalization()
            bn.build((None, filters, None, None))
            layers += [bn, Activation("relu")]
        if i == 0 and dropout > 0:
            layers.append(Dropout(dropout))
        c = filters
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """U-Net (see the module docstring).

    Args:
        num_classes: output maps (2 in the paper).
        in_channels: input channels (1 for the paper's EM and cell images).
        padding: ``'valid'`` (the paper: 572 -> 388) or ``'same'`` (output = input size).
        depth: levels including the bottom one (5: 64 ... 1024 maps; 4 pooling steps).
        base_filters: maps of the first level (64), doubled per level.
        dropout: dropout rate at the end of the contracting path (0.5; 0 for none).
        block_dropout: per-level rates of a dropout *between* the two convolutions of
            every block, the expansive path mirroring the contracting one (seed 001).
        batch_norm: batch normalisation before every ReLU (not in the paper).
        final_activation: ``None`` (logits), ``'sigmoid'`` or ``'softmax'``; cnnkit's
            training loop computes the loss from the logits either way.
        rescale: multiply the input by this first (seed 001's ``x / 255``).
        kernel_initializer: of the 3x3 convolutions (``'he_normal'``, the paper's).

    Shapes: ``x (Tensor[N, C, H, W])`` -> ``(Tensor[N, num_classes, H', W'])`` with
    ``H' = unet_output_size(H)`` (``'valid'``: 572 -> 388) or ``H' = H`` (``'same'``,
    sides multiples of ``2 ** (depth - 1)``).
    """

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 1,
        padding: str = "valid",
        depth: int = 5,
        base_filters: int = 64,
        dropout: float = 0.5,
        block_dropout: Sequence[float] | None = None,
        batch_norm: bool = False,
        final_activation: str | None = None,
        rescale: float | None = None,
        kernel_initializer: str = "he_normal",
    ) -> None:
        super().__init__()
        for name, v in (
            ("num_classes", num_classes),
            ("in_channels", in_channels),
            ("depth", depth),
            ("base_filters", base_filters),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"UNet expects {name} a positive int; received {v!r}.")
        self.padding = check_choice("UNet padding", padding, ("valid", "same"))
        if final_activation is not None:
            check_choice("UNet final_activation", final_activation, ("sigmoid", "softmax"))
        rates = [0.0] * depth if block_dropout is None else [float(r) for r in block_dropout]
        if len(rates) != depth:
            raise ConfigError(
                f"UNet block_dropout needs one rate per level (depth={depth}); received "
                f"{tuple(block_dropout)}."
            )
        self.depth = depth
        self.total_stride = 2 ** (depth - 1)
        widths = [base_filters * 2**i for i in range(depth)]
        self.rescale = _Rescale(rescale) if rescale is not None else nn.Identity()
        self.down = nn.ModuleList()
        c = in_channels
        for f, r in zip(widths, rates):
            self.down.append(_double_conv(c, f, padding, batch_norm, r, kernel_initializer))
            c = f
        self.pool = MaxPooling2D(2)
        self.dropout = Dropout(dropout) if dropout > 0 else nn.Identity()
        self.up = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for i in reversed(range(depth - 1)):
            f = widths[i]
            self.up.append(Conv2DTranspose(f, 2, strides=2, padding="valid", in_channels=c))
            self.up_blocks.append(
                _double_conv(2 * f, f, padding, batch_norm, rates[i], kernel_initializer)
            )
            c = f
        self.head = Conv2D(num_classes, 1, activation=final_activation, in_channels=c)
        size = 572 if padding == "valid" and depth == 5 else 128
        if not _works_quiet(size, depth, padding):
            size = next(m for m in range(size, size + 4 * self.total_stride)
                        if _works_quiet(m, depth, padding))  # fmt: skip
        self.default_input_shape = (in_channels, size, size)

    # ------------------------------------------------------------ sizes

    def output_size(self, n: int) -> int:
        """Output side for input side ``n`` (ShapeError if ``n`` does not work)."""
        return unet_output_size(n, self.depth, self.padding)

    def input_size(self, output_size: int) -> int:
        """Input side that gives ``output_size`` (``'valid'``: 388 -> 572)."""
        return unet_input_size(output_size, self.depth, self.padding)

    @property
    def tile_margin(self) -> int:
        """Context border (pixels per side) an output tile needs: 92 for the paper's net.

        For ``'same'`` padding: the valid net's border rounded up to a multiple of the
        total stride (the border zero padding would otherwise fill)."""
        m = 0
        scale = 1
        for _ in range(self.depth - 1):  # 2 valid 3x3 convs per level on each side
            m += 2 * scale
            scale *= 2
        m += 2 * scale  # bottleneck
        for _ in range(self.depth - 1):
            scale //= 2
            m += 2 * scale
        if self.padding == "same":
            s = self.total_stride
            m = -(-m // s) * s
        return m

    # ------------------------------------------------------------ forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (Tensor[N, C, H, W])`` -> ``(Tensor[N, num_classes, H', W'])``."""
        if x.dim() != 4:
            raise ShapeError(
                f"UNet expects a 4-D input (N, C, H, W); received shape {tuple(x.shape)}."
            )
        for n in x.shape[-2:]:
            if not _works_quiet(int(n), self.depth, self.padding):
                self.output_size(int(n))  # raises with the arithmetic and nearby sizes
                raise ShapeError(f"UNet cannot take input shape {tuple(x.shape)}.")
        x = self.rescale(x)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.depth - 1:
                skips.append(x)
                x = self.pool(x)
        x = self.dropout(x)
        for up, block in zip(self.up, self.up_blocks):
            x = up(x)
            skip = center_crop(skips.pop(), x.shape[-2:])
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


@register_model("unet")
def unet(
    num_classes: int = 2,
    in_channels: int = 1,
    padding: str = "valid",
    depth: int = 5,
    base_filters: int = 64,
    dropout: float = 0.5,
    batch_norm: bool = False,
    final_activation: str | None = None,
) -> UNet:
    """U-Net (Ronneberger et al. 2015). Defaults are the paper's: valid convolutions,
    64..1024 maps, input ``(N, 1, 572, 572)`` -> logits ``(N, 2, 388, 388)``.
    ``padding='same'`` keeps the size (sides multiples of ``2 ** (depth - 1)``)."""
    return UNet(num_classes, in_channels, padding, depth, base_filters, dropout, None,
                batch_norm, final_activation)  # fmt: skip


@register_model("unet_small")
def unet_small(num_classes: int = 1, in_channels: int = 3, rescale: float = 1 / 255) -> UNet:
    """Seed 001's Keras U-Net: 'same' 3x3 convolutions with 16-256 filters
    (``he_normal``), dropout 0.1/0.1/0.2/0.2/0.3 between the convolutions of each block
    (mirrored on the way up), 2x2 stride-2 ``Conv2DTranspose``, a 1x1 sigmoid output and
    the ``x / 255`` input scaling (``rescale``; pass 1.0 for inputs already in [0, 1]).

    Input ``(N, 3, 128, 128)`` -> probabilities ``(N, 1, 128, 128)``; 1,941,105 parameters.
    """
    return UNet(
        num_classes, in_channels, padding="same", depth=5, base_filters=16, dropout=0.0,
        block_dropout=(0.1, 0.1, 0.2, 0.2, 0.3), final_activation="sigmoid", rescale=rescale,
    )  # fmt: skip


# ------------------------------------------------------------------------ overlap-tile


def mirror_pad(x: torch.Tensor, pads: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Mirror the trailing ``len(pads)`` dims of ``x`` by ``(before, after)`` each:
    reflection without repeating the edge, continued periodically for borders wider
    than the image (period ``2 (n - 1)``), as ``np.pad(mode='reflect')``."""
    pads = list(pads)
    for k, (before, after) in enumerate(pads):
        dim = x.dim() - len(pads) + k
        n = x.shape[dim]
        if before == after == 0:
            continue
        if n < 2:
            raise ShapeError(
                f"mirror_pad cannot reflect a side of size {n} (shape {tuple(x.shape)})."
            )
        period = 2 * (n - 1)
        idx = torch.arange(-before, n + after, device=x.device) % period
        idx = torch.where(idx >= n, period - idx, idx)
        x = x.index_select(dim, idx)
    return x


@torch.no_grad()
def predict_tiled(
    model: nn.Module,
    image: torch.Tensor | np.ndarray,
    tile: int | None = None,
    num_classes: int | None = None,
    batch_size: int = 4,
) -> torch.Tensor | np.ndarray:
    """U-Net's overlap-tile prediction (Fig. 2) of an image of any size.

    The image is mirrored at its border by ``model.tile_margin`` (92 pixels for the
    paper's net) and cut into input tiles of ``model.input_size(tile)`` whose outputs,
    ``tile x tile`` each, cover the image. Tiles start at multiples of the network's
    total stride (``model.total_stride``, 16), so every pixel is computed exactly as a
    single pass over the whole mirrored image would compute it; when ``tile`` is not
    such a multiple, neighbouring tiles overlap a little.

    Args:
        model: a :class:`UNet` (``'valid'`` padding; ``'same'`` nets get their tiles
            centre-cropped after the pass).
        image: ``(C, H, W)`` or ``(N, C, H, W)``, tensor or NumPy array.
        tile: output tile side (default: ``model.output_size`` of its default input,
            388 for the paper's net).
        num_classes: if given, checked against the model's output maps.
        batch_size: tiles per forward pass.

    Returns: ``(N, K, H, W)`` (or ``(K, H, W)`` for a 3-D image) of what the model
    returns, as the input's type. The model runs in eval mode (its mode is restored).
    """
    for attr in ("tile_margin", "total_stride", "input_size"):
        if not hasattr(model, attr):
            raise ConfigError(
                f"predict_tiled needs a UNet-like model with {attr!r}; received "
                f"{type(model).__name__}."
            )
    as_numpy = isinstance(image, np.ndarray)
    x = torch.as_tensor(image) if as_numpy else image
    squeeze = x.dim() == 3
    if squeeze:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ShapeError(
            f"predict_tiled expects an image (C, H, W) or a batch (N, C, H, W); received "
            f"shape {tuple(x.shape)}."
        )
    param = next(model.parameters(), None)
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype)
    margin, stride = model.tile_margin, model.total_stride
    same = getattr(model, "padding", "valid") == "same"
    if tile is None:
        tile = model.default_input_shape[-1] - (0 if same else 2 * margin)
    if same:
        if tile % stride:
            raise ShapeError(
                f"predict_tiled: a 'same' U-Net needs tile a multiple of {stride}; "
                f"received tile={tile}."
            )
        in_tile = tile + 2 * margin
    else:
        in_tile = model.input_size(tile)
        if in_tile - 2 * margin != tile:
            raise ShapeError(f"predict_tiled: tile {tile} does not fit the margin {margin}.")
    step = tile - tile % stride
    if step == 0:
        raise ShapeError(
            f"predict_tiled: tile={tile} is smaller than the total stride {stride}; use a "
            "larger tile."
        )
    h, w = x.shape[-2:]
    starts = [_starts(n, tile, step) for n in (h, w)]
    padded = [s[-1] + in_tile for s in starts]
    x = mirror_pad(x, [(margin, padded[0] - h - margin), (margin, padded[1] - w - margin)])
    was_training = model.training
    model.eval()
    out = None
    try:
        boxes = [(i, j) for i in starts[0] for j in starts[1]]
        for b in range(0, len(boxes), batch_size):
            chunk = boxes[b : b + batch_size]
            crops = torch.cat([x[..., i : i + in_tile, j : j + in_tile] for i, j in chunk])
            y = model(crops)
            if same:
                y = y[..., margin : margin + tile, margin : margin + tile]
            if out is None:
                k = y.shape[1]
                if num_classes is not None and k != num_classes:
                    raise ShapeError(
                        f"predict_tiled: the model returns {k} maps; num_classes={num_classes}."
                    )
                out = y.new_zeros((x.shape[0], k, starts[0][-1] + tile, starts[1][-1] + tile))
            for n, (i, j) in enumerate(chunk):
                out[..., i : i + tile, j : j + tile] = y[n * x.shape[0] : (n + 1) * x.shape[0]]
    finally:
        model.train(was_training)
    out = out[..., :h, :w]
    if squeeze:
        out = out[0]
    return out.cpu().numpy() if as_numpy else out


def _starts(n: int, tile: int, step: int) -> list[int]:
    """Tile starts 0, step, 2 step, ... until the tiles cover ``n`` pixels."""
    starts = [0]
    while starts[-1] + tile < n:
        starts.append(starts[-1] + step)
    return starts
