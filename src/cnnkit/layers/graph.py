"""``Graph``: layers wired as a directed acyclic graph (Keras' functional models).

A graph has ``n_inputs`` input tensors (ids ``0 .. n_inputs - 1``); node ``i`` calls
its layer on earlier tensors and produces tensor ``n_inputs + i``. A merge layer
(``Concatenate``, ``Add``, ...) gets the list of its input tensors, every other layer
its one input. ``outputs`` names the tensors returned (one: a tensor; several: a tuple,
in order, as a Keras model with several heads)::

    g = Graph({"a": Conv2D(4, 3, padding="same"), "b": Conv2D(4, 1), "cat": Concatenate()},
              nodes=[("a", [0]), ("b", [0]), ("cat", [1, 2])], n_inputs=1, outputs=[3])

``cnnkit.from_keras`` returns functional Keras models as a ``Graph`` wrapped in
``cnnkit.Model``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from cnnkit._core.errors import ConfigError, ShapeError
from cnnkit.layers.merge import _Merge

__all__ = ["Graph"]


class Graph(nn.Module):
    """Run ``layers`` in the order of ``nodes``; see the module docstring."""

    def __init__(
        self,
        layers: Mapping[str, nn.Module],
        nodes: Sequence[tuple[str, Sequence[int]]],
        n_inputs: int = 1,
        outputs: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(n_inputs, bool) or not isinstance(n_inputs, int) or n_inputs < 1:
            raise ConfigError(f"Graph expects n_inputs a positive int; received {n_inputs!r}.")
        self.layers = nn.ModuleDict(dict(layers))
        self.n_inputs = n_inputs
        checked = []
        for i, (name, ids) in enumerate(nodes):
            if name not in self.layers:
                raise ConfigError(
                    f"Graph node {i} calls layer {name!r}, which is not among the layers "
                    f"{sorted(self.layers)}."
                )
            ids = [int(t) for t in ids]
            if not ids or any(t < 0 or t >= n_inputs + i for t in ids):
                raise ConfigError(
                    f"Graph node {i} ({name!r}) reads tensors {ids}; only tensors "
                    f"0..{n_inputs + i - 1} exist before it (inputs first, then node outputs)."
                )
            checked.append((name, ids))
        self.nodes = checked
        total = n_inputs + len(checked)
        self.outputs = [total - 1] if outputs is None else [int(t) for t in outputs]
        if not self.outputs or any(t < 0 or t >= total for t in self.outputs):
            raise ConfigError(f"Graph outputs {outputs!r} must name tensors in 0..{total - 1}.")

    def forward(self, *inputs: torch.Tensor) -> Any:
        if len(inputs) != self.n_inputs:
            raise ShapeError(
                f"Graph takes {self.n_inputs} input tensor(s); received {len(inputs)}."
            )
        values: list[torch.Tensor] = list(inputs)
        for name, ids in self.nodes:
            layer = self.layers[name]
            if isinstance(layer, _Merge):
                values.append(layer([values[t] for t in ids]))
            else:
                values.append(layer(values[ids[0]]))
        if len(self.outputs) == 1:
            return values[self.outputs[0]]
        return tuple(values[t] for t in self.outputs)

    def extra_repr(self) -> str:
        return f"n_inputs={self.n_inputs}, nodes={len(self.nodes)}, outputs={self.outputs}"
