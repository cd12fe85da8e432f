"""Registered architectures, each a plain ``nn.Module`` built from cnnkit.layers;
pretrained weights through ``create(name, weights=...)`` (:mod:`cnnkit.models.weights`,
:mod:`cnnkit.models.pretrained`)."""

from cnnkit.models import (
    alexnet,
    context,
    decks,
    deconvnet,
    fcn,
    googlenet,
    lenet,
    localization,
    mask_rcnn,
    resnet,
    segnet,
    text,
    timeseries,
    unet,
    vgg,
    video,
    volumetric,
    xception,
)
from cnnkit.models.pretrained import FeatureExtractor
from cnnkit.models.registry import MODELS, create, list_models, register_model
from cnnkit.models.weights import (
    WeightSpec,
    available_weights,
    preprocessing,
    register_weights,
)
