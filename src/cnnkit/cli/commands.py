"""``cnnkit demo | train | evaluate | predict``: the commands that train or use a run."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cnnkit._core.errors import CnnkitError, ConfigError
from cnnkit.cli import run_folder
from cnnkit.cli.datasets import apply_dataset_override, load_data
from cnnkit.cli.recipes import load_config

DEMO_RECIPE = "digits-lenet5"


def _print_metrics(metrics: dict[str, Any], run: Path) -> None:
    test = metrics.get("test", {})
    print("test: " + ", ".join(f"{k} {v:.4f}" for k, v in test.items()))
    if "accuracy" in test:
        print(f"test accuracy: {100 * test['accuracy']:.2f}%")
    if "params" in metrics:
        print(f"parameters: {metrics['params']:,}")
    if "train_seconds" in metrics:
        print(f"training time: {metrics['train_seconds']:.1f} s")
    print(f"run folder: {run}")
    report = run / "report.html"
    if report.is_file():
        print(f"report: {report}")


@contextlib.contextmanager
def _cleanup_if_empty(run: Path):
    """Remove a run folder this command created when it fails before writing anything."""
    try:
        yield
    except BaseException:
        if run.is_dir() and not any(run.iterdir()):
            run.rmdir()
        raise


def _resolve(args: argparse.Namespace) -> dict[str, Any]:
    """The config with the command line's overrides applied."""
    from cnnkit.cli.recipes import validate

    config = load_config(args.recipe)
    if args.dataset is not None:
        apply_dataset_override(config, args.dataset)
        config["name"] = f"{config['name']}-{args.dataset}"  # e.g. runs/cifar10-cnn-mnist-<time>
    fit = config["fit"]
    if args.epochs is not None:
        fit["epochs"] = args.epochs
    if args.batch_size is not None:
        fit["batch_size"] = args.batch_size
    if args.seed is not None:
        config["seed"] = args.seed
    return validate(config, args.recipe)


def relaunch_command(argv: list[str], run: Path) -> str:
    """The command that continues this run: the same one, with ``--out`` and ``--resume``."""
    import shlex

    argv = list(argv)
    if "--out" not in argv and not any(a.startswith("--out=") for a in argv):
        argv += ["--out", str(run)]
    if "--resume" not in argv:
        argv.append("--resume")
    return shlex.join(["cnnkit", *argv])


def cmd_train(args: argparse.Namespace) -> int:
    """``cnnkit train``: the whole config is checked before the run folder is created;
    with ``--resume`` any state of the folder is continued (see :mod:`cnnkit.cli.relaunch`)."""
    from cnnkit.cli import relaunch
    from cnnkit.cli.training import train

    if args.resume and args.out is None:
        raise CnnkitError(
            "--resume continues the run in --out; pass --out runs/NAME (the same folder on "
            "every relaunch)."
        )
    config = _resolve(args)
    if args.resume:
        state = relaunch.inspect_run(args.out)
        decided = relaunch.plan(args, config, state)
        run = state.path
        if decided["finished"]:
            relaunch.print_finished(run, config["fit"]["epochs"])
            return 0
        data_dir, limit, resume = decided["data_dir"], decided["limit"], decided["resume"]
    else:
        run = run_folder.new_run_path(args.out, config["name"])
        data_dir, limit, resume = args.data_dir, args.limit, False
    print(f"cnnkit train {config['name']}: {config['model']['name']} on "
          f"{config['dataset']['name']}, {config['fit']['epochs']} epochs -> {run}")  # fmt: skip
    try:
        with _cleanup_if_empty(run):
            metrics = train(
                config, run, args.argv, resume=resume, device=args.device,
                precision=args.precision, data_dir=data_dir, limit=limit, verbose=args.verbose,
                checkpoint_every=args.checkpoint_every,
                checkpoint_minutes=args.checkpoint_minutes,
                resume_hint=relaunch_command(args.argv, run),
            )  # fmt: skip
    except CnnkitError as err:
        hint = relaunch.failure_hint(run)
        if not hint:
            raise
        raise type(err)(f"{err}{hint}") from None
    _print_metrics(metrics, run)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cnnkit.cli.training import train

    config = load_config(DEMO_RECIPE)
    if args.epochs is not None:
        config["fit"]["epochs"] = args.epochs
    run = run_folder.prepare(args.out, "demo", resume=False)
    print(
        "cnnkit demo: LeNet-5 on scikit-learn's 1,797 handwritten digits (8x8, resized to "
        f"32x32), {config['fit']['epochs']} epochs, no download needed"
    )
    with _cleanup_if_empty(run):
        metrics = train(config, run, args.argv, device=args.device, verbose=args.verbose)
    _print_metrics(metrics, run)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cnnkit.cli.training import load_run, score

    model, config = load_run(args.run, device=args.device)
    if config.get("task") == "instance":
        from cnnkit.cli.detection import evaluate_instances

        metrics = evaluate_instances(model, config, args)
    else:
        options = config.get("run", {})
        data_dir = args.data_dir if args.data_dir is not None else options.get("data_dir")
        limit = args.limit if args.limit is not None else options.get("limit")
        data = load_data(config["dataset"]["name"], config["dataset"]["args"], data_dir, limit)
        metrics = score(model, config, data, None)
    test = metrics["test"]
    print("test: " + ", ".join(f"{k} {v:.4f}" for k, v in test.items()))
    if args.json:
        print(json.dumps(metrics, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))
    return 0


