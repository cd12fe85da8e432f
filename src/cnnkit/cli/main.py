"""``cnnkit``: the command line.

cnnkit demo                          LeNet-5 on scikit-learn's digits, run folder + report
cnnkit train RECIPE|CONFIG.yaml      train a shipped recipe or your own YAML config
cnnkit reproduce RECIPE --seeds 5    one run per seed, then mean/std/min/max vs the paper
cnnkit evaluate RUN                  test metrics of a finished run
cnnkit predict RUN INPUTS... [--cam] classes (and CAMs) for images / .npy arrays
cnnkit models                        registered models (and --recipes)
cnnkit summary cifar_cnn             Keras-like table with MACs and receptive fields
cnnkit explain conv --input 7 --kernel 3 --stride 2 --padding 1
cnnkit explain pool|...|MODEL|RUN --html PAGE.html   interactive explain pages
cnnkit data download|verify NAME     checksummed dataset files
cnnkit export RUN --format onnx      an ONNX file of a run's model

User errors print ``cnnkit: error: ...`` on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from cnnkit._core import __version__
from cnnkit._core.errors import CnnkitError, ConfigError
from cnnkit.cli import commands, tools
from cnnkit.train.signals import Preempted

DEVICE_HELP = "auto (CUDA when present, else CPU), cpu, cuda, cuda:1"
EPILOG = "Run `cnnkit COMMAND --help` for the options of a command."


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer (1 or more)")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def _resume_value(text: str) -> str:
    if text not in ("force", "yes"):  # "yes": the value of a bare --resume
        raise argparse.ArgumentTypeError(
            f"--resume takes no value or 'force'; received {text!r} (put RECIPE before --resume)"
        )
    return text


def _threads_option(p: argparse.ArgumentParser, default: int | None = None) -> None:
    p.add_argument(
        "--threads", type=_positive, default=default,
        help="CPU threads for torch (default: "
        + (f"{default}, fastest for this small net on a busy machine)" if default else
           "torch's choice); 1 is often fastest for small models on shared machines"),
    )  # fmt: skip


def _device_options(p: argparse.ArgumentParser, precision: bool = True) -> None:
    _threads_option(p)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    if precision:
        p.add_argument(
            "--precision", default=None, choices=("auto", "fp32", "bf16", "fp16"),
            help="auto: bf16 autocast on CPUs with native bf16, AMP on CUDA, else fp32 "
            "(train: default auto; evaluate/predict: default what the run was trained with)",
        )  # fmt: skip


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train", help="train a recipe or a YAML config into a run folder",
        description="Train a shipped recipe (see `cnnkit models --recipes`) or a YAML config; "
        "writes config.yaml, model.safetensors + model.json, checkpoints/, metrics.json, "
        "history.csv, TensorBoard events, plots/ and report.html into the run folder.",
    )  # fmt: skip
    p.add_argument("recipe", metavar="RECIPE|CONFIG.yaml")
    p.add_argument("--data-dir", default=None, help="folder holding the datasets (default: "
                   "$CNNKIT_DATA or ~/.cache/cnnkit)")  # fmt: skip
    p.add_argument(
        "--dataset",
        default=None,
        help="another dataset, e.g. mnist for the CIFAR recipes, ECG200 for ucr-fcn1d",
    )
    p.add_argument("--epochs", type=_positive, default=None)
    p.add_argument("--batch-size", type=_positive, default=None)
    p.add_argument("--seed", type=_seed, default=None, help="an integer >= 0")
    p.add_argument("--weights", default=None, metavar="PATH|TAG",
                   help="pretrained weights for the model (a .pth/.safetensors file in "
                   "torchvision's layout, a saved cnnkit model folder, or imagenet); "
                   "overrides model.weights")  # fmt: skip
    p.add_argument("--out", default=None, help="run folder (default runs/<recipe>-<timestamp>)")
    p.add_argument("--resume", nargs="?", const="yes", default=None, type=_resume_value,
                   help="continue the run in --out from its last checkpoint, or start it when "
                   "there is none (safe to relaunch from any state); `--resume force` also "
                   "continues when the config changed")  # fmt: skip
    p.add_argument(
        "--checkpoint-every",
        type=_positive,
        default=None,
        metavar="N",
        help="also write checkpoints/last every N training steps (mid-epoch)",
    )
    p.add_argument(
        "--checkpoint-minutes",
        type=_positive_float,
        default=None,
        metavar="M",
        help="also write checkpoints/last when M minutes passed since the last",
    )
    p.add_argument("--limit", type=_positive, default=None,
                   help="use only the first N samples of each split (quick checks)")  # fmt: skip
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                   help="1: live progress bar, 2: one line per epoch, 0: quiet")  # fmt: skip
    _device_options(p)
    p.set_defaults(fn=commands.cmd_train)


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is not a seed (an integer >= 0)")
    return value


def _add_reproduce(sub) -> None:
    from cnnkit.cli.reproduce import cmd_reproduce

    p = sub.add_parser(
        "reproduce", help="train a recipe once per seed and summarise the spread vs the paper",
        description="Train RECIPE once per seed (each a normal run folder DIR/seed-N), then "
        "write DIR/reproduce.json and DIR/reproduce.md: every metric's mean, std, min and max "
        "over the seeds and the recipe's published reference.",
    )  # fmt: skip
    p.add_argument("recipe", metavar="RECIPE|CONFIG.yaml")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=_positive, default=None, metavar="N",
                       help="seeds 0..N-1 (default 5)")  # fmt: skip
    seeds.add_argument("--seed-list", type=_seed, nargs="+", default=None, metavar="S",
                       help="these seeds, e.g. --seed-list 0 1 2")  # fmt: skip
    p.add_argument("--dataset", default=None, help="another dataset, e.g. ECG200 for ucr-fcn1d")
    p.add_argument("--epochs", type=_positive, default=None)
    p.add_argument("--out", default=None, help="folder (default runs/reproduce-<name>-<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the reproduction in --out: finished seeds are kept")  # fmt: skip
    p.add_argument("--data-dir", default=None, help="default: $CNNKIT_DATA or ~/.cache/cnnkit")
    p.add_argument("--limit", type=_positive, default=None,
                   help="use only the first N samples of each split (quick checks)")  # fmt: skip
    p.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2),
                   help="progress of each seed's training (default 0: one line per seed)")  # fmt: skip
    _threads_option(p)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1")
    p.add_argument(
        "--precision", default=None, choices=("auto", "fp32", "bf16", "fp16"),
        help="default auto (bf16 autocast on CPUs with native bf16, AMP on CUDA, else fp32)",
    )  # fmt: skip
    p.set_defaults(fn=cmd_reproduce)


def _add_run_commands(sub) -> None:
    p = sub.add_parser(
        "demo", help="LeNet-5 on scikit-learn's digits: the whole workflow in under a minute",
        description="Train LeNet-5 on scikit-learn's bundled digits (no download), print the "
        "test accuracy and write a run folder with report.html.",
    )  # fmt: skip
    p.add_argument("--out", default=None, help="run folder (default runs/demo-<timestamp>)")
    p.add_argument("--epochs", type=_positive, default=None)
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    _threads_option(p, default=1)
    p.set_defaults(fn=commands.cmd_demo)

    p = sub.add_parser("evaluate", help="test metrics of a finished run")
    p.add_argument("run", metavar="RUN", help="a run folder")
    p.add_argument("--data-dir", default=None, help="override the run's data folder")
    p.add_argument("--limit", type=_positive, default=None)
    p.add_argument("--json", action="store_true", help="also print all metrics as JSON")
    _device_options(p)
    p.set_defaults(fn=commands.cmd_evaluate)

    p = sub.add_parser("predict", help="predict classes (boxes, masks) for images or .npy files")
    p.add_argument("run", metavar="RUN", help="a run folder")
    p.add_argument("inputs", metavar="INPUTS", nargs="+", help="image files or .npy arrays")
    p.add_argument("--cam", action="store_true", help="write class activation map overlays")
    p.add_argument("--out-dir", default=None, help="where CAMs/masks go (default RUN/predictions)")
    _device_options(p)
    p.set_defaults(fn=commands.cmd_predict)

    p = sub.add_parser("export", help="export a run's model (ONNX)")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--format", default="onnx", help="onnx")
    p.add_argument("--out", default=None, help="output file (default RUN/model.onnx)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(fn=commands.cmd_export)


def _add_tools(sub) -> None:
    for name in ("models", "list"):
        p = sub.add_parser(name, help="list the registered models" + (" (= models)" if name ==
                           "list" else ""))  # fmt: skip
        p.add_argument("--recipes", action="store_true", help="also list the shipped recipes")
        p.set_defaults(fn=tools.cmd_models)

    p = sub.add_parser(
        "summary", help="print a model's layers, shapes, parameters, MACs and receptive fields"
    )
    p.add_argument("model", help="a registered model name (see `cnnkit models`)")
    p.add_argument("--num-classes", type=_positive, default=None)
    p.add_argument("--in-channels", type=_positive, default=None)
    p.add_argument("--input-shape", type=_positive, nargs="+", default=None, metavar="N",
                   help="per-sample input shape, channels first, e.g. 3 32 32")  # fmt: skip
    p.set_defaults(fn=tools.cmd_summary)

    p = sub.add_parser(
        "explain", help="the arithmetic of an operation, or an interactive page of an "
        "operation, a model or a run (--html)",
        description="`cnnkit explain conv --input 7 --kernel 3 --stride 2 --padding 1` "
        "(or the short form `cnnkit explain 7 3 --stride 2`) explains the arithmetic; "
        "`cnnkit explain conv|pool|unpool|transposed|dilated|upsample ... --html PAGE.html` "
        "writes an interactive page, `cnnkit explain MODEL|RUN --html PAGE.html` one of a "
        "registered model or a trained run folder.",
    )  # fmt: skip
    p.add_argument(
        "what",
        nargs="*",
        metavar="OPERATION | MODEL | RUN | N K",
        help="conv, pool, unpool, transposed, dilated or upsample (with --input/--kernel), "
        "input size and kernel size, a registered model or a run folder",
    )
    p.add_argument("--input", type=_positive, default=None, dest="input_size", help="input size N")
    p.add_argument("--kernel", type=_positive, default=None, dest="kernel_size",
                   help="kernel (pool window) size F")  # fmt: skip
    p.add_argument("--stride", type=_positive, default=None,
                   help="stride S (default 1; pooling: the window; upsample: the factor)")  # fmt: skip
    p.add_argument("--padding", default=None, help="an int, 'before,after', valid, same or full")
    p.add_argument("--dilation", type=_positive, default=None)
    p.add_argument("--dims", type=int, choices=(1, 2), default=2,
                   help="1D or 2D for the conv-as-matrix (default 2)")  # fmt: skip
    p.add_argument("--no-matrix", dest="matrix", action="store_false",
                   help="do not print the conv-as-matrix")  # fmt: skip
    p.add_argument("--html", default=None, metavar="PAGE.html",
                   help="write a self-contained interactive page instead of printing")  # fmt: skip
    p.add_argument("--mode", default=None,
                   help="pool: max, min or average; upsample: nearest, bilinear or "
                   "'bed of nails' (the page's starting choice)")  # fmt: skip
    p.add_argument("--input-shape", type=_positive, nargs="+", default=None, metavar="N",
                   help="MODEL: per-sample input shape, channels first, e.g. 3 32 32")  # fmt: skip
    p.add_argument("--data-dir", default=None, help="RUN: override the run's data folder")
    p.set_defaults(fn=_explain)

    p = sub.add_parser("data", help="download or verify dataset files (checksummed)")
    p.add_argument("action", choices=("download", "verify"))
    p.add_argument("name", help="mnist, fashion_mnist, cifar10, cifar100, isbi2012, ucr/NAME")
    p.add_argument("--data-dir", default=None, help="default: $CNNKIT_DATA or ~/.cache/cnnkit")
    p.set_defaults(fn=tools.cmd_data)


def check_device(text: str) -> str:
    """``--device``: 'auto' or a torch device that exists here (ConfigError otherwise)."""
    from cnnkit.train.precision import resolve_device

    try:
        resolve_device(text)
    except ConfigError as err:
        raise ConfigError(f"--{err}") from None  # "--device 'gpu0' is not a device; ..."
    return text


def _explain(args: argparse.Namespace) -> int:
    from cnnkit.cli.explain import cmd_explain

    return cmd_explain(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnkit",
        description="The operations, models and training workflow of a CNN course, on PyTorch.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"cnnkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run_commands(sub)
    _add_train(sub)
    _add_reproduce(sub)
    _add_tools(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (argparse errors raise ``SystemExit(2)``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "fn", None):
        parser.print_help(sys.stderr)
        return 2
    args.argv = argv
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="cnnkit: %(levelname)s: %(message)s")
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    try:
        if getattr(args, "device", None) is not None:
            check_device(args.device)
        return int(args.fn(args) or 0)
    except CnnkitError as err:
        print(f"cnnkit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cnnkit: interrupted", file=sys.stderr)
        return 130
    except Preempted as stop:  # SIGTERM/SIGINT in fit: checkpoint written, line logged
        return int(stop.code)


if __name__ == "__main__":
    sys.exit(main())
