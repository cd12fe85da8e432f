"""Character-level text classification with 1D convolutions (seed 003's text-mining slides).

Zhang, Zhao & LeCun (2015), "Character-level Convolutional Networks for Text
Classification" (NeurIPS): each character is one-hot encoded over an alphabet of 70
letters (26 letters, 10 digits, 33 other characters and the new line), a text is cut or
padded to 1014 characters, so the input is ``x (Tensor[N, 70, 1014])`` (alphabet as
channels, characters along the length). Six convolutions (kernels 7, 7, 3, 3, 3, 3,
stride 1, no padding, ReLU) with non-overlapping max pooling of 3 after layers 1, 2
and 6 leave ``(1014 - 96) / 27 = 34`` positions, which three fully connected layers
(dropout 0.5 between them) classify.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from cnnkit._core.errors import ConfigError, check_choice
from cnnkit.layers import Conv1D, Dense, Dropout, Flatten, MaxPooling1D
from cnnkit.models.base import ImageClassifier
from cnnkit.models.registry import register_model

__all__ = ["CHAR_CNN_SIZES", "char_cnn", "char_cnn_feature_length"]

#: (conv features, fully connected units, init std) for each model size (Tables 1, 2)
CHAR_CNN_SIZES: dict[str, tuple[int, int, float]] = {
    "small": (256, 1024, 0.05),
    "large": (1024, 2048, 0.02),
}
_KERNELS = (7, 7, 3, 3, 3, 3)
_POOLED = (True, True, False, False, False, True)
_POOL = 3


def char_cnn_feature_length(length: int) -> int:
    """Positions left after the six convolutions and three poolings of Zhang et al.

    Each valid convolution removes ``k - 1`` positions, each pooling divides by 3
    (floored): 1014 characters give 34, the paper's ``l_6 = (l_0 - 96) / 27``.
    """
    n = length
    for k, pooled in zip(_KERNELS, _POOLED):
        n = n - k + 1
        if n < 1:
            return 0
        if pooled:
            n //= _POOL
    return n


def _normal(std: float) -> Callable[[torch.Tensor], None]:
    def init(weight: torch.Tensor) -> None:
        nn.init.normal_(weight, 0.0, std)

    return init


@register_model("char_cnn")
def char_cnn(
    size: str = "small",
    num_classes: int = 4,
    alphabet_size: int | None = None,
    length: int = 1014,
    dropout: float = 0.5,
    in_channels: int | None = None,
) -> ImageClassifier:
    """Zhang, Zhao & LeCun (2015)'s character-level ConvNet ("small" or "large").

    Args:
        size: ``'small'`` (256 conv features, 1024 FC units, weights ~ N(0, 0.05)) or
            ``'large'`` (1024 features, 2048 units, N(0, 0.02)), the paper's two models.
        num_classes: outputs of the last layer (4 for AG's News, the default).
        alphabet_size: one-hot channels (default 70, the paper's alphabet).
        length: characters per text (1014 in the paper); the flatten before the first
            fully connected layer fixes it. At least 123 (one position after the convs).
        dropout: rate of the two dropout layers between the fully connected layers.
        in_channels: the registry's common name for ``alphabet_size``.

    Input ``x (Tensor[N, alphabet_size, length])`` (one-hot characters); output
    ``Tensor[N, num_classes]`` logits. For 4 classes the small model has 11,339,780
    parameters (1,372,160 in the convolutions) and 370 MMACs per text, the large one
    95,940,612 and 4.3 GMACs. Stages ``conv1`` ... ``conv6`` (conv + ReLU, + max pooling
    for 1, 2, 6); ``forward_features`` returns ``Tensor[N, features, 34]``.
    """
    features, units, std = CHAR_CNN_SIZES[check_choice("char_cnn size", size, CHAR_CNN_SIZES)]
    if alphabet_size is not None and in_channels is not None and alphabet_size != in_channels:
        raise ConfigError(
            f"char_cnn received alphabet_size={alphabet_size} and in_channels={in_channels}; "
            "they name the same thing, give one."
        )
    alphabet_size = alphabet_size or in_channels or 70
    positions = char_cnn_feature_length(length)
    if positions < 1:
        raise ConfigError(
            f"char_cnn needs at least 123 characters (one position after the six convolutions "
            f"and three poolings); received length={length}. The paper uses 1014."
        )
    init = _normal(std)
    stages = []
    c_in = alphabet_size
    for i, (k, pooled) in enumerate(zip(_KERNELS, _POOLED), start=1):
        conv = Conv1D(features, k, activation="relu", kernel_initializer=init, in_channels=c_in)
        layers: list[nn.Module] = [conv]
        if pooled:
            layers.append(MaxPooling1D(_POOL))
        stages.append((f"conv{i}", nn.Sequential(*layers)))
        c_in = features
    head = nn.Sequential(
        Flatten(),
        Dense(units, activation="relu", kernel_initializer=init, in_features=features * positions),
        Dropout(dropout),
        Dense(units, activation="relu", kernel_initializer=init, in_features=units),
        Dropout(dropout),
        Dense(num_classes, kernel_initializer=init, in_features=units),
    )
    return ImageClassifier(stages, head, default_input_shape=(alphabet_size, length))
