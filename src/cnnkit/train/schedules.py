"""Learning-rate schedules: ``compile(lr_schedule=step_decay([8, 11], 0.1))``.

Each helper returns a :class:`Schedule`, a factory ``optimizer -> torch scheduler``;
``fit`` builds it once the optimizer exists and steps it at the end of every epoch
(after validation). ``reduce_on_plateau`` is stepped with the monitored value from
that epoch's logs. The schedulers are PyTorch's own, so the learning rates are
exactly those of ``torch.optim.lr_scheduler``.

    model.compile(optimizer=torch.optim.SGD(params, lr=0.02), loss=...,
                  lr_schedule=step_decay([8, 11], gamma=0.1))   # Mask R-CNN: 0.02 -> 0.002
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.optim import lr_scheduler

from cnnkit._core.errors import ConfigError, check_choice
from cnnkit.train.optimizers import check_group_rates

#: substrings of log names where higher is better (Keras' mode='auto' guesses the same way)
_HIGHER_IS_BETTER = (
    "acc",
    "auc",
    "f1",
    "precision",
    "recall",
    "iou",
    "jaccard",
    "dice_score",
    "specificity",
    "fmeasure",
)
_LOWER_IS_BETTER = ("loss", "mse", "mae", "error", "false_omission_rate")


def resolve_mode(monitor: str, mode: str, model: Any = None) -> str:
    """``'min'`` or ``'max'`` for ``monitor``; ``mode='auto'`` asks the compiled metrics
    (their ``higher_is_better``) and then the name, as Keras does."""
    check_choice("mode", mode, ("auto", "min", "max"))
    if mode != "auto":
        return mode
    name = monitor[4:] if monitor.startswith("val_") else monitor
    for metric in getattr(model, "_metrics", None) or ():
        if getattr(metric, "name", None) == name:
            return "max" if getattr(metric, "higher_is_better", True) else "min"
    if any(s in name for s in _LOWER_IS_BETTER):
        return "min"
    if any(s in name for s in _HIGHER_IS_BETTER):
        return "max"
    return "min"


class Schedule:
    """A learning-rate schedule: call it with an optimizer to get the torch scheduler.

    ``monitor`` is set for on-plateau schedules: the log entry passed to ``step``.
    """

    def __init__(
        self, name: str, build: Callable[[torch.optim.Optimizer], Any], monitor: str | None = None
    ) -> None:
        self.name = name
        self._build = build
        self.monitor = monitor

    def __call__(self, optimizer: torch.optim.Optimizer) -> Any:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ConfigError(
                f"{self.name} is built from a torch.optim.Optimizer; received "
                f"{type(optimizer).__name__}."
            )
        scheduler = self._build(optimizer)
        if self.monitor is not None:
            scheduler.cnnkit_monitor = self.monitor
        return scheduler

    def __repr__(self) -> str:
        return self.name


def _positive(name: str, value: Any, *, integer: bool = False, allow_zero: bool = False) -> Any:
    """``value`` checked (NumPy numbers welcome) and returned as a Python int or float."""
    ok_type = isinstance(value, numbers.Integral if integer else numbers.Real)
    if isinstance(value, bool) or not ok_type or not math.isfinite(value):
        kind = "an int" if integer else "a number"
        raise ConfigError(f"{name} must be {kind}; received {value!r}.")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be {bound}; received {value!r}.")
    return int(value) if integer else float(value)


def _epochs(name: str, boundaries: Any, *, allow_empty: bool = False) -> list[int]:
    """Strictly increasing positive epoch numbers (a list, tuple or 1-D array; one int for
    a single boundary) as Python ints, or a ``ConfigError`` naming what was received."""
    epochs = boundaries
    if _is_int(epochs):
        epochs = [epochs]
    elif hasattr(epochs, "tolist") and getattr(epochs, "ndim", None) == 1:
        epochs = epochs.tolist()  # a NumPy array or a tensor
    if (
        not isinstance(epochs, Sequence)
        or isinstance(epochs, str)
        or (not epochs and not allow_empty)
        or any(not _is_int(b) or b <= 0 for b in epochs)
        or list(epochs) != sorted(set(epochs))
    ):
        which = "a list" if allow_empty else "an int step size or a non-empty list"
        raise ConfigError(
            f"{name} boundaries must be {which} of strictly increasing positive epoch numbers; "
            f"received {boundaries!r}."
        )
    return [int(b) for b in epochs]


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def step_decay(boundaries: int | Sequence[int], gamma: float = 0.1) -> Schedule:
    """Multiply the learning rate by ``gamma`` at the given epochs.

    ``boundaries`` a list of epochs (``MultiStepLR``: Mask R-CNN's 0.02 -> 0.002 is
    ``step_decay([8], 0.1)`` with ``lr=0.02``), or an int step size (``StepLR``: every
    ``boundaries`` epochs).
    """
    gamma = _positive("step_decay gamma", gamma)
    if _is_int(boundaries):
        step = _positive("step_decay step_size", boundaries, integer=True)
        return Schedule(
            f"step_decay(step_size={step}, gamma={gamma})",
            lambda opt: lr_scheduler.StepLR(opt, step_size=step, gamma=gamma),
        )
    epochs = _epochs("step_decay", boundaries)
    return Schedule(
        f"step_decay({epochs}, gamma={gamma})",
        lambda opt: lr_scheduler.MultiStepLR(opt, milestones=epochs, gamma=gamma),
    )


def cosine(T_max: int, eta_min: float = 0.0) -> Schedule:  # noqa: N803 (torch's name)
    """Cosine annealing from the optimizer's learning rate to ``eta_min`` over ``T_max``
    epochs (``CosineAnnealingLR``)."""
    T_max = _positive("cosine T_max", T_max, integer=True)  # noqa: N806
    eta_min = _positive("cosine eta_min", eta_min, allow_zero=True)
    return Schedule(
        f"cosine(T_max={T_max}, eta_min={eta_min})",
        lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=T_max, eta_min=eta_min),
    )


def reduce_on_plateau(
    monitor: str = "val_loss",
    factor: float = 0.1,
    patience: int = 10,
    mode: str = "auto",
    min_delta: float = 1e-4,
    cooldown: int = 0,
    min_lr: float = 0.0,
) -> Schedule:
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved by more
    than ``min_delta`` (absolute, as in Keras) for ``patience`` epochs
    (``ReduceLROnPlateau(threshold_mode='abs')``)."""
    if not isinstance(monitor, str) or not monitor:
        raise ConfigError(f"reduce_on_plateau monitor must be a log name; received {monitor!r}.")
    factor = _positive("reduce_on_plateau factor", factor)
    if factor >= 1.0:
        raise ConfigError(f"reduce_on_plateau factor must be < 1; received {factor!r}.")
    patience = _positive("reduce_on_plateau patience", patience, integer=True, allow_zero=True)
    min_delta = _positive("reduce_on_plateau min_delta", min_delta, allow_zero=True)
    cooldown = _positive("reduce_on_plateau cooldown", cooldown, integer=True, allow_zero=True)
    min_lr = _positive("reduce_on_plateau min_lr", min_lr, allow_zero=True)
    direction = resolve_mode(monitor, mode)
    return Schedule(
        f"reduce_on_plateau({monitor!r}, factor={factor}, patience={patience})",
        lambda opt: lr_scheduler.ReduceLROnPlateau(
            opt,
            mode=direction,
            factor=factor,
            patience=patience,
            threshold=min_delta,
            threshold_mode="abs",
            cooldown=cooldown,
            min_lr=min_lr,
        ),
        monitor=monitor,
    )


