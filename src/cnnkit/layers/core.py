"""Core layers: ``Dense``, ``Flatten``, ``Activation``, ``Reshape``.

Seed 004 builds its CIFAR fully connected net from ``Dense`` layers
(``Dense(2048, input_dim=32*32*3, activation='relu')``: ``3072 * 2048 + 2048 =
6,293,504`` parameters, seed 002's ``N * M + M``) and its CNN ends with
``Flatten()`` then ``Dense``. These layers port that Keras code line by line.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit._core.errors import ConfigError, ShapeError
from cnnkit.layers.base import Layer, get_activation, init_bias, initialize
from cnnkit.ops.arithmetic import dense_macs

__all__ = ["Activation", "Dense", "Flatten", "LeakyReLU", "ReLU", "Rescaling", "Reshape"]


def _positive_int(name: str, value: Any, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{owner} expects {name} a positive int; received {value!r}.")
    return int(value)


def _name_config(layer: Layer) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    if layer.input_shape is not None:
        cfg["input_shape"] = list(layer.input_shape)
    if layer.layer_name is not None:
        cfg["name"] = layer.layer_name
    return cfg


def _last_axis_activation(
    activation: str | Callable | None,
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Like :func:`get_activation`, but softmax acts on the last axis (the units)."""
    name, fn = get_activation(activation)
    if name == "softmax" and isinstance(activation, str):
        return functools.partial(torch.softmax, dim=-1)
    if name == "log_softmax" and isinstance(activation, str):
        return functools.partial(torch.log_softmax, dim=-1)
    return fn


class Dense(Layer):
    """Fully connected layer ``y = act(x W^T + b)`` on the last axis (Keras ``Dense``,
    PyTorch ``nn.Linear``).

    Args:
        units: output features ``M``.
        activation: name (``'relu'``, ``'softmax'``, ...), callable or ``None``. Softmax
            acts on the last axis (the units).
        use_bias: add the bias ``b``.
        kernel_initializer, bias_initializer: Keras names (see
            :func:`cnnkit.layers.base.initialize`).
        input_dim: Keras' argument; the same as ``input_shape=(input_dim,)``.
        in_features: PyTorch-style; builds the layer at once for ``in_features`` inputs.

    Shapes: ``x (Tensor[N, *, in_features])`` -> ``Tensor[N, *, units]``. Parameters
    ``weight (units, in_features)`` and ``bias (units,)`` in ``nn.Linear``'s layout, so
    ``F.linear(x, layer.weight, layer.bias)`` is the reference. Parameter count
    ``in_features * units + units`` (seed 002).
    """

    spatial_dims = None
    min_rank = 2

    def __init__(
        self,
        units: int,
        activation: str | Callable | None = None,
        use_bias: bool = True,
        kernel_initializer: str | Callable = "glorot_uniform",
        bias_initializer: str | Callable = "zeros",
        *,
        input_dim: int | None = None,
        in_features: int | None = None,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        units = _positive_int("units", units, "Dense")
        if input_dim is not None:
            input_dim = _positive_int("input_dim", input_dim, "Dense")
            if input_shape is not None and tuple(input_shape) != (input_dim,):
                raise ConfigError(
                    f"Dense received input_dim={input_dim} and input_shape={tuple(input_shape)!r}, "
                    "which disagree; give only one of them."
                )
            input_shape = (input_dim,)
        if in_features is not None:
            in_features = _positive_int("in_features", in_features, "Dense")
            if input_shape is not None and tuple(input_shape)[-1] != in_features:
                raise ConfigError(
                    f"Dense received in_features={in_features} but input_shape="
                    f"{tuple(input_shape)!r} ends with {tuple(input_shape)[-1]}; give only one."
                )
        super().__init__(input_shape=input_shape, name=name)
        self.units = units
        self.activation = activation
        self._act = _last_axis_activation(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self._in_features_arg = in_features
        self.in_features: int | None = None
        self.register_parameter("weight", None)
        self.register_parameter("bias", None)
        if in_features is not None:
            self.build((None, in_features))
        elif self.input_shape is not None:
            self.build((None, *self.input_shape))

    def _check_shape(self, shape: tuple) -> None:
        super()._check_shape(shape)
        if self.built and shape[-1] is not None and shape[-1] != self.in_features:
            hint = (
                " Feature maps (N, C, H, W) need Flatten() before Dense." if len(shape) > 2 else ""
            )
            raise ShapeError(
                f"Dense was built for {self.in_features} input features (the last axis); "
                f"received shape {tuple(shape)} with {shape[-1]} features; expected inputs with "
                f"{self.in_features} features.{hint}"
            )

    def _build(self, input_shape: tuple) -> None:
        in_f = input_shape[-1]
        if in_f is None:
            raise ShapeError(
                f"Dense needs a known last dimension to create its weights; received shape "
                f"{tuple(input_shape)}."
            )
        # Dense acts on the last axis: axis 1 is not its channel axis
        self.in_channels = None
        self.in_features = int(in_f)
        self.weight = nn.Parameter(torch.empty(self.units, self.in_features))
        initialize(self.weight, self.kernel_initializer)
        if self.use_bias:
            self.bias = nn.Parameter(torch.empty(self.units))
            init_bias(self.bias, self.bias_initializer, self.in_features)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        return y if self._act is None or self.emit_logits else self._act(y)

    def _output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], self.units)

    def count_macs(self, input_shape: Sequence[int | None]) -> int:
        """``in_features * units`` per position of the leading (non-batch) axes."""
        shape = tuple(input_shape)
        in_f = self.in_features if self.in_features is not None else shape[-1]
        positions = math.prod(int(s) for s in shape[1:-1] if s is not None)
        return dense_macs(in_f, self.units) * positions

    def receptive_field_layers(self) -> None:
        return None  # every output sees the whole (flattened) input

    def get_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "units": self.units,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
        }
        if self._in_features_arg is not None:
            cfg["in_features"] = self._in_features_arg
        return {**cfg, **_name_config(self)}