# ------------------------------------------------------------------------ predict


def _fit_shape(x: torch.Tensor, shape: tuple[int, ...], where: str) -> torch.Tensor:
    """One sample ``(C, H, W)`` adapted to the model's ``shape``: channels and size."""
    if x.dim() == len(shape) - 1:
        x = x.unsqueeze(0)
    if x.dim() != len(shape):
        raise CnnkitError(
            f"{where}: a sample of shape {tuple(x.shape)} does not fit the model's input "
            f"{tuple(shape)}."
        )
    c = shape[0]
    if x.shape[0] != c:
        if c == 1:
            x = x.mean(0, keepdim=True)
        elif x.shape[0] == 1:
            x = x.expand(c, *x.shape[1:])
        else:
            raise CnnkitError(f"{where}: {x.shape[0]} channels, but the model takes {c}.")
    if x.dim() == 3 and tuple(x.shape[1:]) != tuple(shape[1:]):
        x = F.interpolate(x[None], size=tuple(shape[1:]), mode="bilinear", align_corners=False)[0]
    elif tuple(x.shape) != tuple(shape):
        raise CnnkitError(f"{where}: shape {tuple(x.shape)}, but the model takes {tuple(shape)}.")
    return x


def read_inputs(paths: list[str], shape: tuple[int, ...]) -> tuple[list[str], torch.Tensor]:
    """Image files or ``.npy`` arrays (one sample, or a batch ``(N, *shape)``)."""
    from cnnkit.data.images import load_image, to_chw_float

    names, samples = [], []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise CnnkitError(f"input {p!r} does not exist; pass image files or .npy arrays.")
        if path.suffix.lower() == ".npy":
            try:
                arr = np.load(path, allow_pickle=False)
            except ValueError as err:
                raise CnnkitError(f"{p}: not a plain .npy array ({err}).") from None
            t = torch.from_numpy(np.asarray(arr, dtype=np.float32))
            if t.dim() == len(shape) + 1:
                for i, s in enumerate(t):
                    names.append(f"{p}[{i}]")
                    samples.append(_fit_shape(s, shape, f"{p}[{i}]"))
                continue
            if t.dim() == len(shape) - 1 == 2:  # an (H, W) grey image
                t = t[None]
            names.append(p)
            samples.append(_fit_shape(t, shape, p))
        else:
            names.append(p)
            samples.append(_fit_shape(to_chw_float(load_image(path)), shape, p))
    return names, torch.stack(samples)


def cmd_predict(args: argparse.Namespace) -> int:
    from cnnkit.cli.training import check_task, load_run

    model, config = load_run(args.run, device=args.device)
    check_task(config, ("classification", "localization", "segmentation"), "cnnkit predict")
    run_info = config.get("run", {})
    shape = tuple(run_info.get("input_shape") or ())
    classes = run_info.get("classes") or []
    if not shape:
        raise CnnkitError(f"{args.run}/config.yaml records no input shape (run.input_shape).")
    names, x = read_inputs(args.inputs, shape)
    out = model.predict(x)
    task = config["task"]
    out_dir = Path(args.out_dir) if args.out_dir else Path(args.run) / "predictions"
    if task == "segmentation":
        out_dir.mkdir(parents=True, exist_ok=True)
        from PIL import Image

        pred = (out[:, 0] > 0.5) if out.shape[1] == 1 else out.argmax(1)
        for name, mask in zip(names, pred):
            target = out_dir / f"{Path(name.split('[')[0]).stem}_mask.png"
            scale = 255 // max(1, int(mask.max()))
            Image.fromarray(mask.astype(np.uint8) * scale).save(target)
            print(f"{name}: mask -> {target} ({100 * float(np.mean(mask > 0)):.1f}% foreground)")
    else:
        from cnnkit.cli.training import as_probabilities

        probs = as_probabilities(out[0] if task == "localization" else out)
        for i, name in enumerate(names):
            k = int(probs[i].argmax())
            label = classes[k] if k < len(classes) else str(k)
            line = f"{name}: {label} ({100 * float(probs[i, k]):.1f}%)"
            if task == "localization":
                box = out[1][i] * shape[-1]
                line += " box " + ", ".join(f"{v:.1f}" for v in box)
            print(line)
    if args.cam:
        if task != "classification" or x.dim() != 4:
            raise ConfigError(
                f"--cam needs an image classification run; this run's task is {task!r}."
            )
        from cnnkit.cli.plots import cam_examples

        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / "cam.png"
        if cam_examples(model, x, target):
            print(f"class activation maps -> {target}")
        else:
            raise CnnkitError("no class activation map could be drawn (see the warnings above).")
    return 0
