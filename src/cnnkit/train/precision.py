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
from dataclasses import dataclass

import torch

from cnnkit._core.errors import check_choice

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX-BF16 or AVX-512-BF16)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"amx_bf16", "avx512_bf16"} & flags)
    except OSError:
        pass
    return False


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``'auto'`` -> CUDA when available, else CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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
