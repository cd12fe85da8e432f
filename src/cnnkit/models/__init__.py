"""Registered architectures, each a plain ``nn.Module`` built from cnnkit.layers."""

from cnnkit.models import decks
from cnnkit.models.registry import MODELS, create, list_models, register_model
