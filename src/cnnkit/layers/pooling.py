"""Max, min and average pooling in 1D, 2D and 3D (Keras names, channels-first tensors).

Pooling slides a window over every channel separately and keeps the maximum, the
minimum or the mean of its elements; it has no parameter to learn (seed 002: "instead
of dot product, we find the maximum of elements"). Seed 004 names the three types:
max pooling (dark object on a white background), min pooling (white object on a dark
background) and average pooling (smoothing).

Arguments follow Keras: ``pool_size=2``, ``strides=None`` (= ``pool_size``) and
``padding``:

* ``'valid'``: no padding, the output size is floored as in Keras and PyTorch;
* ``'same'``: Keras' padding, output ``ceil(n / stride)``, ``before = total // 2`` and
  the rest after; padded positions never win a max/min and are left out of the
  average's count (as TensorFlow does);
* an int, a tuple of ints (symmetric per dim) or ``(before, after)`` pairs, each side
  smaller than the pool size so that every window overlaps the input.

``MaxPooling2D(2, return_indices=True)(x)`` returns ``(y, indices)``: the flat index of
each maximum inside its ``(N, C)`` plane of the *unpadded* input, PyTorch's convention,
so :class:`cnnkit.layers.MaxUnpooling2D` and ``F.max_unpool2d`` can put the values back
where they came from (seed 000: "remember which element was max").

Symmetric paddings that PyTorch accepts (at most half the window) go straight to
``F.max_poolNd``/``F.avg_poolNd``; other paddings pad with ``-inf`` (max), ``+inf``
(min) or zeros (average) first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from cnnkit._core.errors import ConfigError, ShapeError
from cnnkit.layers.base import Layer
from cnnkit.layers.padding import pool_args, resolve_pads, symmetric, torch_pad_arg
from cnnkit.ops.arithmetic import pool_output_size

__all__ = [
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "MinPooling1D",
    "MinPooling2D",
    "MinPooling3D",
]

_MAX_PLANS = 64  # spatial shapes remembered per layer


class _Plan(NamedTuple):
    """How to pool inputs of one spatial shape (computed once per shape)."""

    torch_pad: tuple[int, ...] | None  # symmetric padding for the functional op (fast path)
    fpad: list[int] | None  # F.pad argument when the padding is asymmetric or large
    sizes: tuple[int, ...]  # unpadded spatial sizes
    padded: tuple[int, ...]  # padded spatial sizes
    before: tuple[int, ...]  # padding before, per dim


class _Pooling(Layer):
    """Shared machinery of the max, min and average pooling layers."""

    spatial_dims = 2
    _fn = staticmethod(F.max_pool2d)  # the functional op, set per subclass

    def __init__(
        self,
        pool_size: int | Sequence[int] = 2,
        strides: int | Sequence[int] | None = None,
        padding: str | int | Sequence = "valid",
        *,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(input_shape=input_shape, name=name)
        self.pool_size, self.strides, self.padding = pool_args(
            type(self).__name__, self.spatial_dims, pool_size, strides, padding
        )
        self._plans: dict[tuple[int, ...], _Plan] = {}

    # ------------------------------------------------------------------ shapes

    def _build(self, input_shape: tuple) -> None:
        self.in_channels = None  # pooling works on any number of channels

    def _pads(self, sizes: Sequence[int | None]) -> list[tuple[int, int]]:
        return resolve_pads(self.padding, sizes, self.pool_size, self.strides, (1,) * len(sizes))

    def _spatial_out(self, shape: tuple) -> tuple[int | None, ...]:
        sizes = shape[2:]
        if self.padding == "same":
            return tuple(None if n is None else -(-n // s) for n, s in zip(sizes, self.strides))
        pads = self._pads(sizes)
        out = []
        for n, k, s, pad in zip(sizes, self.pool_size, self.strides, pads):
            if n is None:
                out.append(None)
                continue
            try:
                out.append(pool_output_size(n, k, s, pad, floor=True))
            except ShapeError as err:
                raise ShapeError(
                    f"{type(self).__name__} with pool_size {self.pool_size} cannot pool an input "
                    f"of shape {tuple(shape)}: {err}"
                ) from None
        return tuple(out)

    def _output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:2], *self._spatial_out(input_shape))

    def _plan(self, x: torch.Tensor) -> _Plan:
        sizes = tuple(x.shape[2:])
        self._spatial_out(tuple(x.shape))  # raises ShapeError when a window does not fit
        pads = self._pads(sizes)
        sym = symmetric(pads)
        if sym is not None and all(2 * p <= k for p, k in zip(sym, self.pool_size)):
            plan = _Plan(sym, None, sizes, sizes, sym)
        else:
            padded = tuple(n + b + a for n, (b, a) in zip(sizes, pads))
            plan = _Plan(None, torch_pad_arg(pads), sizes, padded, tuple(b for b, _ in pads))
        if len(self._plans) >= _MAX_PLANS:
            self._plans.clear()
        self._plans[sizes] = plan
        return plan

    # ------------------------------------------------------------------ config

    def get_config(self) -> dict[str, Any]:
        return {
            "pool_size": self.pool_size,
            "strides": self.strides,
            "padding": self.padding,
            "name": self.layer_name,
        }

    def receptive_field_layers(
        self,
    ) -> list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        return [(self.pool_size, self.strides, (1,) * self.spatial_dims)]


class _ExtremumPooling(_Pooling):
    """Max pooling, and min pooling as ``-maxpool(-x)``."""

    def __init__(
        self,
        pool_size: int | Sequence[int] = 2,
        strides: int | Sequence[int] | None = None,
        padding: str | int | Sequence = "valid",
        return_indices: bool = False,
        *,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(pool_size, strides, padding, input_shape=input_shape, name=name)
        if not isinstance(return_indices, bool):
            raise ConfigError(
                f"{type(self).__name__} return_indices must be True or False; "
                f"received {return_indices!r}."
            )
        self.return_indices = return_indices

    def _max(self, x: torch.Tensor) -> Any:
        plan = self._plans.get(x.shape[2:]) or self._plan(x)
        if plan.fpad is None:
            return self._fn(
                x, self.pool_size, self.strides, plan.torch_pad, return_indices=self.return_indices
            )
        xp = F.pad(x, plan.fpad, value=-math.inf)
        if not self.return_indices:
            return self._fn(xp, self.pool_size, self.strides)
        y, idx = self._fn(xp, self.pool_size, self.strides, return_indices=True)
        return y, _unpad_indices(idx, plan)

    def get_config(self) -> dict[str, Any]:
        cfg = super().get_config()
        cfg["return_indices"] = self.return_indices
        return cfg


def _unpad_indices(idx: torch.Tensor, plan: _Plan) -> torch.Tensor:
    """Flat indices in the padded plane -> flat indices in the unpadded plane."""
    if len(plan.sizes) == 1:
        return idx - plan.before[0]
    flat = None
    rem = idx
    stride = 1
    for d in range(len(plan.sizes) - 1, -1, -1):
        if d > 0:
            q = torch.div(rem, plan.padded[d], rounding_mode="floor")
            coord = rem - q * plan.padded[d]
            rem = q
        else:
            coord = rem
        term = (coord - plan.before[d]) * stride if stride != 1 else coord - plan.before[d]
        flat = term if flat is None else flat + term
        stride *= plan.sizes[d]
    return flat


class _MaxPooling(_ExtremumPooling):
    def call(self, x: torch.Tensor) -> Any:
        return self._max(x)


class _MinPooling(_ExtremumPooling):
    def call(self, x: torch.Tensor) -> Any:
        out = self._max(-x)
        if self.return_indices:
            return -out[0], out[1]
        return -out


class _AveragePooling(_Pooling):
    """Average pooling; ``count_include_pad`` decides the divisor at padded borders."""

    def __init__(
        self,
        pool_size: int | Sequence[int] = 2,
        strides: int | Sequence[int] | None = None,
        padding: str | int | Sequence = "valid",
        count_include_pad: bool | None = None,
        *,
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(pool_size, strides, padding, input_shape=input_shape, name=name)
        if count_include_pad is None:
            # Keras' 'same' leaves padding out of the count; explicit pads follow PyTorch.
            count_include_pad = isinstance(self.padding, tuple)
        if not isinstance(count_include_pad, bool):
            raise ConfigError(
                f"{type(self).__name__} count_include_pad must be True, False or None; "
                f"received {count_include_pad!r}."
            )
        self.count_include_pad = count_include_pad
        self._divisors: dict[tuple, torch.Tensor] = {}

    def call(self, x: torch.Tensor) -> torch.Tensor:
        plan = self._plans.get(x.shape[2:]) or self._plan(x)
        if plan.fpad is None:
            return self._fn(
                x,
                self.pool_size,
                self.strides,
                plan.torch_pad,
                count_include_pad=self.count_include_pad,
            )
        y = self._fn(F.pad(x, plan.fpad), self.pool_size, self.strides)
        if self.count_include_pad:
            return y
        return y / self._divisor(plan, x)

    def _divisor(self, plan: _Plan, x: torch.Tensor) -> torch.Tensor:
        """Share of real (unpadded) elements in each window: the mean of a padded ones mask."""
        key = (plan.sizes, x.dtype, x.device)
        div = self._divisors.get(key)
        if div is None:
            with torch.no_grad():
                ones = torch.ones((1, 1, *plan.sizes), dtype=x.dtype, device=x.device)
                div = self._fn(F.pad(ones, plan.fpad), self.pool_size, self.strides)
            if len(self._divisors) >= _MAX_PLANS:
                self._divisors.clear()
            self._divisors[key] = div
        return div

    def get_config(self) -> dict[str, Any]:
        cfg = super().get_config()
        cfg["count_include_pad"] = self.count_include_pad
        return cfg


# ---------------------------------------------------------------------- public layers


class MaxPooling1D(_MaxPooling):
    """Max pooling over 1D windows (seed 000, seed 002).

    Args:
        pool_size: window size, an int or a tuple of 1 int.
        strides: step between windows; ``None`` means ``pool_size`` (Keras).
        padding: ``'valid'``, ``'same'`` (Keras), an int or a ``(before, after)`` pair;
            padded positions never win.
        return_indices: also return the index of each maximum in its ``(N, C)`` row of
            the unpadded input (PyTorch's convention), for :class:`MaxUnpooling1D`.

    Shapes: ``x (Tensor[N, C, L])`` -> ``y (Tensor[N, C, L_out])`` or ``(y, indices)``.
    """

    spatial_dims = 1
    _fn = staticmethod(F.max_pool1d)


class MaxPooling2D(_MaxPooling):
    """Max pooling over 2D windows (seed 000, seed 002).

    Args:
        pool_size: window size, an int or a tuple of 2 ints.
        strides: step between windows; ``None`` means ``pool_size`` (Keras).
        padding: ``'valid'``, ``'same'`` (Keras), an int, a tuple of 2 ints or 2
            ``(before, after)`` pairs; padded positions never win.
        return_indices: also return the flat index ``h * W + w`` of each maximum in its
            ``(N, C)`` plane of the unpadded input (PyTorch's convention), for
            :class:`MaxUnpooling2D` (seed 000: "remember which element was max").

    Shapes: ``x (Tensor[N, C, H, W])`` -> ``y (Tensor[N, C, H_out, W_out])`` or
    ``(y, indices)`` with ``indices`` int64 of ``y``'s shape.

    >>> x = torch.tensor([[[[1., 2, 6, 3], [3, 5, 2, 1], [1, 2, 2, 1], [7, 3, 4, 8]]]])
    >>> MaxPooling2D(2)(x)[0, 0].tolist()
    [[5.0, 6.0], [7.0, 8.0]]
    """

    spatial_dims = 2
    _fn = staticmethod(F.max_pool2d)


class MaxPooling3D(_MaxPooling):
    """Max pooling over 3D windows.

    Arguments as :class:`MaxPooling2D` with 3 dims; indices are ``(d * H + h) * W + w``.

    Shapes: ``x (Tensor[N, C, D, H, W])`` -> ``y (Tensor[N, C, D_out, H_out, W_out])`` or
    ``(y, indices)``.
    """

    spatial_dims = 3
    _fn = staticmethod(F.max_pool3d)


class MinPooling1D(_MinPooling):
    """Min pooling over 1D windows, ``-maxpool(-x)`` (seed 004).

    Arguments as :class:`MaxPooling1D`; padded positions never win and the indices point
    at the minima. Shapes: ``x (Tensor[N, C, L])`` -> ``y (Tensor[N, C, L_out])``.
    """

    spatial_dims = 1
    _fn = staticmethod(F.max_pool1d)


class MinPooling2D(_MinPooling):
    """Min pooling over 2D windows, ``-maxpool(-x)`` (seed 004: "better results when the
    background is dark and the object is white").

    Arguments as :class:`MaxPooling2D`; padded positions never win and the indices point
    at the minima. Shapes: ``x (Tensor[N, C, H, W])`` -> ``y (Tensor[N, C, H_out, W_out])``.
    """

    spatial_dims = 2
    _fn = staticmethod(F.max_pool2d)


class MinPooling3D(_MinPooling):
    """Min pooling over 3D windows, ``-maxpool(-x)``.

    Arguments as :class:`MaxPooling3D`. Shapes: ``x (Tensor[N, C, D, H, W])`` ->
    ``y (Tensor[N, C, D_out, H_out, W_out])``.
    """

    spatial_dims = 3
    _fn = staticmethod(F.max_pool3d)


class AveragePooling1D(_AveragePooling):
    """Average pooling over 1D windows (seed 004: average pooling "smoothes the picture").

    Args:
        pool_size, strides, padding: as :class:`MaxPooling1D`.
        count_include_pad: whether padded zeros count in the mean. ``None`` (default):
            ``False`` for ``'same'`` (Keras/TensorFlow), ``True`` for explicit int pads
            (PyTorch's default in ``F.avg_pool1d``).

    Shapes: ``x (Tensor[N, C, L])`` -> ``y (Tensor[N, C, L_out])``.
    """

    spatial_dims = 1
    _fn = staticmethod(F.avg_pool1d)


class AveragePooling2D(_AveragePooling):
    """Average pooling over 2D windows (seed 004; LeNet's subsampling, seed 001).

    Args:
        pool_size, strides, padding: as :class:`MaxPooling2D`.
        count_include_pad: whether padded zeros count in the mean. ``None`` (default):
            ``False`` for ``'same'`` (Keras/TensorFlow), ``True`` for explicit int pads
            (PyTorch's default in ``F.avg_pool2d``).

    Shapes: ``x (Tensor[N, C, H, W])`` -> ``y (Tensor[N, C, H_out, W_out])``.
    """

    spatial_dims = 2
    _fn = staticmethod(F.avg_pool2d)


class AveragePooling3D(_AveragePooling):
    """Average pooling over 3D windows.

    Arguments as :class:`AveragePooling2D` with 3 dims.

    Shapes: ``x (Tensor[N, C, D, H, W])`` -> ``y (Tensor[N, C, D_out, H_out, W_out])``.
    """

    spatial_dims = 3
    _fn = staticmethod(F.avg_pool3d)
