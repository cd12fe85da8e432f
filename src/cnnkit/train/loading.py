"""``cnnkit.load``: whatever cnnkit can load, by what the path is.

- a folder written by ``model.save`` or ``ModelCheckpoint`` (safetensors + JSON):
  :func:`cnnkit.train.model.load`, with the precision and memory format it was saved with;
- a saved Keras model (``.keras`` zip, or a legacy ``.h5`` full model):
  :func:`cnnkit.train.keras_import.from_keras`, read with zipfile/json/h5py only.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from cnnkit.train import model as saved
from cnnkit.train.keras_import import from_keras

#: file suffixes read as saved Keras models
KERAS_SUFFIXES = (".keras", ".h5")


def load(
    directory: str | os.PathLike,
    device: str | torch.device = "cpu",
    precision: str | None = None,
) -> nn.Module:
    """A saved cnnkit model folder or a saved Keras model file as a ``cnnkit.Model``.

    ``device``: ``'auto'`` (CUDA when present), ``'cpu'``, ``'cuda:N'``; ``precision``
    overrides the precision a cnnkit model was saved with (see
    :func:`cnnkit.train.model.load`).
    """
    path = Path(directory)
    if path.suffix in KERAS_SUFFIXES and path.is_file():
        return from_keras(path, device=device)
    return saved.load(directory, device=device, precision=precision)
