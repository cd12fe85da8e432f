"""A Keras-like ``summary`` for any ``torch.nn.Module``: output shapes, parameters,
multiply-accumulates (MACs) and receptive fields, layer by layer.

How it works: one forward pass of zeros at batch size 1 under ``torch.no_grad`` (the
module in eval mode, put back into its own train/eval modes afterwards), with forward
hooks on the *leaves*: every cnnkit :class:`~cnnkit.layers.base.Layer` (blocks such as
``Inception`` are one row) and every torch module without children. Rows come in
execution order.

* Params: each parameter is counted once, at the first row whose module holds it
  (shared modules or weights are not counted twice); the totals are over the unique
  ``module.parameters()``. As in PyTorch, only ``nn.Parameter``s are parameters (batch
  norm running statistics are buffers; Keras lists them as non-trainable params).
* MACs per sample: each cnnkit layer's ``count_macs``; for ``nn.ConvNd``,
  ``nn.ConvTransposeNd`` and ``nn.Linear`` from :mod:`cnnkit.ops.arithmetic`.
* Receptive field (seed 003: ``r_l = r_{l-1} + (F_eff - 1) j_{l-1}``, ``j_l = j_{l-1} S``):
  from each layer's ``receptive_field_layers()`` (torch conv/pool modules: their
  kernel, stride, dilation), computed with :func:`cnnkit.ops.arithmetic.receptive_field`
  and followed tensor by tensor: a layer continues the field of the tensor it receives,
  at a merge the largest. Exact for sequential chains. For branching models it follows
  the longest path: a block (``Inception``, ``ResidualBlock``) reports its longest
  branch, and a tensor made by functional code between hooked modules (``x + y`` in a
  forward) continues the last field computed in execution order. ``'global'`` after a
  layer that sees its whole input (``Dense``, global pooling), ``None`` where it does
  not apply (no spatial input) or cannot be followed (transposed convolutions,
  upsampling, a change of spatial rank).
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnkit._core.errors import ConfigError
from cnnkit.layers.base import Layer
from cnnkit.ops.arithmetic import conv_macs, dense_macs, receptive_field

__all__ = ["SummaryRow", "SummaryRows", "summary"]

RFValue = int | tuple[int, ...] | str | None
_UNKNOWN = object()


@dataclass
class SummaryRow:
    """One row of :func:`summary`.

    Attributes:
        name: the layer's ``name`` if given, else its attribute path in the model when
            that is descriptive (``'layer1.0.conv1'``), else a Keras-style name
            (``'conv2d_1'``).
        layer_type: the class name (``'Conv2D'``, ``'Conv2d'``).
        output_shape: the output shape with the batch dim ``None`` (a list of shapes for
            several outputs).
        params, trainable_params: parameters first counted at this row.
        macs: multiply-accumulates per sample.
        receptive_field: input elements seen by one output, an int (same for every
            spatial dim) or a tuple per dim; ``'global'``; or ``None`` if not applicable.
        jump: distance in input elements between adjacent outputs (int/tuple or None).
        path: the module's attribute path in the model (``''`` for the model itself).
    """

    name: str
    layer_type: str
    output_shape: Any
    params: int
    trainable_params: int
    macs: int
    receptive_field: RFValue
    jump: int | tuple[int, ...] | None
    path: str = ""


@dataclass
class _Totals:
    total_params: int = 0
    trainable_params: int = 0
    total_macs: int = 0
    text: str = ""
    model_name: str = ""


class SummaryRows(list):
    """The list of :class:`SummaryRow` that :func:`summary` returns, with the totals as
    attributes: ``total_params``, ``trainable_params``, ``non_trainable_params``,
    ``total_macs`` (per sample), ``text`` (the printed table)."""

    def __init__(self, rows: Sequence[SummaryRow] = (), totals: _Totals | None = None) -> None:
        super().__init__(rows)
        self.totals = totals or _Totals()

    @property
    def total_params(self) -> int:
        return self.totals.total_params

    @property
    def trainable_params(self) -> int:
        return self.totals.trainable_params

    @property
    def non_trainable_params(self) -> int:
        return self.totals.total_params - self.totals.trainable_params

    @property
    def total_macs(self) -> int:
        return self.totals.total_macs

    @property
    def text(self) -> str:
        return self.totals.text


# --------------------------------------------------------------------------- helpers


def _snake(name: str) -> str:
    """Keras' layer naming: ``MaxPooling2D`` -> ``max_pooling2d``, ``ReLU`` -> ``re_lu``."""
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", s).lower()


