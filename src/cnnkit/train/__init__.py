"""Keras' workflow on any nn.Module: compile / fit / evaluate / predict."""

from cnnkit.train.model import History, Model
from cnnkit.train.precision import cpu_has_native_bf16, resolve_device, resolve_precision
from cnnkit.train.seed import seed_everything
from cnnkit.train.sequential import Sequential  # registers itself for cnnkit.load
