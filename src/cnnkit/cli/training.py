"""What ``cnnkit train`` does, kept thin and the same for every task: config -> data ->
model -> ``Model.fit`` -> run folder -> report.

The work is done by :func:`cnnkit.models.create`, :class:`cnnkit.Model`, the data
readers and the callbacks; this module only wires a config to them and writes the run
folder (:mod:`cnnkit.cli.run_folder`). What a task adds (its scores, its plots) comes
from the tables of :mod:`cnnkit.cli.scores` and :mod:`cnnkit.cli.plots`.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import time
from pathlib import Path
from typing import Any

from cnnkit._core.errors import CnnkitError, ConfigError
from cnnkit.cli import run_folder
from cnnkit.cli.datasets import TaskData, load_data
from cnnkit.cli.plots import make_plots
from cnnkit.cli.recipes import build_callbacks, build_schedule
from cnnkit.cli.scores import score

#: the classes a model predicts, by task: Mask R-CNN's labels 1..K leave out classes[0]
#: (the background); otherwise every class of the data
NUM_CLASSES = {"instance": lambda classes: len(classes) - 1}

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
        "num_classes": None
        if data.classes is None
        else NUM_CLASSES.get(config["task"], len)(data.classes),
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
    """``cnnkit.Model(create(name, weights=..., **kwargs))``, with ``model.freeze``'s parts
    frozen (:func:`cnnkit.set_trainable`); returns the model and the kwargs used."""
    from cnnkit.layers.trainable import set_trainable
    from cnnkit.models import create
    from cnnkit.train.model import Model

    spec = config["model"]
    kwargs = model_kwargs(config, data)
    if spec.get("num_classes") is not None:
        kwargs["num_classes"] = spec["num_classes"]
    net = create(spec["name"], weights=spec.get("weights"), **kwargs)
    freeze = spec.get("freeze")
    for path in [freeze] if isinstance(freeze, str) else freeze or []:
        try:
            part = net.get_submodule(path)
        except AttributeError:
            names = [n for n, _ in net.named_children()]
            raise ConfigError(
                f"model.freeze: {spec['name']} has no part {path!r}; its top-level parts: "
                f"{', '.join(names)} (a dotted path such as features.layer1 reaches deeper)."
            ) from None
        set_trainable(part, False)
    return Model(net), kwargs


def weights_transform(config: dict[str, Any], channels: int):
    """The preprocessing of the config's pretrained weights for ``channels``-channel
    images (``cnnkit.models.preprocessing``), or ``None`` without weights. Localisation
    only normalises (a crop would move the boxes)."""
    weights = config["model"].get("weights")
    if weights is None or config["task"] not in ("classification", "localization"):
        return None
    from cnnkit.models import list_models, preprocessing

    name = config["model"]["name"]
    backbone = config["model"].get("args", {}).get("backbone")  # the localizer's pretrained part
    if isinstance(backbone, str) and backbone in list_models():
        name = backbone
    transform = preprocessing(name, weights).for_channels(channels)
    if config["task"] == "localization":
        transform = dataclasses.replace(transform, resize_size=None, crop_size=None)
    return transform


def load_task_data(
    config: dict[str, Any], data_dir: str | None, limit: int | None = None
) -> TaskData:
    """The config's dataset, through the preprocessing of the model's pretrained weights
    (:func:`weights_transform`) when the config names weights."""
    data = load_data(config["dataset"]["name"], config["dataset"]["args"], data_dir, limit)
    transform = weights_transform(config, data.input_shape[0])
    if transform is not None:
        data.x_train, data.x_test = transform(data.x_train), transform(data.x_test)
    return data


def lr_schedule(config: dict[str, Any]):
    """The recipe's ``compile.lr_schedule`` as a cnnkit schedule (None without one)."""
    spec = config["compile"].get("lr_schedule")
    return build_schedule(spec, config["fit"]["epochs"], config.get("name", "config"))


def optimizer(config: dict[str, Any]):
    """The recipe's ``compile.optimizer``: a name, or ``{name: sgd, args: {momentum: 0.9}}``."""
    spec = config["compile"].get("optimizer", "adam")
    if isinstance(spec, dict):
        from cnnkit.train.optimizers import Named

        return Named(spec["name"], **(spec.get("args") or {}))
    return spec


def recipe_precision(config: dict[str, Any], precision: str | None) -> str:
    """``--precision`` as given, except ``auto`` (or none) in a recipe whose
    ``compile.precision`` fixes it (e.g. ``fp32`` where bf16 changes the result)."""
    fixed = config["compile"].get("precision")
    if precision in (None, "auto") and fixed not in (None, "auto"):
        log.info("precision %s: the recipe's compile.precision (--precision overrides)", fixed)
        return fixed
    return precision or "auto"


def compile_model(model, config: dict[str, Any], device: str, precision: str):
    c = config["compile"]
    precision = recipe_precision(config, precision)
    model.compile(
        optimizer=optimizer(config),
        loss=c.get("loss"),
        metrics=c.get("metrics", []),
        loss_weights=c.get("loss_weights"),
        learning_rate=c.get("learning_rate"),
        lr_schedule=lr_schedule(config),
        device=device,
        precision=precision,
        global_clipnorm=c.get("global_clipnorm"),
    )
    return model


