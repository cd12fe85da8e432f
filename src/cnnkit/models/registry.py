"""The model registry: ``create(name, ...)``, ``list_models()``, ``register_model``."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from cnnkit._core.errors import ConfigError, short
from cnnkit._core.registry import Registry

MODELS = Registry("model")


def register_model(
    name: str | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under ``name`` (default: the function's name); duplicates are refused.

    >>> @register_model("tiny_cnn")
    ... def tiny_cnn(num_classes=10, in_channels=1): ...
    """
    return MODELS.register(name)


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return MODELS.names()


def create(
    name: str,
    weights: str | os.PathLike | None = None,
    *,
    num_classes: int | None = None,
    include_top: bool = True,
    pooling: str | None = None,
    in_channels: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model, e.g. ``create('cifar_cnn', num_classes=10, in_channels=3)``,
    with Keras applications' arguments for pretrained networks.

    Args:
        weights: ``None`` (random initialisation), a registered tag (``"imagenet"``, see
            :mod:`cnnkit.models.weights`: found locally or downloaded, checksum checked),
            or a path: a ``.safetensors`` / ``.pth`` / ``.pt`` state dict in the
            publisher's layout (torchvision's; timm's for Xception), a safetensors file
            written by cnnkit, or a folder saved by ``model.save``
            (:mod:`cnnkit.models.pretrained`).
        num_classes: classes of the classifier; ``None`` keeps the builder's default, or
            with ``weights`` the file's (1000 for ImageNet). Another value than the
            file's puts a freshly initialised classifier on the pretrained backbone.
        include_top: ``False`` returns the feature extractor
            (:class:`~cnnkit.models.pretrained.FeatureExtractor`) of an image classifier.
        pooling: with ``include_top=False``: ``None`` (feature maps), ``'avg'`` or
            ``'max'`` (global pooling to ``(N, C)``); a builder with its own ``pooling``
            argument (``tcn``) receives it instead.
        in_channels: image channels; ``None`` keeps the builder's default (3 for the
            ImageNet families). With RGB weights and 1 (or C) channels the first kernel is
            adapted (summed over RGB; timm's rule).
        kwargs: the builder's own arguments (``create('alexnet', variant='torchvision')``).
            A builder that takes ``weights`` itself (the localizer, for its backbone)
            receives it.

    The result is built: no lazy parameters remain.
    """
    builder = MODELS.get(name)
    params = inspect.signature(builder).parameters
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ConfigError(
                f"{name}: {key} must be a positive int (or None for the default); received "
                f"{short(value)}."
            )
    if not isinstance(include_top, bool):
        raise ConfigError(f"{name}: include_top must be True or False; received {include_top!r}.")
    own_pooling = "pooling" in params  # a builder with its own pooling argument (tcn) gets it
    if own_pooling and pooling is not None:
        kwargs["pooling"] = pooling
    elif pooling is not None and include_top:
        raise ConfigError(
            f"{name}: pooling={pooling!r} applies with include_top=False (the feature "
            "extractor); with the top the network ends in its classifier."
        )
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if value is not None:
            kwargs[key] = value
    own_weights = "weights" in params
    if weights is not None and own_weights:
        kwargs["weights"] = weights
    try:
        model = _build(name, builder, weights if not own_weights else None, num_classes, kwargs)
    except TypeError as err:
        if "unexpected keyword argument" in str(err):
            raise ConfigError(f"{name}: {err}; it accepts: {', '.join(params)}.") from None
        raise
    spec_kwargs = {k: v for k, v in kwargs.items() if k != "weights"}
    if weights is not None and not own_weights and "num_classes" in params:
        classes = _classes_of(model, name, num_classes)
        if classes is not None:
            spec_kwargs["num_classes"] = classes
    if not include_top:
        from cnnkit.models.pretrained import FeatureExtractor

        if not hasattr(model, "features"):
            raise ConfigError(
                f"{name}: include_top=False needs an image classifier with feature stages "
                f"(model.features); {type(model).__name__} has none."
            )
        model = FeatureExtractor(model, None if own_pooling else pooling)
        spec_kwargs.update(include_top=False, pooling=pooling)
    model.cnnkit_spec = {"name": name, "kwargs": spec_kwargs}
    return model


def _build(name, builder, weights, num_classes, kwargs) -> nn.Module:
    if weights is None:
        return builder(**kwargs)
    from cnnkit.models import pretrained
    from cnnkit.models import weights as published

    spec = None
    if isinstance(weights, str) and (name, weights) in published.WEIGHTS:
        spec = published.WEIGHTS[(name, weights)]
        for key, value in spec.kwargs.items():
            if kwargs.get(key, value) != value:
                raise ConfigError(
                    f"{name}: the {weights!r} weights need {key}={value!r}; received "
                    f"{key}={kwargs[key]!r}."
                )
            kwargs[key] = value
        path = published.weights_file(name, weights)
    else:
        path = Path(weights)
        looks_like_a_path = path.suffix in (".pth", ".pt", ".safetensors") or len(path.parts) > 1
        if not path.exists() and not looks_like_a_path:
            published.get_spec(name, str(weights))  # an unknown tag: lists the known ones
    state, cnnkit_layout = pretrained.read_weights(path)
    source = str(path) if spec is None else f"{path} ({name} {weights!r} weights)"
    return pretrained.load_pretrained(
        name, builder, state, cnnkit_layout, source, num_classes, dict(kwargs)
    )


def _classes_of(model: nn.Module, name: str, requested: int | None) -> int | None:
    """The class count a model built with weights ended with (for its saved spec)."""
    from cnnkit.models.pretrained import FAMILIES

    if requested is not None:
        return requested
    family = FAMILIES.get(name)
    paths = family.classifiers[:1] if family else ()
    head = getattr(model, "head", None)
    if not paths and isinstance(head, nn.Sequential) and len(head):
        paths = (f"head.{len(head) - 1}",)
    for path in paths:
        try:
            return int(model.get_submodule(path).units)
        except AttributeError:
            return None
    return None
