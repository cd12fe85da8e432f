"""Read a saved Keras model as data: the architecture JSON and the weight arrays.

* Keras 3's ``.keras``: a zip with ``config.json`` and ``model.weights.h5`` (weights under
  ``layers/<snake_case class name>[_<i>]/vars/<j>``, in the order of the model's layers).
* a legacy ``.h5`` full model: the ``model_config`` attribute (JSON) and the weights under
  ``model_weights/<layer name>`` in the order of its ``weight_names`` attribute.

Only ``zipfile``, ``json`` and ``h5py`` are used: nothing is unpickled and no Keras code
runs. Sizes are bounded before anything is read, and only numeric arrays are accepted.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit._core.errors import CnnkitError

__all__ = ["KerasFile", "read_keras_file"]

MAX_FILE_BYTES = 2 << 30  # 2 GiB of weights
MAX_CONFIG_BYTES = 16 << 20  # 16 MiB of JSON
MAX_LAYERS = 5000
MAX_ARRAY_ELEMENTS = 1 << 30
_H5_MAGIC = b"\x89HDF\r\n\x1a\n"


def snake_case(name: str) -> str:
    """Keras' ``naming.to_snake_case``: the key of a layer's weights in ``.keras`` files."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


class KerasFile:
    """The parsed parts: ``config`` (the model's architecture dict) and
    ``weights(index, layer)`` giving one layer's arrays in Keras' order."""

    def __init__(self, config: dict[str, Any], source: str, h5: Any, legacy: bool) -> None:
        self.config = config
        self.source = source
        self._h5 = h5
        self.legacy = legacy
        self._keys: list[str] | None = None

    def close(self) -> None:
        """Close the HDF5 file."""
        self._h5.close()

    def _check_array(self, ds: Any, where: str) -> np.ndarray:
        import h5py

        if not isinstance(ds, h5py.Dataset):
            raise CnnkitError(f"{self.source}: {where} is not an array.")
        if ds.dtype.kind not in "fiu":
            raise CnnkitError(
                f"{self.source}: {where} holds dtype {ds.dtype}; only numeric arrays are read."
            )
        if int(np.prod(ds.shape, dtype=np.int64)) > MAX_ARRAY_ELEMENTS:
            raise CnnkitError(f"{self.source}: {where} has shape {ds.shape}; too large to read.")
        return np.asarray(ds[()], dtype=np.float32)

    def weights(self, layers: list[dict[str, Any]], index: int) -> list[np.ndarray]:
        """The arrays of ``layers[index]`` (a layer entry of the config), Keras' order."""
        if self.legacy:
            return self._legacy_weights(layers[index])
        if self._keys is None:
            used: dict[str, int] = {}
            keys = []
            for entry in layers:
                base = snake_case(str(entry.get("class_name", "")))
                if base in used:
                    used[base] += 1
                    keys.append(f"{base}_{used[base]}")
                else:
                    used[base] = 0
                    keys.append(base)
            self._keys = keys
        group = self._h5.get(f"layers/{self._keys[index]}/vars")
        if group is None:
            return []
        names = sorted(group.keys(), key=lambda k: int(k) if k.isdigit() else -1)
        if any(not n.isdigit() for n in names):
            raise CnnkitError(f"{self.source}: unexpected entries {names} in {group.name}.")
        return [self._check_array(group[n], f"{group.name}/{n}") for n in names]

    def _legacy_weights(self, entry: dict[str, Any]) -> list[np.ndarray]:
        name = str(entry.get("config", {}).get("name", entry.get("name", "")))
        root = self._h5.get("model_weights", self._h5)
        group = root.get(name) if name and "/" not in name else None
        if group is None:
            return []
        names = [
            n.decode("utf8") if isinstance(n, bytes) else str(n)
            for n in group.attrs.get("weight_names", [])
        ]
        arrays = []
        for n in names:
            if n.startswith("/") or ".." in n.split("/"):
                raise CnnkitError(f"{self.source}: weight name {n!r} leaves its layer group.")
            ds = group.get(n)
            if ds is None:
                raise CnnkitError(f"{self.source}: weight {n!r} of layer {name!r} is missing.")
            arrays.append(self._check_array(ds, f"{group.name}/{n}"))
        return arrays


