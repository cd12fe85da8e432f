"""Keras-style callbacks for ``fit``: ``cnnkit.callbacks``.

    model.fit(x, y, epochs=20, validation_split=0.2, callbacks=[
        EarlyStopping(patience=3, restore_best_weights=True),
        ModelCheckpoint("runs/mnist"),          # runs/mnist/last/ and runs/mnist/best/
        CSVLogger("runs/mnist/log.csv"),
    ])
    model.fit(..., resume_from="runs/mnist")    # continues from runs/mnist/last/

Hooks: ``set_model``, ``on_train_begin/end(logs)``, ``on_epoch_begin/end(epoch, logs)``
and ``on_train_batch_end(step)``. Batch hooks get no logs, so they never make the
training loop wait for the device. Epochs are 0-based, as in Keras. When ``fit`` stops
on SIGTERM/SIGINT, ``on_interrupt(epoch, step)`` lets a callback write a checkpoint
(it returns the folder to resume from, or None).
"""

from __future__ import annotations

import csv
import logging
import math
import numbers
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cnnkit._core.errors import CnnkitError, ConfigError
from cnnkit.train.callback_base import Callback, CallbackList, _is_main_process, _Monitor
from cnnkit.train.checkpoint import (
    CONFIG,
    find_checkpoint,
    read_checkpoint_info,
    save_training_state,
)
from cnnkit.train.schedules import (
    KerasPlateau,
    Schedule,
    cosine,
    current_lr,
    reduce_on_plateau,
    step_decay,
)

log = logging.getLogger("cnnkit.train")

