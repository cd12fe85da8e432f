"""Merge layers: ``Concatenate``, ``Add``, ``Subtract``, ``Multiply``, ``Average``,
``Maximum``, ``Minimum``.

Each is called with a list (or tuple) of tensors, as in Keras:
``Concatenate()([a, b, c])``. The inception module (seed 003) concatenates its
branches on the channel axis ("concatenate the resulting feature maps in the depth
dimension"); a residual block adds its shortcut (``Add``).

Differences from Keras: ``Concatenate``'s default ``axis`` is 1 (the channels of
channels-first tensors; Keras: -1, its channels-last channels). The shape checks are
skipped while ``torch.onnx.export`` traces a model, so models with merges export.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from typing import Any

import torch

from cnnkit._core.errors import ConfigError, ShapeError
from cnnkit.layers.base import Layer

__all__ = ["Add", "Average", "Concatenate", "Maximum", "Minimum", "Multiply", "Subtract"]


def _fmt_shapes(shapes: Sequence[tuple]) -> str:
    return ", ".join(str(tuple(s)) for s in shapes)


def _agree(dims: Sequence[Any]) -> bool:
    """Whether the known sizes among ``dims`` are equal (compared with ``==``, so
    symbolic sizes work too; ``None`` is unknown)."""
    known = [d for d in dims if d is not None]
    return all(d == known[0] for d in known[1:])


class _Merge(Layer):
    """Base of the merge layers: ``forward(inputs)`` with a list of tensors."""

    spatial_dims = None
    min_rank = 1

    def __init__(
        self, *, input_shape: Sequence[int] | None = None, name: str | None = None
    ) -> None:
        super().__init__(input_shape=None, name=name)
        # input_shape for a merge is a list of shapes; kept as given
        self.input_shape = (
            tuple(tuple(int(d) for d in s) for s in input_shape)
            if input_shape is not None
            else None
        )

    # -------------------------------------------------------------- checks

    def _as_shapes(self, input_shapes: Any) -> list[tuple]:
        if (
            not isinstance(input_shapes, (list, tuple))
            or not input_shapes
            or not all(isinstance(s, (list, tuple, torch.Size)) for s in input_shapes)
        ):
            raise ShapeError(
                f"{type(self).__name__} expects a non-empty list of shapes (one per input); "
                f"received {input_shapes!r}."
            )
        return [tuple(None if d is None else int(d) for d in s) for s in input_shapes]

    def _check_shapes(self, shapes: list[tuple]) -> None:
        rank = len(shapes[0])
        ok = all(len(s) == rank for s in shapes) and all(_agree(dims) for dims in zip(*shapes))
        if not ok:
            raise ShapeError(
                f"{type(self).__name__} needs inputs of identical shape; received shapes "
                f"{_fmt_shapes(shapes)}."
            )

    # -------------------------------------------------------------- Layer API

    def build(self, input_shape: Any) -> _Merge:
        shapes = self._as_shapes(input_shape)
        self._check_shapes(shapes)
        self.built = True
        return self

    def compute_output_shape(self, input_shape: Any) -> tuple:
        shapes = self._as_shapes(input_shape)
        self._check_shapes(shapes)
        return self._merged_shape(shapes)

    def _merged_shape(self, shapes: list[tuple]) -> tuple:
        return tuple(next((d for d in dims if d is not None), None) for dims in zip(*shapes))

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        if not isinstance(inputs, (list, tuple)) or not inputs:
            raise ShapeError(
                f"{type(self).__name__} is called with a non-empty list of tensors, e.g. "
                f"{type(self).__name__}()([a, b]); received {type(inputs).__name__}."
            )
        for t in inputs:
            if not isinstance(t, torch.Tensor):
                raise ShapeError(
                    f"{type(self).__name__} expects a list of torch.Tensor; received an element "
                    f"of type {type(t).__name__}."
                )
        if not torch.jit.is_tracing():
            # under torch.onnx.export's tracer sizes are traced tensors; the op itself
            # still fails on a mismatch there
            self._check_shapes([tuple(t.shape) for t in inputs])
        self.built = True
        return self.call(inputs)

    def get_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {}
        if self.input_shape is not None:
            cfg["input_shape"] = [list(s) for s in self.input_shape]
        if self.layer_name is not None:
            cfg["name"] = self.layer_name
        return cfg


class Concatenate(_Merge):
    """Concatenate tensors along ``axis`` (default 1: channels, for channels-first
    tensors); every other dimension must agree.

    ``Concatenate()([Tensor[N, 128, 28, 28], Tensor[N, 192, 28, 28]])`` ->
    ``Tensor[N, 320, 28, 28]`` (seed 003's inception module).
    """

    def __init__(
        self,
        axis: int = 1,
        *,
        input_shape: Sequence[Sequence[int]] | None = None,
        name: str | None = None,
    ) -> None:
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ConfigError(f"Concatenate expects axis an int; received {axis!r}.")
        super().__init__(input_shape=input_shape, name=name)
        self.axis = int(axis)

    def _check_shapes(self, shapes: list[tuple]) -> None:
        rank = len(shapes[0])
        if not all(len(s) == rank for s in shapes):
            raise ShapeError(
                f"Concatenate needs inputs of the same rank; received shapes {_fmt_shapes(shapes)}."
            )
        if not -rank <= self.axis < rank:
            raise ShapeError(
                f"Concatenate(axis={self.axis}) is out of range for {rank}-D inputs "
                f"(shapes {_fmt_shapes(shapes)}); use an axis in [{-rank}, {rank - 1}]."
            )
        ax = self.axis % rank
        for i, dims in enumerate(zip(*shapes)):
            if i != ax and not _agree(dims):
                raise ShapeError(
                    f"Concatenate(axis={self.axis}) needs every dimension but axis {self.axis} to "
                    f"agree; received shapes {_fmt_shapes(shapes)} (dimension {i} differs)."
                )

    def _merged_shape(self, shapes: list[tuple]) -> tuple:
        out = list(super()._merged_shape(shapes))
        ax = self.axis % len(shapes[0])
        sizes = [s[ax] for s in shapes]
        out[ax] = None if any(d is None for d in sizes) else sum(sizes)
        return tuple(out)

    def call(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(inputs), dim=self.axis)

    def get_config(self) -> dict[str, Any]:
        return {"axis": self.axis, **super().get_config()}


class Add(_Merge):
    """Element-wise sum of tensors of identical shape (a residual shortcut)."""

    def call(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(inputs) == 2:
            return inputs[0] + inputs[1]
        return functools.reduce(operator.add, inputs)


class Multiply(_Merge):
    """Element-wise product of tensors of identical shape."""

    def call(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return functools.reduce(operator.mul, inputs)


class Average(_Merge):
    """Element-wise mean of tensors of identical shape."""

    def call(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return functools.reduce(operator.add, inputs) / len(inputs)


class Subtract(_Merge):
    """``inputs[0] - inputs[1]`` for exactly two tensors of identical shape (Keras ``Subtract``)."""

    def call(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(inputs) != 2:
            raise ShapeError(
                f"Subtract takes exactly two tensors, as Keras' Subtract; received {len(inputs)}."
            )
        return inputs[0] - inputs[1]


class Maximum(_Merge):
    """Element-wise maximum of tensors of identical shape."""

    def call(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return functools.reduce(torch.maximum, inputs)


class Minimum(_Merge):
    """Element-wise minimum of tensors of identical shape."""

    def call(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return functools.reduce(torch.minimum, inputs)
