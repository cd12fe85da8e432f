"""The CPU fast path: process settings that make small-model training fast and steady.

``Model.compile`` calls :func:`configure` once per process (``compile(fast_path=False)``
or the environment variable ``CNNKIT_FASTPATH=0`` switch it off). What it does:

* **allocator** (glibc only): raises ``malloc``'s mmap threshold to its maximum
  (32 MiB) and the trim threshold to 256 MiB through ``mallopt`` (ctypes). With the
  defaults, the large activation tensors are mapped and unmapped from the OS every step
  (thousands of page faults per step, a large share of the time in the kernel, step times
  jumping between two levels). Elsewhere (musl, macOS, Windows) it is a no-op, logged at
  DEBUG. It is process-wide and cannot be undone; the same settings can be given to any
  process without cnnkit as ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=268435456``.
* **flush_denormal**: ``torch.set_flush_denormal(True)``: denormal floats (near-zero
  losses and gradients) are treated as zero instead of taking the CPU's slow path.
  :func:`restore` puts the previous state back.

The optimizer side of the fast path (Adam/AdamW ``fused=True`` on CPU, else
``foreach``) is chosen in :func:`make_adam`. Nothing here changes results beyond
denormal flushing (values below 1.2e-38 in fp32).
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions: the allocator can be tuned (tune_allocator)
# before torch is loaded, e.g. by loading this file alone at process start.
log = logging.getLogger("cnnkit.train")

#: glibc's mallopt parameter numbers (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: the largest mmap threshold glibc accepts on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 256 * 1024 * 1024
ENV_SWITCH = "CNNKIT_FASTPATH"


@dataclass
class FastPathState:
    """What :func:`configure` applied in this process (``runtime_choices['fast_path']``)."""

    enabled: bool = False
    allocator: str = "unchanged"
    flush_denormal: bool = False
    previous_flush_denormal: bool | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "allocator": self.allocator,
            "flush_denormal": self.flush_denormal,
        }


_STATE = FastPathState()


def enabled_by_env() -> bool:
    """False when ``CNNKIT_FASTPATH`` is ``0``, ``false``, ``no`` or ``off``."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def flush_denormal_enabled() -> bool:
    """Whether denormals are flushed now, probed: ``1e-39 * 2`` is 0 with flushing on."""
    import torch

    probe = torch.tensor([1e-39], dtype=torch.float32)
    return bool((probe * 2.0)[0] == 0)


def _libc() -> ctypes.CDLL | None:
    """The C library, when it is glibc (the only one whose ``mallopt`` we know)."""
    if platform.system() != "Linux":
        return None
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        version = None
    if not version:
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def tune_allocator(
    mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD
) -> str:
    """``mallopt`` the mmap and trim thresholds; returns what was done (a short string)."""
    libc = _libc()
    if libc is None:
        log.debug("fast path: not glibc, allocator left unchanged")
        return "unchanged (not glibc)"
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok_mmap = mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
    ok_trim = mallopt(M_TRIM_THRESHOLD, int(trim_threshold)) == 1
    if not (ok_mmap and ok_trim):
        log.debug("fast path: mallopt refused (mmap %s, trim %s)", ok_mmap, ok_trim)
    parts = []
    if ok_mmap:
        parts.append(f"mmap_threshold={mmap_threshold}")
    if ok_trim:
        parts.append(f"trim_threshold={trim_threshold}")
    return "glibc " + ", ".join(parts) if parts else "unchanged (mallopt refused)"


def configure(
    allocator: bool = True, flush_denormal: bool = True, *, force: bool = False
) -> FastPathState:
    """Apply the fast path once per process (again with ``force=True``).

    Returns the process-wide :class:`FastPathState`. Does nothing when the environment
    variable ``CNNKIT_FASTPATH`` is ``0``.
    """
    import torch

    if not enabled_by_env():
        if _STATE.enabled:
            log.debug("fast path: %s=0 but it was already applied in this process", ENV_SWITCH)
        else:
            log.debug("fast path: disabled by %s=0", ENV_SWITCH)
        return _STATE
    if _STATE.enabled and not force:
        # the flag is per thread and other libraries may reset the FPU state: set it again
        if _STATE.flush_denormal and not flush_denormal_enabled():
            torch.set_flush_denormal(True)
        return _STATE
    if allocator:
        _STATE.allocator = tune_allocator()
    if flush_denormal:
        if _STATE.previous_flush_denormal is None:
            _STATE.previous_flush_denormal = flush_denormal_enabled()
        _STATE.flush_denormal = bool(torch.set_flush_denormal(True))
        if not _STATE.flush_denormal:
            log.debug("fast path: this CPU cannot flush denormals")
    _STATE.enabled = True
    log.debug("fast path: %s", _STATE.as_dict())
    return _STATE


def restore() -> None:
    """Undo what can be undone: the flush-denormal state before :func:`configure`."""
    import torch

    if _STATE.previous_flush_denormal is not None:
        torch.set_flush_denormal(_STATE.previous_flush_denormal)
        _STATE.flush_denormal = _STATE.previous_flush_denormal
        _STATE.previous_flush_denormal = None
    _STATE.enabled = False


def state() -> FastPathState:
    """The fast-path state of this process."""
    return _STATE


def make_adam(
    params: list, lr: float, *, weight_decay_decoupled: bool = False, fused: bool = True
) -> torch.optim.Optimizer:
    """Adam (or AdamW) with ``fused=True`` where this torch supports it for the params'
    device and dtypes (CPU and CUDA in torch >= 2.4), else ``foreach=True``."""
    import torch

    cls = torch.optim.AdamW if weight_decay_decoupled else torch.optim.Adam
    if fused and params and all(p.is_floating_point() for p in params):
        try:
            return cls(params, lr=lr, fused=True)
        except (RuntimeError, ValueError, TypeError) as err:
            log.debug("fused %s unavailable (%s); using foreach", cls.__name__, err)
    return cls(params, lr=lr, foreach=True)


def optimizer_description(optimizer: torch.optim.Optimizer) -> str:
    """``'Adam(fused)'``, ``'SGD(foreach)'``, ... for the run log."""
    group = optimizer.param_groups[0] if optimizer.param_groups else {}
    impl = "fused" if group.get("fused") else "foreach" if group.get("foreach") else "for-loop"
    return f"{type(optimizer).__name__}({impl})"
