"""What ``cnnkit train`` does, kept thin: build from the registry, compile, fit, score.

The work is done by :func:`cnnkit.models.create`, :class:`cnnkit.Model`, the data
readers and the callbacks; this module only wires a config to them and writes the run
folder (:mod:`cnnkit.cli.run_folder`).
"""

from __future__ import annotations

import inspect
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit._core.errors import CnnkitError, ConfigError
from cnnkit.cli import run_folder
from cnnkit.cli.datasets import TaskData, load_data
from cnnkit.cli.recipes import build_callbacks

log = logging.getLogger("cnnkit.cli")


def model_kwargs(config: dict[str, Any], data: TaskData) -> dict[str, Any]:
    """``model.args`` plus what the data fixes (channels, size, classes, length), when the
    builder takes that argument and the config does not set it."""
    from cnnkit.models.registry import MODELS

    name = config["model"]["name"]
    params = inspect.signature(MODELS.get(name)).parameters
    kwargs = dict(config["model"]["args"])
    shape = data.input_shape
    implied = {
        "in_channels": shape[0],
        "input_size": shape[-1],
        "num_classes": data.num_classes,
        "length": shape[-1],
        "clip_shape": list(shape[1:]),
    }
    if name == "char_cnn":
        implied.pop("in_channels")
        implied["alphabet_size"] = shape[0]
    for key, value in implied.items():
        if key in params and key not in kwargs and value is not None:
            kwargs[key] = value
    return kwargs


def build_model(config: dict[str, Any], data: TaskData):
    """``cnnkit.Model(create(name, **kwargs))``; returns the model and the kwargs used."""
    from cnnkit.models import create
    from cnnkit.train.model import Model

    kwargs = model_kwargs(config, data)
    return Model(create(config["model"]["name"], **kwargs)), kwargs


def lr_schedule(config: dict[str, Any]):
    """The recipe's ``compile.lr_schedule`` as a cnnkit schedule (None without one)."""
    spec = config["compile"].get("lr_schedule")
    if not spec:
        return None
    from cnnkit.train import schedules

    args = dict(spec.get("args") or {})
    if spec["name"] == "cosine":
        args.setdefault("T_max", int(config["fit"]["epochs"]))
    try:
        return getattr(schedules, spec["name"])(**args)
    except TypeError as err:
        raise ConfigError(f"compile.lr_schedule {spec!r}: {err}") from None


def compile_model(model, config: dict[str, Any], device: str, precision: str):
    c = config["compile"]
    model.compile(
        optimizer=c.get("optimizer", "adam"),
        loss=c["loss"],
        metrics=c.get("metrics", []),
        loss_weights=c.get("loss_weights"),
        learning_rate=c.get("learning_rate"),
        lr_schedule=lr_schedule(config),
        device=device,
        precision=precision,
    )
    return model


def _callbacks(run: Path, monitor: str, resume: bool) -> list[Any]:
    from cnnkit.train.callbacks import CSVLogger, ModelCheckpoint, TensorBoard

    cbs: list[Any] = [
        ModelCheckpoint(run / run_folder.CHECKPOINTS, monitor=monitor),
        CSVLogger(run / run_folder.HISTORY, append=resume),
    ]
    try:
        import tensorboard  # noqa: F401

        cbs.append(TensorBoard(run / "tensorboard"))
    except ImportError:
        log.warning("tensorboard is not installed; no TensorBoard events (pip install tensorboard)")
    return cbs


def restore_best(model, checkpoints: Path, monitor: str) -> None:
    """``fit.restore_best``: put back the weights of the epoch with the best ``monitor``,
    which ModelCheckpoint kept in ``checkpoints/best/`` (so a resumed run restores the
    best epoch of the whole run, not only of its resumed part)."""
    from cnnkit.train.checkpoint import load, read_checkpoint_info

    best = checkpoints / "best"
    info = read_checkpoint_info(best)
    saved = info.get("extra", {}).get("monitor")
    if saved != monitor:
        raise CnnkitError(
            f"{best} holds the best epoch by {saved!r}, not by fit.restore_best {monitor!r}."
        )
    model._net.load_state_dict(load(best)._net.state_dict())
    log.info("restored the weights of epoch %s (best %s)", info.get("epoch"), monitor)


