"""3D CNNs for video clips and volumes (seed 003's 3D-convolution slides).

A 3D convolution moves its kernel along time (or depth) as well as height and width:
``x (Tensor[N, C, D, H, W])`` with ``D`` frames of a clip or slices of a scan.

* ``c3d``: Tran, Bourdev, Fergus, Torresani & Paluri (2015), "Learning Spatiotemporal
  Features with 3D Convolutional Networks" (ICCV): eight 3x3x3 convolutions, five max
  poolings (the first 1x2x2 so early frames are not merged), two 4096-unit layers, on
  16-frame 112x112 RGB clips, 487 Sports-1M classes.
* ``c3d_small``: the same design, narrow and with batch norm and global average pooling
  before the head, for CPU training on clips of 8 or more frames at 32x32 or larger.
* ``volume_cnn``: a small 3D CNN for single-channel volumes (MRI, CT).

Outputs are logits (the losses apply the softmax).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from cnnkit._core.errors import ConfigError
from cnnkit.layers import (
    BatchNormalization,
    Conv3D,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePooling3D,
    MaxPooling3D,
)
from cnnkit.models.base import ImageClassifier
from cnnkit.models.registry import register_model

__all__ = ["C3D_CONFIG", "c3d", "c3d_small", "volume_cnn"]

#: C3D's stages: (name, conv filters, pool size, pool padding); Tran et al. 2015, Fig. 3.
#: pool5 pads H and W by 1 (Caffe's ceil-mode pooling), leaving 512x1x4x4 = 8192 fc6 inputs.
C3D_CONFIG: tuple[tuple[str, tuple[int, ...], tuple[int, int, int], int | tuple], ...] = (
    ("conv1", (64,), (1, 2, 2), 0),
    ("conv2", (128,), (2, 2, 2), 0),
    ("conv3", (256, 256), (2, 2, 2), 0),
    ("conv4", (512, 512), (2, 2, 2), 0),
    ("conv5", (512, 512), (2, 2, 2), ((0, 0), (1, 1), (1, 1))),
)


def _check_clip(clip_shape: Sequence[int], owner: str) -> tuple[int, int, int]:
    shape = tuple(clip_shape)
    if len(shape) != 3 or any(
        isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape
    ):
        raise ConfigError(
            f"{owner} expects clip_shape (frames, height, width) of positive ints; "
            f"received {clip_shape!r}."
        )
    return shape  # type: ignore[return-value]


def _output_shape(modules: nn.Sequential, shape: tuple) -> tuple:
    for stage in modules:
        for layer in stage:
            shape = tuple(layer.compute_output_shape(shape))
    return shape


@register_model("c3d")
def c3d(
    num_classes: int = 487,
    in_channels: int = 3,
    clip_shape: Sequence[int] = (16, 112, 112),
    dropout: float = 0.5,
) -> ImageClassifier:
    """Tran et al. (2015)'s C3D: conv1a(64) pool1(1x2x2) conv2a(128) pool2
    conv3a/b(256) pool3 conv4a/b(512) pool4 conv5a/b(512) pool5 fc6(4096) fc7(4096)
    fc8(num_classes); every convolution 3x3x3, stride 1, padding 1, ReLU; pools 2x2x2
    (pool1 1x2x2), dropout 0.5 after fc6 and fc7.

    Input ``x (Tensor[N, 3, 16, 112, 112])`` (``clip_shape``; other clips that leave
    ``512 x 1 x 4 x 4`` after pool5 work too: 16-31 frames, 96-127 pixels); output
    ``Tensor[N, num_classes]``. ``clip_shape`` sizes fc6 for other clips. 79,991,015
    parameters for 487 classes (27,655,936 of them in the convolutions, 33,558,528 in
    fc6); about 38.5 GMACs per 16x112x112 clip.
    """
    clip = _check_clip(clip_shape, "c3d")
    stages = []
    c = in_channels
    for name, filters, pool, pool_pad in C3D_CONFIG:
        layers: list[nn.Module] = []
        for f in filters:
            layers.append(Conv3D(f, 3, padding=1, activation="relu", in_channels=c))
            c = f
        layers.append(MaxPooling3D(pool, padding=pool_pad))
        stages.append((name, nn.Sequential(*layers)))
    features = nn.Sequential(*(s for _, s in stages))
    out = _output_shape(features, (None, in_channels, *clip))
    flat = out[1] * out[2] * out[3] * out[4]
    head = nn.Sequential(
        Flatten(),
        Dense(4096, activation="relu", in_features=flat),
        Dropout(dropout),
        Dense(4096, activation="relu", in_features=4096),
        Dropout(dropout),
        Dense(num_classes, in_features=4096),
    )
    return ImageClassifier(stages, head, (in_channels, *clip))


def _conv_bn_relu_3d(c_in: int, filters: int, batch_norm: bool) -> list[nn.Module]:
    conv = Conv3D(filters, 3, padding=1, use_bias=not batch_norm, in_channels=c_in)
    if not batch_norm:
        return [conv, nn.ReLU()]
    # Keras momentum 0.9 = PyTorch's default 0.1: running statistics usable after few steps
    bn = BatchNormalization(momentum=0.9).build((None, filters, None, None, None))
    return [conv, bn, nn.ReLU()]


@register_model("c3d_small")
def c3d_small(
    num_classes: int = 10,
    in_channels: int = 3,
    filters: Sequence[int] = (16, 32, 64, 128),
    batch_norm: bool = True,
    dropout: float = 0.0,
    clip_shape: Sequence[int] = (16, 64, 64),
) -> ImageClassifier:
    """A CPU-sized C3D: 3x3x3 convolutions (16, 32, 64, 128 filters, each with batch norm
    and ReLU), max pooling 1x2x2 after the first (as C3D's pool1) and 2x2x2 after the
    second and third, then global average pooling and one dense layer.

    Input ``x (Tensor[N, in_channels, D, H, W])`` with ``D >= 8`` frames and
    ``H, W >= 32`` (down to 4x8x8 works); ``clip_shape`` only sets
    ``default_input_shape`` (16x64x64, the Moving MNIST frame size). About 60 MMACs per
    8x32x32 clip (481 MMACs at 16x64x64); 293,370 parameters for 10 classes. Output
    ``Tensor[N, num_classes]``.
    """
    clip = _check_clip(clip_shape, "c3d_small")
    if len(filters) < 1:
        raise ConfigError("c3d_small needs at least one stage; received filters=().")
    pools: list[tuple[int, int, int] | None] = [(1, 2, 2), (2, 2, 2), (2, 2, 2)]
    stages = []
    c = in_channels
    for i, f in enumerate(filters):
        layers = _conv_bn_relu_3d(c, f, batch_norm)
        if i < len(pools):
            layers.append(MaxPooling3D(pools[i]))
        stages.append((f"conv{i + 1}", nn.Sequential(*layers)))
        c = f
    head: list[nn.Module] = [GlobalAveragePooling3D()]
    if dropout:
        head.append(Dropout(dropout))
    head.append(Dense(num_classes, in_features=c))
    return ImageClassifier(stages, nn.Sequential(*head), (in_channels, *clip))


@register_model("volume_cnn")
def volume_cnn(
    num_classes: int = 2,
    in_channels: int = 1,
    filters: Sequence[int] = (8, 16, 32, 64),
    dropout: float = 0.3,
    volume_shape: Sequence[int] = (28, 28, 28),
) -> ImageClassifier:
    """A small 3D CNN for volumes (seed 003: "disease classification on MRI scans"), the
    decks' basic 3D-CNN pattern as in Keras' "3D image classification from CT scans"
    example (Zunair 2020), scaled down for CPUs: per stage a 3x3x3 convolution, batch
    norm, ReLU and 2x2x2 max pooling (8, 16, 32, 64 filters), then global average
    pooling, dropout 0.3 and a dense layer.

    Input ``x (Tensor[N, 1, D, H, W])``, each side at least ``2**len(filters)`` (16);
    ``volume_shape`` only sets ``default_input_shape``: 28x28x28, the size of MedMNIST
    v2's 3D sets (Yang et al. 2023), about 20 MMACs per volume. 73,162 parameters for 2
    classes. Output ``Tensor[N, num_classes]``.
    """
    vol = _check_clip(volume_shape, "volume_cnn")
    stages = []
    c = in_channels
    for i, f in enumerate(filters):
        layers = _conv_bn_relu_3d(c, f, True)
        layers.append(MaxPooling3D(2))
        stages.append((f"block{i + 1}", nn.Sequential(*layers)))
        c = f
    head = nn.Sequential(
        GlobalAveragePooling3D(), Dropout(dropout), Dense(num_classes, in_features=c)
    )
    return ImageClassifier(stages, head, (in_channels, *vol))
