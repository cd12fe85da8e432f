"""ResNet (He, Zhang, Ren and Sun, "Deep residual learning for image recognition",
CVPR 2016), 18/34/50/101/152 layers, for ``x (Tensor[N, 3, 224, 224])``.

Stem: 7x7 conv, 64, stride 2 (no bias) -> batch norm -> ReLU -> 3x3 max pool, stride 2
(224 -> 56). Then four stages of residual blocks (the paper's conv2_x ... conv5_x, here
``layer1`` ... ``layer4`` as torchvision) with 64, 128, 256, 512 filters, the first block
of stages 2-4 with stride 2 (56 -> 28 -> 14 -> 7); global average pooling and one dense
layer (logits). Basic blocks (two 3x3 convolutions) for 18/34, bottlenecks (1x1, 3x3,
1x1 x4) for 50/101/152, with the stride on the 3x3 (torchvision's "ResNet v1.5") and a
1x1 projection shortcut (option B of the paper) where the shape changes.

Blocks are :class:`cnnkit.layers.ResidualBlock` (``y = relu(F(x) + shortcut(x))``), with
PyTorch's batch-norm settings (epsilon 1e-5, momentum 0.1); the network is
``torchvision.models.resnetNN`` layer for layer: resnet18 11,689,512, resnet34
21,797,672, resnet50 25,557,032, resnet101 44,549,160, resnet152 60,192,808 parameters
for 1000 classes, and the same outputs for the same weights.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from cnnkit._core.errors import ConfigError
from cnnkit.layers import (
    Activation,
    BatchNormalization,
    Conv2D,
    Dense,
    GlobalAveragePooling2D,
    MaxPooling2D,
    ResidualBlock,
)
from cnnkit.models.base import ImageClassifier
from cnnkit.models.registry import register_model

__all__ = ["DEPTHS", "resnet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]

#: blocks per stage and whether they are bottlenecks (the paper's Table 1)
DEPTHS: dict[int, tuple[tuple[int, int, int, int], bool]] = {
    18: ((2, 2, 2, 2), False),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
    101: ((3, 4, 23, 3), True),
    152: ((3, 8, 36, 3), True),
}
_BN = dict(bn_epsilon=1e-5, bn_momentum=0.9)  # PyTorch's eps and momentum 0.1


def resnet(
    blocks: Sequence[int],
    bottleneck: bool,
    num_classes: int = 1000,
    in_channels: int = 3,
    name: str = "resnet",
) -> ImageClassifier:
    """A ResNet with ``blocks[i]`` residual blocks in stage ``i`` (see the module docstring).

    Stages: ``stem``, ``layer1`` ... ``layer4``; head: global average pooling -> Dense.
    """
    if len(blocks) != 4 or any(not isinstance(b, int) or b < 1 for b in blocks):
        raise ConfigError(f"resnet expects 4 positive block counts; received {tuple(blocks)!r}.")
    stem = nn.Sequential(
        Conv2D(
            64,
            7,
            strides=2,
            padding=3,
            use_bias=False,
            kernel_initializer="he_normal",
            in_channels=in_channels,
        ),
        BatchNormalization(momentum=0.9, epsilon=1e-5).build((None, 64, None, None)),
        Activation("relu"),
        MaxPooling2D(3, strides=2, padding=1),
    )
    stages: list[tuple[str, nn.Module]] = [("stem", stem)]
    c = 64
    for i, (n, filters) in enumerate(zip(blocks, (64, 128, 256, 512)), start=1):
        layer = []
        for j in range(n):
            stride = 2 if (j == 0 and i > 1) else 1
            block = ResidualBlock(filters, stride, bottleneck=bottleneck, in_channels=c, **_BN)
            layer.append(block)
            c = block.out_channels
        stages.append((f"layer{i}", nn.Sequential(*layer)))
    head = nn.Sequential(GlobalAveragePooling2D(), Dense(num_classes, in_features=c))
    model = ImageClassifier(stages, head, (in_channels, 224, 224))
    model.name = name
    return model


def _builder(depth: int):
    blocks, bottleneck = DEPTHS[depth]

    def build(num_classes: int = 1000, in_channels: int = 3) -> ImageClassifier:
        return resnet(blocks, bottleneck, num_classes, in_channels, f"resnet{depth}")

    kind = "bottleneck" if bottleneck else "basic"
    build.__name__ = build.__qualname__ = f"resnet{depth}"
    build.__doc__ = (
        f"ResNet-{depth} (He et al. 2016; torchvision.models.resnet{depth}): {kind} blocks "
        f"{blocks}, for ``x (Tensor[N, in_channels, 224, 224])`` (any size >= 32 works, "
        "global pooling) -> logits ``Tensor[N, num_classes]``."
    )
    return build


resnet18 = register_model("resnet18")(_builder(18))
resnet34 = register_model("resnet34")(_builder(34))
resnet50 = register_model("resnet50")(_builder(50))
resnet101 = register_model("resnet101")(_builder(101))
resnet152 = register_model("resnet152")(_builder(152))