class WarmupStepDecay:
    """The detection schedule (Goyal et al. 2017; He et al. 2017): the learning rate times
    ``gamma`` for each epoch boundary passed, times a linear warm-up from
    ``warmup_factor`` to 1 over the first ``warmup_iters`` iterations (batches).

    ``fit`` calls :meth:`step_batch` after every batch and :meth:`step` after every epoch;
    ``state_dict`` (iteration, epoch, base rates) is what a resumed run continues from.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        boundaries: Sequence[int] = (),
        gamma: float = 0.1,
        warmup_iters: int = 0,
        warmup_factor: float = 0.001,
    ) -> None:
        self.optimizer = optimizer
        self.boundaries = sorted(int(b) for b in boundaries)
        self.gamma, self.warmup_iters, self.warmup_factor = gamma, warmup_iters, warmup_factor
        self.base_lrs = [float(g.setdefault("initial_lr", g["lr"])) for g in optimizer.param_groups]
        self.last_epoch, self.iteration = 0, 0
        self._apply()

    def factor(self) -> float:
        """The multiplier of the base rates for the next iteration."""
        decay = self.gamma ** sum(self.last_epoch >= b for b in self.boundaries)
        if not self.warmup_iters:
            return decay
        f = self.warmup_factor
        return decay * min(1.0, f + (1 - f) * self.iteration / self.warmup_iters)

    def _apply(self) -> None:
        factor = self.factor()
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def step_batch(self) -> None:
        self.iteration += 1
        self._apply()

    def step(self) -> None:
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_epoch": self.last_epoch,
            "iteration": self.iteration,
            "base_lrs": list(self.base_lrs),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_epoch, self.iteration = int(state["last_epoch"]), int(state["iteration"])
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        self._apply()


def warmup_step_decay(
    boundaries: Sequence[int] = (),
    gamma: float = 0.1,
    warmup_iters: int = 100,
    warmup_factor: float = 0.001,
) -> Schedule:
    """Mask R-CNN's schedule: a linear warm-up over the first ``warmup_iters`` batches
    from ``warmup_factor`` times the learning rate, and a step decay by ``gamma`` at the
    given epochs (``compile(optimizer='sgd', learning_rate=0.02,
    lr_schedule=warmup_step_decay([9], warmup_iters=100))``)."""
    gamma = _positive("warmup_step_decay gamma", gamma)
    warmup_iters = _positive(
        "warmup_step_decay warmup_iters", warmup_iters, integer=True, allow_zero=True
    )
    warmup_factor = _positive("warmup_step_decay warmup_factor", warmup_factor)
    epochs = _epochs("warmup_step_decay", boundaries, allow_empty=True)
    return Schedule(
        f"warmup_step_decay({epochs}, gamma={gamma}, warmup_iters={warmup_iters})",
        lambda opt: WarmupStepDecay(opt, epochs, gamma, warmup_iters, warmup_factor),
    )


def step_batch(scheduler: Any) -> None:
    """After a batch: advance a per-iteration schedule (one with ``step_batch``)."""
    step = getattr(scheduler, "step_batch", None)
    if step is not None:
        step()
        _check_rates(scheduler, "after a batch")


class KerasPlateau:
    """Keras' ``ReduceLROnPlateau`` rule as a scheduler ``fit`` steps at the end of every
    epoch (built by :class:`cnnkit.callbacks.ReduceLROnPlateau`).

    Each epoch, in Keras' order: a running cooldown counts down (and clears the wait);
    an improvement of more than ``min_delta`` over the best value so far resets the
    wait; otherwise, out of cooldown, the wait grows, and when it reaches ``patience``
    every parameter group's rate becomes ``max(lr * factor, min_lr)`` (if it is above
    ``min_lr``) and the cooldown starts. Unlike ``torch``'s ``ReduceLROnPlateau`` (used
    by :func:`reduce_on_plateau`), ``patience=p`` reduces after ``p`` epochs without
    improvement, not ``p + 1``. ``state_dict`` makes it part of training checkpoints.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        monitor: str,
        direction: str,
        factor: float,
        patience: int,
        min_delta: float,
        cooldown: int,
        min_lr: float,
    ) -> None:
        self.optimizer = optimizer
        self.cnnkit_monitor = monitor
        self.direction = direction
        self.factor, self.patience, self.min_delta = factor, patience, abs(min_delta)
        self.cooldown, self.min_lr = cooldown, min_lr
        self.best: float | None = None
        self.wait = 0
        self.cooldown_counter = 0
        self.reductions: list[tuple[int, float]] = []  # (epoch count, new lr)
        self.epochs_seen = 0

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.direction == "min":
            return value + self.min_delta < self.best
        return value - self.min_delta > self.best

    def step(self, value: float) -> None:
        value = float(value)
        self.epochs_seen += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(value):
            self.best = value
            self.wait = 0
            return
        if self.cooldown_counter > 0:
            return
        self.wait += 1
        if self.wait < self.patience:
            return
        reduced = False
        for group in self.optimizer.param_groups:
            old = float(group["lr"])
            if old > self.min_lr * (1 + 1e-6):  # at min_lr (up to float32 rounding): stay
                group["lr"] = max(old * self.factor, self.min_lr)
                reduced = True
        if reduced:
            self.reductions.append((self.epochs_seen, current_lr(self.optimizer)))
            self.cooldown_counter = self.cooldown
            self.wait = 0

    _STATE = ("best", "wait", "cooldown_counter", "epochs_seen")

    def state_dict(self) -> dict[str, Any]:
        state = {k: getattr(self, k) for k in self._STATE}
        state["reductions"] = [list(r) for r in self.reductions]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in self._STATE:
            if key in state:
                setattr(self, key, state[key])
        self.reductions = [(int(e), float(lr)) for e, lr in state.get("reductions", [])]


