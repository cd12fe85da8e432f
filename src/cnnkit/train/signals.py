"""Stopping ``fit`` cleanly when the process is asked to stop (SIGTERM, SIGINT / Ctrl-C).

Schedulers (SLURM, Kubernetes, spot VMs, ``torchrun``) end a job with SIGTERM, wait,
then send SIGKILL. While ``fit`` runs, :class:`StopSignals` turns the first SIGTERM or
SIGINT into a request: the current step finishes, ``ModelCheckpoint`` writes the
position reached (atomically), one line says where and how to resume, and ``fit``
raises :class:`Preempted`, a ``SystemExit`` with status 143 (SIGTERM) or 130 (SIGINT).
A second signal ends the process at once (status 128 + the signal number), except one
that arrives within :data:`DUPLICATE_WINDOW_S` of the first: a job's process group and
``torchrun`` often deliver the same stop twice.

Under ``torchrun`` every rank checks the request with one ``all_reduce`` of a single
integer per step (MAX), so all ranks stop after the same step even when only some of
them were signalled. Handlers are only installed in the main thread; the previous
handlers are put back when ``fit`` returns.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger("cnnkit.train")

__all__ = [
    "DUPLICATE_WINDOW_S",
    "Preempted",
    "StopSignals",
    "catches_stop_signals",
    "exit_code",
    "preempt",
]

#: a second signal this soon after the first is taken as the same stop delivered twice
DUPLICATE_WINDOW_S = 1.0
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_code(signum: int) -> int:
    """The shell's status for a process ended by ``signum``: 143 for SIGTERM, 130 for SIGINT."""
    return 128 + int(signum)


class Preempted(SystemExit):
    """Raised by ``fit`` after a SIGTERM/SIGINT, once the checkpoint is written.

    A ``SystemExit``: uncaught, the process exits with :attr:`code` (143 or 130) and no
    traceback. ``checkpoint`` is the folder written (None without a ``ModelCheckpoint``),
    ``epoch`` (0-based) and ``step`` (batches done in it) where training stopped.
    """

    def __init__(
        self, signum: int, message: str, checkpoint: Any = None, epoch: int = 0, step: int = 0
    ) -> None:
        super().__init__(exit_code(signum))
        self.signum = int(signum)
        self.message = message
        self.checkpoint = checkpoint
        self.epoch, self.step = epoch, step

    def __str__(self) -> str:
        return self.message


class StopSignals:
    """Context manager: the first SIGTERM/SIGINT sets :attr:`signum`; see the module doc.

    ``ctx`` is the workflow's :class:`~cnnkit.train.distributed.DistContext`;
    :meth:`should_stop` must then be called by every rank at the same points.
    """

    def __init__(self, ctx: Any = None) -> None:
        self.ctx = ctx
        self.signum: int | None = None
        self._first_at = 0.0
        self._previous: dict[int, Any] = {}
        self._flag: torch.Tensor | None = None

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                try:
                    self._previous[sig] = signal.signal(sig, self._handle)
                except (ValueError, OSError):  # not allowed here: keep the default
                    pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            try:
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
            except (ValueError, OSError):
                pass
        self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum, self._first_at = signum, time.monotonic()
            name = signal.Signals(signum).name
            os.write(2, f"cnnkit: {name} received; stopping after this step\n".encode())
            return
        if time.monotonic() - self._first_at < DUPLICATE_WINDOW_S:
            return  # the same stop, delivered to the process group and forwarded
        os.write(2, b"cnnkit: second signal; exiting now without a checkpoint\n")
        os._exit(exit_code(signum))

    def should_stop(self) -> bool:
        """Whether to stop now; under torchrun the same answer on every rank (a collective)."""
        ctx = self.ctx
        if ctx is None or not ctx.enabled:
            return self.signum is not None
        if self._flag is None:
            self._flag = torch.zeros(1, dtype=torch.int64, device=ctx._comm_device)
        self._flag.fill_(self.signum or 0)
        dist.all_reduce(self._flag, op=dist.ReduceOp.MAX)
        agreed = int(self._flag.item())
        if agreed and self.signum is None:
            self.signum = agreed  # another rank was signalled
        return agreed != 0


def preempt(workflow: Any, stop: StopSignals, callbacks: Any, progress: Any) -> Preempted:
    """After an agreed stop: let the callbacks write their checkpoint (``on_interrupt``),
    wait for every rank, log one line saying where and how to resume; returns the
    :class:`Preempted` for ``fit`` to raise."""
    written = callbacks.on_interrupt(progress.epoch, progress.step)
    ctx = workflow._dist
    ctx.barrier()  # no rank exits (and gets the job torn down) before the write is done
    name = signal.Signals(stop.signum or signal.SIGTERM).name
    where = (
        f"epoch {progress.epoch + 1}, step {progress.step}"
        if progress.step
        else f"the end of epoch {progress.epoch}"
    )
    if written:
        how = getattr(workflow, "resume_hint", None) or f"fit(..., resume_from={str(written)!r})"
        text = f"stopped by {name} at {where}; checkpoint in {written}; resume with {how}"
    else:
        text = f"stopped by {name} at {where}; no ModelCheckpoint callback, nothing was saved"
    if ctx.is_main:
        log.warning(text)
    return Preempted(stop.signum or signal.SIGTERM, text, written, progress.epoch, progress.step)


def catches_stop_signals(fit: Any) -> Any:
    """Decorator for ``fit``: :class:`StopSignals` installed while it runs (as
    ``self._stop_signals``), the previous handlers back however it ends."""

    @functools.wraps(fit)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with StopSignals() as stop:
            self.__dict__["_stop_signals"] = stop
            try:
                return fit(self, *args, **kwargs)
            finally:
                self.__dict__.pop("_stop_signals", None)

    return wrapper
