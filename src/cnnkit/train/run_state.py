"""Where ``fit`` is inside a run, so a checkpoint can be written (and resumed) mid-epoch.

:class:`Progress` follows the epoch, the batches done in it, the global step, the
running loss sum, the streaming metrics' state and the global torch RNG state at the
epoch's start. :meth:`Progress.state` is what a training checkpoint stores as its
``position``; resuming from it (:meth:`Progress.begin_epoch`, :func:`epoch_batches`)
continues inside the epoch with the same batches in the same order, so in
deterministic CPU mode the run ends bit-identical to an uninterrupted one.

:func:`sync_newest_checkpoint` is for multi-node runs without a shared filesystem:
every node keeps its own checkpoint folder; at resume the rank holding the newest
checkpoint sends its files to every rank whose node has an older one (or none), and
they store them in their own folder (verified by SHA-256 when loaded).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger("cnnkit.train")

__all__ = ["Progress", "epoch_batches", "sync_newest_checkpoint"]


class Progress:
    """The position of a running ``fit``: ``epoch`` (0-based), ``step`` (batches done in
    it), ``global_step`` (optimizer steps since the run began, resumed ones included)."""

    def __init__(self, global_step: int = 0, epoch: int = 0) -> None:
        self.epoch, self.step, self.global_step, self.seen = int(epoch), 0, int(global_step), 0
        self.total_loss: torch.Tensor | None = None
        self.epoch_rng: torch.Tensor | None = None
        self.metrics: Sequence[Any] = ()
        #: the task whose running sums (e.g. Mask R-CNN's named losses) a checkpoint keeps
        self.task: Any = None
        #: the learning rate the epoch began with (logged as the epoch's rate)
        self.learning_rate: float | None = None

    def begin_epoch(
        self,
        epoch: int,
        metrics: Sequence[Any],
        total_loss: torch.Tensor,
        resume_at: dict[str, Any] | None = None,
    ) -> tuple[int, int]:
        """Start ``epoch``; with a mid-epoch ``resume_at`` of this epoch, put its loss sum
        into ``total_loss`` and its metric states back. Returns ``(batches done, seen)``."""
        self.epoch, self.step, self.seen = epoch, 0, 0
        self.epoch_rng = torch.get_rng_state()  # a DataLoader draws its order from it
        self.metrics, self.total_loss = metrics, total_loss
        if not resume_at or resume_at.get("epoch") != epoch or not resume_at.get("step"):
            return 0, 0
        total_loss.copy_(resume_at["total_loss"].to(total_loss.dtype))
        saved = resume_at.get("metrics") or []
        if len(saved) != len(metrics):
            log.warning("the checkpoint holds %d metric states for %d metrics", len(saved),
                        len(metrics))  # fmt: skip
        for m, state in zip(metrics, saved):
            if state is None:
                log.warning("%s keeps no state; this epoch's value counts from the resume", m)
                continue
            for name, value in state.items():
                setattr(m, name, value.to(getattr(m, name).device))
        if self.task is not None:
            self.task.restore_running_state(resume_at.get("task") or {}, total_loss.device)
        self.epoch_rng = resume_at["epoch_rng"]
        self.step, self.seen = int(resume_at["step"]), int(resume_at["seen"])
        return self.step, self.seen

    def after_step(self, step: int, seen: int) -> None:
        self.step, self.seen = step, seen
        self.global_step += 1

    def end_epoch(self) -> None:
        self.epoch, self.step, self.seen = self.epoch + 1, 0, 0
        self.total_loss = self.epoch_rng = None

    def state(self) -> dict[str, Any]:
        """The checkpoint's ``position`` (tensors are stored with the RNG states)."""
        out: dict[str, Any] = {
            "epoch": self.epoch,
            "step": self.step,
            "global_step": self.global_step,
        }
        if self.step:
            out["seen"] = self.seen
            out["total_loss"] = self.total_loss.detach().to("cpu", torch.float64)
            out["epoch_rng"] = self.epoch_rng
            out["metrics"] = [_metric_state(m) for m in self.metrics]
            if self.task is not None:
                out["task"] = self.task.running_state()
            if self.learning_rate is not None:
                out["learning_rate"] = float(self.learning_rate)
        return out


