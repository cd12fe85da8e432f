"""Saving and loading models: safetensors for the tensors, JSON for the rest.

Nothing is ever unpickled. A saved folder holds ``model.safetensors`` and
``config.json`` (architecture + the SHA-256 of the tensor file); files are written to
a temporary name and renamed, so a crash never leaves a half-written file, and an
existing save is never overwritten unless asked.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from cnnkit._core.errors import CnnkitError, ConfigError

FORMAT = "cnnkit-model"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def architecture_of(module: nn.Module) -> dict[str, Any]:
    """A JSON description from which :func:`load` can rebuild ``module``."""
    spec = getattr(module, "cnnkit_spec", None)
    if spec is not None:
        return {"kind": "registry", **spec}
    if hasattr(module, "get_config") and hasattr(type(module), "from_config"):
        return {
            "kind": "config",
            "class": f"{type(module).__module__}.{type(module).__qualname__}",
            "config": module.get_config(),
        }
    raise ConfigError(
        f"Cannot describe a {type(module).__name__} for saving: build it with "
        "cnnkit.models.create(...) or cnnkit.Sequential, or save its state_dict yourself "
        "with safetensors."
    )


def save_model(module: nn.Module, directory: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``module`` into ``directory`` (created if needed); returns the folder."""
    folder = Path(directory)
    arch = architecture_of(module)
    folder.mkdir(parents=True, exist_ok=True)
    targets = [folder / WEIGHTS, folder / CONFIG]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise CnnkitError(
            f"{', '.join(existing)} already exist(s); refusing to overwrite a saved model. "
            "Choose another folder or pass overwrite=True."
        )
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    _atomic_write(
        folder / WEIGHTS, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT})
    )
    config = {
        "format": FORMAT,
        "version": 1,
        "architecture": arch,
        "weights": WEIGHTS,
        "sha256": _sha256(folder / WEIGHTS),
    }
    _atomic_write(folder / CONFIG, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2)))
    return folder


def _rebuild(arch: dict[str, Any]) -> nn.Module:
    kind = arch.get("kind")
    if kind == "registry":
        from cnnkit.models import create

        return create(arch["name"], **arch.get("kwargs", {}))
    if kind == "config":
        qualname = str(arch.get("class", ""))
        allowed = {
            "cnnkit.layers.sequential.Sequential": "cnnkit.layers.sequential",
            "cnnkit.train.sequential.Sequential": "cnnkit.train.sequential",
        }
        if qualname not in allowed:
            raise CnnkitError(f"Unknown model class {qualname!r} in the saved config.")
        import importlib

        cls = importlib.import_module(allowed[qualname]).Sequential
        return cls.from_config(arch["config"])
    raise CnnkitError(f"Unknown architecture kind {kind!r} in the saved config.")


def load(directory: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Load a folder written by ``save``; returns a ``cnnkit.Model`` (or ``cnnkit.Sequential``).

    Refuses folders with pickles, unknown formats, or tensors whose checksum differs.
    """
    folder = Path(directory)
    cfg_path = folder / CONFIG
    if not cfg_path.is_file():
        pickles = [p.name for p in folder.glob("*") if p.suffix in (".pt", ".pth", ".pkl", ".bin")]
        hint = f" It holds {pickles}: cnnkit never unpickles files." if pickles else ""
        raise CnnkitError(f"{cfg_path} not found: not a saved cnnkit model.{hint}")
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CnnkitError(f"{cfg_path} is not valid JSON ({err}).") from None
    if config.get("format") != FORMAT:
        raise CnnkitError(
            f"{cfg_path} is not a cnnkit model config (format {config.get('format')!r})."
        )
    weights = folder / config.get("weights", WEIGHTS)
    if not weights.is_file():
        raise CnnkitError(f"{weights} is missing.")
    digest = _sha256(weights)
    if digest != config.get("sha256"):
        raise CnnkitError(
            f"{weights} is damaged or was changed: its SHA-256 {digest[:12]}... differs from "
            f"the one recorded in {cfg_path.name} ({str(config.get('sha256'))[:12]}...)."
        )
    module = _rebuild(config["architecture"])
    try:
        module.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as err:
        raise CnnkitError(f"{weights} does not fit the saved architecture: {err}") from None
    module.to(device)
    from cnnkit.train.model import Model, Workflow

    return module if isinstance(module, Workflow) else Model(module)
