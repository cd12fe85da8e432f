"""``cnnkit``: the command line.

cnnkit list                         registered models
cnnkit summary cifar_cnn            Keras-like table with MACs and receptive fields
cnnkit explain 7 3 --stride 3       the output-size arithmetic, step by step
"""

from __future__ import annotations

import argparse
import sys

from cnnkit._core import __version__
from cnnkit._core.errors import CnnkitError


def _parse_padding(text: str) -> int | str | tuple[int, int]:
    if text in ("valid", "same", "full"):
        return text
    if "," in text:
        a, b = text.split(",", 1)
        return int(a), int(b)
    return int(text)


def _cmd_list(args: argparse.Namespace) -> int:
    from cnnkit.models import list_models

    for name in list_models():
        print(name)
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from cnnkit.layers.summary import summary
    from cnnkit.models import create

    kwargs = {}
    if args.num_classes is not None:
        kwargs["num_classes"] = args.num_classes
    if args.in_channels is not None:
        kwargs["in_channels"] = args.in_channels
    model = create(args.model, **kwargs)
    input_shape = tuple(args.input_shape) if args.input_shape else None
    summary(model, input_shape=input_shape, print_fn=print)
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from cnnkit.ops.arithmetic import explain_conv_output_size

    print(
        explain_conv_output_size(
            args.n,
            args.kernel,
            stride=args.stride,
            padding=_parse_padding(args.padding),
            dilation=args.dilation,
        )
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnkit", description="The operations and models of a CNN course, on PyTorch."
    )
    parser.add_argument("--version", action="version", version=f"cnnkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="list the registered models")
    p.set_defaults(fn=_cmd_list)

    p = sub.add_parser(
        "summary", help="print a model's layers, shapes, parameters, MACs and receptive fields"
    )
    p.add_argument("model", help="a registered model name (see `cnnkit list`)")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--in-channels", type=int, default=None)
    p.add_argument(
        "--input-shape",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="per-sample input shape, channels first, e.g. 3 32 32",
    )
    p.set_defaults(fn=_cmd_summary)

    p = sub.add_parser("explain", help="walk through the output-size arithmetic of one convolution")
    p.add_argument("n", type=int, help="input size")
    p.add_argument("kernel", type=int, help="kernel size")
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--padding", default="0", help="an int, 'before,after', valid, same or full")
    p.add_argument("--dilation", type=int, default=1)
    p.set_defaults(fn=_cmd_explain)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "fn", None):
        parser.print_help()
        return 2
    try:
        return int(args.fn(args) or 0)
    except CnnkitError as err:
        print(f"cnnkit: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
