"""Classification + localisation: one backbone, global average pooling, two heads.

Seed 001 ("Classification and Localization"): "localizing an object in a picture can
be expressed as a regression task ... we need to add a second dense output layer with
four units"; its Keras code puts ``GlobalAveragePooling2D`` on a backbone's output and
two ``Dense`` layers on the pooled features, a softmax class head and a 4-unit box
head, trained with ``loss=['sparse_categorical_crossentropy', 'mse']`` and
``loss_weights=[0.8, 0.2]``. Here the box head has a sigmoid, so boxes come out as
``(x1, y1, x2, y2)`` normalised to [0, 1] by the image width and height.

    model = cnnkit.Model(create("localizer", num_classes=10, in_channels=1))
    model.compile(optimizer="adam", loss=["sparse_categorical_crossentropy", "mse"],
                  loss_weights=[0.8, 0.2], metrics=["accuracy"])
    model.fit(images, (labels, boxes))

Backbones: ``'small'`` (default; four stages of two 3x3 convolutions with batch
normalisation and ReLU, 16-32-64-128 maps, down to 1/16 of the input side, see
:func:`small_backbone` for why a GAP localiser needs small final maps whose receptive
field spans the image), the name of a registered classifier (its feature stages, without
its own pooling and head, e.g. ``'gap_cnn'``), or an ``nn.Module`` mapping
``(N, C, H, W)`` images to ``(N, F, h, w)`` feature maps.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from cnnkit._core.errors import ConfigError, ShapeError
from cnnkit.layers import (
    Activation,
    BatchNormalization,
    Conv2D,
    Dense,
    GlobalAveragePooling2D,
    MaxPooling2D,
)
from cnnkit.models.base import ImageClassifier
from cnnkit.models.decks import DeckClassifier
from cnnkit.models.registry import MODELS, create, register_model

__all__ = ["Localizer", "localizer", "small_backbone"]


def small_backbone(
    in_channels: int = 1, base_filters: int = 16, batch_norm: bool = True, stages: int = 4
) -> nn.Sequential:
    """A backbone that can localise through global average pooling, for 28x28 to 64x64
    inputs on CPU: ``stages`` stages of two 3x3 'same' convolutions with ReLU (batch
    normalisation before it by default), ``b, 2b, 4b, ...`` maps, the first convolution
    with stride 2 and 2x2 max-pooling between stages. ``(N, C, H, W)`` ->
    ``(N, 2^(stages-1) b, H / 2^stages, W / 2^stages)``: 64x64 -> 4x4 with 4 stages.

    Why this shape: convolutions are translation equivariant and GAP sums over positions,
    so the pooled vector says *where* the object is only through the zero padding, i.e.
    through units whose receptive field reaches both the object and an image border (how
    Xception + GAP localises in seed 001: 7x7 final maps, a receptive field wider than the
    image). The former 'small' (three stages, two pools: 16x16 maps whose receptive field
    is 32 px on a 64x64 canvas, no batch norm) left the box head below the
    always-the-mean-box baseline on localisation MNIST (mean IoU 0.27 vs 0.29, 10 epochs
    of Adam 1e-3, deck loss weights). This one (64x64 -> 4x4 maps, receptive field 133 px,
    a third of the MACs thanks to the stride-2 first convolution) reached 0.62 with the
    same training, 0.65-0.67 with Adam 3e-3 and cosine decay and 0.72-0.73 in 20 epochs
    (bench/learning_zoo.py localizer); on the box loss alone 0.94 in 10, so what limits is the
    deck's [0.8, 0.2] weighting, under which the class loss drives the shared features.
    Batch normalisation matters: without it a 4-stage stack reached 0.36 in 5 epochs where
    it reached 0.61 with it. Receptive field: :func:`cnnkit.ops.receptive_field` of
    ``[(3, 2), (3, 1)] + [(2, 2), (3, 1), (3, 1)] * (stages - 1)``. Inputs need sides of
    at least ``2 ** stages``."""
    if isinstance(stages, bool) or not isinstance(stages, int) or stages < 1:
        raise ConfigError(f"small_backbone expects stages a positive int; received {stages!r}.")
    layers: list[nn.Module] = []
    c = in_channels
    for stage in range(stages):
        if stage:
            layers.append(MaxPooling2D(2))
        f = base_filters * 2**stage
        for i in range(2):
            s = 2 if stage == 0 and i == 0 else 1
            if batch_norm:
                bn = BatchNormalization(momentum=0.9)  # short runs: PyTorch's pace
                bn.build((None, f, None, None))
                layers += [Conv2D(f, 3, strides=s, padding="same", use_bias=False, in_channels=c),
                           bn, Activation("relu")]  # fmt: skip
            else:
                layers.append(
                    Conv2D(f, 3, strides=s, padding="same", activation="relu", in_channels=c)
                )
            c = f
    return nn.Sequential(*layers)


def _feature_channels(backbone: nn.Module, in_channels: int, input_size: int) -> int:
    """Maps produced by ``backbone`` for one ``input_size`` image (one dry run)."""
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            param = next(backbone.parameters(), None)
            device = param.device if param is not None else None
            out = backbone(torch.zeros(1, in_channels, input_size, input_size, device=device))
    finally:
        backbone.train(was_training)
    if out.dim() != 4:
        raise ShapeError(
            f"The localizer's backbone must return feature maps (N, F, h, w); it returned "
            f"shape {tuple(out.shape)}."
        )
    return int(out.shape[1])


class _Features(nn.Module):
    """A registered classifier's ``forward_features`` as a module (its head unused)."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.forward_features(x)


