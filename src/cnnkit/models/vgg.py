"""VGG (Simonyan and Zisserman, "Very deep convolutional networks for large-scale image
recognition", ICLR 2015), configurations A, B, D and E, for ``x (Tensor[N, 3, 224, 224])``.

Every convolution is 3x3, stride 1, padding 1, followed by ReLU (after batch norm with
``batch_norm=True``); five 2x2 max poolings halve 224 to 7; then 7x7x512 -> 4096 ->
4096 -> classes with dropout 0.5. The layer for layer build of
``torchvision.models.vgg11/13/16/19(_bn)`` (including its ``AdaptiveAvgPool2d((7, 7))``
before the classifier, the identity at 224x224, which lets smaller inputs through), so
parameter counts and outputs equal torchvision's: vgg11 132,863,336, vgg13 133,047,848,
vgg16 138,357,544, vgg19 143,667,240 for 1000 classes.

Stages ``block1`` ... ``block5``: the convolutions of one resolution and their pooling.
The output is logits.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from cnnkit.layers import (
    Activation,
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPooling2D,
)
from cnnkit.models.base import ImageClassifier
from cnnkit.models.registry import register_model

__all__ = [
    "CONFIGS",
    "vgg",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
]

#: convolutions per block (the paper's Table 1: A, B, D, E), channels 64-128-256-512-512
CONFIGS: dict[str, tuple[int, ...]] = {
    "vgg11": (1, 1, 2, 2, 2),
    "vgg13": (2, 2, 2, 2, 2),
    "vgg16": (2, 2, 3, 3, 3),
    "vgg19": (2, 2, 4, 4, 4),
}
_WIDTHS = (64, 128, 256, 512, 512)


def vgg(
    depths: Sequence[int],
    num_classes: int = 1000,
    in_channels: int = 3,
    batch_norm: bool = False,
    dropout: float = 0.5,
    name: str = "vgg",
) -> ImageClassifier:
    """A VGG with ``depths[i]`` 3x3 convolutions in block ``i`` (widths 64-128-256-512-512).

    ``batch_norm``: conv (with bias, as torchvision) -> BatchNormalization (epsilon 1e-5,
    PyTorch momentum 0.1) -> ReLU.
    """
    stages = []
    c = in_channels
    for i, (depth, width) in enumerate(zip(depths, _WIDTHS), start=1):
        layers: list[nn.Module] = []
        for _ in range(depth):
            if batch_norm:
                layers += [
                    Conv2D(width, 3, padding=1, in_channels=c),
                    BatchNormalization(momentum=0.9, epsilon=1e-5).build((None, width, None, None)),
                    Activation("relu"),
                ]
            else:
                layers.append(Conv2D(width, 3, padding=1, activation="relu", in_channels=c))
            c = width
        layers.append(MaxPooling2D(2))
        stages.append((f"block{i}", nn.Sequential(*layers)))
    head = nn.Sequential(
        nn.AdaptiveAvgPool2d((7, 7)),
        Flatten(),
        Dense(4096, activation="relu", in_features=c * 7 * 7),
        Dropout(dropout),
        Dense(4096, activation="relu", in_features=4096),
        Dropout(dropout),
        Dense(num_classes, in_features=4096),
    )
    model = ImageClassifier(stages, head, (in_channels, 224, 224))
    model.name = name + ("_bn" if batch_norm else "")
    return model


def _doc(config: str) -> str:
    return (
        f"{config.upper()} (Simonyan and Zisserman 2015; torchvision.models.{config}) for "
        "``x (Tensor[N, in_channels, 224, 224])`` -> logits ``Tensor[N, num_classes]``; "
        "``batch_norm=True`` is torchvision's ``_bn`` variant."
    )


@register_model("vgg11")
def vgg11(
    num_classes: int = 1000, in_channels: int = 3, batch_norm: bool = False, dropout: float = 0.5
) -> ImageClassifier:
    return vgg(CONFIGS["vgg11"], num_classes, in_channels, batch_norm, dropout, "vgg11")


@register_model("vgg13")
def vgg13(
    num_classes: int = 1000, in_channels: int = 3, batch_norm: bool = False, dropout: float = 0.5
) -> ImageClassifier:
    return vgg(CONFIGS["vgg13"], num_classes, in_channels, batch_norm, dropout, "vgg13")


@register_model("vgg16")
def vgg16(
    num_classes: int = 1000, in_channels: int = 3, batch_norm: bool = False, dropout: float = 0.5
) -> ImageClassifier:
    return vgg(CONFIGS["vgg16"], num_classes, in_channels, batch_norm, dropout, "vgg16")


@register_model("vgg19")
def vgg19(
    num_classes: int = 1000, in_channels: int = 3, batch_norm: bool = False, dropout: float = 0.5
) -> ImageClassifier:
    return vgg(CONFIGS["vgg19"], num_classes, in_channels, batch_norm, dropout, "vgg19")


for _fn in (vgg11, vgg13, vgg16, vgg19):
    _fn.__doc__ = _doc(_fn.__name__)


def _bn_builder(config: str):
    def build(num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5):
        return vgg(CONFIGS[config], num_classes, in_channels, True, dropout, config)

    build.__name__ = build.__qualname__ = f"{config}_bn"
    build.__doc__ = (
        f"{config.upper()} with batch normalisation (torchvision.models.{config}_bn): "
        f"``{config}(batch_norm=True)`` under the name of torchvision's pretrained weights."
    )
    return build


vgg11_bn = register_model("vgg11_bn")(_bn_builder("vgg11"))
vgg13_bn = register_model("vgg13_bn")(_bn_builder("vgg13"))
vgg16_bn = register_model("vgg16_bn")(_bn_builder("vgg16"))
vgg19_bn = register_model("vgg19_bn")(_bn_builder("vgg19"))
