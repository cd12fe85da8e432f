"""A Keras-like progress bar, throttled so it never costs a host sync per step."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except (ValueError, OSError):  # a closed stream
        return False


class ProgressBar:
    """``Epoch 1/3  12/57 [====>.....] - ETA 0:03 - loss: 0.4123 - 850 samples/s``.

    ``verbose=1`` redraws one line on a terminal; when the stream is not a terminal (a log
    file, a pipe) it writes what ``verbose=2`` writes: one plain line per epoch.

    ``update`` is cheap; values that need a device sync are only read when the line is
    redrawn (at most every ``interval`` seconds) through the ``values`` callable.
    """

    def __init__(
        self,
        total: int,
        epoch: int,
        epochs: int,
        verbose: int = 1,
        stream: TextIO | None = None,
        interval: float = 0.25,
        width: int = 24,
    ) -> None:
        self.total = max(total, 1)
        self.epoch, self.epochs = epoch, epochs
        self.verbose = verbose
        self.stream = stream or sys.stdout
        self.interval = interval
        self.width = width
        if verbose == 1 and not _is_terminal(self.stream):
            verbose = 2  # logs and pipes get one plain line per epoch, not \r-joined redraws
        self.verbose = verbose
        self.start = time.perf_counter()
        self.last_draw = 0.0
        self.samples = 0
        if verbose == 1:
            self.stream.write(f"Epoch {epoch}/{epochs}\n")

    def update(self, step: int, batch_samples: int, values=None) -> None:
        self.samples += batch_samples
        if self.verbose != 1:
            return
        now = time.perf_counter()
        if now - self.last_draw < self.interval and step < self.total:
            return
        self.last_draw = now
        self._draw(step, values() if values else {})

    def _draw(self, step: int, logs: dict[str, float], final: bool = False) -> None:
        elapsed = time.perf_counter() - self.start
        done = int(self.width * step / self.total)
        bar = (
            "=" * max(done - 1, 0) + (">" if done < self.width else "=") + "." * (self.width - done)
        )
        rate = self.samples / elapsed if elapsed > 0 else 0.0
        timing = (
            f"{_fmt_time(elapsed)}"
            if final
            else f"ETA {_fmt_time(elapsed / max(step, 1) * (self.total - step))}"
        )
        parts = [f"{step}/{self.total} [{bar[: self.width]}] - {timing}"]
        parts += [f"{k}: {v:.4f}" for k, v in logs.items()]
        parts.append(f"{rate:,.0f} samples/s")
        self.stream.write("\r" + " - ".join(parts) + ("\n" if final else ""))
        self.stream.flush()

    def finish(self, logs: dict[str, float]) -> None:
        if self.verbose == 1:
            self._draw(self.total, logs, final=True)
        elif self.verbose == 2:
            elapsed = time.perf_counter() - self.start
            items = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
            self.stream.write(
                f"Epoch {self.epoch}/{self.epochs} - {_fmt_time(elapsed)} - {items}\n"
            )
            self.stream.flush()
