"""Multi-scale context aggregation by dilated convolutions (Yu & Koltun).

F. Yu, V. Koltun, "Multi-Scale Context Aggregation by Dilated Convolutions", ICLR 2016
(arXiv:1511.07122; seed 003's dilated-convolution slides, seed 000's "DilatedNet"
73.9% on PASCAL VOC 2012).

The *context module* (Table 1) works on ``C`` class-score maps and keeps their size:
seven 3x3 convolutions with dilations 1, 1, 2, 4, 8, 16, 1, each followed by ReLU
("truncation"), and a final 1x1 convolution. Its receptive field grows exponentially,
3, 5, 9, 17, 33, 65, 67: 67x67 with eight layers. The *basic* module has ``C`` maps in
every layer; the *large* one 2C, 2C, 4C, 8C, 16C, 32C, 32C, C. Identity initialisation
(Sec. 3): the basic module starts as the identity (centre tap 1 from map ``a`` to map
``a``, zeros elsewhere), so it first passes the front end's scores through unchanged;
the large module uses the paper's generalisation for unequal widths, plus small noise.

The *front end* gives the scores at 1/8 of the input resolution; bilinear upsampling
by 8 returns them at the input size:

* ``front_end='vgg16'``: the paper's: VGG16 with ``pool4`` and ``pool5`` removed,
  ``conv5`` dilated by 2, ``fc6`` as a 7x7 convolution dilated by 4 (4096 maps),
  ``fc7`` 1x1 (4096), a 1x1 score layer; 'same' padding here instead of the paper's
  reflection-padded unpadded layers. Inputs like PASCAL VOC's 500x500.
* ``front_end='small'``: three stages of two 3x3 convolutions (``b, 2b, 4b`` maps) and
  2x2 pooling, then a 1x1 score layer; a CPU-sized stand-in.

Inputs need sides that are multiples of 8.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnkit._core.errors import ConfigError, ShapeError, check_choice
from cnnkit.layers import Conv2D, Dropout, MaxPooling2D, UpSampling2D
from cnnkit.models.registry import register_model

__all__ = ["BASIC_DILATIONS", "ContextModule", "DilatedContextNet", "dilated_context"]

#: dilations of the context module's seven 3x3 layers (Table 1)
BASIC_DILATIONS = (1, 1, 2, 4, 8, 16, 1)
#: the large module's widths, as multiples of C (Table 1)
LARGE_WIDTHS = (2, 2, 4, 8, 16, 32, 32, 1)


def _identity_init(weight: torch.Tensor, channels: int, noise: float = 0.0) -> None:
    """Yu & Koltun's identity initialisation of a conv weight ``(c_out, c_in, k, k)``.

    With ``C = channels``: ``C / c_out`` at the centre tap from map ``a`` to map ``b``
    where ``floor(a C / c_in) == floor(b C / c_out)``, zero (or ``N(0, noise^2)``)
    elsewhere. For ``c_in = c_out = C`` this is the identity ``1[t = 0] 1[a = b]``; for
    the large module's widths the whole stack still starts as the identity.
    """
    with torch.no_grad():
        c_out, c_in = weight.shape[:2]
        if noise > 0:
            weight.normal_(0.0, noise)
        else:
            weight.zero_()
        if weight.device.type == "meta":
            return
        centre = tuple(k // 2 for k in weight.shape[2:])
        b = torch.arange(c_out)[:, None]
        a = torch.arange(c_in)[None, :]
        mask = (a * channels) // c_in == (b * channels) // c_out
        tap = weight[(slice(None), slice(None), *centre)]
        tap[mask] = channels / c_out


class ContextModule(nn.Module):
    """The context module on ``channels`` (= C) maps; output size = input size.

    Args:
        channels: C, the number of class-score maps it refines.
        kind: ``'basic'`` (C maps everywhere) or ``'large'`` (2C ... 32C, Table 1).
        dilations: of the seven 3x3 layers.
        identity_init: start as the identity (basic) / the paper's generalisation (large).

    Shapes: ``x (Tensor[N, C, H, W])`` -> ``(Tensor[N, C, H, W])``.
    """

    def __init__(
        self,
        channels: int,
        kind: str = "basic",
        dilations: tuple[int, ...] = BASIC_DILATIONS,
        identity_init: bool = True,
    ) -> None:
        super().__init__()
        check_choice("context module kind", kind, ("basic", "large"))
        self.kind = kind
        mults = [1] * (len(dilations) + 1) if kind == "basic" else list(LARGE_WIDTHS)
        if len(mults) != len(dilations) + 1:
            raise ConfigError(
                f"the large context module has {len(LARGE_WIDTHS) - 1} dilated layers; "
                f"received dilations={dilations}."
            )
        layers = []
        c_in = channels
        for i, d in enumerate((*dilations, 1)):
            c_out = channels * mults[i]
            last = i == len(dilations)
            conv = Conv2D(
                c_out, 1 if last else 3, padding="same", dilation_rate=d,
                activation=None if last else "relu", in_channels=c_in,
            )  # fmt: skip
            if identity_init:
                noise = 0.0 if kind == "basic" else 1e-2 * channels / c_out
                _identity_init(conv.weight, channels, noise)
                nn.init.zeros_(conv.bias)
            layers.append(conv)
            c_in = c_out
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _vgg16_front_end(in_channels: int, num_classes: int, base: int, fc_units: int, dropout):
    """Yu & Koltun's front end: VGG16 without pool4/pool5, conv5 dilated 2, fc6 dilated 4."""
    layers: list[nn.Module] = []
    c = in_channels
    for stage, (n, m) in enumerate(zip((2, 2, 3, 3, 3), (1, 2, 4, 8, 8))):
        d = 2 if stage == 4 else 1
        for _ in range(n):
            layers.append(Conv2D(base * m, 3, padding="same", dilation_rate=d,
                                 activation="relu", in_channels=c))  # fmt: skip
            c = base * m
        if stage < 3:
            layers.append(MaxPooling2D(2))
    layers += [
        Conv2D(fc_units, 7, padding="same", dilation_rate=4, activation="relu", in_channels=c),
        Dropout(dropout),
        Conv2D(fc_units, 1, activation="relu", in_channels=fc_units),
        Dropout(dropout),
        Conv2D(num_classes, 1, in_channels=fc_units),
    ]
    return nn.Sequential(*layers)


