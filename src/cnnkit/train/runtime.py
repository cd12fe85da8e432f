"""What a model runs with, and how its outputs reach the user.

The numerics policy: mixed precision (bf16/fp16 autocast) is for the body of the network;
what a user reads is fp32. :func:`activated` applies a model's final softmax/sigmoid in
fp32 to the logits, whatever precision produced them. :func:`runtime_record` is what
``model.save`` writes into model.json (precision, memory format, input shape) and
:func:`restore_runtime` what ``cnnkit.load`` restores, so a reloaded model predicts
exactly what it predicted before saving.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from cnnkit._core.errors import CnnkitError
from cnnkit.train.heads import OutputHead
from cnnkit.train.precision import resolve_precision

log = logging.getLogger("cnnkit.train")

#: memory formats by the names model.json records
MEMORY_FORMATS = {
    "contiguous": None,
    "channels_last": torch.channels_last,
    "channels_last_3d": torch.channels_last_3d,
}
#: precisions a saved model may record (what ``'auto'`` resolved to when it was compiled)
SAVED_PRECISIONS = ("fp32", "bf16", "fp16")


def activated(head: OutputHead, out: torch.Tensor) -> torch.Tensor:
    """``out`` (Tensor[N, K, ...]) as a user reads it: float32, with the head's final
    activation applied in fp32 (to the logits of a switchable head, to the renormalised
    log-probabilities of one that could not be switched)."""
    return head.activate(head.logits(out))  # no activation: the float32 output itself


def runtime_record(workflow: Any) -> dict[str, Any] | None:
    """``{'precision', 'memory_format', 'input_shape'}`` of a compiled (or loaded) model;
    None when it has never been compiled."""
    precision = getattr(workflow, "precision", None)
    if precision is None:
        return None
    fmt = workflow._memory_format
    record: dict[str, Any] = {
        "precision": precision.name,
        "memory_format": str(fmt).replace("torch.", "") if fmt else "contiguous",
    }
    if workflow._input_shape:
        record["input_shape"] = list(workflow._input_shape)
    return record


def restore_runtime(workflow: Any, record: dict[str, Any] | None, device: torch.device) -> None:
    """Make ``workflow`` run on ``device`` as ``record`` says (fp32, contiguous without one).

    A model trained with fp16 autocast on CUDA predicts in fp32 on a CPU (logged).
    """
    record = record or {}
    name = record.get("precision", "fp32")
    if name not in SAVED_PRECISIONS:
        raise CnnkitError(
            f"The saved model records precision {name!r}; expected one of {SAVED_PRECISIONS}."
        )
    if name == "fp16" and device.type != "cuda":
        log.warning("the model was trained with fp16 on CUDA; on %s it predicts in fp32", device)
        name = "fp32"
    workflow.precision = resolve_precision(name, device)
    fmt_name = record.get("memory_format", "contiguous")
    if fmt_name not in MEMORY_FORMATS:
        raise CnnkitError(
            f"The saved model records memory format {fmt_name!r}; expected one of "
            f"{tuple(MEMORY_FORMATS)}."
        )
    fmt = MEMORY_FORMATS[fmt_name]
    if fmt is not None:
        workflow._net.to(memory_format=fmt)
    workflow._memory_format = fmt
    shape = record.get("input_shape")
    if isinstance(shape, list) and shape and all(isinstance(d, int) and d > 0 for d in shape):
        workflow._input_shape = tuple(shape)
    choices = workflow.__dict__.setdefault("runtime_choices", {})
    choices.update({"device": str(device), "precision": name, "memory_format": fmt_name})


def describe_choices(choices: dict[str, Any]) -> str:
    """``device cpu, precision fp32, memory format contiguous, fast path on (...), ...``."""
    fast = choices.get("fast_path", {})
    fast_text = (
        f"on (allocator: {fast.get('allocator')}, flush denormal: {fast.get('flush_denormal')})"
        if fast.get("enabled")
        else "off"
    )
    return (
        f"device {choices.get('device')}, precision {choices.get('precision')}, memory format "
        f"{choices.get('memory_format')}, fast path {fast_text}, optimizer "
        f"{choices.get('optimizer')}, jit_compile {choices.get('jit_compile')}"
    )
