"""Rebuilding a saved model's module from its model.json ``architecture``: a description,
never a program.

A ``kind: registry`` architecture names a registered model (:data:`cnnkit.models.MODELS`)
and its builder's arguments; a ``kind: config`` one names a registered layer stack class
(:data:`MODEL_CLASSES`) and its ``get_config`` output, whose layers are looked up in
:data:`cnnkit.layers.base.LAYERS`. Names are looked up in these tables, never imported;
arguments are bound to the constructor's parameters and checked to be plain data before
anything is built; ``weights`` (a path or a download) is never taken from a file.
"""

from __future__ import annotations

import inspect
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from cnnkit._core.errors import CnnkitError, did_you_mean, short
from cnnkit._core.json_file import read_json as read_json_file
from cnnkit._core.registry import check_arguments
from cnnkit.layers.sequential import Sequential as LayerStack

__all__ = ["MAX_MANIFEST_BYTES", "MODEL_CLASSES", "read_json", "rebuild", "stored_values"]

CONFIG = "model.json"

#: the largest model.json / checkpoint manifest read (a real one is a few hundred KB)
MAX_MANIFEST_BYTES = 64 << 20


def read_json(path: Path) -> Any:
    """A model.json or manifest: bounded in size, errors name the file."""
    what = "a cnnkit model.json or checkpoint manifest (a real one is a few hundred KB)"
    return read_json_file(path, MAX_MANIFEST_BYTES, what)


#: the model classes a saved ``kind: config`` architecture may name; looked up, never
#: imported (``cnnkit.Sequential``, in :mod:`cnnkit.train.sequential`, adds itself)
MODEL_CLASSES: dict[str, type] = {"cnnkit.layers.sequential.Sequential": LayerStack}
#: builder arguments a saved model.json may not give: they read a path or download
_NOT_FROM_FILES = ("weights",)


def stored_values(weights: Path) -> int:
    """The number of values a safetensors file holds, from its header (no data read)."""
    try:
        with safe_open(str(weights), framework="pt") as fh:
            return sum(math.prod(fh.get_slice(k).get_shape()) for k in fh.keys())
    except Exception as err:  # safetensors raises its own error types
        raise CnnkitError(f"{weights} cannot be read as safetensors: {err}") from None


def rebuild(
    arch: Any, source: str | os.PathLike = CONFIG, max_values: int | None = None
) -> nn.Module:
    """The module a saved ``architecture`` describes, with fresh weights. Only a registered
    model (by name, its arguments bound to the builder first) or a registered layer stack
    is built; anything else is a CnnkitError naming ``source``, before any call.

    ``max_values`` (the number of values the saved weights file holds) bounds what the
    architecture may allocate: the model is first built on the ``meta`` device (no
    memory), and one whose state holds more values than that is refused before it is
    built for real (a model.json asking for ``Dense(10**10)`` costs nothing)."""
    if arch is None:
        raise CnnkitError(
            "This checkpoint holds weights but no architecture (the module was not built by "
            "cnnkit.models.create or cnnkit.Sequential): rebuild the module, wrap it in "
            "cnnkit.Model, compile it and call cnnkit.train.checkpoint.load_training_state."
        )
    if not isinstance(arch, dict):
        raise CnnkitError(
            f"{source}: 'architecture' must be a mapping {{'kind': 'registry', 'name', "
            f"'kwargs'}} or {{'kind': 'config', 'class', 'config'}}; received {short(arch)}."
        )
    kind = arch.get("kind")
    if kind == "registry":
        name, kwargs = _registry_entry(arch, source)
        from cnnkit.models import create

        return _built(lambda: create(name, **kwargs), f"{source}: model {name!r}", max_values)
    if kind == "config":
        qualname = arch.get("class", "")
        cls = MODEL_CLASSES.get(qualname) if isinstance(qualname, str) else None
        if cls is None:
            raise CnnkitError(
                f"Unknown model class {short(qualname)} in the saved config {source}; expected "
                f"one of {', '.join(MODEL_CLASSES)}."
            )
        config = arch.get("config")
        return _built(lambda: cls.from_config(config), f"{source}: {qualname}", max_values)
    raise CnnkitError(
        f"Unknown architecture kind {short(kind)} in the saved config {source}; expected "
        "'registry' or 'config'."
    )


def _registry_entry(arch: dict[str, Any], source: str | os.PathLike) -> tuple[str, dict]:
    """A ``kind: registry`` entry's model name and kwargs, checked against the registered
    builder's parameters (and ``create``'s own) without building anything."""
    from cnnkit.models.registry import MODELS, create

    name = arch.get("name")
    if not isinstance(name, str) or name not in MODELS:
        raise CnnkitError(
            f"{source}: the architecture names the model {short(name)}; expected a registered "
            f"model such as {', '.join(MODELS.names()[:4])} (cnnkit.models.list_models())."
            + (did_you_mean(name, MODELS.names()) if isinstance(name, str) else "")
        )
    kwargs = arch.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise CnnkitError(
            f"{source}: the architecture's kwargs must be a mapping; received {short(kwargs)}."
        )
    _refuse_file_arguments(kwargs, f"{source}: model {name!r}")
    own = [p for p in inspect.signature(create).parameters if p not in ("name", "kwargs")]
    return name, check_arguments(
        MODELS.get(name), kwargs, f"{source}: model {name!r}", skip=_NOT_FROM_FILES,
        extra=tuple(own),
    )  # fmt: skip


def _refuse_file_arguments(kwargs: Any, what: str) -> None:
    """No ``weights`` at any depth (a localizer's ``backbone_kwargs`` too): a saved model
    is rebuilt with fresh weights and never reads another file or downloads."""
    if isinstance(kwargs, dict):
        for key, value in kwargs.items():
            if key in _NOT_FROM_FILES:
                raise CnnkitError(
                    f"{what}: a saved model.json may not give {key!r} ({short(value)}): it "
                    "would read a file or download; the weights come from the saved "
                    "safetensors file."
                )
            _refuse_file_arguments(value, what)
    elif isinstance(kwargs, list):
        for value in kwargs:
            _refuse_file_arguments(value, what)


def _state_values(build) -> int | None:
    """How many values the state of ``build()`` holds, built on the meta device; ``None``
    when the builder cannot run there (it is then built for real, as before)."""
    try:
        with torch.device("meta"):
            module = build()
        return sum(t.numel() for t in module.state_dict().values())
    except CnnkitError:
        raise
    except Exception:  # noqa: BLE001 - an op without a meta kernel; the real build decides
        return None


def _built(build, what: str, max_values: int | None = None) -> nn.Module:
    try:
        if max_values is not None:
            needed = _state_values(build)
            if needed is not None and needed > max_values:
                raise CnnkitError(
                    f"{what} describes a model of {needed:,} values but its weights file "
                    f"holds {max_values:,}: refusing to build it (the architecture and the "
                    "weights must come from the same save)."
                )
        return build()
    except CnnkitError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError,
            RuntimeError, RecursionError) as err:  # fmt: skip
        raise CnnkitError(f"{what} cannot be rebuilt: {short(str(err), 200)}") from None
