"""Augmentation of 1D series (sensor signals, UCR series): jitter, scaling, window slicing, warps.

Called as ``t(x, target)`` and returning ``(x, target)`` with ``x`` Tensor[C, L] (or
Tensor[L]) float. A target that is a tensor with at least one dimension is a per-time-step
label sequence Tensor[..., L] (1D segmentation) and is moved with the series (nearest
resampling); anything else (None, an int, a 0-d label tensor, a dict) passes through.

- :class:`Jitter` and :class:`Scaling`: Um et al. 2017, "Data augmentation of wearable
  sensor data for Parkinson's disease monitoring using convolutional neural networks".
- :class:`WindowSlice`: Le Guennec, Malinowski and Tavenard 2016, "Data augmentation for
  time series classification using convolutional neural networks".
- :class:`TimeWarp`: Um et al. 2017, a smooth random change of the time axis.

Random draws come from torch's global generator (``torch.manual_seed`` reproduces them).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from cnnkit._core.errors import ConfigError, ShapeError

__all__ = ["Jitter", "Scaling", "TimeWarp", "WindowSlice", "resample_1d"]


def resample_1d(x: torch.Tensor, positions: torch.Tensor, mode: str = "linear") -> torch.Tensor:
    """Values of ``x`` (Tensor[..., L]) at fractional ``positions`` (Tensor[L']) along the last axis.

    ``mode='linear'`` interpolates between neighbours; ``'nearest'`` takes the closest sample
    (for labels). Positions are clamped to ``[0, L - 1]``.
    """
    n = x.shape[-1]
    pos = positions.to(torch.float64).clamp(0, n - 1)
    if mode == "nearest":
        return x[..., pos.round().long()]
    i0 = pos.floor().long().clamp(max=n - 1)
    i1 = (i0 + 1).clamp(max=n - 1)
    w = (pos - i0).to(x.dtype)
    return x[..., i0] * (1 - w) + x[..., i1] * w


class _Series:
    """Base: check the series and the target, then :meth:`apply` the same draw to both."""

    warps_time = False

    def __call__(self, x: Any, target: Any = None) -> tuple[torch.Tensor, Any]:
        if not isinstance(x, torch.Tensor) or x.ndim not in (1, 2) or not x.is_floating_point():
            got = (
                f"{x.dtype} tensor of shape {tuple(x.shape)}"
                if isinstance(x, torch.Tensor)
                else type(x).__name__
            )
            raise ShapeError(
                f"{type(self).__name__} needs a float Tensor[C, L] or Tensor[L]; received {got}."
            )
        per_step = isinstance(target, torch.Tensor) and target.ndim >= 1
        if per_step and target.shape[-1] != x.shape[-1]:
            raise ShapeError(
                f"A tensor target is a per-step label sequence Tensor[..., L] with L = {x.shape[-1]} "
                f"(the series length); received shape {tuple(target.shape)}. Pass a class label "
                "as an int or a 0-d tensor."
            )
        positions = self.positions(x.shape[-1]) if self.warps_time else None
        if positions is not None:
            x = resample_1d(x, positions)
            if per_step:
                target = resample_1d(target, positions, "nearest")
        return self.apply(x), target

    def positions(self, length: int) -> torch.Tensor | None:
        return None

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def _non_negative(name: str, value: float) -> float:
    if not value >= 0:
        raise ConfigError(f"{name} must be >= 0; received {value!r}.")
    return float(value)


class Jitter(_Series):
    """Add Gaussian noise ``N(0, sigma^2)`` to every sample (Um et al. 2017)."""

    def __init__(self, sigma: float = 0.03):
        self.sigma = _non_negative("sigma", sigma)

    def apply(self, x):
        return x + self.sigma * torch.randn_like(x)


class Scaling(_Series):
    """Multiply each channel by a factor drawn from ``N(1, sigma^2)`` (Um et al. 2017)."""

    def __init__(self, sigma: float = 0.1):
        self.sigma = _non_negative("sigma", sigma)

    def apply(self, x):
        shape = (x.shape[0], 1) if x.ndim == 2 else (1,)
        return x * (1 + self.sigma * torch.randn(shape, dtype=x.dtype))


class WindowSlice(_Series):
    """Take a random window of ``ratio * L`` samples and stretch it back to L (linear).

    Le Guennec et al. 2016 slice 90 % of the series (``ratio=0.9``). Per-step labels are
    sliced and stretched with nearest resampling.
    """

    warps_time = True

    def __init__(self, ratio: float = 0.9):
        if not 0 < ratio <= 1:
            raise ConfigError(f"ratio must be in (0, 1]; received {ratio!r}.")
        self.ratio = float(ratio)

    def positions(self, length):
        window = min(length, max(2, round(self.ratio * length)))
        start = int(torch.randint(0, length - window + 1, ()))
        return start + torch.linspace(0, window - 1, length, dtype=torch.float64)


class TimeWarp(_Series):
    """Smoothly speed up and slow down time (Um et al. 2017).

    Speeds ``N(1, sigma^2)`` (kept >= 0.05) at ``knots`` evenly spaced points are
    interpolated bicubically to every step and integrated into a monotone time map from
    ``[0, L - 1]`` onto itself; the series is resampled on it (linear), per-step labels with
    nearest.
    """

    warps_time = True

    def __init__(self, sigma: float = 0.2, knots: int = 4):
        self.sigma = _non_negative("sigma", sigma)
        if not isinstance(knots, int) or knots < 2:
            raise ConfigError(f"knots must be an integer >= 2; received {knots!r}.")
        self.knots = knots

    def positions(self, length):
        speed = (1 + self.sigma * torch.randn(1, 1, 1, self.knots, dtype=torch.float64)).clamp(
            min=0.05
        )
        dense = F.interpolate(speed, size=(1, length), mode="bicubic", align_corners=True)
        dense = dense.flatten().clamp(min=0.05)
        t = torch.cat([dense.new_zeros(1), torch.cumsum(dense[1:], 0)])
        return t / t[-1] * (length - 1) if length > 1 else t
