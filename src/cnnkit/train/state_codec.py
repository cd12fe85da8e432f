"""How a training checkpoint writes what is not a tensor file: optimizer and scheduler
state as JSON (tuples, int-keyed dicts, NumPy scalars tagged; tensors moved to the
checkpoint's safetensors under their path) and the RNG states of torch, NumPy and
Python. Used by :mod:`cnnkit.train.checkpoint`."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit._core.errors import CnnkitError

log = logging.getLogger("cnnkit.train")


def encode_key(key: Any, where: str) -> Any:
    if key is None or isinstance(key, (bool, int, float, str)):
        return key
    raise CnnkitError(f"Cannot checkpoint {where}: key {key!r} is not a JSON value.")


def encode(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able ``obj`` with tensors moved into ``tensors`` (keys are their paths)."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": path}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: encode(v, f"{path}.{k}", tensors) for k, v in obj.items()}
        return {
            "__items__": [
                [encode_key(k, path), encode(v, f"{path}.{k}", tensors)] for k, v in obj.items()
            ]
        }
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CnnkitError(
        f"Cannot checkpoint {path} = {type(obj).__name__}: only tensors and JSON values are "
        "saved (cnnkit never pickles)."
    )


def decode(obj: Any, tensors: dict[str, torch.Tensor], source: Path) -> Any:
    if isinstance(obj, list):
        return [decode(v, tensors, source) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            key = obj["__tensor__"]
            if key not in tensors:
                raise CnnkitError(f"{source} lacks the tensor {key!r} named in its manifest.")
            return tensors[key]
        if "__tuple__" in obj:
            return tuple(decode(v, tensors, source) for v in obj["__tuple__"])
        if "__items__" in obj:
            return {k: decode(v, tensors, source) for k, v in obj["__items__"]}
        return {k: decode(v, tensors, source) for k, v in obj.items()}
    return obj


def rng_state(tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    tensors["torch_cpu"] = torch.get_rng_state()
    cuda = 0
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda.{i}"] = state
            cuda = i + 1
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "numpy": {
            "kind": str(kind),
            "keys": np.asarray(keys).tolist(),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "cuda_devices": cuda,
    }


def set_rng_state(info: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    n = int(info.get("cuda_devices", 0))
    if n and torch.cuda.is_available() and torch.cuda.device_count() == n:
        torch.cuda.set_rng_state_all([tensors[f"torch_cuda.{i}"] for i in range(n)])
    elif n:
        log.warning("the checkpoint holds %d CUDA RNG states; not restored on this machine", n)
    npy = info["numpy"]
    np.random.set_state(
        (
            npy["kind"],
            np.asarray(npy["keys"], dtype=np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    py = info["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
