"""AlexNet (Krizhevsky, Sutskever and Hinton, "ImageNet classification with deep
convolutional neural networks", NeurIPS 2012), as tabulated in the decks, for
``x (Tensor[N, 3, 227, 227])``.

Seed 001's table (Keras names, channels-first here)::

    C1  Conv 96 @ 55x55, 11x11 stride 4, valid, ReLU   (227 - 11) / 4 + 1 = 55 (seed 002)
    S2  MaxPool 3x3 stride 2 -> 27x27                  (55 - 3) / 2 + 1 = 27 (seed 002)
    C3  Conv 256 @ 27x27, 5x5, same, ReLU
    S4  MaxPool 3x3 stride 2 -> 13x13
    C5  Conv 384 @ 13x13, 3x3, same, ReLU
    C6  Conv 384 @ 13x13, 3x3, same, ReLU
    C7  Conv 256 @ 13x13, 3x3, same, ReLU
    F8  Dense 4096, ReLU;  F9  Dense 4096, ReLU;  Out  Dense 1000

The table leaves out the paper's third max pooling after C7 (13x13 -> 6x6); with it the
first dense layer has 6*6*256 = 9216 inputs and the network 62,378,344 parameters for
1000 classes (without it F8 alone would have 177 million). Stage names follow the
paper (``conv1`` = C1, ``pool1`` = S2, ..., ``pool5`` after C7).

The paper also normalises the responses of conv1 and conv2 (local response
normalisation, size 5, alpha 1e-4, beta 0.75, k 2; no parameters) and uses dropout 0.5
on F8 and F9. ``groups=2`` is the paper's two-GPU split: the kernels of conv2, conv4
and conv5 read only the half of the maps on their own GPU (60,965,224 parameters, the
paper's "60 million"). The output is logits (the table's softmax is applied by the
loss).

torchvision's ``alexnet`` is a different network (64/192/384/256/256 maps, 224x224
input, 61,100,840 parameters, after the "one weird trick" paper, Krizhevsky 2014): it is
``create("alexnet", variant="torchvision")`` (no LRN, 11x11/4 conv with padding 2, adaptive
average pooling to 6x6 before the classifier, dropout before F8 and F9, as torchvision),
the layout of torchvision's ImageNet weights (``weights="imagenet"``).
"""

from __future__ import annotations

from torch import nn

from cnnkit._core.errors import ConfigError
from cnnkit.layers import Conv2D, Dense, Dropout, Flatten, MaxPooling2D, Sequential
from cnnkit.models.base import ImageClassifier
from cnnkit.models.registry import register_model

__all__ = ["alexnet"]


def _lrn() -> nn.Module:
    return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)


@register_model("alexnet")
def alexnet(
    num_classes: int = 1000,
    in_channels: int = 3,
    groups: int = 1,
    input_size: int = 227,
    local_response_norm: bool = True,
    dropout: float = 0.5,
    variant: str = "paper",
) -> ImageClassifier:
    """AlexNet (Krizhevsky et al. 2012) for ``x (Tensor[N, in_channels, input_size,
    input_size])`` (227 by default) -> logits ``Tensor[N, num_classes]``.

    Args:
        groups: 1 (one stream, 62,378,344 parameters) or 2 (the paper's two GPU
            streams on conv2, conv4 and conv5: 60,965,224 parameters).
        input_size: square input side; the flattened size after ``pool5`` follows it
            (at least 67 so that ``pool5`` has a 1x1 output).
        local_response_norm: the paper's LRN after conv1 and conv2 (parameter-free).
        dropout: dropout rate after F8 and F9.
        variant: ``"paper"`` (the decks' table) or ``"torchvision"`` (torchvision's
            ``alexnet``, 61,100,840 parameters; ``groups``, ``input_size`` and
            ``local_response_norm`` do not apply, input 224x224, any side >= 63 works).
    """
    if variant == "torchvision":
        return _torchvision_alexnet(num_classes, in_channels, dropout)
    if variant != "paper":
        raise ConfigError(
            f"alexnet variant must be 'paper' or 'torchvision'; received {variant!r}."
        )
    if groups not in (1, 2):
        raise ConfigError(f"alexnet groups must be 1 or 2 (two GPU streams); received {groups!r}.")
    lrn = [_lrn()] if local_response_norm else []
    relu = dict(activation="relu")
    specs = [
        ("conv1", [Conv2D(96, 11, strides=4, **relu), *lrn]),
        ("pool1", [MaxPooling2D(3, strides=2)]),
        ("conv2", [Conv2D(256, 5, padding=2, groups=groups, **relu), *([_lrn()] if lrn else [])]),
        ("pool2", [MaxPooling2D(3, strides=2)]),
        ("conv3", [Conv2D(384, 3, padding=1, **relu)]),
        ("conv4", [Conv2D(384, 3, padding=1, groups=groups, **relu)]),
        ("conv5", [Conv2D(256, 3, padding=1, groups=groups, **relu)]),
        ("pool5", [MaxPooling2D(3, strides=2)]),
    ]
    shape: tuple = (in_channels, input_size, input_size)
    stages = []
    for name, layers in specs:
        stage = Sequential(layers, input_shape=shape, name=name)
        stages.append((name, stage))
        shape = tuple(stage.output_shape[1:])
    head = nn.Sequential(
        Flatten(),
        Dense(4096, in_features=shape[0] * shape[1] * shape[2], **relu),
        Dropout(dropout),
        Dense(4096, in_features=4096, **relu),
        Dropout(dropout),
        Dense(num_classes, in_features=4096),
    )
    model = ImageClassifier(stages, head, (in_channels, input_size, input_size))
    model.name = "alexnet"
    return model


def _torchvision_alexnet(num_classes: int, in_channels: int, dropout: float) -> ImageClassifier:
    """torchvision.models.alexnet layer for layer: 64-192-384-256-256 maps."""
    relu = dict(activation="relu")
    specs = [
        ("conv1", Conv2D(64, 11, strides=4, padding=2, in_channels=in_channels, **relu)),
        ("pool1", MaxPooling2D(3, strides=2)),
        ("conv2", Conv2D(192, 5, padding=2, in_channels=64, **relu)),
        ("pool2", MaxPooling2D(3, strides=2)),
        ("conv3", Conv2D(384, 3, padding=1, in_channels=192, **relu)),
        ("conv4", Conv2D(256, 3, padding=1, in_channels=384, **relu)),
        ("conv5", Conv2D(256, 3, padding=1, in_channels=256, **relu)),
        ("pool5", MaxPooling2D(3, strides=2)),
    ]
    stages = [(name, nn.Sequential(layer)) for name, layer in specs]
    head = nn.Sequential(
        nn.AdaptiveAvgPool2d((6, 6)),
        Flatten(),
        Dropout(dropout),
        Dense(4096, in_features=256 * 6 * 6, **relu),
        Dropout(dropout),
        Dense(4096, in_features=4096, **relu),
        Dense(num_classes, in_features=4096),
    )
    model = ImageClassifier(stages, head, (in_channels, 224, 224))
    model.name = "alexnet"
    return model