class Flatten(Layer):
    """Flatten every axis but the batch: ``Tensor[N, C, H, W]`` -> ``Tensor[N, C*H*W]``.

    The order is PyTorch's (channels-first, row-major), so seed 004's
    ``(None, 128, 11, 11)`` becomes ``(None, 15488)``.

    Difference from Keras: Keras flattens channels-last ``(H, W, C)`` tensors, so the
    same feature sits at another position; a ``Dense`` kernel copied from Keras after a
    ``Flatten`` needs its input rows permuted from ``(H, W, C)`` to ``(C, H, W)`` order
    (``cnnkit.from_keras`` does that).
    """

    spatial_dims = None
    min_rank = 1

    def __init__(
        self, *, input_shape: Sequence[int] | None = None, name: str | None = None
    ) -> None:
        super().__init__(input_shape=input_shape, name=name)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, 1) if x.dim() != 1 else x.unsqueeze(1)

    def _output_shape(self, input_shape: tuple) -> tuple:
        rest = input_shape[1:]
        if any(s is None for s in rest):
            return (input_shape[0], None)
        return (input_shape[0], math.prod(rest))

    def get_config(self) -> dict[str, Any]:
        return _name_config(self)


class Activation(Layer):
    """Apply an activation function by name or callable (Keras ``Activation``).

    ``'softmax'`` and ``'log_softmax'`` act on dim 1, the channel/class axis of
    channels-first tensors (``Tensor[N, classes]`` or per-pixel ``Tensor[N, C, H, W]``).
    ``None`` and ``'linear'`` are the identity.
    """

    spatial_dims = None
    min_rank = 1

    def __init__(
        self,
        activation: str | Callable | None,
        *,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(input_shape=input_shape, name=name)
        self.activation = activation
        _, self._fn = get_activation(activation)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return x if self._fn is None or self.emit_logits else self._fn(x)

    def get_config(self) -> dict[str, Any]:
        return {"activation": self.activation, **_name_config(self)}


class LeakyReLU(Layer):
    """``max(x, negative_slope * x)`` element-wise (Keras ``LeakyReLU``).

    ``negative_slope`` defaults to Keras' 0.3 for this layer (the string activation
    ``'leaky_relu'`` uses Keras' function default 0.2; ``torch.nn.LeakyReLU``: 0.01).
    """

    spatial_dims = None
    min_rank = 1

    def __init__(
        self,
        negative_slope: float = 0.3,
        *,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(input_shape=input_shape, name=name)
        if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)):
            raise ConfigError(
                f"LeakyReLU expects negative_slope a number (Keras' default 0.3); "
                f"received {negative_slope!r}."
            )
        if not math.isfinite(negative_slope) or negative_slope < 0:
            raise ConfigError(
                f"LeakyReLU expects negative_slope a finite number >= 0; received {negative_slope!r}."
            )
        self.negative_slope = float(negative_slope)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def get_config(self) -> dict[str, Any]:
        return {"negative_slope": self.negative_slope, **_name_config(self)}