def _leaves(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf modules in definition order: cnnkit Layers (not descended) and torch modules
    without children. Each module once."""
    out: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()

    def walk(prefix: str, m: nn.Module) -> None:
        if id(m) in seen:
            return
        seen.add(id(m))
        children = list(m.named_children())
        if isinstance(m, Layer) or not children:
            out.append((prefix, m))
            return
        for child_name, child in children:
            walk(f"{prefix}.{child_name}" if prefix else child_name, child)

    walk("", module)
    return out


def _shape_of(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return (None, *out.shape[1:]) if out.dim() > 0 else ()
    if isinstance(out, (list, tuple)):
        shapes = [_shape_of(o) for o in out]
        return shapes[0] if len(shapes) == 1 else shapes
    return None


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (list, tuple)):
        for v in value:
            t = _first_tensor(v)
            if t is not None:
                return t
    return None


def _input_shape_arg(args: tuple) -> Any:
    if not args:
        return None
    x = args[0]
    if isinstance(x, torch.Tensor):
        return tuple(x.shape)
    if isinstance(x, (list, tuple)):
        return [tuple(t.shape) for t in x if isinstance(t, torch.Tensor)]
    return None


def _torch_macs(m: nn.Module, args: tuple, out: Any) -> int:
    x = args[0] if args and isinstance(args[0], torch.Tensor) else None
    y = _first_tensor(out)
    if x is None or y is None:
        return 0
    if isinstance(m, nn.modules.conv._ConvNd):
        if m.transposed:
            # every input element meets a (C_out/groups, *kernel) slice: same count as a
            # convolution whose "output" is the transposed conv's input
            return conv_macs(
                m.in_channels, m.out_channels, m.kernel_size, tuple(x.shape[2:]), m.groups
            )
        return conv_macs(m.in_channels, m.out_channels, m.kernel_size, tuple(y.shape[2:]), m.groups)
    if isinstance(m, nn.Linear):
        return dense_macs(m.in_features, m.out_features) * math.prod(x.shape[1:-1])
    return 0


def _nd(value: Any, n: int) -> tuple[int, ...]:
    if isinstance(value, (tuple, list)):
        return tuple(int(v) for v in value)
    return (int(value),) * n


def _torch_rf(m: nn.Module, ndim: int) -> Any:
    """(kernel, stride, dilation) list for a torch module, None (global), or _UNKNOWN."""
    if isinstance(m, nn.modules.conv._ConvNd):
        if m.transposed:
            return _UNKNOWN
        return [(tuple(m.kernel_size), tuple(m.stride), tuple(m.dilation))]
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
        k = _nd(m.kernel_size, ndim)
        s = _nd(m.stride if m.stride is not None else m.kernel_size, len(k))
        return [(k, s, _nd(m.dilation, len(k)))]
    if isinstance(m, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.LPPool1d, nn.LPPool2d)):
        k = _nd(m.kernel_size, ndim)
        s = _nd(m.stride if m.stride is not None else m.kernel_size, len(k))
        return [(k, s, (1,) * len(k))]
    if isinstance(
        m,
        (
            nn.Linear,
            nn.AdaptiveAvgPool1d,
            nn.AdaptiveAvgPool2d,
            nn.AdaptiveAvgPool3d,
            nn.AdaptiveMaxPool1d,
            nn.AdaptiveMaxPool2d,
            nn.AdaptiveMaxPool3d,
        ),
    ):
        return None
    if isinstance(
        m,
        (
            nn.Upsample,
            nn.PixelShuffle,
            nn.PixelUnshuffle,
            nn.MaxUnpool1d,
            nn.MaxUnpool2d,
            nn.MaxUnpool3d,
            nn.Unflatten,
        ),
    ):
        return _UNKNOWN
    return []


class _RF:
    """Receptive-field state of one tensor: mode and the (kernel, stride, dilation) chain
    per spatial dim that produced it from the model input."""

    __slots__ = ("mode", "specs", "rf", "jump")

    def __init__(self, mode: str, specs: tuple[tuple[tuple[int, int, int], ...], ...]) -> None:
        self.mode = mode  # 'ok' | 'global' | 'unknown' | 'na'
        self.specs = specs
        self.rf: RFValue = None
        self.jump: Any = None
        if mode == "global":
            self.rf = "global"
        elif mode == "ok":
            rfs, jumps = [], []
            for dim_specs in specs:
                last = receptive_field(dim_specs)[-1] if dim_specs else None
                rfs.append(last.receptive_field if last else 1)
                jumps.append(last.jump if last else 1)
            self.rf, self.jump = _collapse(rfs), _collapse(jumps)

    @classmethod
    def start(cls, ndim: int) -> _RF:
        return cls("ok", ((),) * ndim) if ndim >= 1 else cls("na", ())

    def size(self) -> int:
        """For choosing the longest path at a merge."""
        if self.mode == "global":
            return 1 << 62
        if isinstance(self.rf, int):
            return self.rf
        return max(self.rf) if isinstance(self.rf, tuple) else -1

    def step(self, spec: Any) -> _RF:
        if self.mode != "ok":
            return self
        if spec is None:
            return _RF("global", ())
        if spec is _UNKNOWN:
            return _RF("unknown", ())
        ndim = len(self.specs)
        specs = [list(d) for d in self.specs]
        try:
            for kernel, stride, dilation in spec:
                k, s, d = (_nd(v, ndim) for v in (kernel, stride, dilation))
                if not len(k) == len(s) == len(d) == ndim:
                    return _RF("unknown", ())
                for i in range(ndim):
                    specs[i].append((k[i], s[i], d[i]))
        except (TypeError, ValueError):
            return _RF("unknown", ())
        if not any(spec):
            return self
        return _RF("ok", tuple(tuple(d) for d in specs))


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def _collapse(values: list[int]) -> int | tuple[int, ...]:
    return values[0] if len(set(values)) == 1 else tuple(values)


def _fmt_rf(value: RFValue) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value)
    return str(value)


def _fmt_shape(shape: Any) -> str:
    if isinstance(shape, list):
        return "[" + ", ".join(_fmt_shape(s) for s in shape) + "]"
    if shape is None:
        return "?"
    return str(tuple(shape))


def _normalize_input_shape(input_shape: Any) -> list[tuple[int, ...]]:
    err = ConfigError(
        "summary needs input_shape: the per-sample input shape without the batch dim, e.g. "
        f"summary(model, (3, 32, 32)), or a list of such shapes; received {input_shape!r}."
    )
    if input_shape is None or isinstance(input_shape, (str, bytes)):
        raise err
    items = list(input_shape) if isinstance(input_shape, (list, tuple, torch.Size)) else None
    if not items:
        raise err
    shapes = items if all(isinstance(s, (list, tuple, torch.Size)) for s in items) else [items]
    out = []
    for s in shapes:
        if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in s):
            raise err
        out.append(tuple(int(d) for d in s))
    return out


def _default_input_shape(module: nn.Module) -> Any:
    shape = getattr(module, "_input_shape", None)
    if shape is None:
        shape = getattr(module, "input_shape", None)
    if shape is None:
        shape = getattr(module, "default_input_shape", None)
    return shape


def _render(model_name: str, rows: list[SummaryRow], totals: _Totals) -> list[str]:
    header = ("Layer (type)", "Output Shape", "Param #", "MACs", "RF")
    body = [
        (
            f"{r.name} ({r.layer_type})",
            _fmt_shape(r.output_shape),
            f"{r.params:,}",
            f"{r.macs:,}",
            _fmt_rf(r.receptive_field),
        )
        for r in rows
    ]
    widths = [max(len(c) for c in col) for col in zip(header, *body)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(w) if 2 <= i <= 3 else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths))
        ]
        return " " + " | ".join(parts).rstrip()

    total_width = sum(widths) + 3 * (len(widths) - 1) + 1
    lines = [f'Model: "{model_name}"', "_" * total_width, line(header), "=" * total_width]
    lines += [line(b) for b in body]
    lines += [
        "=" * total_width,
        f"Total params: {totals.total_params:,}",
        f"Trainable params: {totals.trainable_params:,}",
        f"Non-trainable params: {totals.total_params - totals.trainable_params:,}",
        f"Total MACs (per sample): {totals.total_macs:,}",
        "_" * total_width,
    ]
    return lines


# --------------------------------------------------------------------------- summary


def summary(
    module: nn.Module,
    input_shape: Sequence[int] | Sequence[Sequence[int]] | None = None,
    print_fn: Callable[[str], Any] | None = None,
) -> SummaryRows:
    """Print a Keras-like table of ``module`` and return its rows.

    Args:
        module: any ``torch.nn.Module`` (cnnkit or not).
        input_shape: the per-sample input shape without the batch dim, e.g.
            ``(3, 32, 32)`` (a list of shapes for a module with several inputs). Defaults
            to the shape a ``cnnkit.Sequential`` (or a layer) was built with.
        print_fn: called with each line of the table; the default writes the lines to
            ``sys.stdout`` (this table is summary's documented output). Pass
            ``print_fn=lambda line: None`` for the rows only.

    Returns:
        :class:`SummaryRows`, a list of :class:`SummaryRow` (one per call of a leaf, in
        execution order) with ``total_params``, ``trainable_params``,
        ``non_trainable_params``, ``total_macs`` and ``text``.
    """
    if not isinstance(module, nn.Module):
        raise ConfigError(f"summary expects a torch.nn.Module; received {type(module).__name__}.")
    if input_shape is None:
        input_shape = _default_input_shape(module)
    shapes = _normalize_input_shape(input_shape)

    ref = next(module.parameters(), None)
    if ref is None:
        ref = next(module.buffers(), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.get_default_dtype()
    inputs = [torch.zeros((1, *s), device=device, dtype=dtype) for s in shapes]

    leaves = _leaves(module)
    paths = {id(m): p for p, m in leaves}
    calls: list[tuple[nn.Module, tuple, Any]] = []

    def hook(m: nn.Module, args: tuple, out: Any) -> None:
        calls.append((m, args, out))

    modes = [(m, m.training) for m in module.modules()]
    handles = [m.register_forward_hook(hook) for _, m in leaves]
    try:
        module.eval()
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.training = mode

    ndim = len(shapes[0]) - 1
    # receptive field per tensor: a layer continues the field of the tensor it receives
    # (at a merge, the largest); tensors made by functional code between leaves fall back
    # to the last field computed (execution order)
    start = _RF.start(ndim)
    fields: dict[int, _RF] = {id(t): start for t in inputs}
    last = start
    seen: set[int] = set()
    counters: dict[str, int] = {}
    rows: list[SummaryRow] = []
    for m, args, out in calls:
        new = [p for p in m.parameters() if id(p) not in seen]
        seen.update(id(p) for p in new)
        if isinstance(m, Layer):
            in_shape = _input_shape_arg(args)
            macs = int(m.count_macs(in_shape)) if in_shape is not None else 0
            try:
                spec = m.receptive_field_layers()
            except (NotImplementedError, TypeError, ValueError):
                spec = _UNKNOWN
        else:
            macs = _torch_macs(m, args, out)
            spec = _torch_rf(m, ndim)
        known = [fields[id(t)] for t in _tensors(args) if id(t) in fields]
        source = max(known, key=_RF.size) if known else last
        state = source.step(spec)
        for t in _tensors(out):
            fields[id(t)] = state
        last = state
        rf, jump = state.rf, state.jump
        layer_type = type(m).__name__
        path = paths.get(id(m), "")
        name = getattr(m, "layer_name", None) if isinstance(m, Layer) else None
        if not name:
            if path and any(not part.isdigit() for part in path.split(".")):
                name = path
            else:
                base = _snake(layer_type)
                count = counters.get(base, 0)
                counters[base] = count + 1
                name = base if count == 0 else f"{base}_{count}"
        rows.append(
            SummaryRow(
                name=name,
                layer_type=layer_type,
                output_shape=_shape_of(out),
                params=sum(p.numel() for p in new),
                trainable_params=sum(p.numel() for p in new if p.requires_grad),
                macs=macs,
                receptive_field=rf,
                jump=jump,
                path=path,
            )
        )

    params = list(module.parameters())  # unique
    model_name = getattr(module, "name", None)
    if not isinstance(model_name, str) or not model_name:
        model_name = getattr(module, "layer_name", None) or _snake(type(module).__name__)
    totals = _Totals(
        total_params=sum(p.numel() for p in params),
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        total_macs=sum(r.macs for r in rows),
        model_name=model_name,
    )
    lines = _render(model_name, rows, totals)
    totals.text = "\n".join(lines) + "\n"
    if print_fn is None:
        sys.stdout.write(totals.text)
    else:
        for ln in lines:
            print_fn(ln)
    return SummaryRows(rows, totals)
