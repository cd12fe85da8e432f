"""The arithmetic of convolutional networks, as the lecture decks teach it.

Pure Python: no torch needed. Every function checks its arguments and raises
:class:`cnnkit.ShapeError` (a ``ValueError``) with the arithmetic spelled out.

Output size (seed 002 / seed 004)::

    M = (N - F + 2P) / S + 1,    F_eff = d (F - 1) + 1   (dilation d)

Receptive field of a stack (seed 003)::

    r_l = r_{l-1} + (F_eff,l - 1) * j_{l-1},    j_l = j_{l-1} * S_l,    r_0 = j_0 = 1
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cnnkit._core.errors import ConfigError, ShapeError

PADDING_MODES = ("valid", "same", "full")

__all__ = [
    "ReceptiveField",
    "conv_macs",
    "conv_output_size",
    "conv_params",
    "dense_macs",
    "dense_params",
    "effective_kernel_size",
    "explain_conv_output_size",
    "output_size_formula",
    "pool_output_size",
    "receptive_field",
    "resolve_padding",
    "same_padding",
    "transposed_conv_output_size",
]


# --------------------------------------------------------------------------- checks


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        # numpy integers and the like
        try:
            as_int = int(value)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            raise ConfigError(
                f"{name} must be an integer >= {minimum}; received {value!r}."
            ) from None
        if as_int != value:
            raise ConfigError(f"{name} must be an integer >= {minimum}; received {value!r}.")
        value = as_int
    if value < minimum:
        what = "positive" if minimum == 1 else f">= {minimum}"
        raise ShapeError(f"{name} must be {what}; received {value}.")
    return value


def effective_kernel_size(kernel_size: int, dilation: int = 1) -> int:
    """``F_eff = d (F - 1) + 1``: the extent of a dilated kernel."""
    kernel_size = _check_int("kernel_size", kernel_size, 1)
    dilation = _check_int("dilation", dilation, 1)
    return dilation * (kernel_size - 1) + 1


def same_padding(n: int, kernel_size: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow/Keras ``'same'`` padding ``(before, after)`` for one dimension.

    The output has ``ceil(n / stride)`` elements; when the total padding is odd the
    extra element goes after, as Keras does.
    """
    n = _check_int("input size", n, 1)
    stride = _check_int("stride", stride, 1)
    f_eff = effective_kernel_size(kernel_size, dilation)
    out = -(-n // stride)
    total = max((out - 1) * stride + f_eff - n, 0)
    return total // 2, total - total // 2


def resolve_padding(
    padding: int | str | Sequence[int],
    n: int,
    kernel_size: int,
    stride: int = 1,
    dilation: int = 1,
) -> tuple[int, int]:
    """Turn a padding spec for one dimension into ``(before, after)``.

    ``padding`` is an int (both sides), a pair ``(before, after)``, or one of
    ``'valid'`` (0), ``'same'`` (Keras: output ``ceil(n / stride)``) and ``'full'``
    (``F_eff - 1`` on both sides).
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return 0, 0
        if mode == "same":
            return same_padding(n, kernel_size, stride, dilation)
        if mode == "full":
            p = effective_kernel_size(kernel_size, dilation) - 1
            return p, p
        raise ConfigError(
            f"Unknown padding {padding!r}; expected 'valid', 'same', 'full', an int or a pair (before, after)."
        )
    if isinstance(padding, Sequence):
        if len(padding) != 2:
            raise ConfigError(
                f"padding for one dimension must be an int or a pair (before, after); received {padding!r}."
            )
        before = _check_int("padding", padding[0], 0)
        after = _check_int("padding", padding[1], 0)
        return before, after
    p = _check_int("padding", padding, 0)
    return p, p


# --------------------------------------------------------------------------- output sizes


def _fmt(x: float) -> str:
    return f"{x:.2f}" if x != int(x) else str(int(x))


def _formula(n: int, f_eff: int, before: int, after: int, stride: int) -> str:
    if before == after == 0:
        inner = f"{n} - {f_eff} + 0"
    elif before == after:
        inner = f"{n} - {f_eff} + 2*{before}"
    else:
        inner = f"{n} - {f_eff} + {before} + {after}"
    value = (n - f_eff + before + after) / stride + 1
    return f"({inner})/{stride} + 1 = {_fmt(value)}"


def output_size_formula(
    n: int,
    kernel_size: int,
    stride: int = 1,
    padding: int | str | Sequence[int] = 0,
    dilation: int = 1,
) -> str:
    """``(N - F + 2P)/S + 1`` with the numbers filled in, e.g. ``'(7 - 3 + 0)/3 + 1 = 2.33'``
    (the value to two decimals when it is not whole)."""
    f_eff = effective_kernel_size(kernel_size, dilation)
    before, after = resolve_padding(padding, n, kernel_size, stride, dilation)
    return _formula(n, f_eff, before, after, _check_int("stride", stride, 1))


def _padding_suggestion(n: int, f_eff: int, before: int, after: int, stride: int) -> str:
    numerator = n - f_eff + before + after
    extra = (-numerator) % stride
    total = before + after + extra
    fits = (numerator + extra) // stride + 1
    if total % 2 == 0:
        pad_txt = f"padding={total // 2}"
    else:
        pad_txt = f"padding=({total // 2}, {total - total // 2})"
    drop = numerator % stride
    floored = numerator // stride + 1
    same_out = -(-n // stride)
    strides = [s for s in range(1, numerator + 1) if numerator % s == 0][:6]
    stride_txt = ", ".join(map(str, strides[:-1])) + " or " if len(strides) > 1 else ""
    return (
        f"Use {pad_txt} (output {fits}), padding='same' (output ceil({n}/{stride}) = {same_out}), "
        f"a stride of {stride_txt}{strides[-1]}, "
        f"an input of {n - drop} or {n + extra}, or floor=True for the floored size {floored} "
        f"that PyTorch and Keras compute (the last {drop} input element(s) are then never covered)."
    )


def _one_output_size(
    n: int,
    kernel_size: int,
    stride: int,
    padding: int | str | Sequence[int],
    dilation: int,
    floor: bool,
    what: str,
) -> int:
    n = _check_int("input size", n, 1)
    kernel_size = _check_int(f"{what} size", kernel_size, 1)
    stride = _check_int("stride", stride, 1)
    dilation = _check_int("dilation", dilation, 1)
    f_eff = effective_kernel_size(kernel_size, dilation)
    if isinstance(padding, str) and padding.lower() == "same":
        return -(-n // stride)
    before, after = resolve_padding(padding, n, kernel_size, stride, dilation)
    numerator = n - f_eff + before + after
    dil = (
        f" (dilated: F_eff = {dilation}*({kernel_size} - 1) + 1 = {f_eff})" if dilation > 1 else ""
    )
    if numerator < 0:
        raise ShapeError(
            f"The {what} of size {f_eff}{dil} is larger than the padded input "
            f"{n} + {before + after} = {n + before + after}: output size "
            f"{_formula(n, f_eff, before, after, stride)} is below 1. Use a larger input, "
            f"a smaller {what}, or padding='same'."
        )
    if numerator % stride and not floor:
        raise ShapeError(
            f"Output size is not an integer: (N - F + 2P)/S + 1 = "
            f"{_formula(n, f_eff, before, after, stride)}{dil}. A stride of {stride} does not "
            f"fit an input of {n}. " + _padding_suggestion(n, f_eff, before, after, stride)
        )
    return numerator // stride + 1


def _broadcast(name: str, value, ndim: int):
    if isinstance(value, str) or not isinstance(value, Sequence):
        return [value] * ndim
    if len(value) != ndim:
        raise ConfigError(
            f"{name} has {len(value)} entries {tuple(value)!r} but the input has {ndim} dimension(s)."
        )
    return list(value)


def _per_dim(fn, n, kernel_size, stride, padding, dilation, **kw):
    """Apply a one-dimension size function to an int or to a tuple of sizes."""
    if isinstance(n, Sequence):
        ndim = len(n)
        ks = _broadcast("kernel_size", kernel_size, ndim)
        ss = _broadcast("stride", stride, ndim)
        # a pair for a single dimension is (before, after); for several it is per dimension
        if isinstance(padding, Sequence) and not isinstance(padding, str) and ndim == 1:
            ps = [padding]
        else:
            ps = _broadcast("padding", padding, ndim)
        ds = _broadcast("dilation", dilation, ndim)
        return tuple(fn(n[i], ks[i], ss[i], ps[i], ds[i], **kw) for i in range(ndim))
    return fn(n, kernel_size, stride, padding, dilation, **kw)


def conv_output_size(
    n: int | Sequence[int],
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | str | Sequence = 0,
    dilation: int | Sequence[int] = 1,
    *,
    floor: bool = False,
) -> int | tuple[int, ...]:
    """Output size of a convolution: ``(N - F_eff + P_before + P_after) / S + 1``.

    Args:
        n: input size (an int, or a tuple for several dimensions).
        kernel_size, stride, dilation: ints (or one per dimension).
        padding: an int, a pair ``(before, after)``, ``'valid'``, ``'same'`` (Keras:
            ``ceil(n / stride)``, the extra padding after) or ``'full'`` (``F_eff - 1``).
        floor: if False (default) a stride that does not divide exactly raises
            :class:`ShapeError` showing the arithmetic; if True the floored size is
            returned, as PyTorch and Keras compute it.

    >>> conv_output_size(227, 11, stride=4)
    55
    >>> conv_output_size(6, 3, stride=2, padding=1, floor=True)
    3
    """
    return _per_dim(
        _one_output_size, n, kernel_size, stride, padding, dilation, floor=floor, what="kernel"
    )


def pool_output_size(
    n: int | Sequence[int],
    pool_size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: int | str | Sequence = 0,
    dilation: int | Sequence[int] = 1,
    *,
    floor: bool = False,
) -> int | tuple[int, ...]:
    """Output size of a pooling window; the stride defaults to the pool size.

    Same rules as :func:`conv_output_size` (``'full'`` is not a pooling padding).

    >>> pool_output_size(4, 2)
    2
    """
    if isinstance(padding, str) and padding.lower() == "full":
        raise ConfigError(
            "padding='full' is not defined for pooling; use 'valid', 'same' or an int."
        )
    if stride is None:
        stride = pool_size
    if isinstance(padding, int) and not isinstance(padding, bool):
        windows = pool_size if isinstance(pool_size, Sequence) else [pool_size]
        for k in windows:
            if isinstance(k, int) and k > 0 and padding > k // 2:  # PyTorch refuses it too
                raise ShapeError(
                    f"pooling padding {padding} is more than half the pool window {k}; a "
                    f"window could then cover only padding. Use padding <= {k // 2}."
                )
    return _per_dim(
        _one_output_size, n, pool_size, stride, padding, dilation, floor=floor, what="pool window"
    )


def _one_transposed(n, kernel_size, stride, padding, dilation, output_padding):
    n = _check_int("input size", n, 1)
    kernel_size = _check_int("kernel_size", kernel_size, 1)
    stride = _check_int("stride", stride, 1)
    dilation = _check_int("dilation", dilation, 1)
    f_eff = effective_kernel_size(kernel_size, dilation)
    mode = padding.lower() if isinstance(padding, str) else None
    if output_padding is not None:
        output_padding = _check_int("output_padding", output_padding, 0)
        if output_padding >= max(stride, dilation):
            raise ShapeError(
                f"output_padding must be smaller than the stride or the dilation "
                f"(max({stride}, {dilation}) = {max(stride, dilation)}); received {output_padding}."
            )
    if mode is not None and mode not in PADDING_MODES:
        raise ConfigError(
            f"Unknown padding {padding!r}; expected 'valid', 'same', 'full' or an int."
        )
    if mode is not None and output_padding is None:
        # Keras' deconv_output_length without output_padding
        if mode == "valid":
            out = n * stride + max(f_eff - stride, 0)
        elif mode == "same":
            out = n * stride
        else:  # full
            out = n * stride - (stride + f_eff - 2)
        formula = f"{mode!r} padding, input {n}, stride {stride}, kernel {f_eff}"
    else:
        op = output_padding or 0
        if mode == "valid":
            before = after = 0
        elif mode == "same":
            before = after = f_eff // 2
        elif mode == "full":
            before = after = f_eff - 1
        else:
            before, after = resolve_padding(padding, n, kernel_size, stride, dilation)
        out = (n - 1) * stride - before - after + f_eff + op
        formula = f"({n} - 1)*{stride} - {before + after} + {f_eff} + {op} = {out}"
    if out < 1:
        raise ShapeError(
            f"Transposed convolution output size is {out} ({formula}); it must be positive. "
            "Reduce the padding or use a larger input."
        )
    return out


def transposed_conv_output_size(
    n: int | Sequence[int],
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | str | Sequence = 0,
    output_padding: int | Sequence[int] | None = None,
    dilation: int | Sequence[int] = 1,
) -> int | tuple[int, ...]:
    """Output size of a transposed convolution.

    With an int or pair padding: ``(N - 1) S - P_before - P_after + F_eff + output_padding``
    (PyTorch). With ``'valid'``/``'same'``/``'full'`` it follows Keras:
    ``'same'`` gives ``N S``, ``'valid'`` gives ``N S + max(F_eff - S, 0)``.

    >>> transposed_conv_output_size(4, 3)   # seed 003: K^T maps 4 back to 6
    6
    """
    if isinstance(n, Sequence):
        ops = _broadcast("output_padding", output_padding, len(n))
        ks = _broadcast("kernel_size", kernel_size, len(n))
        ss = _broadcast("stride", stride, len(n))
        ps = (
            [padding]
            if (len(n) == 1 and isinstance(padding, Sequence) and not isinstance(padding, str))
            else _broadcast("padding", padding, len(n))
        )
        ds = _broadcast("dilation", dilation, len(n))
        return tuple(
            _one_transposed(n[i], ks[i], ss[i], ps[i], ds[i], ops[i]) for i in range(len(n))
        )
    return _one_transposed(n, kernel_size, stride, padding, dilation, output_padding)


def explain_conv_output_size(
    n: int,
    kernel_size: int,
    stride: int = 1,
    padding: int | str | Sequence[int] = 0,
    dilation: int = 1,
) -> str:
    """A few lines that walk through the output-size arithmetic for one dimension."""
    f_eff = effective_kernel_size(kernel_size, dilation)
    before, after = resolve_padding(padding, n, kernel_size, stride, dilation)
    lines = [f"N = {n}, F = {kernel_size}, S = {stride}, P = ({before}, {after}), d = {dilation}"]
    if dilation > 1:
        lines.append(f"F_eff = d(F - 1) + 1 = {dilation}*({kernel_size} - 1) + 1 = {f_eff}")
    lines.append("(N - F + 2P)/S + 1 = " + _formula(n, f_eff, before, after, stride))
    try:
        out = conv_output_size(n, kernel_size, stride, (before, after), dilation)
        lines.append(f"output size {out}")
    except ShapeError as err:
        lines.append(str(err))
    return "\n".join(lines)


# --------------------------------------------------------------------------- receptive field


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of one layer of a stack (in input elements).

    ``jump`` is the distance in the input between two adjacent outputs of this layer;
    ``start`` the input coordinate of the centre of the first output's field.
    """

    layer: int
    kernel_size: int
    stride: int
    dilation: int
    receptive_field: int
    jump: int
    start: float


def receptive_field(layers: Iterable[Sequence[int]]) -> list[ReceptiveField]:
    """Receptive field and jump after each layer of a stack.

    Args:
        layers: ``(kernel, stride)``, ``(kernel, stride, dilation)`` or
            ``(kernel, stride, dilation, padding)`` per layer.

    >>> [r.receptive_field for r in receptive_field([(2, 2), (2, 2)])]
    [2, 4]
    >>> receptive_field([(2, 1, 1), (2, 1, 2), (2, 1, 4)])[-1].receptive_field
    8
    """
    out: list[ReceptiveField] = []
    r, j, start = 1, 1, 0.5
    for i, spec in enumerate(layers):
        spec = tuple(spec)
        if not 1 <= len(spec) <= 4:
            raise ConfigError(
                f"layer {i}: expected (kernel, stride[, dilation[, padding]]); received {spec!r}."
            )
        k = _check_int(f"layer {i} kernel", spec[0], 1)
        s = _check_int(f"layer {i} stride", spec[1] if len(spec) > 1 else 1, 1)
        d = _check_int(f"layer {i} dilation", spec[2] if len(spec) > 2 else 1, 1)
        p = _check_int(f"layer {i} padding", spec[3] if len(spec) > 3 else 0, 0)
        f_eff = effective_kernel_size(k, d)
        start = start + ((f_eff - 1) / 2 - p) * j
        r = r + (f_eff - 1) * j
        j = j * s
        out.append(ReceptiveField(i, k, s, d, r, j, start))
    return out


# --------------------------------------------------------------------------- counts


def _as_tuple(name: str, value, ndim: int | None) -> tuple[int, ...]:
    if isinstance(value, Sequence) and not isinstance(value, str):
        vals = tuple(value)
        if ndim is not None and len(vals) != ndim:
            raise ConfigError(f"{name} has {len(vals)} entries {vals!r}; expected {ndim}.")
    else:
        vals = (value,) * (ndim if ndim is not None else 2)
    return tuple(_check_int(name, v, 1) for v in vals)


def _infer_ndim(ndim: int | None, *values) -> int | None:
    for v in values:
        if isinstance(v, Sequence) and not isinstance(v, str):
            if ndim is not None and ndim != len(v):
                raise ConfigError(f"ndim={ndim} but {tuple(v)!r} has {len(v)} entries.")
            return len(v)
    return ndim


def _check_groups(in_channels: int, out_channels: int, groups: int) -> None:
    if in_channels % groups or out_channels % groups:
        raise ShapeError(
            f"groups={groups} must divide both in_channels={in_channels} and "
            f"out_channels={out_channels}."
        )


def conv_params(
    in_channels: int,
    out_channels: int,
    kernel_size: int | Sequence[int],
    groups: int = 1,
    bias: bool = True,
    *,
    ndim: int | None = None,
) -> int:
    """Learnable parameters of a convolution: ``prod(F) * C_in/groups * C_out (+ C_out)``.

    An int ``kernel_size`` is a square 2D kernel unless ``ndim`` says otherwise.

    >>> conv_params(3, 96, 11)   # AlexNet conv1, seed 002
    34944
    """
    in_channels = _check_int("in_channels", in_channels, 1)
    out_channels = _check_int("out_channels", out_channels, 1)
    groups = _check_int("groups", groups, 1)
    _check_groups(in_channels, out_channels, groups)
    ks = _as_tuple("kernel_size", kernel_size, _infer_ndim(ndim, kernel_size))
    return math.prod(ks) * (in_channels // groups) * out_channels + (out_channels if bias else 0)


def conv_macs(
    in_channels: int,
    out_channels: int,
    kernel_size: int | Sequence[int],
    output_size: int | Sequence[int],
    groups: int = 1,
    *,
    ndim: int | None = None,
) -> int:
    """Multiply-accumulates of a convolution: ``prod(F) * prod(out) * C_in/groups * C_out``.

    Ints are square (2D) unless ``ndim`` or a tuple says otherwise.

    >>> conv_macs(192, 32, 5, 28)   # seed 003's naive 5x5 inception branch
    120422400
    """
    in_channels = _check_int("in_channels", in_channels, 1)
    out_channels = _check_int("out_channels", out_channels, 1)
    groups = _check_int("groups", groups, 1)
    _check_groups(in_channels, out_channels, groups)
    nd = _infer_ndim(ndim, kernel_size, output_size)
    ks = _as_tuple("kernel_size", kernel_size, nd)
    os_ = _as_tuple("output_size", output_size, nd)
    return math.prod(ks) * math.prod(os_) * (in_channels // groups) * out_channels


def dense_params(in_features: int, out_features: int, bias: bool = True) -> int:
    """Parameters of a fully connected layer: ``N * M + M`` (seed 002).

    >>> dense_params(3072, 2048)
    6293504
    """
    in_features = _check_int("in_features", in_features, 1)
    out_features = _check_int("out_features", out_features, 1)
    return in_features * out_features + (out_features if bias else 0)


def dense_macs(in_features: int, out_features: int) -> int:
    """Multiply-accumulates of a fully connected layer: ``N * M``."""
    return _check_int("in_features", in_features, 1) * _check_int("out_features", out_features, 1)
