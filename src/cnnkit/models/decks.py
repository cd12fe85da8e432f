"""The small models written out in the lecture decks' Keras code, layer for layer.

Each is a :class:`DeckClassifier`: a ``cnnkit.layers.Sequential`` (Keras-style
``summary``, indexing, ``get_config``, state-dict keys ``'0.weight'``) that also has the
classifier interface of :mod:`cnnkit.models.base` (``forward_features``,
``forward_head``, ``last_conv``, ``stage_names``, ``forward_stages``,
``default_input_shape``). They end in ``Dense(..., activation='softmax')`` as in the
decks, so they return probabilities; ``cnnkit.Model`` computes its losses from the
logits before that softmax.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from cnnkit._core.errors import ConfigError
from cnnkit.layers import (
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePooling2D,
    MaxPooling2D,
    Sequential,
)
from cnnkit.models.base import last_conv_of
from cnnkit.models.registry import register_model

__all__ = ["DeckClassifier", "cifar_cnn", "cifar_fcn", "gap_cnn", "mnist_cnn", "mnist_deep"]


def _keras_name(layer: nn.Module, counters: dict[str, int]) -> str:
    """Keras' automatic layer names: ``conv2d``, ``conv2d_1``, ``max_pooling2d``, ..."""
    given = getattr(layer, "layer_name", None)
    if given:
        return given
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", type(layer).__name__)
    base = re.sub(r"([a-z])([A-Z])", r"\1_\2", s).lower()
    count = counters.get(base, 0)
    counters[base] = count + 1
    return base if count == 0 else f"{base}_{count}"


