"""``cnnkit models | summary | explain | data | export``: commands that train nothing."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cnnkit._core.errors import CnnkitError, ConfigError, did_you_mean

#: conv-as-matrix is printed when both sides of the matrix are at most this long
MATRIX_LIMIT = 64


def parse_padding(text: str) -> int | str | tuple[int, int]:
    if text in ("valid", "same", "full"):
        return text
    try:
        if "," in text:
            a, b = text.split(",", 1)
            return int(a), int(b)
        return int(text)
    except ValueError:
        raise ConfigError(
            f"--padding {text!r} is not a padding; expected an int, 'before,after' (e.g. 1,2), "
            "valid, same or full."
        ) from None


def cmd_models(args: argparse.Namespace) -> int:
    from cnnkit.cli.recipes import list_recipes
    from cnnkit.models import list_models

    if getattr(args, "recipes", False):
        from cnnkit.cli.recipes import recipe_summary

        names = list_recipes()
        width = max(len(n) for n in names)
        print("recipes (cnnkit train NAME):")
        for name in names:
            print(f"  {name:<{width}}  {recipe_summary(name)}")
        return 0
    for name in list_models():
        print(name)
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from cnnkit.layers.summary import summary
    from cnnkit.models import create, list_models

    if args.model not in list_models():
        names = list_models()
        raise ConfigError(
            f"unknown model {args.model!r}; `cnnkit models` lists the {len(names)} registered "
            f"models.{did_you_mean(args.model, names)}"
        )
    kwargs = {}
    if args.num_classes is not None:
        kwargs["num_classes"] = args.num_classes
    if args.in_channels is not None:
        kwargs["in_channels"] = args.in_channels
    model = create(args.model, **kwargs)
    input_shape = tuple(args.input_shape) if args.input_shape else None
    if input_shape is None:
        input_shape = getattr(model, "default_input_shape", None)
    summary(model, input_shape=input_shape, print_fn=print)
    return 0


def _matrix_text(k: int, n: int, stride: int, padding, dilation: int, dims: int) -> list[str]:
    from cnnkit.ops.reference import conv_matrix

    kernel = np.arange(1, k**dims + 1, dtype=np.float64).reshape((k,) * dims)
    shape = (n,) * dims if dims == 2 else n
    m = conv_matrix(kernel, shape, stride=stride, padding=padding, dilation=dilation)
    if max(m.shape) > MATRIX_LIMIT:
        return [
            f"conv-as-matrix: {m.shape[0]} x {m.shape[1]} (not printed above "
            f"{MATRIX_LIMIT} rows or columns; try a smaller --input)"
        ]
    width = len(str(k**dims)) + 1
    lines = [
        f"conv as a matrix K ({m.shape[0]} outputs x {m.shape[1]} inputs, row-major): "
        "entry i is kernel weight w_i (kernel raveled row-major), . is 0; y = K x"
    ]
    for row in m:
        lines.append(" ".join(f"{int(v):>{width}}" if v else " " * (width - 1) + "." for v in row))
    return lines


def cmd_explain(args: argparse.Namespace) -> int:
    from cnnkit.ops.arithmetic import (
        ShapeError,
        conv_output_size,
        explain_conv_output_size,
        receptive_field,
        resolve_padding,
    )

    if args.n is None or args.kernel is None:
        raise ConfigError(
            "explain needs an input size and a kernel size: `cnnkit explain conv --input 7 "
            "--kernel 3 --stride 2 --padding 1` (or the short form `cnnkit explain 7 3`)."
        )
    padding = parse_padding(args.padding)
    print(explain_conv_output_size(args.n, args.kernel, stride=args.stride, padding=padding,
                                   dilation=args.dilation))  # fmt: skip
    before, _ = resolve_padding(padding, args.n, args.kernel, args.stride, args.dilation)
    rf = receptive_field([(args.kernel, args.stride, args.dilation, before)])[-1]
    print(f"receptive field: each output sees {rf.receptive_field} input positions per "
          f"dimension; neighbouring outputs are {rf.jump} apart in the input")  # fmt: skip
    if args.matrix:
        try:
            conv_output_size(args.n, args.kernel, args.stride, padding, args.dilation)
        except ShapeError:
            return 0
        for line in _matrix_text(args.kernel, args.n, args.stride, padding, args.dilation,
                                 args.dims):  # fmt: skip
            print(line)
    return 0


# ------------------------------------------------------------------------ data


def _datasets() -> dict[str, tuple[str, object]]:
    """name -> (kind, reader): 'download' readers fetch with checksums, 'local' read only."""
    from cnnkit.data import cifar10, cifar100, fashion_mnist, isbi2012, mnist

    return {
        "mnist": ("download", mnist),
        "fashion_mnist": ("download", fashion_mnist),
        "cifar10": ("download", cifar10),
        "cifar100": ("download", cifar100),
        "isbi2012": ("local", isbi2012),
        "ucr": ("local", None),
    }


def cmd_data(args: argparse.Namespace) -> int:
    registry = _datasets()
    name = args.name
    ucr_name = None
    if name.startswith("ucr/"):
        name, ucr_name = "ucr", name.split("/", 1)[1]
    if name not in registry:
        raise ConfigError(
            f"unknown dataset {args.name!r}; expected one of {', '.join(registry)} "
            f"(ucr/NAME for a UCR dataset, e.g. ucr/GunPoint).{did_you_mean(name, registry)}"
        )
    kind, reader = registry[name]
    from cnnkit.data.download import default_root

    # without --data-dir: default_root()/NAME, where the readers look ($CNNKIT_DATA/NAME)
    root = args.data_dir
    if root is None:
        folder = default_root() / name
    else:
        folder = Path(root) / name if (Path(root) / name).is_dir() else Path(root)
    if args.action == "download" and kind != "download":
        raise CnnkitError(
            f"{name} has no public download with a published checksum; put its files under "
            f"{folder} yourself, then run `cnnkit data verify {args.name}`."
        )
    if name == "ucr":
        from cnnkit.data import ucr

        if not ucr_name:
            raise ConfigError("pass the UCR dataset's name: `cnnkit data verify ucr/GunPoint`.")
        ucr_root = Path(root) / "ucr" if root and (Path(root) / "ucr").is_dir() else root
        splits = {s: ucr(ucr_root, ucr_name, s) for s in ("train", "test")}
    elif name == "isbi2012":
        splits = {s: reader(root, s) for s in ("train", "test")}
    else:
        download = args.action == "download"
        splits = {s: reader(root, s, download=download, verify=True) for s in ("train", "test")}
    counts = ", ".join(f"{s} {len(ds)}" for s, ds in splits.items())
    checked = "checksums OK" if kind == "download" else "readable (no published checksums)"
    print(f"{args.name}: {counts} samples; {checked}; files in {folder}")
    return 0
