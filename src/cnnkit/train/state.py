"""The training state that callbacks and checkpoints see: a small interface, not ``Model``.

``cnnkit.Model`` and ``cnnkit.Sequential`` (:class:`cnnkit.train.model.Workflow`) provide
it; :mod:`cnnkit.train.callbacks` and :mod:`cnnkit.train.checkpoint` read and write only
these attributes, so they import nothing of the training loop and the loop can import them.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn


class TrainingState(Protocol):
    """What ``fit`` exposes to callbacks and checkpoints while it trains."""

    #: the module being trained (its ``state_dict`` is saved and restored)
    _net: nn.Module
    optimizer: torch.optim.Optimizer | None
    #: the learning-rate scheduler (``state_dict`` / ``load_state_dict``), or None
    scheduler: Any
    #: CUDA fp16: the gradient scaler, or None
    scaler: torch.amp.GradScaler | None
    #: ``History``: ``history`` (name -> per-epoch values) and ``epoch``
    history: Any
    #: the seed of the epoch orders (``seed + epoch``), restored by a resumed run
    _shuffle_seed: int
    #: set to True to end ``fit`` after the current epoch (EarlyStopping)
    stop_training: bool
    #: the precision and memory format recorded with a checkpoint (model.json)
    precision: Any
    _memory_format: torch.memory_format | None
    _input_shape: tuple[int, ...] | None
