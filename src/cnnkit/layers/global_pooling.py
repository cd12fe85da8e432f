"""Global average and max pooling in 1D, 2D and 3D (Keras names, channels-first tensors).

Global average pooling (GAP, seed 003) averages each final feature map to one number:
``(N, C, *spatial) -> (N, C)``, replacing the flatten + dense head of classic CNNs and
making class activation maps possible. Global max pooling keeps each map's maximum.

``keepdims=False`` (Keras' default) gives ``(N, C)``; ``keepdims=True`` keeps the
spatial axes with size 1, ``(N, C, 1, 1)`` in 2D.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from cnnkit._core.errors import ConfigError
from cnnkit.layers.base import Layer

__all__ = [
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAveragePooling3D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "GlobalMaxPooling3D",
]


class _GlobalPooling(Layer):
    """Reduce every spatial axis with a mean or a max."""

    spatial_dims = 2

    def __init__(
        self,
        keepdims: bool = False,
        *,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(input_shape=input_shape, name=name)
        if not isinstance(keepdims, bool):
            raise ConfigError(
                f"{type(self).__name__} keepdims must be True or False; received {keepdims!r}."
            )
        self.keepdims = keepdims
        self._dims = tuple(range(2, 2 + self.spatial_dims))

    def _build(self, input_shape: tuple) -> None:
        self.in_channels = None  # works on any number of channels

    def _output_shape(self, input_shape: tuple) -> tuple:
        if self.keepdims:
            return (*input_shape[:2], *(1,) * self.spatial_dims)
        return tuple(input_shape[:2])

    def receptive_field_layers(self) -> None:
        """``None``: every output sees the whole input."""
        return None

    def get_config(self) -> dict[str, Any]:
        return {"keepdims": self.keepdims, "name": self.layer_name}


class _GlobalAveragePooling(_GlobalPooling):
    def call(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=self._dims, keepdim=self.keepdims)


class _GlobalMaxPooling(_GlobalPooling):
    def call(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=self._dims, keepdim=self.keepdims)


class GlobalAveragePooling1D(_GlobalAveragePooling):
    """Mean over the length axis (seed 003: time-series classification with GAP).

    Shapes: ``x (Tensor[N, C, L])`` -> ``(Tensor[N, C])``, or ``(N, C, 1)`` with
    ``keepdims=True``.
    """

    spatial_dims = 1


class GlobalAveragePooling2D(_GlobalAveragePooling):
    """Mean of each feature map (seed 003's global average pooling; seed 001's
    ``keras.layers.GlobalAveragePooling2D()`` head).

    Shapes: ``x (Tensor[N, C, H, W])`` -> ``(Tensor[N, C])``, or ``(N, C, 1, 1)`` with
    ``keepdims=True``.
    """

    spatial_dims = 2


class GlobalAveragePooling3D(_GlobalAveragePooling):
    """Mean of each 3D feature volume.

    Shapes: ``x (Tensor[N, C, D, H, W])`` -> ``(Tensor[N, C])``, or ``(N, C, 1, 1, 1)``
    with ``keepdims=True``.
    """

    spatial_dims = 3


class GlobalMaxPooling1D(_GlobalMaxPooling):
    """Maximum over the length axis.

    Shapes: ``x (Tensor[N, C, L])`` -> ``(Tensor[N, C])``, or ``(N, C, 1)`` with
    ``keepdims=True``.
    """

    spatial_dims = 1


class GlobalMaxPooling2D(_GlobalMaxPooling):
    """Maximum of each feature map.

    Shapes: ``x (Tensor[N, C, H, W])`` -> ``(Tensor[N, C])``, or ``(N, C, 1, 1)`` with
    ``keepdims=True``.
    """

    spatial_dims = 2


class GlobalMaxPooling3D(_GlobalMaxPooling):
    """Maximum of each 3D feature volume.

    Shapes: ``x (Tensor[N, C, D, H, W])`` -> ``(Tensor[N, C])``, or ``(N, C, 1, 1, 1)``
    with ``keepdims=True``.
    """

    spatial_dims = 3