def _callbacks(
    run: Path, monitor: str, resume: bool, every: int | None = None, minutes: float | None = None
) -> list[Any]:
    from cnnkit.train.callbacks import CSVLogger, ModelCheckpoint, TensorBoard

    cbs: list[Any] = [
        ModelCheckpoint(
            run / run_folder.CHECKPOINTS,
            monitor=monitor,
            save_freq=every or "epoch",
            save_minutes=minutes,
        ),  # fmt: skip
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
    from cnnkit.train.checkpoint import read_checkpoint_info
    from cnnkit.train.loading import load

    best = checkpoints / "best"
    info = read_checkpoint_info(best)
    saved = info.get("extra", {}).get("monitor")
    if saved != monitor:
        raise CnnkitError(
            f"{best} holds the best epoch by {saved!r}, not by fit.restore_best {monitor!r}."
        )
    model._net.load_state_dict(load(best)._net.state_dict())
    log.info("restored the weights of epoch %s (best %s)", info.get("epoch"), monitor)


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
    checkpoint_every: int | None = None,
    checkpoint_minutes: float | None = None,
    resume_hint: str | None = None,
) -> dict[str, Any]:
    """Train ``config`` into the run folder ``run``; returns the metrics written.

    Data, model, compile settings, optimizer, loss, metrics and output heads are all
    checked before ``run`` is created. ``resume``: continue the checkpoint in ``run``
    (a folder without one is started afresh)."""
    from cnnkit.train.seed import seed_everything

    seed_everything(int(config["seed"]))
    data = load_task_data(config, data_dir, limit)
    model, kwargs = build_model(config, data)
    compile_model(model, config, device, precision)
    first = next(iter(model._task.source(data.x_train, data.y_train).batches(2, False)))[0]
    model._prepare(first)  # heads, metrics, optimizer: checked before the run folder exists
    model.resume_hint = resume_hint  # the line a SIGTERM/SIGINT logs says how to go on
    run.mkdir(parents=True, exist_ok=True)
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
    if (run / run_folder.CONFIG).is_file():  # the original command stays, relaunches append
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
            *_callbacks(run, monitor, resume, checkpoint_every, checkpoint_minutes),
        ],
        verbose=verbose,
        resume_from=str(run / run_folder.CHECKPOINTS) if resume else None,
    )
    seconds = time.perf_counter() - start
    (run / "report.html").unlink(missing_ok=True)  # written last: marks a finished run
    run_folder.write_history(run / run_folder.HISTORY, history.history)
    if fit.get("restore_best"):
        restore_best(model, run / run_folder.CHECKPOINTS, fit["restore_best"])
    model.save(run, overwrite=True)
    metrics = score(model, config, data, history)
    metrics["train_seconds"] = seconds
    metrics["params"] = int(sum(p.numel() for p in model.parameters()))
    run_folder.write_json(run / run_folder.METRICS, metrics)
    run_folder.write_json(run / "environment.json", run_folder.environment(model))
    run_folder.write_summary(run, model.module, data.input_shape)
    make_plots(run, config, model, data, history, metrics)
    from cnnkit.cli.run_pages import write_page_after_training

    write_page_after_training(run, model, config, data)  # model.html, linked from report.html
    run_folder.write_report(run, title=f"cnnkit run {config['name']}")
    return metrics


def checked_run_config(run: str | Path) -> dict[str, Any]:
    """A run folder's config.yaml, checked as ``cnnkit train`` checks a config (a shared
    run folder is data: its names are looked up in cnnkit's tables when used), with the
    run's own entries (``run``, ``command``, ``resumed_with``) kept."""
    from cnnkit.cli.recipes import RUN_KEYS, validate

    raw = run_folder.read_config(run)
    path = Path(run) / run_folder.CONFIG
    config = validate(raw, str(path))
    run_folder.run_options(raw.get("run"), path)
    config.update({key: raw[key] for key in RUN_KEYS if key in raw})
    return config


def load_run(run: str | Path, device: str = "auto", precision: str | None = None):
    """Model (compiled as in its config) and config of a finished run.

    The model runs with the precision it was trained with (model.json) unless
    ``precision`` is given."""
    from cnnkit.train.loading import load

    config = checked_run_config(run)
    if not (Path(run) / "model.json").is_file():
        raise CnnkitError(
            f"{str(run)!r} holds no trained model (model.json is missing): the run did not "
            "finish; continue it with `cnnkit train CONFIG --out RUN --resume`."
        )
    model = load(run, device=device, precision=precision)
    compile_model(model, config, device, model.precision.name)
    return model, config


def check_task(config: dict[str, Any], allowed: tuple[str, ...], what: str) -> None:
    if config.get("task") not in allowed:
        raise ConfigError(
            f"{what} works on runs of task {', '.join(allowed)}; this run's task is "
            f"{config.get('task')!r}."
        )
