"""The callback protocol of ``fit``: :class:`Callback` (the hooks), :class:`CallbackList`
(what ``fit`` calls) and the improvement test of the monitoring callbacks. The callbacks
themselves are in :mod:`cnnkit.train.callbacks` (``cnnkit.callbacks``)."""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterable
from typing import Any

import torch

from cnnkit._core.errors import ConfigError
from cnnkit.train.schedules import resolve_mode
from cnnkit.train.state import TrainingState

log = logging.getLogger("cnnkit.train")


def _is_main_process() -> bool:
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class Callback:
    """Base class: override the hooks you need. ``self.model`` is the workflow being fit."""

    model: TrainingState | None = None

    def set_model(self, model: TrainingState) -> None:
        self.model = model

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        pass

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        pass

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        pass

    def on_train_batch_end(self, step: int) -> None:
        pass

    def on_interrupt(self, epoch: int, step: int) -> Any:
        """``fit`` stops (SIGTERM/SIGINT) after ``step`` batches of ``epoch``; return the
        folder a checkpoint was written to, or None."""
        return None


def _overrides(cb: Any, hook: str) -> bool:
    """Whether ``cb`` does something in ``hook`` (duck-typed callbacks count if they have it)."""
    method = getattr(type(cb), hook, None)
    if method is None:
        return False
    return not isinstance(cb, Callback) or method is not getattr(Callback, hook)


class CallbackList:
    """Calls every callback's hook in order. Callbacks need not subclass :class:`Callback`;
    missing hooks are skipped, and only callbacks that implement the batch hook are
    called per batch."""

    def __init__(self, callbacks: Iterable[Any] | None = None, model: Any = None) -> None:
        self.callbacks = list(callbacks or [])
        for cb in self.callbacks:
            if isinstance(cb, CallbackList):
                raise ConfigError("Pass callbacks as a flat list; received a nested CallbackList.")
        self._batch = [cb for cb in self.callbacks if _overrides(cb, "on_train_batch_end")]
        self.last_logs: dict[str, float] = {}
        if model is not None:
            self.set_model(model)

    def __iter__(self):
        return iter(self.callbacks)

    @property
    def sets_learning_rate(self) -> bool:
        """Whether a callback schedules the learning rate (``fit`` then logs it per epoch)."""
        return any(getattr(cb, "sets_learning_rate", False) for cb in self.callbacks)

    def __len__(self) -> int:
        return len(self.callbacks)

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(*args)

    def set_model(self, model: Any) -> None:
        self._call("set_model", model)

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        self._call("on_train_begin", logs if logs is not None else {})

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        self._call("on_train_end", logs if logs is not None else dict(self.last_logs))

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self._call("on_epoch_begin", epoch, logs if logs is not None else {})

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs if logs is not None else {}
        self._call("on_epoch_end", epoch, logs)
        self.last_logs = logs

    def on_train_batch_end(self, step: int) -> None:
        for cb in self._batch:
            cb.on_train_batch_end(step)

    def on_interrupt(self, epoch: int, step: int) -> Any:
        """Every callback's ``on_interrupt``; returns the first checkpoint folder written."""
        written = None
        for cb in self.callbacks:
            fn = getattr(cb, "on_interrupt", None)
            result = fn(epoch, step) if fn is not None else None
            written = written or result
        return written


class _Monitor:
    """Improvement test shared by EarlyStopping and ModelCheckpoint (Keras semantics:
    better by more than ``min_delta``)."""

    def __init__(self, owner: str, monitor: str, mode: str, min_delta: float = 0.0) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise ConfigError(f"{owner} monitor must be a log name; received {monitor!r}.")
        if (
            isinstance(min_delta, bool)
            or not isinstance(min_delta, numbers.Real)
            or not math.isfinite(min_delta)
        ):
            raise ConfigError(f"{owner} min_delta must be a number; received {min_delta!r}.")
        resolve_mode(monitor, mode)  # validates the choice early
        self.owner, self.monitor, self.mode, self.min_delta = (
            owner,
            monitor,
            mode,
            abs(float(min_delta)),
        )
        self.direction = "min"
        self._warned = False

    def resolve(self, model: Any) -> None:
        self.direction = resolve_mode(self.monitor, self.mode, model)

    def value(self, logs: dict[str, float] | None) -> float | None:
        value = (logs or {}).get(self.monitor)
        if value is None and not self._warned:
            self._warned = True
            log.warning(
                "%s monitors %r, which is not among the logs %s",
                self.owner,
                self.monitor,
                sorted(logs or {}),
            )
        return value

    def improved(self, value: float, reference: float | None) -> bool:
        if reference is None:
            return True
        if self.direction == "min":
            return value + self.min_delta < reference
        return value - self.min_delta > reference
