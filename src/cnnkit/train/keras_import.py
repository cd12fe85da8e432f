"""``cnnkit.from_keras(path)``: a saved Keras model as a ``cnnkit.Model`` of plain cnnkit layers.

Reads Keras 3's ``.keras`` zip or a legacy ``.h5`` full model as data (see
:mod:`cnnkit.train.keras_file`: ``zipfile``, ``json`` and ``h5py`` only; nothing is
unpickled, no Keras code runs, so ``Lambda`` layers are refused). Every Keras layer
becomes the cnnkit layer of the same name, channels-first:

* inputs ``(H, W, C)`` become ``(C, H, W)``; outputs of rank > 2 are channels-first;
* kernels are converted: convolutions ``(*k, in, out)`` and transposed convolutions
  ``(*k, out, in)`` to PyTorch's ``(out, in, *k)`` / ``(in, out, *k)``, depthwise
  ``(*k, C, dm)`` to ``(C * dm, 1, *k)``, dense ``(in, out)`` to ``(out, in)``;
* a ``Dense`` (or ``BatchNormalization``) after ``Flatten`` gets its input rows permuted
  from Keras' ``(H, W, C)`` order to cnnkit's ``(C, H, W)``;
* ``Concatenate(axis=-1)`` becomes ``axis=1``; ``Reshape`` runs on channels-last data
  (``Permute`` layers around it);
* ``BatchNormalization`` gets its moving mean and variance.

A Sequential model becomes a :class:`cnnkit.layers.Sequential`, a functional one a
:class:`cnnkit.layers.Graph` (several outputs: a tuple). A layer or an option cnnkit
lacks raises a :class:`ConfigError` naming the layer, the config key and what is supported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnkit._core.errors import CnnkitError, ConfigError, ShapeError
from cnnkit.layers import Flatten, Graph, Permute, Reshape
from cnnkit.layers.merge import _Merge
from cnnkit.layers.sequential import Sequential
from cnnkit.train.keras_convert import CONVERTERS, ELEMENTWISE, KerasLayerError, convert
from cnnkit.train.keras_file import read_keras_file
from cnnkit.train.model import Model
from cnnkit.train.precision import resolve_device

__all__ = ["from_keras"]


@dataclass
class _Tensor:
    """A tensor of the graph under construction: its id, channels-first shape (batch
    ``None``) and, for a flattened spatial tensor, the channels-first shape it came from."""

    id: int
    shape: tuple
    flat_from: tuple | None = None


class _Builder:
    def __init__(self, source: str) -> None:
        self.source = source
        self.layers: dict[str, nn.Module] = {}
        self.nodes: list[tuple[str, list[int]]] = []
        self.n_inputs = 0

    def _key(self, name: str) -> str:
        key = str(name).replace(".", "_") or "layer"
        base, i = key, 1
        while key in self.layers:
            key, i = f"{base}_{i}", i + 1
        return key

    def add(self, name: str, module: nn.Module, inputs: list[_Tensor]) -> _Tensor:
        shapes = [t.shape for t in inputs]
        try:
            if isinstance(module, _Merge):
                out = module.compute_output_shape(shapes)
                module.build(shapes)
            else:
                out = module.compute_output_shape(shapes[0])
                module.build(shapes[0])
        except (ShapeError, ConfigError) as err:
            raise ShapeError(
                f"{self.source}: Keras layer {name!r} cannot take input shape(s) "
                f"{', '.join(str(s) for s in shapes)} (channels-first): {err}"
            ) from None
        key = self._key(name)
        self.layers[key] = module
        self.nodes.append((key, [t.id for t in inputs]))
        return _Tensor(self.n_inputs + len(self.nodes) - 1, tuple(out))

    def keras_order(self, t: _Tensor, name: str) -> _Tensor:
        """A flattened tensor back in Keras' ``(H, W, C)`` element order."""
        if t.flat_from is None:
            return t
        c, *spatial = t.flat_from
        t = self.add(f"{name}__unflatten", Reshape(t.flat_from), [t])
        t = self.add(f"{name}__to_channels_last", Permute((*range(2, len(spatial) + 2), 1)), [t])
        return self.add(f"{name}__flatten", Flatten(), [t])


def _history(arg: Any, where: str) -> tuple[str, int, int]:
    """``(layer, node, tensor)`` of one inbound tensor (Keras 3 dicts or Keras 2 lists)."""
    if isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__":
        hist = arg.get("config", {}).get("keras_history")
    elif isinstance(arg, (list, tuple)) and len(arg) >= 3 and isinstance(arg[0], str):
        hist = arg[:3]
    else:
        hist = None
    if not isinstance(hist, (list, tuple)) or len(hist) < 3:
        raise ConfigError(f"{where}: an inbound tensor {str(arg)[:120]} is not understood.")
    return str(hist[0]), int(hist[1]), int(hist[2])


