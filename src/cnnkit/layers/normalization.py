"""``BatchNormalization`` with Keras' arguments on a real ``torch.nn.BatchNorm{1,2,3}d``.

Keras and PyTorch define the running-average momentum the opposite way round::

    Keras:   moving = momentum * moving + (1 - momentum) * batch     (default 0.99)
    PyTorch: running = (1 - momentum) * running + momentum * batch   (default 0.1)

so the child gets ``torch momentum = 1 - keras momentum``. The child is an ordinary
``nn.BatchNorm1d/2d/3d`` (chosen by the input rank at build), so
``torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)`` replaces it for multi-GPU
training like any other batch norm. In training mode the batch statistics normalise
the input and update the running statistics; in eval mode the running statistics do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cnnkit._core.errors import ConfigError, ShapeError
from cnnkit.layers.base import Layer

__all__ = ["BatchNormalization"]

_BN_BY_RANK: dict[int, type[nn.Module]] = {
    2: nn.BatchNorm1d,
    3: nn.BatchNorm1d,
    4: nn.BatchNorm2d,
    5: nn.BatchNorm3d,
}


class BatchNormalization(Layer):
    """Batch normalisation over the channel axis of a channels-first tensor.

    ``y = gamma * (x - mean) / sqrt(var + epsilon) + beta`` per channel.

    Args:
        axis: the channel axis; only ``1`` (channels-first, cnnkit's layout) is
            supported (``-1`` is accepted for 2-D ``(N, C)`` inputs, where it is axis 1).
        momentum: Keras' momentum of the moving averages (PyTorch's is ``1 - momentum``).
        epsilon: added to the variance.
        center: learn the offset ``beta`` (``bias``).
        scale: learn the scale ``gamma`` (``weight``).

    Shapes: ``Tensor[N, C]``, ``Tensor[N, C, L]``, ``Tensor[N, C, H, W]`` or
    ``Tensor[N, C, D, H, W]`` -> same shape. ``layer.bn`` is the torch module; its
    ``weight``/``bias``/``running_mean``/``running_var`` are the state. With only one of
    ``center``/``scale`` the torch module has ``affine=False`` and the layer holds the
    learnt ``weight`` or ``bias`` itself.

    Differences from Keras (documented, not changed): the default ``axis`` is 1 (the
    channels of channels-first tensors; Keras: -1); the moving mean and variance are
    buffers, not parameters, so parameter counts show ``2 C`` fewer than Keras'
    ``count_params`` (the trainable counts agree); in training the moving variance is
    updated with PyTorch's unbiased batch variance (Keras: biased, smaller by a factor
    ``(m - 1) / m`` for ``m`` values per channel). Inference with the same statistics
    gives the same values.
    """

    spatial_dims = None
    min_rank = 2

    def __init__(
        self,
        axis: int = 1,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        *,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        if isinstance(axis, bool) or not isinstance(axis, int) or axis not in (1, -1):
            raise ConfigError(
                f"BatchNormalization supports only axis=1 (channels-first, cnnkit's layout); "
                f"received axis={axis!r}. Keras' default axis=-1 means channels-last: move the "
                "channels to axis 1 with x.permute(...) (or x.movedim(-1, 1)) and use axis=1."
            )
        if (
            isinstance(momentum, bool)
            or not isinstance(momentum, (int, float))
            or not (0.0 <= momentum <= 1.0)
        ):
            raise ConfigError(
                f"BatchNormalization expects momentum a number in [0, 1] (Keras' meaning, "
                f"default 0.99); received {momentum!r}."
            )
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or epsilon <= 0:
            raise ConfigError(
                f"BatchNormalization expects epsilon a positive number; received {epsilon!r}."
            )
        super().__init__(input_shape=input_shape, name=name)
        self.axis = int(axis)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.bn: nn.Module | None = None
        self.register_parameter("weight", None)
        self.register_parameter("bias", None)
        self._rank: int | None = None
        self._extra_affine = self.center != self.scale
        if self.input_shape is not None:
            self.build((None, *self.input_shape))

    def _check_shape(self, shape: tuple) -> None:
        rank = len(shape)
        if rank > 5:
            raise ShapeError(
                f"BatchNormalization expects a 2-D to 5-D channels-first input (N, C, ...); "
                f"received shape {tuple(shape)} ({rank}-D)."
            )
        if self.axis == -1 and rank != 2:
            raise ShapeError(
                f"BatchNormalization(axis=-1) is only the channel axis for 2-D (N, C) inputs; "
                f"received shape {tuple(shape)}. cnnkit tensors are channels-first: use axis=1."
            )
        super()._check_shape(shape)
        if self._rank is not None and _BN_BY_RANK[rank] is not _BN_BY_RANK[self._rank]:
            raise ShapeError(
                f"BatchNormalization was built for {self._rank}-D inputs; received shape "
                f"{tuple(shape)} ({rank}-D)."
            )

    def _build(self, input_shape: tuple) -> None:
        channels = input_shape[1]
        if channels is None:
            raise ShapeError(
                f"BatchNormalization needs a known channel count (axis 1); received shape "
                f"{tuple(input_shape)}."
            )
        self._rank = len(input_shape)
        bn_cls = _BN_BY_RANK[self._rank]
        self.bn = bn_cls(
            int(channels),
            eps=self.epsilon,
            momentum=1.0 - self.momentum,
            affine=self.center and self.scale,
            track_running_stats=True,
        )
        self.bn.train(self.training)  # built on first call: follow this layer's mode
        if self.scale and not self.center:
            self.weight = nn.Parameter(torch.ones(int(channels)))
        if self.center and not self.scale:
            self.bias = nn.Parameter(torch.zeros(int(channels)))

    def call(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(x)
        if self._extra_affine:
            view = (1, -1) + (1,) * (x.dim() - 2)
            if self.weight is not None:
                y = y * self.weight.view(view)
            if self.bias is not None:
                y = y + self.bias.view(view)
        return y

    def get_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "axis": self.axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
        }
        if self.input_shape is not None:
            cfg["input_shape"] = list(self.input_shape)
        if self.layer_name is not None:
            cfg["name"] = self.layer_name
        return cfg
