"""``cnnkit demo | train | evaluate | predict``: the commands that train or use a run."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cnnkit._core.errors import CnnkitError, ConfigError
from cnnkit.cli import run_folder
from cnnkit.cli.datasets import apply_dataset_override
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
    if getattr(args, "weights", None) is not None:
        config["model"]["weights"] = args.weights
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
                precision=args.precision or "auto", data_dir=data_dir, limit=limit, verbose=args.verbose,
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
    from cnnkit.cli.scores import score
    from cnnkit.cli.training import load_run, load_task_data

    model, config = load_run(args.run, device=args.device, precision=args.precision)
    options = run_folder.run_options(config.get("run"), Path(args.run) / run_folder.CONFIG)
    data_config, data_dir = run_folder.reading_data(config, options, args.data_dir)
    limit = args.limit if args.limit is not None else options.get("limit")
    data = load_task_data(data_config, data_dir, limit)
    metrics = score(model, config, data, None)
    test = metrics["test"]
    print("test: " + ", ".join(f"{k} {v:.4f}" for k, v in test.items()))
    if args.json:
        print(json.dumps(metrics, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))
    return 0


# ------------------------------------------------------------------------ predict


def _fit_shape(
    x: torch.Tensor, shape: tuple[int, ...], where: str, resized: list[str]
) -> torch.Tensor:
    """One sample ``(C, H, W)`` adapted to the model's ``shape``: channels and size (an
    image of another size is resized and its name added to ``resized``)."""
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
        resized.append(f"{where} ({'x'.join(map(str, x.shape[1:]))})")
        x = F.interpolate(x[None], size=tuple(shape[1:]), mode="bilinear", align_corners=False)[0]
    elif tuple(x.shape) != tuple(shape):
        raise CnnkitError(f"{where}: shape {tuple(x.shape)}, but the model takes {tuple(shape)}.")
    return x


#: leading-axis sizes of an array that may be an image's colour channels (RGB, RGBA)
_IMAGE_CHANNELS = (3, 4)


def _array_samples(
    t: torch.Tensor, shape: tuple[int, ...], where: str
) -> list[torch.Tensor] | None:
    """How an ``.npy`` array reads for a model taking ``shape`` (C, *spatial): a list of
    samples when it is a batch, None when it is one sample.

    ``(N, C, *spatial)`` is a batch. For a one-channel model, ``(A, *spatial)`` is a batch
    of A single-channel samples unless A == 1; A = 3 or 4 could also be one colour image
    (converted to grey), so that shape is refused with both readings named.
    """
    if t.dim() == len(shape) + 1:
        return list(t)
    if t.dim() != len(shape) or shape[0] != 1 or t.shape[0] == 1:
        return None
    if t.shape[0] in _IMAGE_CHANNELS:
        dims = ", ".join(map(str, t.shape[1:]))
        raise CnnkitError(
            f"{where}: an array of shape {tuple(t.shape)} reads two ways for a model taking "
            f"{tuple(shape)}: one image with {t.shape[0]} colour channels, or a batch of "
            f"{t.shape[0]} single-channel images. Save a batch as ({t.shape[0]}, 1, {dims}), "
            f"or one colour image as an image file."
        )
    return [s[None] for s in t]


def read_inputs(
    paths: list[str], shape: tuple[int, ...], transform=None
) -> tuple[list[str], torch.Tensor, list[str]]:
    """Image files or ``.npy`` arrays (one sample, or a batch ``(N, *shape)``, or for a
    one-channel model ``(N, *spatial)``); returns names, the batch and the resized inputs.
    Image files go through ``transform`` (the pretrained weights' preprocessing) when given."""
    from cnnkit.data.images import load_image, to_chw_float

    names, samples, resized = [], [], []
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
            batch = _array_samples(t, shape, p)
            if batch is not None:
                for i, s in enumerate(batch):
                    names.append(f"{p}[{i}]")
                    samples.append(_fit_shape(s, shape, f"{p}[{i}]", resized))
                continue
            if t.dim() == len(shape) - 1 == 2:  # an (H, W) grey image
                t = t[None]
            names.append(p)
            samples.append(_fit_shape(t, shape, p, resized))
        else:
            names.append(p)
            image = to_chw_float(load_image(path))
            if transform is not None:
                image = transform(_fit_shape(image, (shape[0], *image.shape[1:]), p, []))
            samples.append(_fit_shape(image, shape, p, resized))
    return names, torch.stack(samples), resized


def cmd_predict(args: argparse.Namespace) -> int:
    from cnnkit.cli.training import check_task, load_run, weights_transform

    model, config = load_run(args.run, device=args.device, precision=args.precision)
    check_task(config, ("classification", "localization", "segmentation"), "cnnkit predict")
    run_info = config.get("run", {})
    shape = tuple(run_info.get("input_shape") or ())
    classes = run_info.get("classes") or []
    if not shape:
        raise CnnkitError(f"{args.run}/config.yaml records no input shape (run.input_shape).")
    transform = weights_transform(config, shape[0]) if len(shape) == 3 else None
    names, x, resized = read_inputs(args.inputs, shape, transform)
    if resized:
        size = "x".join(map(str, shape[1:]))
        shown = ", ".join(resized[:3]) + (
            f" and {len(resized) - 3} more" if len(resized) > 3 else ""
        )
        print(f"cnnkit: note: resized to the run's input size {size}: {shown}", file=sys.stderr)
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
        from cnnkit.cli.scores import as_probabilities

        activation = model.output_activations(x)[0]
        probs = as_probabilities(out[0] if task == "localization" else out, activation)
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


# ------------------------------------------------------------------------ export


def cmd_export(args: argparse.Namespace) -> int:
    from cnnkit.cli.training import check_task, load_run

    if args.format != "onnx":
        raise ConfigError(f"--format {args.format!r} is not supported; expected onnx.")
    try:
        from cnnkit.train.export import export_onnx
    except ImportError:
        raise CnnkitError(
            "ONNX export is not available in this cnnkit (cnnkit.train.export is missing)."
        ) from None
    model, config = load_run(args.run)
    check_task(config, ("classification", "segmentation", "localization"), "cnnkit export")
    shape = tuple(config.get("run", {}).get("input_shape") or ())
    out = Path(args.out) if args.out else Path(args.run) / "model.onnx"
    if out.exists() and not args.overwrite:
        raise CnnkitError(f"{out} exists; pass --overwrite or another --out.")
    path = export_onnx(model.module, out, input_shape=shape)
    print(f"ONNX model -> {path or out}")
    return 0
