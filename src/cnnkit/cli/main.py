"""``cnnkit``: the command line.

cnnkit demo                          LeNet-5 on scikit-learn's digits, run folder + report
cnnkit train RECIPE|CONFIG.yaml      train a shipped recipe or your own YAML config
cnnkit reproduce RECIPE --seeds 5    one run per seed, then mean/std/min/max vs the paper
cnnkit evaluate RUN                  test metrics of a finished run
cnnkit predict RUN INPUTS... [--cam] classes (and CAMs) for images / .npy arrays
cnnkit models                        registered models (and --recipes)
cnnkit summary cifar_cnn             Keras-like table with MACs and receptive fields
cnnkit explain conv --input 7 --kernel 3 --stride 2 --padding 1
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

EPILOG = "Run `cnnkit COMMAND --help` for the options of a command."


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer (1 or more)")
    return value


def _threads_option(p: argparse.ArgumentParser, default: int | None = None) -> None:
    p.add_argument(
        "--threads", type=_positive, default=default,
        help="CPU threads for torch (default: "
        + (f"{default}, fastest for this small net on a busy machine)" if default else
           "torch's choice); 1 is often fastest for small models on shared machines"),
    )  # fmt: skip


def _device_options(p: argparse.ArgumentParser, precision: bool = True) -> None:
    _threads_option(p)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1")
    if precision:
        p.add_argument(
            "--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
            help="auto: bf16 autocast on CPUs with native bf16, AMP on CUDA, else fp32",
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
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", default=None, help="run folder (default runs/<recipe>-<timestamp>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint")  # fmt: skip
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
    p.add_argument("--device", default="auto")
    _threads_option(p, default=1)
    p.set_defaults(fn=commands.cmd_demo)

    p = sub.add_parser("evaluate", help="test metrics of a finished run")
    p.add_argument("run", metavar="RUN", help="a run folder")
    p.add_argument("--data-dir", default=None, help="override the run's data folder")
    p.add_argument("--limit", type=_positive, default=None)
    p.add_argument("--json", action="store_true", help="also print all metrics as JSON")
    p.add_argument("--device", default="cpu")
    p.set_defaults(fn=commands.cmd_evaluate)

    p = sub.add_parser("predict", help="predict classes (boxes, masks) for images or .npy files")
    p.add_argument("run", metavar="RUN", help="a run folder")
    p.add_argument("inputs", metavar="INPUTS", nargs="+", help="image files or .npy arrays")
    p.add_argument("--cam", action="store_true", help="write class activation map overlays")
    p.add_argument("--out-dir", default=None, help="where CAMs/masks go (default RUN/predictions)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(fn=commands.cmd_predict)

    p = sub.add_parser("export", help="export a run's model (ONNX)")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--format", default="onnx", help="onnx")
    p.add_argument("--out", default=None, help="output file (default RUN/model.onnx)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(fn=tools.cmd_export)


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
        "explain", help="output size, receptive field and conv-as-matrix of one convolution",
        description="`cnnkit explain conv --input 7 --kernel 3 --stride 2 --padding 1` "
        "(or the short form `cnnkit explain 7 3 --stride 2`).",
    )  # fmt: skip
    p.add_argument(
        "what",
        nargs="*",
        metavar="conv | N K",
        help="'conv' with --input/--kernel, or input size and kernel size",
    )
    p.add_argument("--input", type=_positive, default=None, dest="input_size", help="input size N")
    p.add_argument("--kernel", type=_positive, default=None, dest="kernel_size",
                   help="kernel size F")  # fmt: skip
    p.add_argument("--stride", type=_positive, default=1)
    p.add_argument("--padding", default="0", help="an int, 'before,after', valid, same or full")
    p.add_argument("--dilation", type=_positive, default=1)
    p.add_argument("--dims", type=int, choices=(1, 2), default=2,
                   help="1D or 2D for the conv-as-matrix (default 2)")  # fmt: skip
    p.add_argument("--no-matrix", dest="matrix", action="store_false",
                   help="do not print the conv-as-matrix")  # fmt: skip
    p.set_defaults(fn=_explain)

    p = sub.add_parser("data", help="download or verify dataset files (checksummed)")
    p.add_argument("action", choices=("download", "verify"))
    p.add_argument("name", help="mnist, fashion_mnist, cifar10, cifar100, isbi2012, ucr/NAME")
    p.add_argument("--data-dir", default=None, help="default: $CNNKIT_DATA or ~/.cache/cnnkit")
    p.set_defaults(fn=tools.cmd_data)


def check_device(text: str) -> str:
    """``--device``: 'auto' or a torch device that exists here."""
    if text == "auto":
        return text
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ConfigError(
            f"--device {text!r} is not a device; expected auto, cpu, cuda or cuda:N."
        ) from None
    if device.type == "cuda" and (
        not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()
    ):
        raise ConfigError(
            f"--device {text!r}: no such CUDA device here "
            f"({torch.cuda.device_count()} found); use --device cpu or auto."
        )
    return text


def _explain(args: argparse.Namespace) -> int:
    what = list(args.what)
    if what and what[0] == "conv":
        what = what[1:]
    if len(what) not in (0, 2):
        raise ConfigError(
            f"explain received {' '.join(args.what)!r}; expected `conv --input N --kernel F` "
            "or two integers N F."
        )
    n, k = args.input_size, args.kernel_size
    if what:
        try:
            n, k = int(what[0]), int(what[1])
        except ValueError:
            raise ConfigError(
                f"explain expects two integers N F (input and kernel size); received "
                f"{' '.join(what)!r}."
            ) from None
    args.n, args.kernel = n, k
    return tools.cmd_explain(args)


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


if __name__ == "__main__":
    sys.exit(main())