def _metric_state(metric: Any) -> dict[str, torch.Tensor] | None:
    names = getattr(metric, "_state_names", None)
    if names is None:
        return None
    return {n: getattr(metric, n).detach().to("cpu").clone() for n in names}


def epoch_batches(
    source: Any, batch_size: int, shuffle: bool, generator: Any, skip: int, progress: Progress
) -> Iterator[tuple]:
    """The epoch's batches after the first ``skip`` ones, in the interrupted run's order.

    Sources that draw their order from ``generator`` (arrays, Datasets, sharded sources)
    start at batch ``skip`` directly; a user's DataLoader is started and its done
    batches are dropped. Either is started from the global RNG state the interrupted
    run had at the epoch's start (a DataLoader draws its order and worker seeds from
    it when it starts), then the current state is put back.
    """
    if not skip:
        return iter(source.batches(batch_size, shuffle, generator))
    now = torch.get_rng_state()
    torch.set_rng_state(progress.epoch_rng)
    if getattr(source, "starts_anywhere", False):
        it = iter(source.batches(batch_size, shuffle, generator, start=skip))  # started here
    else:
        it = iter(source.batches(batch_size, shuffle, generator))
        for _ in range(skip):
            next(it, None)
    torch.set_rng_state(now)
    return it


# ------------------------------------------------------------------ multi-node resume


def _key(folder: Path | None) -> int:
    """How far the checkpoint in ``folder`` is (larger = newer); -1 without one."""
    from cnnkit.train.checkpoint import _read_manifest

    if folder is None:
        return -1
    try:
        training = _read_manifest(folder)["training"]
    except Exception:  # noqa: BLE001 - damaged or missing: this node has nothing to send
        return -1
    pos = training.get("position") or {}
    if "global_step" in pos:
        return int(pos["global_step"])
    return (int(training.get("epoch", -1)) + 1) * 2**31


def _send_bytes(data: bytes | None, src: int, device: torch.device) -> bytes:
    size = torch.tensor([len(data) if data is not None else 0], dtype=torch.int64, device=device)
    dist.broadcast(size, src=src)
    if data is not None:
        buf = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device)
    else:
        buf = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    dist.broadcast(buf, src=src)
    return bytes(buf.cpu().numpy().tobytes())


def sync_newest_checkpoint(ctx: Any, path: str | Path) -> bool:
    """Give every node the newest checkpoint under ``path`` (see the module doc).

    A collective: every rank calls it with the same ``path`` (each reads its own node's
    folder). Returns whether this rank received files.
    """
    from cnnkit.train.checkpoint import (
        CONFIG,
        _atomic_write,
        _read_manifest,
        _referenced,
        find_checkpoint,
    )  # fmt: skip

    if not ctx.enabled:
        return False
    try:
        folder: Path | None = find_checkpoint(path)
    except Exception:  # noqa: BLE001 - no checkpoint on this node
        folder = None
    device = ctx._comm_device
    keys = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(ctx.world_size)]
    dist.all_gather(keys, torch.tensor([_key(folder)], dtype=torch.int64, device=device))
    values = [int(k.item()) for k in keys]
    newest = max(values)
    if newest < 0 or min(values) == newest:
        return False
    src = values.index(newest)
    mine = values[ctx.rank]
    header = None
    if ctx.rank == src:
        assert folder is not None
        manifest = _read_manifest(folder)  # bounded, checked
        names = sorted(_referenced(manifest))
        rel = "." if folder == Path(path) else folder.name
        header = json.dumps({"dir": rel, "names": names}).encode()
    info = json.loads(_send_bytes(header, src, device).decode())
    target = Path(path) / info["dir"] if info["dir"] != "." else Path(path)
    if ctx.rank != src and mine < newest:
        target.mkdir(parents=True, exist_ok=True)
    for name in [*info["names"], CONFIG]:
        if Path(name).name != name:
            raise ValueError(f"refusing the file name {name!r} sent with a checkpoint")
        data = (folder / name).read_bytes() if ctx.rank == src else None  # type: ignore[operator]
        received = _send_bytes(data, src, device)
        if ctx.rank != src and mine < newest:
            _atomic_write(target / name, lambda tmp, b=received: Path(tmp).write_bytes(b))
    if mine < newest:
        log.info(
            "rank %d received the newest checkpoint (from rank %d) into %s", ctx.rank, src, target
        )
    return mine < newest
