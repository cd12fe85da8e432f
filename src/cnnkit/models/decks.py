"""The small models written out in the lecture decks' Keras code, layer for layer."""

from __future__ import annotations

from cnnkit.layers import Conv2D, Dense, Flatten, MaxPooling2D, Sequential
from cnnkit.models.registry import register_model


@register_model("mnist_cnn")
def mnist_cnn(num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> Sequential:
    """Seed 000's MNIST classifier: Conv2D(64, 3) -> Conv2D(32, 3) -> Flatten -> Dense(softmax).

    Input ``(N, 1, 28, 28)``; 10 class probabilities (the loss works from the logits).
    """
    return Sequential(
        [
            Conv2D(64, 3, activation="relu"),
            Conv2D(32, 3, activation="relu"),
            Flatten(),
            Dense(num_classes, activation="softmax"),
        ],
        input_shape=(in_channels, input_size, input_size),
        name="mnist_cnn",
    )


@register_model("cifar_cnn")
def cifar_cnn(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> Sequential:
    """Seed 004's CIFAR-10 CNN (2,077,130 parameters for 3x32x32 inputs and 10 classes).

    Conv2D(32) -> MaxPooling2D(2) -> Conv2D(64) -> Conv2D(128) -> Flatten -> Dense(128) -> Dense(10).
    """
    return Sequential(
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
    )


@register_model("cifar_fcn")
def cifar_fcn(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> Sequential:
    """Seed 004's fully connected CIFAR-10 baseline (8,983,434 parameters): Dense
    2048-1024-512-128-10 on the flattened image."""
    return Sequential(
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
    )