def _inbound(entry: dict[str, Any], where: str) -> tuple[list[tuple[str, int, int]], bool]:
    """The inbound tensors of a functional layer and whether they come as a list."""
    nodes = entry.get("inbound_nodes") or []
    if len(nodes) != 1:
        raise ConfigError(
            f"{where} is called {len(nodes)} times in the model; cnnkit.from_keras imports "
            "layers called once (no shared layers)."
        )
    node = nodes[0]
    if isinstance(node, dict):  # Keras 3
        args, kwargs = node.get("args", []), node.get("kwargs", {})
        extra = {k: v for k, v in (kwargs or {}).items() if k not in ("training", "mask")}
        if extra or len(args) != 1:
            raise ConfigError(
                f"{where} is called with arguments {list(extra) or len(args)}; cnnkit.from_keras "
                "supports one input tensor or one list of tensors."
            )
        arg = args[0]
        if isinstance(arg, list):
            return [_history(a, where) for a in arg], True
        return [_history(arg, where)], False
    if isinstance(node, list):  # Keras 2: [[name, node, tensor, kwargs], ...]
        items = [_history(a, where) for a in node]
        return items, len(items) > 1
    raise ConfigError(f"{where}: inbound nodes {str(node)[:120]} are not understood.")


def _input_shape(cfg: dict[str, Any], where: str) -> tuple:
    shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
    if not isinstance(shape, (list, tuple)) or len(shape) < 2:
        raise ConfigError(
            f"{where}: the model's input shape is unknown (no batch_shape); save a model "
            "built with keras.Input(shape=...) or input_shape=..."
        )
    dims = tuple(None if d is None else int(d) for d in shape[1:])
    if any(d is not None and not 0 < d < 1 << 24 for d in dims):
        raise ConfigError(f"{where}: input shape {list(shape)} is out of range.")
    if len(dims) >= 2:
        dims = (dims[-1], *dims[:-1])  # channels-last -> channels-first
    return (None, *dims)


def _apply(
    builder: _Builder, kfile: Any, layers: list, index: int, inputs: list[_Tensor], as_list: bool
) -> _Tensor:
    entry = layers[index]
    cls = str(entry.get("class_name"))
    cfg = entry.get("config") or {}
    name = str(cfg.get("name", entry.get("name", cls)))
    where = f"{builder.source}: Keras layer {name!r} ({cls})"
    if cls not in CONVERTERS:
        if cls == "Lambda":
            raise ConfigError(
                f"{where}: Lambda layers hold Python code, which cnnkit never runs from a "
                "file; rebuild that step with a layer (e.g. Rescaling(1/255) for x / 255)."
            )
        if cls in ("Sequential", "Functional", "Model"):
            raise ConfigError(f"{where}: nested models are not supported; save a flat model.")
        raise ConfigError(
            f"{where}: cnnkit has no such layer. Supported: {', '.join(sorted(CONVERTERS))}."
        )
    is_merge = cls in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
    is_merge = is_merge or cls == "Concatenate"
    if as_list and not is_merge:
        raise ConfigError(f"{where} is called on a list of tensors; cnnkit supports one.")
    elementwise = cls in ELEMENTWISE or (is_merge and cls != "Concatenate")
    flat = {t.flat_from for t in inputs}
    keep_flat = None
    if elementwise and len(flat) == 1:
        keep_flat = next(iter(flat))
    elif cls != "Dense" and not (cls == "BatchNormalization" and len(flat) == 1):
        inputs = [builder.keras_order(t, name) for t in inputs]
    try:
        steps = convert(cls, cfg, [t.shape for t in inputs], where)
    except KerasLayerError as err:
        raise ConfigError(str(err)) from None
    arrays = kfile.weights(layers, index)
    t = inputs if is_merge else inputs[:1]
    for i, (module, setter) in enumerate(steps):
        suffix = "" if len(steps) == 1 else f"__{i}"
        out = builder.add(name + suffix, module, t)
        if setter is not None:
            perm = _keras_to_cf(t[0].flat_from) if t[0].flat_from is not None else None
            setter(module, arrays, perm, where)
            arrays = []
        t = [out]
    if arrays:
        raise ConfigError(f"{where}: the file holds {len(arrays)} unexpected weight arrays.")
    result = t[0]
    if cls == "Flatten" and len(inputs[0].shape) > 2 and any(d != 1 for d in inputs[0].shape[2:]):
        result.flat_from = inputs[0].shape[1:]
    elif keep_flat is not None or (cls == "BatchNormalization" and inputs[0].flat_from):
        result.flat_from = inputs[0].flat_from
    return result