def _registered_backbone(
    name: str, in_channels: int, input_size: int, kwargs: dict, weights: str | None = None
):
    """The feature part of a registered classifier (its ``forward_features``), with
    pretrained ``weights`` when given (``create(name, weights=..., include_top=False)``)."""
    builder = MODELS.get(name)
    kwargs = dict(kwargs)
    params = inspect.signature(builder).parameters
    kwargs.setdefault("in_channels", in_channels)
    if "input_size" in params:
        kwargs.setdefault("input_size", input_size)
    if weights is not None:
        return create(name, weights=weights, include_top=False, **kwargs).features
    classifier = create(name, **kwargs)
    if not hasattr(classifier, "forward_features"):
        raise ConfigError(
            f"localizer backbone {name!r} has no forward_features; use a registered "
            "classifier (ImageClassifier or DeckClassifier), 'small', or an nn.Module."
        )
    if isinstance(classifier, DeckClassifier):  # keep the stages, drop GAP + Dense
        return nn.Sequential(*classifier._feature_layers())
    if isinstance(classifier, ImageClassifier):
        return classifier.features
    return _Features(classifier)


class Localizer(nn.Module):
    """Backbone -> global average pooling -> (softmax class head, sigmoid box head).

    Args:
        backbone: maps ``(N, C, H, W)`` to feature maps ``(N, F, h, w)``.
        feature_channels: ``F``.
        num_classes: classes of the class head.

    Shapes: ``x (Tensor[N, C, H, W])`` -> ``(class_probs (Tensor[N, num_classes]),
    boxes (Tensor[N, 4]))``, boxes as normalised ``(x1, y1, x2, y2)``. The heads are
    cnnkit ``Dense`` layers whose activation ``cnnkit.Model`` switches off to compute
    the cross-entropy from logits.
    """

    def __init__(self, backbone: nn.Module, feature_channels: int, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.pool = GlobalAveragePooling2D()
        self.classifier = Dense(num_classes, activation="softmax", in_features=feature_channels)
        self.box = Dense(4, activation="sigmoid", in_features=feature_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (Tensor[N, C, H, W])`` -> ``(class_probs (N, K), boxes (N, 4))``."""
        features = self.pool(self.backbone(x))
        return self.classifier(features), self.box(features)


@register_model("localizer")
def localizer(
    backbone: str | nn.Module = "small",
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: int = 28,
    backbone_kwargs: dict | None = None,
    weights: str | None = None,
) -> Localizer:
    """Seed 001's classification + localisation network: a shared backbone, global
    average pooling, a softmax ``Dense(num_classes)`` and a sigmoid ``Dense(4)`` box head;
    returns ``(class_probs, boxes)``.

    Args:
        backbone: ``'small'`` (default, see :func:`small_backbone`: it localises
            through GAP), a registered classifier's name (its feature stages, e.g.
            ``'gap_cnn'``, the decks' all-convolutional CAM net, which localises only with
            strides that make its last maps small), or a module returning
            ``(N, F, h, w)`` maps.
        num_classes, in_channels: classes and image channels.
        input_size: image side, used once to find ``F`` (28 for localisation MNIST).
        backbone_kwargs: extra arguments of the backbone's builder, e.g.
            ``{'filters': (16, 32, 64, 64)}`` for ``'gap_cnn'`` or ``{'base_filters': 8}``
            for ``'small'``.
        weights: pretrained weights of a registered backbone (``'imagenet'`` or a path,
            see :func:`cnnkit.models.create`), as seed 001's
            ``Xception(weights="imagenet", include_top=False)``: e.g.
            ``create("localizer", backbone="xception", weights="imagenet", in_channels=3,
            input_size=299)``. The heads start fresh.

    Input ``(N, 1, 28, 28)`` by default (localisation MNIST); any size the backbone takes.
    """
    for name, v in (("num_classes", num_classes), ("in_channels", in_channels),
                    ("input_size", input_size)):  # fmt: skip
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"localizer expects {name} a positive int; received {v!r}.")
    kwargs = dict(backbone_kwargs or {})
    if weights is not None and (not isinstance(backbone, str) or backbone == "small"):
        raise ConfigError(
            "localizer: weights apply to a registered backbone (e.g. backbone='xception' or "
            f"'resnet50'); received backbone={backbone!r}."
        )
    if isinstance(backbone, nn.Module):
        if kwargs:
            raise ConfigError("localizer: backbone_kwargs apply to named backbones only.")
        net = backbone
    elif backbone == "small":
        net = small_backbone(in_channels, **kwargs)
    elif isinstance(backbone, str):
        net = _registered_backbone(backbone, in_channels, input_size, kwargs, weights)
    else:
        raise ConfigError(
            f"localizer backbone must be 'small', a registered model name or an nn.Module; "
            f"received {backbone!r}."
        )
    model = Localizer(net, _feature_channels(net, in_channels, input_size), num_classes)
    model.default_input_shape = (in_channels, input_size, input_size)
    return model
