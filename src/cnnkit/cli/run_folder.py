"""The run folder a ``cnnkit train`` leaves behind.

runs/<recipe>-<timestamp>/
    config.yaml          resolved config + the exact command
    model.safetensors    final weights  } cnnkit.load(run_folder)
    model.json           architecture   }
    checkpoints/         ModelCheckpoint: last/ and best/ (fit(resume_from=...))
    metrics.json         {"test": {...}, "val": {...}, per-class scores, confusion matrix}
    history.csv          one row per epoch (CSVLogger)
    summary.txt          the model's layer table
    environment.json     versions, device, precision, memory format, threads
    tensorboard/         TensorBoard events (when tensorboard is installed)
    plots/               learning curves, confusion matrix, overlays, CAMs
    report.html          everything above on one page (cnnkit.report)
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from cnnkit._core.errors import CnnkitError, short
from cnnkit._core.json_file import MAX_RUN_FILE_BYTES
from cnnkit._core.json_file import read_json as read_json_file
from cnnkit._core.safe_yaml import dump_yaml, load_yaml

log = logging.getLogger("cnnkit.cli")

CONFIG = "config.yaml"
METRICS = "metrics.json"
HISTORY = "history.csv"
CHECKPOINTS = "checkpoints"
PLOTS = "plots"


def default_run_dir(name: str, base: str | os.PathLike = "runs") -> Path:
    """``runs/<name>-<YYYYmmdd-HHMMSS>``, with a counter suffix if that exists already."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(base) / f"{name}-{stamp}"
    k = 2
    while path.exists():
        path = Path(base) / f"{name}-{stamp}-{k}"
        k += 1
    return path


