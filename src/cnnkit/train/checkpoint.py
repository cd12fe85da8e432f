"""Saving and loading models: safetensors for the tensors, JSON for the rest.

Nothing is ever unpickled. A saved folder holds ``model.safetensors`` and
``model.json`` (architecture + the SHA-256 of the tensor file); files are written to
a temporary name and renamed, so a crash never leaves a half-written file, and an
existing save is never overwritten unless asked.

Training checkpoints (:func:`save_training_state`, written by ``ModelCheckpoint``) are
saved models whose manifest also records the optimizer, scheduler and grad-scaler
state, epoch, history, shuffle seed and RNG states; ``fit(resume_from=...)`` restores
them (:func:`load_training_state`) and ``cnnkit.load`` reads their weights.

This module knows the training state only through the attributes it reads
(:class:`cnnkit.train.state.TrainingState`), never the ``Model`` class.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from cnnkit._core.errors import CnnkitError, ConfigError, short
from cnnkit._core.paths import inside
from cnnkit.train.rebuild import read_json as _read_json
from cnnkit.train.rebuild import rebuild, stored_values
from cnnkit.train.state import TrainingState
from cnnkit.train.state_codec import decode, encode, rng_state, set_rng_state

log = logging.getLogger("cnnkit.train")

FORMAT = "cnnkit-model"
WEIGHTS = "model.safetensors"
CONFIG = "model.json"
#: a training checkpoint's previous manifest, kept (with its files) as a fallback
PREVIOUS = "previous.json"


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
        with open(tmp, "rb") as fh:  # on disk before the rename makes it visible
            os.fsync(fh.fileno())
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


def save_model(
    module: nn.Module,
    directory: str | os.PathLike,
    overwrite: bool = False,
    runtime: dict[str, str] | None = None,
) -> Path:
    """Write ``module`` into ``directory`` (created if needed); returns the folder.

    ``runtime`` (``{'precision': 'bf16', 'memory_format': 'channels_last'}``, what a
    compiled model ran with) is recorded so :func:`load` predicts as before saving.
    """
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
    if runtime:
        config["runtime"] = dict(runtime)
    _atomic_write(folder / CONFIG, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2)))
    return folder


def load_module(
    directory: str | os.PathLike, device: torch.device
) -> tuple[nn.Module, dict[str, Any]]:
    """The module saved in ``directory`` (weights verified and loaded, on ``device``) and
    its model.json; ``cnnkit.load`` (:func:`cnnkit.train.model.load`) wraps it.

    Training checkpoints (``ModelCheckpoint``'s ``best/`` and ``last/``) load the same
    way; given the ``ModelCheckpoint`` folder itself, the best checkpoint is loaded.
    Refuses folders with pickles, unknown formats, or tensors whose checksum differs.
    """
    folder = Path(directory)
    cfg_path = folder / CONFIG
    if not cfg_path.is_file():
        # a ModelCheckpoint folder: its best checkpoint, else its last one
        for sub in ("best", "last"):
            if (folder / sub / CONFIG).is_file():
                return load_module(inside(folder, sub, f"{folder}: the {sub}/ checkpoint"), device)
        pickles = [p.name for p in folder.glob("*") if p.suffix in (".pt", ".pth", ".pkl", ".bin")]
        hint = f" It holds {pickles}: cnnkit never unpickles files." if pickles else ""
        raise CnnkitError(f"{cfg_path} not found: not a saved cnnkit model.{hint}")
    config = _read_json(cfg_path)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CnnkitError(
            f"{cfg_path} is not a cnnkit model config (format "
            f"{short(config.get('format')) if isinstance(config, dict) else type(config).__name__!r}); "
            "expected a folder written by model.save or ModelCheckpoint."
        )
    name = config.get("weights", WEIGHTS)
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(".safetensors"):
        raise CnnkitError(
            f"{cfg_path} names the weights file {short(name)}; expected a .safetensors file in "
            "the same folder (cnnkit never unpickles files)."
        )
    weights = inside(folder, name, f"{cfg_path}: the weights file")
    if not weights.is_file():
        raise CnnkitError(f"{weights} is missing.")
    digest = _sha256(weights)
    if digest != config.get("sha256"):
        raise CnnkitError(
            f"{weights} is damaged or was changed: its SHA-256 {digest[:12]}... differs from "
            f"the one recorded in {cfg_path.name} ({str(config.get('sha256'))[:12]}...)."
        )
    if "architecture" not in config:
        raise CnnkitError(f"{cfg_path} has no 'architecture' entry; it cannot be rebuilt.")
    module = rebuild(config["architecture"], cfg_path, stored_values(weights))
    try:
        state = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types
        raise CnnkitError(f"{weights} cannot be read as safetensors: {err}") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CnnkitError(f"{weights} does not fit the saved architecture: {err}") from None
    module.to(device)
    return module, config


# ---------------------------------------------------------------- training checkpoints
#
# A training checkpoint is a saved model (``cnnkit.load`` reads it) whose model.json also
# records what ``fit`` needs to continue. Tensor files get fresh names on every save and
# model.json, the manifest that names them, is replaced last: a crash at any point
# leaves the previous checkpoint intact. Tensors go to safetensors, everything else to
# JSON (tuples, int-keyed dicts and tensors inside optimizer/scheduler state are tagged).

TRAINING_KIND = "training-checkpoint"
_PARTS = ("model", "optimizer", "rng")


def _grad_scaler(workflow: TrainingState) -> Any:
    for attr in ("scaler", "_scaler", "grad_scaler", "_grad_scaler"):
        obj = getattr(workflow, attr, None)
        if isinstance(obj, torch.amp.GradScaler):
            return obj
    return None


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def _referenced(manifest: dict[str, Any]) -> set[str]:
    names = {str(manifest.get("weights", ""))}
    for entry in (manifest.get("files") or {}).values():
        if isinstance(entry, dict):
            names.add(str(entry.get("name", "")))
    return {n for n in names if n and Path(n).name == n}


def save_training_state(
    folder: str | os.PathLike,
    workflow: TrainingState,
    epoch: int,
    history: Any = None,
    *,
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
    position: dict[str, Any] | None = None,
) -> Path:
    """Write a full training checkpoint of ``workflow`` (a compiled ``cnnkit.Model`` or
    ``Sequential``) after ``epoch`` (0-based) into ``folder``: weights, optimizer,
    scheduler and grad-scaler state, ``history``, the shuffle seed and the RNG states.

    ``position`` (:meth:`cnnkit.train.run_state.Progress.state`) records where inside
    the next epoch training stands, for mid-epoch checkpoints; its tensors are stored
    with the RNG states. An existing checkpoint there is replaced only with
    ``overwrite=True``.
    """
    folder = Path(folder)
    optimizer = getattr(workflow, "optimizer", None)
    if optimizer is None:
        raise ConfigError(
            "save_training_state needs a workflow whose optimizer exists (compile it and call "
            f"fit first); received {type(workflow).__name__} without one."
        )
    net = workflow._net
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / CONFIG
    if manifest_path.exists() and not overwrite:
        raise CnnkitError(
            f"{manifest_path} already exists; refusing to overwrite a checkpoint. "
            "Choose another folder or pass overwrite=True."
        )
    # the manifest being replaced becomes previous.json (if intact), else the one kept before
    previous = _intact_manifest(folder, CONFIG)
    keep_previous = previous is None
    if previous is None:
        previous = _intact_manifest(folder, PREVIOUS)
    try:
        arch = architecture_of(net)
    except ConfigError:
        arch = None
        log.warning("%s cannot be described; the checkpoint holds weights only", type(net))
    weights = {k: v.detach().to("cpu").contiguous().clone() for k, v in net.state_dict().items()}
    opt_tensors: dict[str, torch.Tensor] = {}
    training: dict[str, Any] = {
        "epoch": int(epoch),
        "history": {k: [float(v) for v in vs] for k, vs in getattr(history, "history", {}).items()},
        "history_epochs": [int(e) for e in getattr(history, "epoch", [])],
        "shuffle_seed": getattr(workflow, "_shuffle_seed", None),
        "optimizer": {
            "class": type(optimizer).__name__,
            "state": encode(optimizer.state_dict(), "optimizer", opt_tensors),
        },
        "scheduler": None,
        "grad_scaler": None,
        "extra": dict(extra or {}),
    }
    scheduler = getattr(workflow, "scheduler", None)
    if scheduler is not None:
        training["scheduler"] = {
            "class": type(scheduler).__name__,
            "state": encode(scheduler.state_dict(), "scheduler", opt_tensors),
        }
    scaler = _grad_scaler(workflow)
    if scaler is not None:
        training["grad_scaler"] = encode(scaler.state_dict(), "grad_scaler", opt_tensors)
    rng_tensors: dict[str, torch.Tensor] = {}
    training["rng"] = rng_state(rng_tensors)
    if position is not None:
        training["position"] = encode(position, "position", rng_tensors)

    tag = f"e{int(epoch):05d}-{secrets.token_hex(4)}"
    files: dict[str, dict[str, str]] = {}
    for part, tensors in (("model", weights), ("optimizer", opt_tensors), ("rng", rng_tensors)):
        name = f"{part}-{tag}.safetensors"
        _atomic_write(
            folder / name,
            lambda tmp, t=tensors, p=part: save_file(
                t, tmp, metadata={"format": FORMAT, "part": p}
            ),
        )
        files[part] = {"name": name, "sha256": _sha256(folder / name)}
    body: dict[str, Any] = {
        "format": FORMAT,
        "version": 1,
        "kind": TRAINING_KIND,
        "architecture": arch,
        "weights": files["model"]["name"],
        "sha256": files["model"]["sha256"],
        "files": files,
        "training": training,
    }
    from cnnkit.train.runtime import runtime_record

    runtime = runtime_record(workflow)
    if runtime:
        body["runtime"] = runtime
    body["checksum"] = _digest(body)
    if previous is not None and not keep_previous:
        text = json.dumps(previous, indent=1)
        _atomic_write(folder / PREVIOUS, lambda tmp: Path(tmp).write_text(text))
    _atomic_write(manifest_path, lambda tmp: Path(tmp).write_text(json.dumps(body, indent=1)))
    # the new manifest is in place: drop the files that neither it nor previous.json name
    keep = {f["name"] for f in files.values()} | _referenced(previous or {})
    stale = {p.name for part in _PARTS for p in folder.glob(f"{part}-e*.safetensors")}
    stale |= {p.name for p in folder.glob(".*.tmp")}  # left by a writer killed mid-write
    for name in stale - keep:
        with contextlib.suppress(OSError):
            (folder / name).unlink()
    return folder


def _intact_manifest(folder: Path, name: str) -> dict[str, Any] | None:
    """The training manifest ``folder/name`` if its checksum holds and its files exist."""
    try:
        manifest = _read_manifest(folder, name)
    except CnnkitError:
        return None
    if all((folder / n).is_file() for n in _referenced(manifest)):
        return manifest
    return None


def _read_manifest(folder: Path, name: str = CONFIG) -> dict[str, Any]:
    path = folder / name
    if not path.is_file():
        raise CnnkitError(f"{path} not found: {folder} holds no cnnkit checkpoint.")
    manifest = _read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CnnkitError(f"{path} is not a cnnkit checkpoint manifest.")
    if manifest.get("kind") != TRAINING_KIND:
        raise CnnkitError(
            f"{path} describes a saved model, not a training checkpoint (no optimizer state or "
            "epoch); load it with cnnkit.load, or resume from a ModelCheckpoint folder."
        )
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    if manifest.get("checksum") != _digest(body):
        raise CnnkitError(f"{path} is damaged or was changed: its checksum does not match.")
    return manifest


def _load_part(
    folder: Path, manifest: dict[str, Any], part: str, source: str = CONFIG
) -> dict[str, torch.Tensor]:
    entry = (manifest.get("files") or {}).get(part)
    name = entry.get("name") if isinstance(entry, dict) else None
    if not isinstance(name, str) or Path(name).name != name:
        raise CnnkitError(f"{folder / source} names no valid {part} file ({short(entry)}).")
    path = inside(folder, name, f"{folder / source}: the tensor file")
    if not path.is_file():
        raise CnnkitError(f"{path} is missing (named by {folder / source}).")
    digest = _sha256(path)
    if digest != entry.get("sha256"):
        raise CnnkitError(
            f"{path} is damaged or was changed: its SHA-256 {digest[:12]}... differs from the "
            f"one recorded in {source} ({str(entry.get('sha256'))[:12]}...)."
        )
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error types
        raise CnnkitError(f"{path} cannot be read as safetensors: {err}") from None


def load_training_state(
    folder: str | os.PathLike, workflow: TrainingState, manifest_name: str = CONFIG
) -> dict[str, Any]:
    """Restore a checkpoint written by :func:`save_training_state` into ``workflow``
    (compiled, optimizer created): weights, optimizer, scheduler, grad scaler, shuffle seed
    and RNG states. Returns ``{'epoch', 'history', 'history_epochs', 'extra'}``.

    Every file is checked against the SHA-256 in the manifest first; a damaged one is
    refused with a :class:`CnnkitError` naming it. ``manifest_name=PREVIOUS`` restores
    the checkpoint before the last one (kept as a fallback).
    """
    folder = Path(folder)
    manifest = _read_manifest(folder, manifest_name)
    try:
        return _restore(folder, manifest, manifest_name, workflow)
    except CnnkitError:
        raise
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as err:
        raise CnnkitError(
            f"{folder / manifest_name} is malformed: its training state does not read "
            f"({type(err).__name__}: {short(str(err), 160)}); not a checkpoint cnnkit wrote."
        ) from None


def _restore(
    folder: Path, manifest: dict[str, Any], manifest_name: str, workflow: TrainingState
) -> dict[str, Any]:
    tensors = {part: _load_part(folder, manifest, part, manifest_name) for part in _PARTS}
    training = manifest["training"]
    net = workflow._net
    optimizer = getattr(workflow, "optimizer", None)
    if optimizer is None:
        raise ConfigError(
            "load_training_state needs a compiled workflow whose optimizer exists; received "
            f"{type(workflow).__name__} without one (fit(resume_from=...) creates it)."
        )
    weights = folder / manifest["files"]["model"]["name"]
    try:
        net.load_state_dict(tensors["model"], strict=True)
    except RuntimeError as err:
        raise CnnkitError(f"{weights} does not fit this model: {err}") from None
    saved_opt = training["optimizer"]
    if saved_opt["class"] != type(optimizer).__name__:
        raise ConfigError(
            f"{folder} was written with a {saved_opt['class']} optimizer but this model uses "
            f"{type(optimizer).__name__}; compile with the same optimizer to resume."
        )
    opt_file = folder / manifest["files"]["optimizer"]["name"]
    try:
        optimizer.load_state_dict(decode(saved_opt["state"], tensors["optimizer"], opt_file))
    except (ValueError, KeyError, RuntimeError) as err:
        raise CnnkitError(f"{opt_file} does not fit this optimizer: {err}") from None
    _match_param_layout(optimizer)
    saved_sched, scheduler = training.get("scheduler"), getattr(workflow, "scheduler", None)
    if saved_sched is not None:
        if scheduler is None or type(scheduler).__name__ != saved_sched["class"]:
            have = type(scheduler).__name__ if scheduler is not None else "no lr_schedule"
            raise ConfigError(
                f"{folder} was written with a {saved_sched['class']} schedule but this model "
                f"has {have}; compile with the same lr_schedule to resume."
            )
        scheduler.load_state_dict(decode(saved_sched["state"], tensors["optimizer"], opt_file))
    elif scheduler is not None:
        log.warning("%s holds no schedule state; the compiled schedule starts afresh", folder)
    scaler = _grad_scaler(workflow)
    if scaler is not None and training.get("grad_scaler") is not None:
        scaler.load_state_dict(decode(training["grad_scaler"], tensors["optimizer"], opt_file))
    set_rng_state(training["rng"], tensors["rng"])
    if training.get("shuffle_seed") is not None:
        workflow._shuffle_seed = int(training["shuffle_seed"])
    position = training.get("position")
    return {
        "epoch": int(training["epoch"]),
        "history": training.get("history", {}),
        "history_epochs": training.get("history_epochs", []),
        "extra": training.get("extra", {}),
        "position": None if position is None else decode(position, tensors["rng"], folder),
    }


def has_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` (or ``path/last``) holds a checkpoint manifest to resume from."""
    folder = Path(path)
    return any((c / n).is_file() for c in (folder / "last", folder) for n in (CONFIG, PREVIOUS))


def find_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint to resume from: ``path/last`` (``ModelCheckpoint``'s), else ``path``."""
    folder = Path(path)
    for candidate in (folder / "last", folder):
        if (candidate / CONFIG).is_file() or (candidate / PREVIOUS).is_file():
            return candidate
    raise CnnkitError(
        f"resume_from={str(path)!r} holds no checkpoint: expected {folder / 'last' / CONFIG} "
        f"(as ModelCheckpoint({str(path)!r}) writes) or {folder / CONFIG}."
    )


def read_checkpoint_info(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``training`` section of a checkpoint's manifest (epoch, history, extra), verified."""
    path = Path(folder)
    training = _read_manifest(path).get("training")
    if not isinstance(training, dict):
        raise CnnkitError(f"{path / CONFIG} has no 'training' mapping; not a checkpoint.")
    return training


def resume_training(workflow: TrainingState, path: str | os.PathLike, history: Any) -> int | None:
    """``fit(resume_from=path)``: restore the last checkpoint under ``path`` into
    ``workflow`` and ``history``; returns the epoch to continue from, or None when
    ``path`` does not exist or holds no checkpoint yet (the run starts from the
    beginning: a relaunch before the first checkpoint). A mid-epoch position is left in
    ``workflow._resume_position`` (None for a checkpoint written at an epoch's end)."""
    workflow._resume_position = None
    if not has_checkpoint(path):
        if Path(path).exists() and not Path(path).is_dir():
            raise CnnkitError(f"resume_from={str(path)!r} is a file; pass a checkpoint folder.")
        log.warning("%s holds no checkpoint yet; training starts from the beginning", path)
        return None
    folder = find_checkpoint(path)
    try:
        info = load_training_state(folder, workflow)
    except CnnkitError as err:
        if not (folder / PREVIOUS).is_file():
            raise
        try:
            info = load_training_state(folder, workflow, PREVIOUS)
        except CnnkitError as err2:
            raise CnnkitError(
                f"Cannot resume from {folder}: the last checkpoint is unusable ({err}) and so is "
                f"the previous one ({err2})."
            ) from None
        log.warning(
            "%s; resuming from the previous checkpoint (%s, after epoch %d) instead",
            err,
            folder / PREVIOUS,
            info["epoch"] + 1,
        )
    history.restore(info["history"], info["history_epochs"])
    position = workflow._resume_position = info.get("position")
    step = (position or {}).get("step", 0)
    where = f"in epoch {info['epoch'] + 2} after step {step}" if step else "after epoch"
    log.info("resuming from %s %s", folder, where if step else f"{where} {info['epoch'] + 1}")
    return info["epoch"] + 1


def _match_param_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give restored per-parameter state (Adam's moments, momentum buffers) its parameter's
    memory format: safetensors stores them contiguous, and a channels-last parameter with a
    contiguous moment takes another (equally exact but differently rounded) kernel path, so
    a resumed run would drift from the uninterrupted one in the last bit."""
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if (
                isinstance(value, torch.Tensor)
                and value.shape == param.shape
                and value.stride() != param.stride()
            ):
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)
