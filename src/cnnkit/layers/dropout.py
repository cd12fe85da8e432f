"""Dropout layers: element-wise ``Dropout`` and channel-wise ``SpatialDropout1D/2D/3D``.

In training mode each element (or, for the spatial variants, each whole feature map)
is zeroed with probability ``rate`` and the survivors are scaled by ``1 / (1 - rate)``
(inverted dropout, as Keras and PyTorch), so the expectation is unchanged; in
evaluation mode (``layer.eval()``) the layers are the identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from cnnkit._core.errors import ConfigError
from cnnkit.layers.base import Layer

__all__ = ["Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D"]


def _check_rate(rate: Any, owner: str) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise ConfigError(
            f"{owner} expects rate a number with 0 <= rate < 1 (the fraction of inputs to drop); "
            f"received {rate!r}."
        )
    return float(rate)


def _name_config(layer: Layer) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    if layer.input_shape is not None:
        cfg["input_shape"] = list(layer.input_shape)
    if layer.layer_name is not None:
        cfg["name"] = layer.layer_name
    return cfg


class Dropout(Layer):
    """Zero each element with probability ``rate`` during training, scale the rest by
    ``1 / (1 - rate)``; the identity in eval mode.

    Args:
        rate: fraction to drop, ``0 <= rate < 1``.
        seed: if given, the masks come from a private ``torch.Generator`` seeded with it
            (reproducible independently of the global RNG); otherwise ``F.dropout``.

    Shapes: any ``Tensor[N, ...]`` -> same shape.
    """

    spatial_dims = None
    min_rank = 1

    def __init__(
        self,
        rate: float,
        seed: int | None = None,
        *,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(input_shape=input_shape, name=name)
        self.rate = _check_rate(rate, "Dropout")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigError(f"Dropout expects seed an int or None; received {seed!r}.")
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator:
        gen = self._generators.get(device)
        if gen is None:
            gen = torch.Generator(device=device)
            gen.manual_seed(self.seed)
            self._generators[device] = gen
        return gen

    def call(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        if self.seed is None:
            return F.dropout(x, self.rate, True)
        keep = 1.0 - self.rate
        mask = torch.empty_like(x).bernoulli_(keep, generator=self._generator(x.device))
        return x * mask / keep

    def get_config(self) -> dict[str, Any]:
        return {"rate": self.rate, "seed": self.seed, **_name_config(self)}


class _SpatialDropout(Layer):
    """Drop whole feature maps (channels) with probability ``rate`` during training."""

    _fn = staticmethod(F.dropout2d)

    def __init__(
        self,
        rate: float,
        *,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(input_shape=input_shape, name=name)
        self.rate = _check_rate(rate, type(self).__name__)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        return self._fn(x, self.rate, True)

    def get_config(self) -> dict[str, Any]:
        return {"rate": self.rate, **_name_config(self)}


class SpatialDropout1D(_SpatialDropout):
    """Drop whole channels of ``x (Tensor[N, C, L])`` (``F.dropout1d``): adjacent
    positions are strongly correlated, so element dropout would barely regularise."""

    spatial_dims = 1
    _fn = staticmethod(F.dropout1d)


class SpatialDropout2D(_SpatialDropout):
    """Drop whole feature maps of ``x (Tensor[N, C, H, W])`` (``F.dropout2d``)."""

    spatial_dims = 2
    _fn = staticmethod(F.dropout2d)


class SpatialDropout3D(_SpatialDropout):
    """Drop whole feature volumes of ``x (Tensor[N, C, D, H, W])`` (``F.dropout3d``)."""

    spatial_dims = 3
    _fn = staticmethod(F.dropout3d)
