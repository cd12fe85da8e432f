"""The streaming-metric base class and the input handling its subclasses share.

See :mod:`cnnkit.metrics.streaming` for the metrics themselves.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from cnnkit._core.errors import ConfigError, ShapeError
from cnnkit.metrics._inputs import check_same_shape, to_tensor

_LONG = torch.long


class Metric(nn.Module):
    """Base class: state tensors registered with :meth:`add_state` (summed across ranks)."""

    name = "metric"
    #: Whether a larger value is better (for checkpoint/early-stopping ``mode='auto'``).
    higher_is_better = True

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__()
        if name is not None:
            if not isinstance(name, str) or not name:
                raise ConfigError(f"name must be a non-empty string; received {name!r}.")
            self.name = name
        self._state_names: list[str] = []
        self._synced = False

    def add_state(self, name: str, value: torch.Tensor) -> None:
        """Register ``value`` as accumulated state (a buffer, zeroed by reset())."""
        self.register_buffer(name, value, persistent=False)
        self._state_names.append(name)

    def update(self, y_pred: object, y_true: object) -> None:
        raise NotImplementedError

    def compute(self) -> object:
        raise NotImplementedError

    def forward(self, y_pred: object, y_true: object) -> None:
        """Same as :meth:`update`."""
        self.update(y_pred, y_true)

    def reset(self) -> None:
        """Zero the state (start of an epoch)."""
        for n in self._state_names:
            getattr(self, n).zero_()
        self._synced = False

    def sync(self) -> None:
        """Sum the state over all ranks (no-op without an initialised process group).

        Call it once after the last update(); calling it again is a no-op until reset().
        """
        if self._synced or not (dist.is_available() and dist.is_initialized()):
            return
        if dist.get_world_size() > 1:
            for n in self._state_names:
                dist.all_reduce(getattr(self, n), op=dist.ReduceOp.SUM)
        self._synced = True

    # helpers ------------------------------------------------------------------
    def _start_update(self, x: torch.Tensor) -> None:
        if self._synced:
            raise ConfigError(
                f"{type(self).__name__}.update() after sync() would mix reduced and local "
                "state; call reset() first."
            )
        if self._state_names:
            buf = getattr(self, self._state_names[0])
            if buf.device != x.device:
                self.to(x.device)

    def _no_samples(self) -> ShapeError:
        return ShapeError(
            f"{type(self).__name__}.compute() has no samples: call update() with a non-empty "
            "batch first (or the data were all ignore_index)."
        )

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


def _tensor(x: object, name: str, device: torch.device | None = None) -> torch.Tensor:
    t = to_tensor(x, name)
    return t if device is None or t.device == device else t.to(device)


def _threshold(p: torch.Tensor, threshold: float, from_logits: bool) -> torch.Tensor:
    if from_logits:
        return (p > math.log(threshold / (1.0 - threshold))).long()
    return (p > threshold).long()


def class_predictions(
    y_pred: object, y_true: object, threshold: float = 0.5, from_logits: bool = False
) -> tuple[torch.Tensor, torch.Tensor, int | None]:
    """``(pred, true, C)``: int64 class indices of equal shape and the class count the
    scores imply (None for index predictions). See the module docstring for the forms."""
    p = _tensor(y_pred, "y_pred")
    t = _tensor(y_true, "y_true", p.device)
    if p.is_floating_point() and p.ndim >= 2 and p.shape[1] > 1:
        if p.ndim == 2 and t.shape == p.shape:  # one-hot / soft targets (N, C)
            t = t.argmax(1)
        elif t.ndim == p.ndim and t.shape[1] == 1:  # sparse targets as (N, 1, ...)
            t = t[:, 0]
    if p.is_floating_point():
        if p.ndim == t.ndim + 1:
            if p.shape[0] != t.shape[0] or p.shape[2:] != t.shape[1:]:
                raise ShapeError(
                    f"y_pred scores (N, C, ...) do not match y_true (N, ...); received y_pred "
                    f"{tuple(p.shape)} and y_true {tuple(t.shape)}."
                )
            if p.shape[1] > 1:
                return p.argmax(1), t.long(), p.shape[1]
            p = p[:, 0]
        else:
            check_same_shape(t, p, "y_true", "y_pred")
        pred = _threshold(p, threshold, from_logits).reshape(t.shape)
        true = (t > 0.5).long() if t.is_floating_point() else t.long()
        return pred, true, 2
    check_same_shape(t, p, "y_true", "y_pred")
    return p.long().reshape(t.shape), t.long(), None


def _check_threshold(threshold: object) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ConfigError(f"threshold must be a number in (0, 1); received {threshold!r}.")
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"threshold must be in (0, 1); received {threshold!r}.")
    return float(threshold)


def _check_ignore(ignore_index: object) -> int | None:
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise ConfigError(f"ignore_index must be an int or None; received {ignore_index!r}.")
    return int(ignore_index)


class _LabelChecks(Metric):
    """Counts labels outside ``[0, n)``: raised at once on the CPU, at compute() elsewhere."""

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.add_state("invalid", torch.zeros((), dtype=_LONG))

    @staticmethod
    def _checks_now(t: torch.Tensor) -> bool:
        """Check labels eagerly? Only on the CPU, where it makes nothing wait."""
        return t.device.type == "cpu"

    def _check_cpu(self, v: torch.Tensor, n: int, what: str, keep: torch.Tensor | None) -> None:
        """On the CPU (no device to wait for): raise at once on a label outside [0, n)."""
        if keep is not None:
            v = v[keep]
        if v.numel() == 0:
            return
        lo, hi = (int(x) for x in torch.aminmax(v))
        if lo < 0 or hi >= n:
            raise ConfigError(
                f"{type(self).__name__}: {what} contains the label {lo if lo < 0 else hi} but "
                f"there are {n} classes (labels must be in [0, {n - 1}])."
            )

    def _check_flags(self) -> None:
        bad = int(self.invalid)
        if bad:
            raise ConfigError(
                f"{type(self).__name__}: update() received {bad} label(s) outside "
                "[0, num_classes); they were not counted."
            )