__all__ = [
    "CSVLogger",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "ReduceLROnPlateau",
    "Schedule",
    "TensorBoard",
    "cosine",
    "reduce_on_plateau",
    "step_decay",
]


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience``
    epochs (Keras' semantics, including ``baseline`` and ``restore_best_weights``: the
    weights of the best epoch are put back when training ends)."""

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0.0,
        patience: int = 0,
        mode: str = "auto",
        restore_best_weights: bool = False,
        baseline: float | None = None,
    ) -> None:
        if isinstance(patience, bool) or not isinstance(patience, numbers.Integral) or patience < 0:
            raise ConfigError(f"EarlyStopping patience must be an int >= 0; received {patience!r}.")
        patience = int(patience)  # a NumPy int too
        self._monitor = _Monitor("EarlyStopping", monitor, mode, min_delta)
        self.monitor = monitor
        self.patience = patience
        self.baseline = baseline
        self.restore_best_weights = restore_best_weights

    def on_train_begin(self, logs=None) -> None:
        self._monitor.resolve(self.model)
        self.wait = 0
        self.stopped_epoch = 0
        self.best: float | None = None
        self.best_epoch = 0
        self.best_weights: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        current = self._monitor.value(logs)
        if current is None:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = _snapshot(self.model._net)
        self.wait += 1
        if self._monitor.improved(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = _snapshot(self.model._net)
            if self.baseline is None or self._monitor.improved(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            log.info(
                "early stopping after epoch %d (best: epoch %d)", epoch + 1, self.best_epoch + 1
            )

    def on_train_end(self, logs=None) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            self.model._net.load_state_dict(self.best_weights)


class ModelCheckpoint(Callback):
    """Write full training checkpoints into ``dirpath``: ``dirpath/last/`` after every
    epoch and ``dirpath/best/`` whenever ``monitor`` improves. ``cnnkit.load(dirpath)``
    loads the best; ``fit(resume_from=dirpath)`` continues from the last.

    ``save_freq`` (Keras' name): ``'epoch'`` (default) or an int ``N``: ``last/`` is also
    written every ``N`` training steps (counted over the whole run), with the position
    inside the epoch, so a resumed run continues inside the epoch with the same batches.
    ``save_minutes``: also write ``last/`` when that many minutes have passed since the
    last write. On SIGTERM/SIGINT ``fit`` has ``last/`` written after the current step.
    Each write keeps the one before (``previous.json``) and is atomic.

    A folder holding checkpoints of an earlier run is not overwritten unless this fit
    resumes from it or ``overwrite=True``. Only rank 0 writes in distributed runs.
    """

    def __init__(
        self,
        dirpath: str | os.PathLike,
        monitor: str = "val_loss",
        mode: str = "auto",
        save_best: bool = True,
        save_last: bool = True,
        overwrite: bool = False,
        save_freq: int | str = "epoch",
        save_minutes: float | None = None,
    ) -> None:
        if not save_best and not save_last:
            raise ConfigError(
                "ModelCheckpoint with save_best=False and save_last=False saves nothing."
            )
        if save_freq != "epoch" and (
            isinstance(save_freq, bool)
            or not isinstance(save_freq, numbers.Integral)
            or save_freq < 1
        ):
            raise ConfigError(
                f"ModelCheckpoint save_freq must be 'epoch' or a positive int (steps); "
                f"received {save_freq!r}."
            )
        if save_minutes is not None and (
            isinstance(save_minutes, bool)
            or not isinstance(save_minutes, numbers.Real)
            or not save_minutes > 0
        ):
            raise ConfigError(
                f"ModelCheckpoint save_minutes must be a positive number; received "
                f"{save_minutes!r}."
            )
        self.save_freq = save_freq if save_freq == "epoch" else int(save_freq)
        self.save_minutes = None if save_minutes is None else float(save_minutes)
        self._saved_at: tuple[int, int] | None = None
        self._saved_time = time.monotonic()
        self.dirpath = Path(dirpath)
        self.monitor = monitor
        self._monitor = _Monitor("ModelCheckpoint", monitor, mode)
        self.save_best, self.save_last, self.overwrite = save_best, save_last, overwrite
        self.best: float | None = None

    @property
    def last_path(self) -> Path:
        return self.dirpath / "last"

    @property
    def best_path(self) -> Path:
        return self.dirpath / "best"

    def _resuming_here(self) -> bool:
        source = getattr(self.model, "_resume_from", None)
        if source is None:
            return False
        try:
            return find_checkpoint(source).resolve().parent == self.dirpath.resolve()
        except CnnkitError:
            return False

    def on_train_begin(self, logs=None) -> None:
        self._monitor.resolve(self.model)
        self.best = None
        self._saved_at, self._saved_time = None, time.monotonic()
        existing = [p for p in (self.last_path, self.best_path) if (p / CONFIG).exists()]
        if not existing:
            return
        if self._resuming_here():
            if (self.best_path / CONFIG).exists():
                try:
                    extra = read_checkpoint_info(self.best_path).get("extra", {})
                except CnnkitError as err:  # a damaged best/ must not block resuming
                    log.warning("%s; the best value so far is forgotten", err)
                    extra = {}
                if extra.get("monitor") == self.monitor:
                    self.best = extra.get("value")
            return
        if not self.overwrite:
            raise CnnkitError(
                f"{', '.join(str(p) for p in existing)} already hold(s) checkpoints of an earlier "
                f"run; pass fit(resume_from={str(self.dirpath)!r}) to continue it, "
                "ModelCheckpoint(..., overwrite=True) to replace them, or another folder."
            )

    def _position(self) -> dict[str, Any] | None:
        progress = getattr(self.model, "_progress", None)
        return progress.state() if progress is not None else None

    def _save_last(self, completed: int, extra: dict[str, Any]) -> Path:
        """``last/`` with the position reached (``completed``: the last finished epoch)."""
        position = self._position()
        save_training_state(self.last_path, self.model, completed,
                            getattr(self.model, "history", None), overwrite=True, extra=extra,
                            position=position)  # fmt: skip
        if position is not None:
            self._saved_at = (position["epoch"], position["step"])
        self._saved_time = time.monotonic()
        return self.dirpath

    def _extra(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "value": None}  # mid-epoch: no epoch value yet

    def on_train_batch_end(self, step: int) -> None:
        if not self.save_last or not _is_main_process():
            return
        progress = getattr(self.model, "_progress", None)
        due = (
            isinstance(self.save_freq, int)
            and progress is not None
            and (progress.global_step % self.save_freq == 0)
        )
        if self.save_minutes is not None:
            due = due or time.monotonic() - self._saved_time >= 60 * self.save_minutes
        if due:
            self._save_last((progress.epoch if progress is not None else 0) - 1, self._extra())

    def on_interrupt(self, epoch: int, step: int) -> Path | None:
        if not self.save_last:
            return None
        if _is_main_process() and self._saved_at != (epoch, step):
            self._save_last(epoch - 1, self._extra())
        return self.dirpath

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if not _is_main_process():
            return
        logs = logs or {}
        history = getattr(self.model, "history", None)
        current = logs.get(self.monitor)
        extra = {"monitor": self.monitor, "value": current}
        if self.save_last:
            self._save_last(epoch, extra)
        if not self.save_best:
            return
        current = self._monitor.value(logs)
        if current is not None and self._monitor.improved(current, self.best):
            self.best = current
            save_training_state(
                self.best_path, self.model, epoch, history, overwrite=True, extra=extra
            )


class CSVLogger(Callback):
    """One CSV row per epoch: ``epoch`` then the log names in sorted order (Keras' layout).
    ``append=True`` continues an existing file (e.g. after ``resume_from``)."""

    def __init__(self, filename: str | os.PathLike, separator: str = ",", append: bool = False):
        self.filename = Path(filename)
        self.separator = separator
        self.append = append
        self.keys: list[str] | None = None
        self._file = None
        self._writer = None

    def on_train_begin(self, logs=None) -> None:
        if not _is_main_process():
            return
        self.keys = None
        exists = self.filename.is_file() and self.filename.stat().st_size > 0
        if self.append and exists:
            with open(self.filename, newline="") as fh:
                header = next(csv.reader(fh, delimiter=self.separator), None)
            self.keys = header[1:] if header else None
        self.filename.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.filename, "a" if self.append else "w", newline="")  # noqa: SIM115
        self._writer = csv.writer(self._file, delimiter=self.separator)

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if self._writer is None:
            return
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
            self._writer.writerow(["epoch", *self.keys])
        self._writer.writerow([epoch, *(_csv_value(logs.get(k)) for k in self.keys)])
        self._file.flush()

    def on_train_end(self, logs=None) -> None:
        if self._file is not None:
            self._file.close()
        self._file = self._writer = None


def _csv_value(value: Any) -> str:
    if value is None:
        return "NA"
    return repr(float(value)) if isinstance(value, float | int) else str(value)


class TensorBoard(Callback):
    """Per-epoch scalars for TensorBoard, laid out as Keras does: ``log_dir/train`` and
    ``log_dir/validation`` with tags ``epoch_loss``, ``epoch_accuracy``, ...; the learning
    rate as ``epoch_learning_rate``. Needs ``pip install tensorboard``."""

    def __init__(self, log_dir: str | os.PathLike = "logs") -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                f"TensorBoard(log_dir={str(log_dir)!r}) needs the tensorboard package: "
                "pip install tensorboard (or pip install 'cnnkit[tensorboard]')."
            ) from None
        self._writer_cls = SummaryWriter
        self.log_dir = Path(log_dir)
        self._writers: dict[str, Any] = {}

    def _writer(self, split: str) -> Any:
        if split not in self._writers:
            self._writers[split] = self._writer_cls(log_dir=str(self.log_dir / split))
        return self._writers[split]

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if not _is_main_process():
            return
        for key, value in (logs or {}).items():
            split, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            self._writer(split).add_scalar(f"epoch_{name}", value, epoch)
        if "learning_rate" not in (logs or {}):  # the rate the epoch used, not the next one
            lr = getattr(self.model, "epoch_learning_rate", None)
            optimizer = getattr(self.model, "optimizer", None)
            if lr is None and optimizer is not None:
                lr = current_lr(optimizer)
            if lr is not None:
                self._writer("train").add_scalar("epoch_learning_rate", lr, epoch)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs=None) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of every epoch.

    ``schedule`` is Keras' ``schedule(epoch, lr) -> new_lr`` (``lr`` is the current rate),
    or one of :func:`step_decay`, :func:`cosine`, :func:`reduce_on_plateau`, which is
    then installed as the model's scheduler (as ``compile(lr_schedule=...)`` would) so
    ``fit`` steps it and checkpoints save its state.
    """

    sets_learning_rate = True  # fit logs ``learning_rate`` (the rate each epoch used)

    def __init__(self, schedule: Callable[[int, float], float] | Schedule, verbose: int = 0):
        if not callable(schedule):
            raise ConfigError(
                "LearningRateScheduler expects schedule(epoch, lr) -> lr or a cnnkit schedule "
                f"(step_decay, cosine, reduce_on_plateau); received {schedule!r}."
            )
        self.schedule = schedule
        self.verbose = verbose
        self._scheduler = None

    def on_train_begin(self, logs=None) -> None:
        if not isinstance(self.schedule, Schedule):
            return
        current = getattr(self.model, "scheduler", None)
        if current is not None and current is not self._scheduler:
            raise ConfigError(
                f"LearningRateScheduler({self.schedule!r}) would replace the lr_schedule given "
                "to compile(); use one of the two."
            )
        if self._scheduler is None:
            self._scheduler = self.schedule(self.model.optimizer)
        self.model.scheduler = self._scheduler

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        if isinstance(self.schedule, Schedule):
            return
        optimizer = self.model.optimizer
        lr = self.schedule(epoch, current_lr(optimizer))
        if isinstance(lr, torch.Tensor):
            lr = lr.item()
        if (
            isinstance(lr, bool)
            or not isinstance(lr, numbers.Real)
            or not math.isfinite(lr)
            or lr < 0
        ):
            raise ConfigError(
                f"The schedule returned learning rate {lr!r} for epoch {epoch}; expected a "
                "finite number >= 0."
            )
        for group in optimizer.param_groups:
            group["lr"] = float(lr)
        if self.verbose:
            log.info("epoch %d: learning rate %.6g", epoch + 1, lr)


class ReduceLROnPlateau(Callback):
    """Keras' ``ReduceLROnPlateau``: multiply the learning rate by ``factor`` once
    ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs,
    then wait ``cooldown`` epochs; never below ``min_lr``. Same arguments, defaults and
    epoch-by-epoch rule as Keras 3 (see :class:`cnnkit.train.schedules.KerasPlateau`).

    Wang et al. (2017)'s time-series schedule:
    ``ReduceLROnPlateau(monitor='loss', factor=0.5, patience=50, min_lr=1e-4)``.

    The rule is installed as the model's scheduler, so ``fit`` steps it after each
    epoch's validation (before other callbacks see the epoch) and training checkpoints
    save and restore its state. It cannot be combined with ``compile(lr_schedule=...)``.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        verbose: int = 0,
        mode: str = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ) -> None:
        if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not 0 < factor < 1:
            raise ConfigError(
                f"ReduceLROnPlateau factor must be a number in (0, 1); received {factor!r}."
            )
        for name, value in (("patience", patience), ("cooldown", cooldown)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ConfigError(
                    f"ReduceLROnPlateau {name} must be an int >= 0; received {value!r}."
                )
        if (
            isinstance(min_lr, bool)
            or not isinstance(min_lr, numbers.Real)
            or not (math.isfinite(min_lr) and min_lr >= 0)
        ):
            raise ConfigError(
                f"ReduceLROnPlateau min_lr must be a number >= 0; received {min_lr!r}."
            )
        self._monitor = _Monitor("ReduceLROnPlateau", monitor, mode, min_delta)
        self.monitor, self.mode = monitor, mode
        self.factor, self.patience, self.verbose = float(factor), int(patience), verbose
        self.min_delta, self.cooldown = abs(float(min_delta)), int(cooldown)
        self.min_lr = float(min_lr)
        self.scheduler: KerasPlateau | None = None

    def on_train_begin(self, logs=None) -> None:
        current = getattr(self.model, "scheduler", None)
        if current is not None and current is not self.scheduler:
            raise ConfigError(
                "ReduceLROnPlateau would replace the lr_schedule given to compile(); use one "
                "of the two."
            )
        self._monitor.resolve(self.model)
        self.scheduler = KerasPlateau(
            self.model.optimizer, self.monitor, self._monitor.direction, self.factor,
            self.patience, self.min_delta, self.cooldown, self.min_lr,
        )  # fmt: skip
        self.model.scheduler = self.scheduler

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        sched = self.scheduler
        if (
            self.verbose
            and sched
            and sched.reductions
            and sched.reductions[-1][0] == sched.epochs_seen
        ):
            log.info(
                "epoch %d: ReduceLROnPlateau reducing the learning rate to %.6g",
                epoch + 1,
                sched.reductions[-1][1],
            )
