"""GoogLeNet (Szegedy et al., "Going deeper with convolutions", CVPR 2015), as
torchvision builds it (with batch norm, which the decks mention), for
``x (Tensor[N, 3, 224, 224])``.

Every convolution is torchvision's ``BasicConv2d``: conv without bias -> batch norm
(epsilon 0.001) -> ReLU. Stem: 7x7/2 conv 64 -> 3x3/2 max pool -> 1x1 conv 64 -> 3x3 conv
192 -> 3x3/2 max pool (224 -> 28); inception 3a, 3b -> pool -> 4a ... 4e -> pool -> 5a,
5b (7x7x1024) -> global average pooling -> dropout 0.2 -> dense (logits). Max poolings
round up (``ceil_mode=True`` in torchvision), written here as one row/column of extra
padding after the input: ``floor((n + s - 1 - k) / s) + 1 = ceil((n - k) / s) + 1``.

Auxiliary classifiers (``aux_logits=True``, torchvision's name): after inception 4a and
4d, adaptive average pooling to 4x4 -> 1x1 conv 128 -> dense 1024 (ReLU) -> dropout 0.7
-> dense (logits). In training mode the model returns ``GoogLeNetOutputs(logits,
aux_logits2, aux_logits1)`` as torchvision does; in eval mode only the logits (the
auxiliary heads are dropped at inference). The paper adds their losses with weight 0.3
during training: :func:`googlenet_loss` for a hand-written loop, and ``cnnkit.Model``'s
``fit`` does it by itself through the auxiliary-output protocol (the model's
``aux_loss_weights = (0.3, 0.3)``, see :class:`GoogLeNet`).

The inception "5x5" branch: torchvision's ``Inception`` uses a 3x3 kernel there (a
known torchvision bug, kept for compatibility with its weights). ``branch3_kernel=3``
(the default) mirrors it, so that the network is torchvision's layer for layer:
6,624,904 parameters without and 13,004,888 with the auxiliary heads (1000 classes).
``branch3_kernel=5`` gives the paper's 5x5 (7,005,832 parameters without the
auxiliary heads).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit._core.errors import ConfigError
from cnnkit.layers import (
    Activation,
    BatchNormalization,
    Concatenate,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePooling2D,
    MaxPooling2D,
)
from cnnkit.models.base import ImageClassifier
from cnnkit.models.registry import register_model

__all__ = [
    "GoogLeNet",
    "GoogLeNetOutputs",
    "InceptionAux",
    "InceptionModule",
    "conv_bn",
    "googlenet",
    "googlenet_loss",
]

#: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) of each inception module (Table 1)
INCEPTION_CONFIGS: dict[str, tuple[int, int, int, int, int, int]] = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}


class GoogLeNetOutputs(NamedTuple):
    """What a GoogLeNet with auxiliary heads returns in training mode (torchvision's order)."""

    logits: torch.Tensor
    aux_logits2: torch.Tensor
    aux_logits1: torch.Tensor


def conv_bn(in_channels: int, filters: int, kernel_size: int, strides: int = 1) -> nn.Sequential:
    """torchvision's ``BasicConv2d``: conv (no bias, padding ``k // 2``) -> batch norm
    (epsilon 0.001, PyTorch momentum 0.1) -> ReLU."""
    return nn.Sequential(
        Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding=kernel_size // 2,
            use_bias=False,
            kernel_initializer="he_normal",
            in_channels=in_channels,
        ),
        BatchNormalization(momentum=0.9, epsilon=1e-3).build((None, filters, None, None)),
        Activation("relu"),
    )


def _ceil_max_pool(pool_size: int, strides: int) -> MaxPooling2D:
    """Max pooling with PyTorch's ``ceil_mode=True`` sizes: ``strides - 1`` after."""
    pad = (0, strides - 1)
    return MaxPooling2D(pool_size, strides=strides, padding=(pad, pad))


