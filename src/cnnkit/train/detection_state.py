"""Training checkpoints of :func:`cnnkit.train.detection.fit_detection` runs.

They are :mod:`cnnkit.train.checkpoint`'s training checkpoints (safetensors + JSON, a
SHA-256 per tensor file, atomic writes, the previous good checkpoint kept as
``previous.json``): the model's weights (``cnnkit.load`` reads them), the SGD state with
its momentum buffers, the history, the global RNG states and, in the ``scheduler`` slot,
:class:`DetectionSchedule`: the iteration count that places the warm-up and the generator
that shuffles and flips the images. Nothing is pickled.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from cnnkit._core.errors import CnnkitError
from cnnkit.train.checkpoint import (
    CONFIG,
    find_checkpoint,
    read_checkpoint_info,
    resume_training,
    save_training_state,
)

__all__ = [
    "DetectionSchedule",
    "LAST",
    "check_checkpoint_dir",
    "restore",
    "save",
    "warn_if_changed",
]

log = logging.getLogger("cnnkit.train")

#: the sub-folder of ``checkpoint_dir`` that holds the latest checkpoint
LAST = "last"


class DetectionSchedule:
    """``fit_detection``'s learning rate, a step decay by ``gamma`` after each epoch in
    ``lr_steps`` times a linear warm-up from ``lr / 1000`` over ``warmup_iters``
    iterations, and ``generator``, which draws each epoch's order and flips.

    ``state_dict()`` (the iteration count and the generator state) is what a resumed run
    needs to continue both exactly where the interrupted one stopped.
    """

    def __init__(
        self, lr: float, lr_steps: Sequence[int], gamma: float, warmup_iters: int, seed: int
    ) -> None:
        self.lr, self.gamma, self.warmup_iters = lr, gamma, warmup_iters
        self.steps = sorted(int(s) for s in lr_steps)
        self.iteration = 0
        self.generator = torch.Generator().manual_seed(seed)

    def base_lr(self, epoch: int) -> float:
        """The learning rate of ``epoch`` (0-based) after the warm-up."""
        return self.lr * self.gamma ** sum(epoch >= s for s in self.steps)

    def current_lr(self, epoch: int) -> float:
        """The learning rate of the next iteration, in ``epoch``."""
        if not self.warmup_iters:
            return self.base_lr(epoch)
        warm = min(1.0, 0.001 + (1 - 0.001) * self.iteration / self.warmup_iters)
        return self.base_lr(epoch) * warm

    def state_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        self.generator.set_state(state["generator"].to(torch.uint8))


def _workflow(model: torch.nn.Module, optimizer, schedule: DetectionSchedule) -> Any:
    # the attributes checkpoint.py reads from a cnnkit.Model
    return SimpleNamespace(_net=model, optimizer=optimizer, scheduler=schedule)


def check_checkpoint_dir(checkpoint_dir: str | os.PathLike, resume_from: Any) -> Path:
    """``checkpoint_dir/last``, refusing to overwrite an earlier run's checkpoint there
    unless this run resumes from it."""
    folder = Path(checkpoint_dir) / LAST
    if not (folder / CONFIG).exists():
        return folder
    if resume_from is not None:
        try:
            if find_checkpoint(resume_from).resolve() == folder.resolve():
                return folder
        except CnnkitError:
            pass
    raise CnnkitError(
        f"{folder} already holds a checkpoint of an earlier run; pass "
        f"resume_from={str(checkpoint_dir)!r} to continue it, or another checkpoint_dir."
    )


def save(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: DetectionSchedule,
    epoch: int,
    history: dict[str, list[float]],
    extra: dict[str, Any] | None = None,
    position: dict[str, Any] | None = None,
) -> Path:
    """Write the state after ``epoch`` (0-based) into ``folder``, keeping the one before;
    ``position``: where inside the next epoch (its order, iterations done, loss sums)."""
    hist = SimpleNamespace(history=history, epoch=list(range(epoch + 1)))
    return save_training_state(
        folder,
        _workflow(model, optimizer, schedule),
        epoch,
        hist,
        overwrite=True,
        extra=extra,
        position=position,
    )


def restore(
    path: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: DetectionSchedule,
) -> tuple[int, dict[str, list[float]], dict[str, Any] | None]:
    """Load the last good checkpoint under ``path`` (``checkpoint_dir`` or its ``last/``;
    the previous one if the last is damaged) into ``model``, ``optimizer``, ``schedule`` and
    the global RNGs; returns the epoch to continue from, the history so far and the
    mid-epoch position (None at an epoch's end). Without a checkpoint yet: ``(0, {}, None)``."""
    hist = SimpleNamespace(history={}, epoch=[])
    workflow = _workflow(model, optimizer, schedule)
    start = resume_training(workflow, path, hist)
    history = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
    return start or 0, history, workflow._resume_position


def warn_if_changed(path: str | os.PathLike, now: dict[str, Any]) -> None:
    """Warn when a resumed run's data size, batch size or seed differ from the saved run's:
    it then continues, but no longer matches an uninterrupted run."""
    try:
        saved = read_checkpoint_info(find_checkpoint(path)).get("extra", {})
    except CnnkitError:  # resumed from the previous checkpoint; its twin is damaged
        return
    changed = {k: (saved[k], v) for k, v in now.items() if k in saved and saved[k] != v}
    if changed:
        log.warning(
            "resuming %s with other settings than the interrupted run (%s); the result will "
            "not equal an uninterrupted run",
            path,
            ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in changed.items()),
        )
