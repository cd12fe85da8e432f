"""``cnnkit explain``: the arithmetic of one operation in the terminal, or an interactive
HTML page of an operation, a registered model or a trained run (``--html PAGE.html``)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from cnnkit._core.errors import ConfigError, did_you_mean
from cnnkit.cli import run_folder
from cnnkit.report.html import MODEL_PAGE  # the page `cnnkit train` writes next to report.html

log = logging.getLogger("cnnkit.cli")


def _ints(what: list[str], raw: list[str]) -> tuple[int | None, int | None]:
    if not what:
        return None, None
    if len(what) != 2:
        raise ConfigError(
            f"explain received {' '.join(raw)!r}; expected `conv --input N --kernel F`, two "
            "integers N F, an operation (conv, pool, unpool, transposed, dilated, upsample), "
            "a registered model or a run folder."
        )
    try:
        return int(what[0]), int(what[1])
    except ValueError:
        raise ConfigError(
            f"explain expects two integers N F (input and kernel size); received "
            f"{' '.join(what)!r}."
        ) from None


def cmd_explain(args: argparse.Namespace) -> int:
    from cnnkit.report.explain_ops import OPERATIONS

    what = list(args.what)
    head = what[0] if what else None
    if head is not None and head not in OPERATIONS and not head.lstrip("-").isdigit():
        if len(what) > 1:
            raise ConfigError(f"explain {head} takes no further arguments; received {what[1:]}.")
        return _explain_network(args, head)
    op = head if head in OPERATIONS else "conv"
    rest = what[1:] if head in OPERATIONS else what
    n, k = _ints(rest, what)
    n = n if n is not None else args.input_size
    k = k if k is not None else args.kernel_size
    if args.html:
        return _operation_page(args, op, n, k)
    if args.mode is not None:
        raise ConfigError("--mode chooses the pooling/upsampling shown on an --html page.")
    if op == "conv":
        from cnnkit.cli import tools

        args.n, args.kernel = n, k
        args.stride = args.stride or 1
        args.dilation = args.dilation or 1
        args.padding = args.padding if args.padding is not None else "0"
        return tools.cmd_explain(args)
    return _operation_text(args, op, n, k)


def _operation_text(args: argparse.Namespace, op: str, n: int | None, k: int | None) -> int:
    from cnnkit.cli.tools import parse_padding
    from cnnkit.report.explain_ops import OPERATIONS, operation_text

    d = OPERATIONS[op].defaults
    n = n if n is not None else d["input"]
    k = k if k is not None else d["kernel"]
    stride = args.stride or (k if op in ("pool", "unpool") else d["stride"])
    padding = parse_padding(args.padding if args.padding is not None else d["padding"])
    print(operation_text(op, n, k, stride, padding, args.dilation or d["dilation"]))
    return 0


def _operation_page(args: argparse.Namespace, op: str, n: int | None, k: int | None) -> int:
    from cnnkit.cli.tools import parse_padding
    from cnnkit.report.explain_ops import write_operation_page

    padding = parse_padding(args.padding) if args.padding is not None else None
    path = write_operation_page(
        args.html, op, input_size=n, kernel=k, stride=args.stride, padding=padding,
        dilation=args.dilation, dims=args.dims, mode=args.mode,
    )  # fmt: skip
    print(f"explain page -> {path} (open it in a browser; ?input=7&kernel=3&stride=2 "
          "in its address overrides the values)")  # fmt: skip
    return 0


def _explain_network(args: argparse.Namespace, target: str) -> int:
    from cnnkit.models import list_models
    from cnnkit.report.explain_ops import OPERATIONS

    if Path(target).is_dir():
        if not args.html:
            raise ConfigError(
                f"explain {target} (a run folder) writes a page: add --html PAGE.html."
            )
        path = write_run_page(target, args.html, data_dir=args.data_dir)
        print(f"explain page -> {path}")
        return 0
    names = list_models()
    if target not in names:
        raise ConfigError(
            f"explain: {target!r} is neither an operation ({', '.join(OPERATIONS)}), a "
            f"registered model (`cnnkit models`) nor a run folder."
            f"{did_you_mean(target, [*OPERATIONS, *names])}"
        )
    from cnnkit.models import create

    model = create(target)
    shape = tuple(args.input_shape) if args.input_shape else None
    if not args.html:
        from cnnkit.layers.summary import summary

        summary(model, input_shape=shape or getattr(model, "default_input_shape", None),
                print_fn=print)  # fmt: skip
        return 0
    from cnnkit.report.explain_model import write_model_page

    path = write_model_page(args.html, model, shape, title=f"cnnkit explain: {target}")
    print(f"explain page -> {path}")
    return 0


def write_run_page(
    run: str | os.PathLike, out: str | os.PathLike | None = None, *, data_dir: str | None = None
) -> Path:
    """The explain page of a finished classification run (its model and test data)."""
    from cnnkit.cli.datasets import load_data
    from cnnkit.cli.training import check_task, load_run

    run = Path(run)
    model, config = load_run(run)
    check_task(config, ("classification",), "cnnkit explain RUN --html")
    options = config.get("run", {})
    data_config, data_dir = run_folder.reading_data(config, options, data_dir)
    data = load_data(
        data_config["dataset"]["name"], data_config["dataset"]["args"], data_dir,
        options.get("limit"),
    )  # fmt: skip
    from cnnkit.cli.run_pages import write_run_model_page

    return write_run_model_page(run, Path(out) if out else run / MODEL_PAGE, model, config, data)
