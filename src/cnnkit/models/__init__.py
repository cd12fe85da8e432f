"""Registered architectures, each a plain ``nn.Module`` built from cnnkit.layers."""

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
)
from cnnkit.models.registry import MODELS, create, list_models, register_model