def step_scheduler(scheduler: Any, logs: dict[str, float]) -> None:
    """One end-of-epoch step: plateau schedulers get the monitored value from ``logs``."""
    if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau | KerasPlateau):
        monitor = getattr(scheduler, "cnnkit_monitor", "val_loss")
        if monitor not in logs:
            raise ConfigError(
                f"The on-plateau schedule monitors {monitor!r}, which is not among this "
                f"epoch's logs {sorted(logs)}; pass validation data or "
                "reduce_on_plateau(monitor='loss')."
            )
        scheduler.step(logs[monitor])
    else:
        scheduler.step()
    _check_rates(scheduler, "at the end of an epoch")


def _check_rates(scheduler: Any, when: str) -> None:
    """A schedule (a custom one above all) never leaves a negative or NaN rate behind:
    torch's optimizers would silently climb the loss with it."""
    optimizer = getattr(scheduler, "optimizer", None)
    if optimizer is not None:
        step = getattr(scheduler, "last_epoch", None)
        at = f" (schedule epoch {step})" if isinstance(step, int) else ""
        check_group_rates(optimizer, f"the optimizer {when}{at}, set by {type(scheduler).__name__}")


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate of the optimizer's first parameter group, as a float."""
    return float(optimizer.param_groups[0]["lr"])