def _keras_to_cf(flat_from: tuple) -> np.ndarray:
    """``perm`` with ``cf_vector = keras_vector[perm]`` for a flattened ``(C, *spatial)``."""
    c, *spatial = flat_from
    keras_index = np.arange(int(np.prod(flat_from))).reshape(*spatial, c)
    return np.moveaxis(keras_index, -1, 0).reshape(-1)


def _build_sequential(builder: _Builder, kfile: Any, layers: list) -> nn.Module:
    first = layers[0] if layers else {}
    start = 1 if first.get("class_name") == "InputLayer" else 0
    shape = _input_shape(first.get("config") or {}, f"{builder.source}: the first layer")
    builder.n_inputs = 1
    t = _Tensor(0, shape)
    for index in range(start, len(layers)):
        t = _apply(builder, kfile, layers, index, [t], False)
    t = builder.keras_order(t, "output")
    known = all(d is not None for d in shape[1:])
    return Sequential(
        [builder.layers[name] for name, _ in builder.nodes],
        input_shape=shape[1:] if known else None,  # known: save / cnnkit.load round-trip
    )


def _refs(spec: Any) -> list[tuple[str, int, int]]:
    if isinstance(spec, (list, tuple)) and len(spec) == 3 and isinstance(spec[0], str):
        return [(str(spec[0]), int(spec[1]), int(spec[2]))]
    if isinstance(spec, (list, tuple)):
        return [r for s in spec for r in _refs(s)]
    raise ConfigError(f"model inputs/outputs {str(spec)[:120]} are not understood.")


def _build_functional(builder: _Builder, kfile: Any, config: dict[str, Any]) -> nn.Module:
    layers = config["layers"]
    by_name: dict[str, _Tensor] = {}
    inputs = _refs(config.get("input_layers", []))
    entries = {
        str((e.get("config") or {}).get("name", e.get("name"))): i for i, e in enumerate(layers)
    }
    for name, _, _ in inputs:
        if name not in entries:
            raise ConfigError(f"{builder.source}: input layer {name!r} is missing.")
        cfg = layers[entries[name]].get("config") or {}
        by_name[name] = _Tensor(len(by_name), _input_shape(cfg, f"input {name!r}"))
    builder.n_inputs = len(by_name)
    for index, entry in enumerate(layers):
        cfg = entry.get("config") or {}
        name = str(cfg.get("name", entry.get("name")))
        if entry.get("class_name") == "InputLayer":
            continue
        where = f"{builder.source}: Keras layer {name!r} ({entry.get('class_name')})"
        refs, as_list = _inbound(entry, where)
        missing = [r[0] for r in refs if r[0] not in by_name]
        if missing:
            raise ConfigError(f"{where} reads {missing}, which come later or are missing.")
        ins = [by_name[r[0]] for r in refs]
        by_name[name] = _apply(builder, kfile, layers, index, ins, as_list)
    outs = [builder.keras_order(by_name[r[0]], r[0]) for r in _refs(config.get("output_layers"))]
    return Graph(builder.layers, builder.nodes, builder.n_inputs, [t.id for t in outs])


def from_keras(path: str | os.PathLike, device: str | torch.device = "cpu") -> Model:
    """Import a saved Keras model (``.keras`` or legacy ``.h5``) as a ``cnnkit.Model``.

    The model is in eval mode, channels-first: feed ``x.permute(0, 3, 1, 2)`` of what
    Keras was given. See the module docstring for the conversions and their limits.
    """
    kfile = read_keras_file(path)
    try:
        net = _build(kfile)
    finally:
        kfile.close()
    model = Model(net.to(resolve_device(device)))  # 'auto': CUDA when present
    model.eval()
    return model


def _build(kfile: Any) -> nn.Module:
    model_cfg = kfile.config
    kind = str(model_cfg.get("class_name"))
    config = model_cfg["config"]
    builder = _Builder(kfile.source)
    if kind == "Sequential":
        net = _build_sequential(builder, kfile, config["layers"])
    elif kind in ("Functional", "Model"):
        net = _build_functional(builder, kfile, config)
    else:
        raise CnnkitError(
            f"{kfile.source}: model class {kind!r} is not supported; cnnkit.from_keras imports "
            "Sequential and functional (keras.Model(inputs, outputs)) models."
        )
    return net