def prepare(out: str | os.PathLike | None, name: str, resume: bool) -> Path:
    """The run folder to write: refuses to reuse a folder unless resuming it."""
    if resume:
        if out is None:
            raise CnnkitError("--resume continues the run in --out; pass --out runs/NAME.")
        path = Path(out)
        if not (path / CONFIG).is_file():
            raise CnnkitError(
                f"--resume: {str(path)!r} holds no run ({CONFIG} is missing); pass the folder "
                "of an earlier `cnnkit train` run, or drop --resume to start a new one."
            )
        return path
    path = Path(out) if out is not None else default_run_dir(name)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise CnnkitError(
            f"the run folder {str(path)!r} already exists; pass --resume to continue that run "
            "or a new --out to start another (cnnkit never overwrites a run)."
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_run_path(out: str | os.PathLike | None, name: str) -> Path:
    """The folder for a new run (created later, once the config is checked): refuses a
    folder that is not empty."""
    path = Path(out) if out is not None else default_run_dir(name)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise CnnkitError(
            f"the run folder {str(path)!r} already exists; pass --resume to continue that run "
            "or a new --out to start another (cnnkit never overwrites a run)."
        )
    return path


def read_config(run: str | os.PathLike) -> dict[str, Any]:
    """The resolved config of a finished (or interrupted) run."""
    path = Path(run) / CONFIG
    if not path.is_file():
        raise CnnkitError(
            f"{str(run)!r} is not a cnnkit run folder ({CONFIG} is missing); pass a folder "
            "written by `cnnkit train` or `cnnkit demo`."
        )
    try:
        data = load_yaml(path)  # bounded: no aliases, at most 1 MB and 10,000 values
    except (OSError, UnicodeDecodeError) as err:
        raise CnnkitError(f"{path} cannot be read: {err}") from None
    if not isinstance(data, dict):
        raise CnnkitError(f"{path} does not hold a config mapping.")
    return data


def reading_data(
    config: dict[str, Any], options: dict[str, Any], data_dir: str | None
) -> tuple[dict[str, Any], str | None]:
    """The dataset spec and data folder with which a command that only reads (evaluate,
    predict, explain) loads a run's data: ``--data-dir`` when given, else the run's
    recorded folder only if it exists here (a shared run cannot make cnnkit create
    folders elsewhere; ``None``: ``$CNNKIT_DATA``), and never a download."""
    if data_dir is None:
        saved = options.get("data_dir")
        data_dir = saved if saved is not None and Path(saved).expanduser().is_dir() else None
        if saved is not None and data_dir is None:
            log.info("the run's data folder %s is not here; reading the default", saved)
    dataset = dict(config["dataset"], args={**(config["dataset"].get("args") or {})})
    if dataset["args"].get("download"):
        dataset["args"]["download"] = False
    return {**config, "dataset": dataset}, data_dir


def run_options(saved: Any, source: str | os.PathLike) -> dict[str, Any]:
    """The ``run`` options a saved file records (``limit``, ``data_dir``, ``precision``,
    ``epochs``), checked: a shared run folder or plan holds data of the expected types,
    or the command stops with a CnnkitError naming ``source``."""
    if saved is None:
        return {}
    if not isinstance(saved, dict):
        raise CnnkitError(f"{source}: the run options must be a mapping; received {short(saved)}.")
    for key in ("limit", "epochs"):
        value = saved.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise CnnkitError(f"{source}: {key} must be a positive int; received {short(value)}.")
    for key in ("data_dir", "precision", "dataset", "device"):
        value = saved.get(key)
        if value is not None and not isinstance(value, str):
            raise CnnkitError(f"{source}: {key} must be text; received {short(value)}.")
    return saved


def write_config(run: Path, config: dict[str, Any], argv: list[str]) -> None:
    """``config.yaml``, written to a temporary name and renamed: never half written."""
    body = dict(config)
    body["command"] = " ".join(["cnnkit", *argv])
    tmp = run / f".{CONFIG}.tmp"
    tmp.write_text(dump_yaml(body, sort_keys=False), encoding="utf-8")
    os.replace(tmp, run / CONFIG)


def write_history(path: Path, history: dict[str, list[float]]) -> None:
    """``history.csv`` from a whole run's history (CSVLogger's layout: epoch, sorted keys);
    replaces rows a killed attempt may have appended twice."""
    import csv

    keys = sorted(history)
    epochs = max((len(v) for v in history.values()), default=0)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", *keys])
        for e in range(epochs):
            w.writerow([e, *(repr(float(history[k][e])) for k in keys)])
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """A run folder's JSON file (metrics.json, environment.json, a reproduction's summary),
    bounded by ``MAX_RUN_FILE_BYTES``; any damage is a ``CnnkitError`` naming the file."""
    return read_json_file(path, MAX_RUN_FILE_BYTES, "a run folder's JSON file")


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n", encoding="utf-8")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def environment(model: Any) -> dict[str, Any]:
    """Versions and the runtime choices ``compile``/``fit`` made."""
    import numpy
    import torch

    from cnnkit._core import __version__
    from cnnkit.train.precision import cpu_has_native_bf16

    choices = dict(getattr(model, "runtime_choices", {}) or {})
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cnnkit": __version__,
        "device": choices.get("device"),
        "precision": choices.get("precision"),
        "outputs": "fp32 (final softmax/sigmoid, loss, metrics, predict, evaluate)",
        "native_bf16_cpu": cpu_has_native_bf16(),
        "memory_format": choices.get("memory_format"),
        "optimizer": choices.get("optimizer"),
        "fast_path": choices.get("fast_path"),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def write_summary(run: Path, module: Any, input_shape: tuple[int, ...]) -> str:
    from cnnkit.layers.summary import summary

    lines: list[str] = []
    try:
        summary(module, input_shape=input_shape, print_fn=lines.append)
    except CnnkitError as err:  # a summary must never fail a finished training
        lines = [f"(no summary: {err})"]
    text = "\n".join(lines) + "\n"
    (run / "summary.txt").write_text(text, encoding="utf-8")
    return text


def write_report(run: Path, title: str) -> Path | None:
    """``report.html`` via :func:`cnnkit.report.write_run_report`; a failure is logged,
    never raised: the trained model and its metrics are already on disk."""
    from cnnkit.report import write_run_report

    try:
        return Path(write_run_report(run, title=title))
    except (CnnkitError, OSError, ValueError) as err:
        log.warning("report.html could not be written: %s", err)
        return None