def _small_front_end(in_channels: int, num_classes: int, base: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    c = in_channels
    for m in (1, 2, 4):
        for _ in range(2):
            layers.append(Conv2D(base * m, 3, padding="same", activation="relu", in_channels=c))
            c = base * m
        layers.append(MaxPooling2D(2))
    layers.append(Conv2D(num_classes, 1, in_channels=c))
    return nn.Sequential(*layers)


class DilatedContextNet(nn.Module):
    """Front end (stride 8) -> context module -> bilinear upsampling by 8.

    Args:
        num_classes: C, the score maps (21 for PASCAL VOC).
        in_channels: input channels.
        front_end: ``'small'`` or ``'vgg16'`` (the paper's).
        context: ``'basic'``, ``'large'`` or ``None`` (front end only).
        base_filters: front end's first width (64 for ``'vgg16'``, 16 for ``'small'``
            when ``None``).
        fc_units: ``'vgg16'``'s fc6/fc7 width (4096).
        dropout: ``'vgg16'``'s dropout after fc6/fc7 (0.5).

    Shapes: ``x (Tensor[N, C_in, H, W])`` -> logits ``(Tensor[N, num_classes, H, W])``,
    ``H, W`` multiples of 8.
    """

    def __init__(
        self,
        num_classes: int = 21,
        in_channels: int = 3,
        front_end: str = "small",
        context: str | None = "basic",
        base_filters: int | None = None,
        fc_units: int = 4096,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        for name, v in (("num_classes", num_classes), ("in_channels", in_channels)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"dilated_context expects {name} a positive int; received {v!r}.")
        check_choice("dilated_context front_end", front_end, ("small", "vgg16"))
        if front_end == "vgg16":
            base = 64 if base_filters is None else base_filters
            self.front_end = _vgg16_front_end(in_channels, num_classes, base, fc_units, dropout)
            self.default_input_shape = (in_channels, 504, 504)
        else:
            base = 16 if base_filters is None else base_filters
            self.front_end = _small_front_end(in_channels, num_classes, base)
            self.default_input_shape = (in_channels, 64, 64)
        self.context = ContextModule(num_classes, context) if context is not None else None
        self.upsample = UpSampling2D(8, interpolation="bilinear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (Tensor[N, C_in, H, W])`` -> per-pixel logits ``(Tensor[N, C, H, W])``."""
        if x.dim() != 4 or x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ShapeError(
                "dilated_context expects (N, C, H, W) with H and W multiples of 8 (the front "
                f"end's stride); received shape {tuple(x.shape)}."
            )
        x = self.front_end(x)
        if self.context is not None:
            x = self.context(x)
        return self.upsample(x)


@register_model("dilated_context")
def dilated_context(
    num_classes: int = 21,
    in_channels: int = 3,
    front_end: str = "small",
    context: str | None = "basic",
    base_filters: int | None = None,
    fc_units: int = 4096,
    dropout: float = 0.5,
) -> DilatedContextNet:
    """Yu & Koltun (2016): a front end at stride 8, the dilated context module (basic:
    dilations 1, 1, 2, 4, 8, 16, 1 and a 1x1 layer, receptive field 67, identity
    initialised), bilinear upsampling by 8. ``front_end='vgg16'`` is the paper's (input
    e.g. ``(N, 3, 504, 504)``); the default ``'small'`` one takes ``(N, 3, 64, 64)``;
    sides multiples of 8."""
    return DilatedContextNet(
        num_classes, in_channels, front_end, context, base_filters, fc_units, dropout
    )