class DeckClassifier(Sequential):
    """A Keras-style stack whose first ``head_start`` layers are the feature extractor
    (the stages) and the rest the head.

    Args:
        layers: the layers, in order.
        input_shape: per-sample input shape ``(C, H, W)``; the stack is built at once.
        name: the model's name (``summary``'s title).
        head_start: index of the first head layer (``Flatten``/global pooling for the
            CNNs; the last ``Dense`` for a fully connected net).

    ``forward(x) == forward_head(forward_features(x))``; stage names are the layers'
    Keras names (``conv2d``, ``max_pooling2d``, ``conv2d_1``, ...), as ``summary`` shows.
    """

    def __init__(
        self,
        layers: Iterable[nn.Module] | None = None,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
        head_start: int | None = None,
    ) -> None:
        super().__init__(layers, input_shape=input_shape, name=name)
        n = len(self)
        if head_start is None:
            head_start = n
        if (
            isinstance(head_start, bool)
            or not isinstance(head_start, int)
            or not 0 <= head_start <= n
        ):
            raise ConfigError(
                f"DeckClassifier expects head_start an int in [0, {n}]; received {head_start!r}."
            )
        self.head_start = head_start
        self.default_input_shape = self.input_shape

    def _feature_layers(self) -> list[nn.Module]:
        return list(self)[: self.head_start]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The stages: ``x (Tensor[N, C, H, W])`` -> the last stage's output."""
        for layer in self._feature_layers():
            x = layer(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """The head: features -> class probabilities ``Tensor[N, num_classes]``."""
        for layer in list(self)[self.head_start :]:
            x = layer(x)
        return x

    @property
    def last_conv(self) -> nn.Module:
        """The last convolution (a ConfigError for a net without one)."""
        return last_conv_of(self)

    @property
    def stage_names(self) -> list[str]:
        counters: dict[str, int] = {}
        names = [_keras_name(layer, counters) for layer in self]
        return names[: self.head_start]

    def forward_stages(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Output of each feature layer, keyed by its Keras name."""
        out: dict[str, torch.Tensor] = {}
        for name, layer in zip(self.stage_names, self._feature_layers()):
            x = layer(x)
            out[name] = x
        return out


@register_model("mnist_cnn")
def mnist_cnn(num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> DeckClassifier:
    """Seed 000's MNIST classifier: Conv2D(64, 3) -> Conv2D(32, 3) -> Flatten -> Dense(softmax).

    Input ``(N, 1, 28, 28)``; 10 class probabilities (the loss works from the logits).
    """
    return DeckClassifier(
        [
            Conv2D(64, 3, activation="relu"),
            Conv2D(32, 3, activation="relu"),
            Flatten(),
            Dense(num_classes, activation="softmax"),
        ],
        input_shape=(in_channels, input_size, input_size),
        name="mnist_cnn",
        head_start=2,
    )


@register_model("mnist_deep")
def mnist_deep(
    num_classes: int = 10, in_channels: int = 1, input_size: int = 28, dropout: float = 0.5
) -> DeckClassifier:
    """Seed 001's "CNN for MNIST with Keras" (Geron's ``DefaultConv2D``: 3x3, ReLU, 'same'):

    Conv2D(64, 7) -> MaxPooling2D(2) -> Conv2D(128) -> Conv2D(128) -> MaxPooling2D(2) ->
    Conv2D(256) -> Conv2D(256) -> MaxPooling2D(2) -> Flatten -> Dense(128, relu) ->
    Dropout(0.5) -> Dense(64, relu) -> Dropout(0.5) -> Dense(10, softmax).

    Input ``(N, 1, 28, 28)`` (28 -> 14 -> 7 -> 3); 1,413,834 parameters for 10 classes.
    """
    same = dict(activation="relu", padding="same")
    return DeckClassifier(
        [
            Conv2D(64, 7, **same),
            MaxPooling2D(2),
            Conv2D(128, 3, **same),
            Conv2D(128, 3, **same),
            MaxPooling2D(2),
            Conv2D(256, 3, **same),
            Conv2D(256, 3, **same),
            MaxPooling2D(2),
            Flatten(),
            Dense(128, activation="relu"),
            Dropout(dropout),
            Dense(64, activation="relu"),
            Dropout(dropout),
            Dense(num_classes, activation="softmax"),
        ],
        input_shape=(in_channels, input_size, input_size),
        name="mnist_deep",
        head_start=8,
    )


@register_model("cifar_cnn")
def cifar_cnn(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> DeckClassifier:
    """Seed 004's CIFAR-10 CNN (2,077,130 parameters for 3x32x32 inputs and 10 classes).

    Conv2D(32) -> MaxPooling2D(2) -> Conv2D(64) -> Conv2D(128) -> Flatten -> Dense(128) -> Dense(10).
    """
    return DeckClassifier(
        [
            Conv2D(32, 3, activation="relu"),
            MaxPooling2D(2),
            Conv2D(64, 3, activation="relu"),
            Conv2D(128, 3, activation="relu"),
            Flatten(),
            Dense(128, activation="relu"),
            Dense(num_classes, activation="softmax"),
        ],
        input_shape=(in_channels, input_size, input_size),
        name="cifar_cnn",
        head_start=4,
    )


@register_model("cifar_fcn")
def cifar_fcn(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> DeckClassifier:
    """Seed 004's fully connected CIFAR-10 baseline (8,983,434 parameters): Dense
    2048-1024-512-128-10 on the flattened image.

    It has no convolution: its "features" are the 128 activations before the output
    layer, and ``last_conv`` raises a ConfigError.
    """
    return DeckClassifier(
        [
            Flatten(),
            Dense(2048, activation="relu"),
            Dense(1024, activation="relu"),
            Dense(512, activation="relu"),
            Dense(128, activation="relu"),
            Dense(num_classes, activation="softmax"),
        ],
        input_shape=(in_channels, input_size, input_size),
        name="cifar_fcn",
        head_start=5,
    )


@register_model("gap_cnn")
def gap_cnn(
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: int = 28,
    filters: Sequence[int] = (32, 64, 128, 256),
    strides: Sequence[int] = (1, 2, 2, 1),
) -> DeckClassifier:
    """A small CNN for class activation maps (seed 003, after Zhou et al., "Learning deep
    features for discriminative localization", CVPR 2016): 3x3 'same' ReLU convolutions
    that downsample by their strides only ("no max-pooling is applied throughout the
    architecture"), global average pooling, one Dense(softmax) layer.

    With the defaults, ``x (Tensor[N, 1, 28, 28])`` -> 256 maps of 7x7 -> GAP vector of
    256 -> ``Tensor[N, 10]``: the final layer has seed 003's 256 x 10 = 2560 weights
    (+ 10 biases); 390,410 parameters. ``CAM_j = sum_k w_jk f_k`` with ``f`` the
    ``last_conv`` maps and ``w`` the final Dense's weight. Any input of at least 4x4 works.
    """
    filters, strides = tuple(filters), tuple(strides)
    if not filters or len(filters) != len(strides):
        raise ConfigError(
            f"gap_cnn expects as many strides as filters (at least one); received "
            f"filters={filters!r}, strides={strides!r}."
        )
    convs = [
        Conv2D(f, 3, strides=s, padding="same", activation="relu") for f, s in zip(filters, strides)
    ]
    return DeckClassifier(
        [*convs, GlobalAveragePooling2D(), Dense(num_classes, activation="softmax")],
        input_shape=(in_channels, input_size, input_size),
        name="gap_cnn",
        head_start=len(convs),
    )