def _parse_config(raw: bytes | str, source: str) -> dict[str, Any]:
    if len(raw) > MAX_CONFIG_BYTES:
        raise CnnkitError(f"{source}: the model config is over {MAX_CONFIG_BYTES} bytes.")
    try:
        config = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CnnkitError(f"{source}: the model config is not valid JSON ({err}).") from None
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise CnnkitError(f"{source}: the model config is not a Keras model description.")
    layers = config["config"].get("layers")
    if not isinstance(layers, list) or len(layers) > MAX_LAYERS:
        raise CnnkitError(
            f"{source}: the model config needs a list of at most {MAX_LAYERS} layers; "
            f"received {type(layers).__name__}"
            f"{f' of {len(layers)}' if isinstance(layers, list) else ''}."
        )
    return config


def read_keras_file(path: str | os.PathLike) -> KerasFile:
    """Open a ``.keras`` zip or a legacy ``.h5`` full model; see the module docstring."""
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a dependency of the test extra
        raise CnnkitError(
            "Reading Keras models needs h5py: pip install h5py (Keras itself is not needed)."
        ) from None
    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"{path} is not a file; expected a .keras or .h5 Keras model.")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise CnnkitError(
            f"{path} is {size} bytes; Keras models over {MAX_FILE_BYTES} are refused."
        )
    with open(path, "rb") as fh:
        head = fh.read(8)
    source = str(path)
    if head == _H5_MAGIC:
        try:
            h5 = h5py.File(path, "r")
        except OSError as err:
            raise CnnkitError(f"{path} cannot be read by h5py: {err}") from None
        raw = h5.attrs.get("model_config")
        if raw is None:
            raise CnnkitError(
                f"{path} holds weights only (no 'model_config'); cnnkit.from_keras needs a full "
                "model saved with model.save(...)."
            )
        return KerasFile(_parse_config(raw, source), source, h5, legacy=True)
    if not zipfile.is_zipfile(path):
        raise CnnkitError(
            f"{path} is neither a Keras 3 .keras zip nor an HDF5 .h5 model (cnnkit never "
            "unpickles files; SavedModel folders are not supported)."
        )
    try:
        config, data = _read_keras_zip(path, source)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError,
            RuntimeError) as err:  # fmt: skip
        raise CnnkitError(
            f"{path}: a damaged .keras zip ({type(err).__name__}: {err}); save the model again."
        ) from None
    if len(data) > MAX_FILE_BYTES:
        raise CnnkitError(f"{path}: model.weights.h5 is over {MAX_FILE_BYTES} bytes.")
    try:
        h5 = h5py.File(io.BytesIO(data), "r")
    except OSError as err:
        raise CnnkitError(f"{path}: model.weights.h5 cannot be read by h5py: {err}") from None
    return KerasFile(config, source, h5, legacy=False)


def _read_keras_zip(path: Path, source: str) -> tuple[dict[str, Any], bytes]:
    """``config.json`` (parsed) and the bytes of ``model.weights.h5`` of a .keras zip."""
    with zipfile.ZipFile(path) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        for member, limit in (
            ("config.json", MAX_CONFIG_BYTES),
            ("model.weights.h5", MAX_FILE_BYTES),
        ):
            if member not in infos:
                raise CnnkitError(f"{path} has no {member}; not a Keras 3 .keras file.")
            if infos[member].file_size > limit:
                raise CnnkitError(
                    f"{path}: {member} is {infos[member].file_size} bytes; too large."
                )
        config = _parse_config(zf.open("config.json").read(MAX_CONFIG_BYTES + 1), source)
        data = zf.open("model.weights.h5").read(MAX_FILE_BYTES + 1)
    return config, data
