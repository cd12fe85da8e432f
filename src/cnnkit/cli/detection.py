"""Instance segmentation runs (task ``instance``): Mask R-CNN through
:func:`cnnkit.train.detection.fit_detection` and ``evaluate_detection`` (COCO mAP)."""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path
from typing import Any

from cnnkit.cli import run_folder
from cnnkit.cli.datasets import TaskData, load_data


def _flat(scores: dict[str, dict]) -> dict[str, float]:
    return {
        f"{iou}_{key}": float(res[key])
        for iou, res in scores.items()
        for key in ("map", "map_50", "map_75")
        if key in res
    }


def _write_history(path: Path, history: dict[str, list[float]]) -> None:
    keys = sorted(history)
    epochs = max((len(v) for v in history.values()), default=0)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", *keys])
        for e in range(epochs):
            w.writerow([e, *(repr(float(history[k][e])) for k in keys)])


def train_instances(
    config: dict[str, Any], run: Path, argv: list[str], data: TaskData, *, resume: bool,
    device: str, data_dir: str | None, limit: int | None, verbose: int,
    resume_hint: str | None = None, checkpoint_every: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Train a Mask R-CNN recipe into ``run`` (created once the model is built); returns
    the metrics written. ``resume`` continues from ``run/checkpoints/last`` (written
    after every epoch, every ``checkpoint_every`` iterations and on SIGTERM/SIGINT); a
    run whose epochs are all done only has its final files written again."""
    from cnnkit.models import create
    from cnnkit.train.checkpoint import save_model
    from cnnkit.train.detection import evaluate_detection, fit_detection

    kwargs = dict(config["model"]["args"])
    kwargs.setdefault("num_classes", len(data.classes or []) - 1)  # classes[0] = background
    kwargs.setdefault("in_channels", data.input_shape[0])
    model = create(config["model"]["name"], **kwargs)
    run.mkdir(parents=True, exist_ok=True)
    record = dict(config)
    record["run"] = {
        "data_dir": data_dir, "limit": limit, "device": device,
        "input_shape": list(data.input_shape), "classes": data.classes, "model_kwargs": kwargs,
    }  # fmt: skip
    if (run / run_folder.CONFIG).is_file():  # the original command stays, relaunches append
        saved = run_folder.read_config(run)
        record["resumed_with"] = [*saved.get("resumed_with", []), " ".join(["cnnkit", *argv])]
        argv = saved.get("command", "cnnkit").split()[1:]
    run_folder.write_config(run, record, argv)
    fit = config["fit"]
    checkpoints = run / run_folder.CHECKPOINTS  # the full training state after every epoch
    say = print if verbose else (lambda line: None)
    start = time.perf_counter()
    history = fit_detection(
        model, data.x_train, data.y_train, epochs=fit["epochs"], batch_size=fit["batch_size"],
        lr=config["compile"].get("learning_rate") or 0.02, log_fn=say,
        seed=int(config["seed"]), device=None if device == "auto" else device,
        checkpoint_dir=checkpoints, resume_from=checkpoints if resume else None,
        checkpoint_every=checkpoint_every, resume_hint=resume_hint,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    (run / "report.html").unlink(missing_ok=True)  # written last: marks a finished run
    save_model(model, run, overwrite=True)
    _write_history(run / run_folder.HISTORY, history)  # all epochs, those resumed from too
    test = _flat(evaluate_detection(model, data.x_test, data.y_test))
    metrics = {
        "test": test,
        "epochs": len(history.get("loss", [])),
        "train_seconds": seconds,
        "params": int(sum(p.numel() for p in model.parameters())),
    }
    run_folder.write_json(run / run_folder.METRICS, metrics)
    env = run_folder.environment(None)
    env["device"] = str(next(model.parameters()).device)
    env["precision"] = "fp32"
    run_folder.write_json(run / "environment.json", env)
    (run / "summary.txt").write_text(f"{model}\n", encoding="utf-8")
    _plots(run, model, data)
    run_folder.write_report(run, title=f"cnnkit run {config['name']}")
    return metrics


def _plots(run: Path, model: Any, data: TaskData) -> None:
    from cnnkit.cli.plots import _plot
    from cnnkit.report.plots import read_history_csv
    from cnnkit.train.detection import predict_detection

    folder = run / run_folder.PLOTS
    folder.mkdir(exist_ok=True)
    _plot("plot_history", folder / "history.png", read_history_csv(run / run_folder.HISTORY))
    if len(data.x_test):
        pred = predict_detection(model, data.x_test[:1])[0]
        names = data.classes
        _plot("plot_instances", folder / "instances.png", data.x_test[0], pred,
              target=data.y_test[0], class_names=names)  # fmt: skip


def evaluate_instances(model: Any, config: dict[str, Any], args: argparse.Namespace) -> dict:
    from cnnkit.train.detection import evaluate_detection

    options = config.get("run", {})
    data_dir = args.data_dir if args.data_dir is not None else options.get("data_dir")
    limit = args.limit if args.limit is not None else options.get("limit")
    data = load_data(config["dataset"]["name"], config["dataset"]["args"], data_dir, limit)
    net = getattr(model, "module", model)
    return {"test": _flat(evaluate_detection(net, data.x_test, data.y_test))}