class InceptionModule(nn.Module):
    """The dimension-reduced inception module (seed 003): four branches concatenated on
    the channels, every convolution a :func:`conv_bn`.

    ``branch1``: 1x1; ``branch2``: 1x1 reduce -> 3x3; ``branch3``: 1x1 reduce ->
    ``branch3_kernel`` (the paper's 5x5; 3 in torchvision); ``branch4``: 3x3/1 max pool ->
    1x1 projection. ``x (Tensor[N, C, H, W])`` -> ``Tensor[N, ch1x1 + ch3x3 + ch5x5 +
    pool_proj, H, W]``.
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        branch3_kernel: int = 3,
    ) -> None:
        super().__init__()
        self.branch1 = conv_bn(in_channels, ch1x1, 1)
        self.branch2 = nn.Sequential(conv_bn(in_channels, ch3x3red, 1), conv_bn(ch3x3red, ch3x3, 3))
        self.branch3 = nn.Sequential(
            conv_bn(in_channels, ch5x5red, 1), conv_bn(ch5x5red, ch5x5, branch3_kernel)
        )
        self.branch4 = nn.Sequential(
            MaxPooling2D(3, strides=1, padding=1), conv_bn(in_channels, pool_proj, 1)
        )
        self.concat = Concatenate(axis=1)
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.concat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)])


class InceptionAux(nn.Module):
    """An auxiliary classifier (torchvision's ``InceptionAux``): adaptive average pooling
    to 4x4 (the paper: 5x5/3 average pooling, 4x4 at 14x14) -> 1x1 conv 128 -> dense
    1024, ReLU -> dropout -> dense. ``x (Tensor[N, C, H, W])`` -> ``Tensor[N, num_classes]``.
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d((4, 4))
        self.conv = conv_bn(in_channels, 128, 1)
        self.flatten = Flatten()
        self.fc1 = Dense(1024, activation="relu", in_features=128 * 4 * 4)
        self.dropout = Dropout(dropout)
        self.fc2 = Dense(num_classes, in_features=1024)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(self.conv(self.pool(x)))
        return self.fc2(self.dropout(self.fc1(x)))


class GoogLeNet(ImageClassifier):
    """An :class:`ImageClassifier` whose ``forward`` also runs the auxiliary heads in
    training mode (``aux_heads``: (attribute, stage name, head), run on that stage's output).

    Auxiliary-output protocol (read by ``cnnkit.Model.fit``): ``aux_loss_weights`` holds
    one weight per auxiliary output, in the order ``forward`` returns them after the
    logits in training mode: ``(aux_weight, aux_weight)`` for ``GoogLeNetOutputs(logits,
    aux_logits2, aux_logits1)``, ``()`` without auxiliary heads. The auxiliary outputs are
    logits like the main one; ``fit`` adds ``w * loss(aux, y)`` for each to the main loss
    and keeps metrics on the logits alone.
    """

    def __init__(
        self,
        stages: Sequence[tuple[str, nn.Module]],
        head: nn.Module,
        default_input_shape: Sequence[int],
        aux_heads: Sequence[tuple[str, str, nn.Module]] = (),
        aux_weight: float = 0.3,
    ) -> None:
        super().__init__(stages, head, default_input_shape)
        self._aux_after: dict[str, str] = {}
        for attr, stage, module in aux_heads:
            setattr(self, attr, module)
            self._aux_after[stage] = attr
        self.aux_logits = bool(aux_heads)
        self.aux_loss_weights: tuple[float, ...] = (float(aux_weight),) * len(aux_heads)

    def forward(self, x: torch.Tensor) -> Any:
        run_aux = self.training and self.aux_logits
        aux: list[torch.Tensor] = []
        for name, stage in self.features.named_children():
            x = stage(x)
            if run_aux and name in self._aux_after:
                aux.append(getattr(self, self._aux_after[name])(x))
        logits = self.forward_head(x)
        if run_aux:
            return GoogLeNetOutputs(logits, aux[1], aux[0])
        return logits


@register_model("googlenet")
def googlenet(
    num_classes: int = 1000,
    in_channels: int = 3,
    aux_logits: bool = False,
    branch3_kernel: int = 3,
    dropout: float = 0.2,
    dropout_aux: float = 0.7,
    aux_weight: float = 0.3,
) -> GoogLeNet:
    """GoogLeNet / Inception v1 (Szegedy et al. 2015; torchvision.models.googlenet) for
    ``x (Tensor[N, in_channels, 224, 224])`` -> logits ``Tensor[N, num_classes]``.

    Args:
        aux_logits: add the two auxiliary classifiers (after inception 4a and 4d); in
            training mode ``forward`` returns ``GoogLeNetOutputs(logits, aux_logits2,
            aux_logits1)``. (torchvision's builder defaults to ``True`` when no weights
            are given; here the default is the inference network.)
        branch3_kernel: kernel of the inception modules' third branch: 3 as torchvision
            (6,624,904 parameters), 5 as the paper (7,005,832).
        dropout, dropout_aux: dropout before the final dense layer / in the aux heads.
        aux_weight: weight of each auxiliary loss in ``cnnkit.Model.fit`` (the paper's
            0.3), exposed as the model's ``aux_loss_weights``.
    """
    if branch3_kernel not in (3, 5):
        raise ConfigError(
            f"googlenet branch3_kernel must be 3 (torchvision) or 5 (the paper); "
            f"received {branch3_kernel!r}."
        )
    if not (isinstance(aux_weight, (int, float)) and aux_weight >= 0):
        raise ConfigError(
            f"googlenet aux_weight must be a number >= 0 (the paper: 0.3); received {aux_weight!r}."
        )
    stages: list[tuple[str, nn.Module]] = [
        ("conv1", conv_bn(in_channels, 64, 7, strides=2)),
        ("maxpool1", _ceil_max_pool(3, 2)),
        ("conv2", conv_bn(64, 64, 1)),
        ("conv3", conv_bn(64, 192, 3)),
        ("maxpool2", _ceil_max_pool(3, 2)),
    ]
    c = 192
    for name, cfg in INCEPTION_CONFIGS.items():
        if name == "inception4a":
            stages.append(("maxpool3", _ceil_max_pool(3, 2)))
        elif name == "inception5a":
            stages.append(("maxpool4", _ceil_max_pool(2, 2)))
        module = InceptionModule(c, *cfg, branch3_kernel=branch3_kernel)
        stages.append((name, module))
        c = module.out_channels
    head = nn.Sequential(
        GlobalAveragePooling2D(), Dropout(dropout), Dense(num_classes, in_features=c)
    )
    aux: list[tuple[str, str, nn.Module]] = []
    if aux_logits:
        aux = [
            ("aux1", "inception4a", InceptionAux(512, num_classes, dropout_aux)),
            ("aux2", "inception4d", InceptionAux(528, num_classes, dropout_aux)),
        ]
    model = GoogLeNet(stages, head, (in_channels, 224, 224), aux, aux_weight)
    model.name = "googlenet"
    return model


def googlenet_loss(
    outputs: torch.Tensor | Sequence[torch.Tensor],
    target: torch.Tensor,
    aux_weight: float = 0.3,
) -> torch.Tensor:
    """Cross-entropy of GoogLeNet's outputs with the paper's auxiliary weighting.

    ``outputs`` is the model's return value: logits ``Tensor[N, K]`` (eval mode, or no
    auxiliary heads) or ``GoogLeNetOutputs(logits, aux_logits2, aux_logits1)`` (training
    mode): then ``CE(logits) + aux_weight * (CE(aux_logits2) + CE(aux_logits1))`` (Szegedy
    et al. 2015, Sec. 5: "their loss gets added to the total loss of the network with a
    discount weight (the losses of the auxiliary classifiers were weighted by 0.3)").
    ``target`` holds class indices ``Tensor[N]``. Use it as the loss of a hand-written
    training loop; ``cnnkit.Model.fit`` adds the same terms by itself (``aux_loss_weights``).
    """
    if isinstance(outputs, torch.Tensor):
        return F.cross_entropy(outputs, target)
    if not isinstance(outputs, (tuple, list)) or len(outputs) != 3:
        raise ConfigError(
            "googlenet_loss expects logits or GoogLeNetOutputs(logits, aux_logits2, "
            f"aux_logits1); received {type(outputs).__name__}."
        )
    main, aux2, aux1 = outputs
    return F.cross_entropy(main, target) + aux_weight * (
        F.cross_entropy(aux2, target) + F.cross_entropy(aux1, target)
    )
