"""Device and precision choices: ``device='auto'``, ``precision='auto'``.

``precision='auto'`` picks bf16 autocast on CPUs with native bf16 matrix units
(AMX-BF16 or AVX-512-BF16), AMP (fp16, or bf16 where supported) on CUDA, and fp32
everywhere else. Losses and metrics are computed in fp32.

Without native bf16 units, bf16 autocast is emulated and slower than fp32: on an AVX2-only
AMD EPYC a 512x512 bf16 matmul ran at about 1 GFLOP/s against about 70 in fp32, and
training the decks' CNNs 10-20x slower (``bench/run.py``, BENCHMARKS.md), which is why
``'auto'`` keeps fp32 there. ``precision='bf16'`` still forces it.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass

import torch

from cnnkit._core.errors import ConfigError, check_choice

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


#: environment variable: ``1`` makes cnnkit decide as on a CPU with native bf16 (tests)
ASSUME_NATIVE_BF16 = "CNNKIT_ASSUME_NATIVE_BF16"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX-BF16 or AVX-512-BF16).

    ``CNNKIT_ASSUME_NATIVE_BF16=1`` answers yes on any CPU (``0`` answers no), so the
    decisions of an AMX machine (``precision='auto'`` -> bf16) can be tested anywhere;
    bf16 is then emulated, slowly, where the CPU lacks it.
    """
    forced = os.environ.get(ASSUME_NATIVE_BF16, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return _cpu_flags_have_bf16()


@functools.lru_cache(maxsize=1)
def _cpu_flags_have_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"amx_bf16", "avx512_bf16"} & flags)
    except OSError:
        pass
    return False


DEVICE_CHOICES = "'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``'auto'`` -> CUDA when available, else CPU; other strings must name a device here.

    Raises ``ConfigError`` naming the value and the choices for a string that is not a
    device (``'gpu'``, ``'cuda:x'``) or a CUDA device this machine does not have.
    """
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise ConfigError(
            f"device must be {DEVICE_CHOICES}; received {device!r} ({type(device).__name__})."
        )
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(
            f"device {device!r} is not a device; expected {DEVICE_CHOICES}."
        ) from None
    if resolved.type == "cuda" and (
        not torch.cuda.is_available() or (resolved.index or 0) >= torch.cuda.device_count()
    ):
        raise ConfigError(
            f"device {device!r}: no such CUDA device here ({torch.cuda.device_count()} found); "
            "use 'cpu' or 'auto'."
        )
    return resolved


@dataclass(frozen=True)
class Precision:
    """What autocast does: ``dtype`` is None for fp32."""

    name: str
    device_type: str
    dtype: torch.dtype | None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    @property
    def needs_grad_scaler(self) -> bool:
        return self.dtype is torch.float16 and self.device_type == "cuda"


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """Turn ``'auto'|'fp32'|'bf16'|'fp16'`` into what autocast will do on ``device``."""
    check_choice("precision", precision, PRECISIONS)
    dev = device.type
    if precision == "auto":
        if dev == "cuda":
            bf16 = torch.cuda.is_bf16_supported()
            return Precision(
                "bf16" if bf16 else "fp16", dev, torch.bfloat16 if bf16 else torch.float16
            )
        if dev == "cpu" and cpu_has_native_bf16():
            return Precision("bf16", dev, torch.bfloat16)
        return Precision("fp32", dev, None)
    if precision == "fp32":
        return Precision("fp32", dev, None)
    if precision == "bf16":
        return Precision("bf16", dev, torch.bfloat16)
    return Precision("fp16", dev, torch.float16)