class ReLU(Layer):
    """Keras ``ReLU(max_value=None, negative_slope=0.0, threshold=0.0)``:
    ``x`` for ``x >= threshold``, ``negative_slope * (x - threshold)`` below, capped at
    ``max_value``."""

    spatial_dims = None
    min_rank = 1

    def __init__(
        self,
        max_value: float | None = None,
        negative_slope: float = 0.0,
        threshold: float = 0.0,
        *,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(input_shape=input_shape, name=name)
        for key, value in (
            ("max_value", max_value),
            ("negative_slope", negative_slope),
            ("threshold", threshold),
        ):
            if value is None and key == "max_value":
                continue
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or (key != "threshold" and value < 0):
                raise ConfigError(
                    f"ReLU expects {key} a finite number"
                    f"{'' if key == 'threshold' else ' >= 0'}; received {value!r}."
                )
        self.max_value = None if max_value is None else float(max_value)
        self.negative_slope = float(negative_slope)
        self.threshold = float(threshold)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        if self.negative_slope == 0 and self.threshold == 0:
            y = torch.relu(x)
        else:
            y = torch.where(x >= self.threshold, x, self.negative_slope * (x - self.threshold))
        if self.max_value is not None:
            y = torch.clamp(y, max=self.max_value)
        return y

    def get_config(self) -> dict[str, Any]:
        return {
            "max_value": self.max_value,
            "negative_slope": self.negative_slope,
            "threshold": self.threshold,
            **_name_config(self),
        }


class Rescaling(Layer):
    """``x * scale + offset`` (Keras ``Rescaling``; ``Rescaling(1 / 255)`` maps bytes to
    [0, 1], the decks' ``Lambda(lambda x: x / 255)`` written as a layer)."""

    spatial_dims = None
    min_rank = 1

    def __init__(
        self,
        scale: float,
        offset: float = 0.0,
        *,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(input_shape=input_shape, name=name)
        for key, value in (("scale", scale), ("offset", offset)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
            ):
                raise ConfigError(f"Rescaling expects {key} a finite number; received {value!r}.")
        self.scale, self.offset = float(scale), float(offset)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset

    def get_config(self) -> dict[str, Any]:
        return {"scale": self.scale, "offset": self.offset, **_name_config(self)}


class Reshape(Layer):
    """Reshape each sample to ``target_shape`` (batch dim kept; one entry may be -1).

    ``Reshape((16, 4, 4))``: ``Tensor[N, 256]`` -> ``Tensor[N, 16, 4, 4]``.
    """

    spatial_dims = None
    min_rank = 1

    def __init__(
        self,
        target_shape: Sequence[int],
        *,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        err = ConfigError(
            "Reshape expects target_shape a tuple of positive ints (at most one -1); "
            f"received {target_shape!r}."
        )
        if isinstance(target_shape, int) and not isinstance(target_shape, bool):
            target_shape = (target_shape,)
        if not isinstance(target_shape, Sequence) or isinstance(target_shape, str):
            raise err
        target = tuple(target_shape)
        if not target or any(
            isinstance(s, bool) or not isinstance(s, int) or (s < 1 and s != -1) for s in target
        ):
            raise err
        if target.count(-1) > 1:
            raise err
        super().__init__(input_shape=input_shape, name=name)
        self.target_shape = tuple(int(s) for s in target)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape((x.shape[0], *self.target_shape))

    def _output_shape(self, input_shape: tuple) -> tuple:
        rest = input_shape[1:]
        if any(s is None for s in rest):
            if -1 in self.target_shape:
                return (input_shape[0], *(None if s == -1 else s for s in self.target_shape))
            return (input_shape[0], *self.target_shape)
        total = math.prod(rest)
        known = math.prod(s for s in self.target_shape if s != -1)
        if -1 in self.target_shape:
            if total % known:
                raise ShapeError(
                    f"Reshape cannot fit a sample of shape {tuple(rest)} ({total} elements) into "
                    f"{self.target_shape}: {total} is not a multiple of {known}."
                )
            return (input_shape[0], *(total // known if s == -1 else s for s in self.target_shape))
        if known != total:
            raise ShapeError(
                f"Reshape cannot turn a sample of shape {tuple(rest)} ({total} elements) into "
                f"{self.target_shape} ({known} elements); the element counts must agree "
                "(use -1 for one inferred dimension)."
            )
        return (input_shape[0], *self.target_shape)

    def _check_shape(self, shape: tuple) -> None:
        super()._check_shape(shape)
        self._output_shape(shape)  # a clear ShapeError before torch's

    def get_config(self) -> dict[str, Any]:
        return {"target_shape": list(self.target_shape), **_name_config(self)}