# ------------------------------------------------------------------------ scores


def as_probabilities(out: np.ndarray) -> np.ndarray:
    """Class probabilities over dim 1: ``out`` as it is when it already is a distribution
    (a model ending in softmax), else its softmax (a model returning logits)."""
    out = np.asarray(out, dtype=np.float64)
    if out.ndim < 2 or out.shape[1] == 1:
        return out
    if out.min() >= 0 and np.allclose(out.sum(1), 1.0, atol=1e-3):
        return out
    e = np.exp(out - out.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _predictions(out: np.ndarray) -> np.ndarray:
    """Class indices from probabilities: argmax over dim 1, or > 0.5 for one channel."""
    if out.ndim >= 2 and out.shape[1] == 1:
        return (out[:, 0] > 0.5).astype(np.int64)
    return out.argmax(1)


def class_scores(truth: torch.Tensor, probs: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Confusion matrix and per-class precision/recall/F1/IoU (pixels for segmentation)."""
    from cnnkit.metrics import UndefinedMetricWarning, confusion_matrix, report

    y_true = truth.numpy().astype(np.int64)
    if y_true.ndim == probs.ndim:  # (N, 1, H, W) binary masks
        y_true = y_true[:, 0]
    y_pred = _predictions(probs)
    cm = confusion_matrix(y_true, y_pred, num_classes=len(classes))
    with warnings.catch_warnings():  # classes absent from a small test set score 0
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
        rep = report(cm)
    per_class = {
        name: {
            "precision": float(rep["precision_per_class"][i]),
            "recall": float(rep["recall_per_class"][i]),
            "f1": float(rep["f1_per_class"][i]),
            "iou": float(rep["iou_per_class"][i]),
            "support": int(rep["support"][i]),
        }
        for i, name in enumerate(classes)
    }
    summary = {
        "accuracy": float(rep["accuracy"]),
        "balanced_accuracy": float(rep["balanced_accuracy"]),
        "mean_iou": float(rep["mean_iou"]),
        "f1_macro": float(rep["f1_macro"]),
    }
    return {
        "summary": summary,
        "per_class": per_class,
        "confusion_matrix": np.asarray(cm).tolist(),
        "class_names": list(classes),
    }


def box_iou_mean(pred: np.ndarray, true: torch.Tensor) -> float:
    from cnnkit.metrics.boxes import matched_box_iou_tensor

    p = torch.from_numpy(pred).float()
    p = torch.cat([torch.minimum(p[:, :2], p[:, 2:]), torch.maximum(p[:, :2], p[:, 2:])], 1)
    return float(matched_box_iou_tensor(p, true.float()).mean())


def score(model, config: dict[str, Any], data: TaskData, history: Any | None) -> dict[str, Any]:
    """metrics.json: ``test`` (evaluate + task scores), ``val`` (last epoch), extras."""
    batch = config["fit"]["batch_size"]
    test = model.evaluate(data.x_test, data.y_test, batch_size=batch)
    metrics: dict[str, Any] = {"test": {k: float(v) for k, v in test.items()}}
    if history is not None and history.history:
        last = {k[4:]: float(v[-1]) for k, v in history.history.items() if k.startswith("val_")}
        if last:
            metrics["val"] = last
        metrics["epochs"] = len(history.history.get("loss", []))
    task = config["task"]
    if task in ("classification", "segmentation") and data.classes:
        probs = model.predict(data.x_test, batch_size=batch)
        scores = class_scores(data.y_test, probs, data.classes)
        key = "pixel_" if task == "segmentation" else ""
        for k, v in scores.pop("summary").items():
            metrics["test"][key + k] = v
        metrics.update(scores)
    elif task == "localization":
        probs, boxes = model.predict(data.x_test, batch_size=batch)
        metrics["test"]["box_iou"] = box_iou_mean(boxes, data.y_test[1])
        scores = class_scores(data.y_test[0], probs, data.classes)
        metrics["test"]["accuracy"] = scores.pop("summary")["accuracy"]
        metrics.update(scores)
    return metrics


# ------------------------------------------------------------------------ train


def train(
    config: dict[str, Any],
    run: Path,
    argv: list[str],
    *,
    resume: bool = False,
    device: str = "auto",
    precision: str = "auto",
    data_dir: str | None = None,
    limit: int | None = None,
    verbose: int = 1,
) -> dict[str, Any]:
    """Train ``config`` into the run folder ``run``; returns the metrics written."""
    from cnnkit.train.seed import seed_everything

    seed_everything(int(config["seed"]))
    data = load_data(config["dataset"]["name"], config["dataset"]["args"], data_dir, limit)
    if config["task"] == "instance":
        from cnnkit.cli.detection import train_instances

        return train_instances(config, run, argv, data, resume=resume, device=device,
                               data_dir=data_dir, limit=limit, verbose=verbose)  # fmt: skip
    model, kwargs = build_model(config, data)
    compile_model(model, config, device, precision)
    record = dict(config)
    record["run"] = {
        "data_dir": data_dir,
        "limit": limit,
        "device": device,
        "precision": precision,
        "input_shape": list(data.input_shape),
        "classes": data.classes,
        "model_kwargs": kwargs,
    }
    if resume:  # the original command stays; the resuming ones are appended
        saved = run_folder.read_config(run)
        record["resumed_with"] = [*saved.get("resumed_with", []), " ".join(["cnnkit", *argv])]
        argv = saved.get("command", "cnnkit").split()[1:]
    run_folder.write_config(run, record, argv)
    fit = config["fit"]
    monitor = fit.get("restore_best") or ("val_loss" if fit["validation_split"] > 0 else "loss")
    start = time.perf_counter()
    history = model.fit(
        data.x_train,
        data.y_train,
        batch_size=fit["batch_size"],
        epochs=fit["epochs"],
        validation_split=fit["validation_split"],
        callbacks=[
            *build_callbacks(fit.get("callbacks"), config["name"]),
            *_callbacks(run, monitor, resume),
        ],
        verbose=verbose,
        resume_from=str(run / run_folder.CHECKPOINTS) if resume else None,
    )
    seconds = time.perf_counter() - start
    if fit.get("restore_best"):
        restore_best(model, run / run_folder.CHECKPOINTS, fit["restore_best"])
    model.save(run, overwrite=resume)
    metrics = score(model, config, data, history)
    metrics["train_seconds"] = seconds
    metrics["params"] = int(sum(p.numel() for p in model.parameters()))
    run_folder.write_json(run / run_folder.METRICS, metrics)
    run_folder.write_json(run / "environment.json", run_folder.environment(model))
    run_folder.write_summary(run, model.module, data.input_shape)
    from cnnkit.cli.plots import make_plots

    make_plots(run, config, model, data, history, metrics)
    run_folder.write_report(run, title=f"cnnkit run {config['name']}")
    return metrics


def load_run(run: str | Path, device: str = "cpu"):
    """Model (compiled as in its config) and config of a finished run."""
    from cnnkit.train.checkpoint import load

    config = run_folder.read_config(run)
    if not (Path(run) / "model.json").is_file():
        raise CnnkitError(
            f"{str(run)!r} holds no trained model (model.json is missing): the run did not "
            "finish; continue it with `cnnkit train CONFIG --out RUN --resume`."
        )
    model = load(run, device=device)
    if config.get("task") != "instance":
        compile_model(model, config, device, config.get("run", {}).get("precision", "auto"))
    return model, config


def check_task(config: dict[str, Any], allowed: tuple[str, ...], what: str) -> None:
    if config.get("task") not in allowed:
        raise ConfigError(
            f"{what} works on runs of task {', '.join(allowed)}; this run's task is "
            f"{config.get('task')!r}."
        )
