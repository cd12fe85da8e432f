"""Finding and switching a model's final softmax/sigmoid, so losses see logits.

The decks' models end in ``activation='softmax'`` or ``'sigmoid'`` (Keras style).
Computing cross-entropy from probabilities is unstable and applies softmax twice
when done naively; cnnkit instead runs the last layer without its activation while
training and evaluating (``emit_logits``), computes the loss from the logits, and
applies the activation itself for metrics. ``predict`` returns what the model
returns (probabilities).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class OutputHead:
    """How one model output is activated: ``kind`` is 'softmax', 'sigmoid' or None."""

    kind: str | None
    module: nn.Module | None
    switchable: bool

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        if self.kind == "softmax":
            return torch.softmax(logits.float(), dim=1)
        if self.kind == "sigmoid":
            return torch.sigmoid(logits.float())
        return logits

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        """Float32 logits of an output produced under :func:`emit_logits`: the output
        itself for a switchable head, recovered from the activation otherwise."""
        return out.float() if self.switchable else self.to_logits(out)

    def to_logits(self, out: torch.Tensor) -> torch.Tensor:
        """Logits from an output that is still activated (fallback when not switchable)."""
        out = out.float()
        if self.kind == "softmax":
            return torch.log(out.clamp_min(1e-12))
        if self.kind == "sigmoid":
            p = out.clamp(1e-7, 1 - 1e-7)
            return torch.log(p) - torch.log1p(-p)
        return out


def _kind_of(module: nn.Module) -> tuple[str | None, bool]:
    if isinstance(module, nn.Softmax):
        return ("softmax" if module.dim in (1, None) else None), True
    if isinstance(module, nn.Sigmoid):
        return "sigmoid", True
    name = getattr(module, "activation", None)
    if isinstance(name, str) and name in ("softmax", "sigmoid"):
        return name, hasattr(module, "emit_logits")
    return None, False


def trace_heads(module: nn.Module, x: torch.Tensor) -> list[OutputHead]:
    """Run ``module`` once and find, for each output, the leaf module that produced it."""
    producers: dict[int, nn.Module] = {}
    handles = []

    def hook(mod, inputs, output):
        if isinstance(output, torch.Tensor):
            producers[id(output)] = mod

    for m in module.modules():
        if next(m.children(), None) is None or hasattr(m, "emit_logits"):
            handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            out = module(x)
    finally:
        for h in handles:
            h.remove()
    outs = out if isinstance(out, (tuple, list)) else (out,)
    heads = []
    for o in outs:
        m = producers.get(id(o))
        kind, switchable = _kind_of(m) if m is not None else (None, False)
        heads.append(OutputHead(kind, m, switchable))
    return heads


def _identity_hook(mod, inputs, output):
    return inputs[0]


@contextlib.contextmanager
def emit_logits(heads: list[OutputHead]) -> Iterator[None]:
    """Within the block the switchable heads return logits."""
    undo = []
    for h in heads:
        if h.kind is None or not h.switchable or h.module is None:
            continue
        if hasattr(h.module, "emit_logits"):
            prev = h.module.emit_logits
            h.module.emit_logits = True
            undo.append(lambda m=h.module, p=prev: setattr(m, "emit_logits", p))
        else:
            handle = h.module.register_forward_hook(_identity_hook)
            undo.append(handle.remove)
    try:
        yield
    finally:
        for fn in reversed(undo):
            fn()
