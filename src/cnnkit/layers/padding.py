"""Layer arguments handled once: window sizes, strides, dilation and padding arithmetic.

Every sliding-window layer (convolutions 1D-3D, separable, depthwise, transposed,
pooling, unpooling, upsampling, zero padding and cropping) normalises its arguments
here, so the checks and their error messages exist once:

* :func:`normalize_tuple`: an int or ``n`` ints -> a tuple of ``n`` ints;
* :func:`normalize_padding`: ``'valid'`` / ``'same'`` / ``'full'`` / ``'causal'`` (those a
  layer allows), an int, ints per dim or ``(before, after)`` pairs;
* :func:`window_args`: kernel size, strides, dilation and padding of a convolution;
* :func:`pool_args`: pool size, strides (``None`` = pool size) and padding of a pooling
  layer, each side smaller than the window;
* :func:`resolve_pads`: ``(before, after)`` per dim for input sizes (Keras' ``'same'``
  puts the odd extra element after; ``'causal'`` pads ``d (k - 1)`` before, nothing
  after; ``'full'`` pads ``F_eff - 1`` on both sides);
* :func:`pad_plan`: the split into the functional op's symmetric padding and an
  ``F.pad`` remainder;
* :func:`adjoint_pads` / :func:`torch_plan`: the padding arithmetic of transposed
  convolutions.

The per-dimension formulas themselves live in :mod:`cnnkit.ops.arithmetic`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cnnkit._core.errors import ConfigError, ShapeError, did_you_mean
from cnnkit.ops.arithmetic import resolve_padding

__all__ = [
    "PaddingSpec",
    "adjoint_pads",
    "check_positive_int",
    "is_static",
    "normalize_cropping",
    "normalize_padding",
    "normalize_tuple",
    "pad_plan",
    "padding_specs",
    "pool_args",
    "resolve_pads",
    "symmetric",
    "torch_pad_arg",
    "torch_plan",
    "window_args",
]

PaddingSpec = str | tuple  # 'valid' | 'same' | 'full' | 'causal' | ((before, after), ...)
Plan = tuple  # (flat F.pad list or None, padding tuple for the functional op)

#: the string paddings of convolutions; 'causal' only where ``causal=True`` (1D)
CONV_PADDINGS = ("valid", "same", "full")
POOL_PADDINGS = ("valid", "same")


def normalize_tuple(
    value: int | Sequence[int], n: int, name: str, minimum: int = 1
) -> tuple[int, ...]:
    """An int or a sequence of ``n`` ints, as a tuple of ``n`` ints >= ``minimum``."""
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be an int or a tuple of {n} ints; received {value!r}.")
    if isinstance(value, int):
        vals: tuple = (value,) * n
    elif isinstance(value, Sequence) and not isinstance(value, str):
        vals = tuple(value)
        if len(vals) != n:
            raise ConfigError(
                f"{name} must be an int or a tuple of {n} ints; received {tuple(value)!r} "
                f"({len(vals)} entries)."
            )
    else:
        raise ConfigError(f"{name} must be an int or a tuple of {n} ints; received {value!r}.")
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ConfigError(f"{name} must contain ints >= {minimum}; received {value!r}.")
    return tuple(int(v) for v in vals)


def _pairs(value: Any, n: int, err: Exception) -> tuple[tuple[int, int], ...]:
    """An int, ``n`` ints or ``n`` ``(before, after)`` pairs (one bare pair when n = 1)."""
    if isinstance(value, bool):
        raise err
    if isinstance(value, int):
        if value < 0:
            raise err
        return tuple((value, value) for _ in range(n))
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise err
    items = list(value)
    if n == 1 and len(items) == 2 and all(isinstance(v, int) for v in items):
        items = [tuple(items)]
    if len(items) != n:
        raise err
    pairs = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            pair = (item, item)
        elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2:
            pair = tuple(item)
        else:
            raise err
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in pair):
            raise err
        pairs.append((int(pair[0]), int(pair[1])))
    return tuple(pairs)


def normalize_padding(padding: Any, n: int, allowed: Sequence[str] = CONV_PADDINGS) -> PaddingSpec:
    """Normalize a layer's padding argument for ``n`` spatial dims.

    Accepts ``'valid'``, ``'same'``, ``'full'``, ``'causal'`` (those in ``allowed``), an
    int, a tuple of ``n`` ints (symmetric per dim), a tuple of ``n`` pairs
    ``(before, after)``, or for one spatial dim a single pair. Returns the lower-cased
    string or a tuple of ``n`` ``(before, after)`` pairs.
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode not in allowed:
            raise ConfigError(
                f"Unknown padding {padding!r}; expected one of {', '.join(map(repr, allowed))}, "
                f"an int, a tuple of {n} ints or a tuple of {n} (before, after) pairs."
                + did_you_mean(mode, allowed)
            )
        return mode
    err = ConfigError(
        f"padding must be one of {', '.join(map(repr, allowed))}, an int, a tuple of {n} ints or "
        f"{n} (before, after) pairs; received {padding!r}."
    )
    return _pairs(padding, n, err)


def normalize_cropping(value: Any, n: int, owner: str, what: str) -> tuple[tuple[int, int], ...]:
    """Keras' ``padding=`` of ZeroPadding / ``cropping=`` of Cropping layers.

    An int (every side), a tuple of ``n`` ints (symmetric per dim) or ``n``
    ``(before, after)`` pairs; for 1D also one bare pair. Returns ``n`` pairs.
    """
    err = ConfigError(
        f"{owner} expects {what} an int >= 0, a tuple of {n} ints or {n} (before, after) "
        f"pairs of ints >= 0; received {value!r}."
    )
    return _pairs(value, n, err)


def window_args(
    owner: str,
    n: int,
    kernel_size: int | Sequence[int],
    strides: int | Sequence[int],
    dilation_rate: int | Sequence[int],
    padding: Any,
    *,
    causal: bool = False,
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], PaddingSpec]:
    """``(kernel_size, strides, dilation_rate, padding)`` of a convolution, checked.

    ``causal`` allows Keras' ``padding='causal'`` (1D layers).
    """
    kernel = normalize_tuple(kernel_size, n, f"{owner} kernel_size")
    stride = normalize_tuple(strides, n, f"{owner} strides")
    dilation = normalize_tuple(dilation_rate, n, f"{owner} dilation_rate")
    allowed = (*CONV_PADDINGS, "causal") if causal else CONV_PADDINGS
    return kernel, stride, dilation, normalize_padding(padding, n, allowed)


def pool_args(
    owner: str,
    n: int,
    pool_size: int | Sequence[int],
    strides: int | Sequence[int] | None,
    padding: Any,
) -> tuple[tuple[int, ...], tuple[int, ...], PaddingSpec]:
    """``(pool_size, strides, padding)`` of a pooling layer; ``strides=None`` = pool size.

    Explicit pads must leave every window overlapping the input (each side at most
    ``pool_size - 1``).
    """
    size = normalize_tuple(pool_size, n, f"{owner} pool_size")
    stride = size if strides is None else normalize_tuple(strides, n, f"{owner} strides")
    try:
        pad = normalize_padding(padding, n, allowed=POOL_PADDINGS)
    except ConfigError as err:
        raise ConfigError(f"{owner}: {err}") from None
    if isinstance(pad, tuple):
        for (before, after), k in zip(pad, size):
            if before >= k or after >= k:
                raise ConfigError(
                    f"{owner} padding {padding!r} pads {max(before, after)} on one side of a "
                    f"window of {k}; each side must be at most pool_size - 1 = {k - 1} so "
                    "that every window overlaps the input. Use padding='same' or a smaller "
                    "padding."
                )
    return size, stride, pad


def padding_specs(
    padding: PaddingSpec, kernel_size: Sequence[int], dilation: Sequence[int]
) -> list[Any]:
    """One spec per dim for :mod:`cnnkit.ops.arithmetic`: a string or a ``(before, after)``
    pair (``'causal'`` becomes ``(d (k - 1), 0)``)."""
    n = len(kernel_size)
    if padding == "causal":
        return [(d * (k - 1), 0) for k, d in zip(kernel_size, dilation)]
    if isinstance(padding, str):
        return [padding] * n
    return list(padding)


def is_static(padding: PaddingSpec, strides: Sequence[int]) -> bool:
    """Whether the pads are independent of the input size (all but 'same' + stride > 1)."""
    return not (padding == "same" and any(s > 1 for s in strides))


def resolve_pads(
    padding: PaddingSpec,
    sizes: Sequence[int | None],
    kernel_size: Sequence[int],
    strides: Sequence[int],
    dilation: Sequence[int],
) -> list[tuple[int, int]]:
    """``(before, after)`` per spatial dim for a normalized padding and input sizes."""
    if isinstance(padding, tuple):
        return list(padding)
    if padding == "causal":
        return [(d * (k - 1), 0) for k, d in zip(kernel_size, dilation)]
    out = []
    for n, k, s, d in zip(sizes, kernel_size, strides, dilation):
        if n is None:
            if padding == "same" and s > 1:
                raise ShapeError("'same' padding with stride > 1 needs known spatial sizes.")
            n = 1_000_000 * s  # any multiple of the stride gives the same pads for stride 1
        out.append(resolve_padding(padding, n, k, s, d))
    return out


def torch_pad_arg(pads: Sequence[tuple[int, int]]) -> list[int]:
    """``(before, after)`` per dim (first to last) -> the flat list ``F.pad`` wants."""
    flat: list[int] = []
    for before, after in reversed(list(pads)):
        flat += [before, after]
    return flat


def symmetric(pads: Sequence[tuple[int, int]]) -> tuple[int, ...] | None:
    """The per-dim padding tuple if every pair is symmetric, else ``None``."""
    if all(b == a for b, a in pads):
        return tuple(b for b, _ in pads)
    return None


def pad_plan(pads: Sequence[tuple[int, int]], padding_mode: str) -> Plan:
    """Split ``(before, after)`` pads into an ``F.pad`` list (or None) and the op's padding.

    With zeros the symmetric part ``min(before, after)`` goes to the op and only the
    remainder is padded explicitly; other modes pad everything with ``F.pad``.
    """
    nd = len(pads)
    if padding_mode == "zeros":
        common = tuple(min(b, a) for b, a in pads)
        rest = [(b - c, a - c) for (b, a), c in zip(pads, common)]
        if any(b or a for b, a in rest):
            return torch_pad_arg(rest), common
        return None, common
    if any(b or a for b, a in pads):
        return torch_pad_arg(pads), (0,) * nd
    return None, (0,) * nd


def check_positive_int(value: Any, name: str, owner: str) -> int:
    """``value`` as an int >= 1, else a ConfigError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{owner} expects {name} a positive int; received {value!r}.")
    return int(value)


# ---------------------------------------------------------------------- transposed


def adjoint_pads(
    padding: str | tuple[int, int],
    output_padding: int | None,
    kernel_size: int,
    stride: int,
    dilation: int,
) -> tuple[int, int, int]:
    """``(before, after, r)`` of the convolution this transposed convolution is the adjoint of.

    The convolution pads its input of size ``L`` by ``(before, after)``; ``r`` is the
    number of padded elements its floor division leaves uncovered at the end:
    ``L + before + after = (N - 1) S + F_eff + r``. All three are independent of ``N``.
    """
    k_eff = dilation * (kernel_size - 1) + 1
    if isinstance(padding, str):
        if padding == "same":
            if output_padding is None:
                total = max(k_eff - stride, 0)
                r = max(stride - k_eff, 0)
            else:
                half2 = 2 * (k_eff // 2)
                total = max(half2 - output_padding, 0)
                r = max(output_padding - half2, 0)
            return total // 2, total - total // 2, r
        if padding == "valid":
            r = max(stride - k_eff, 0) if output_padding is None else output_padding
            return 0, 0, r
        # full
        return k_eff - 1, k_eff - 1, output_padding or 0
    before, after = padding
    return before, after, output_padding or 0


def torch_plan(before: int, after: int, r: int) -> tuple[int, int, int, int]:
    """``(padding, output_padding, crop_before, crop_after)`` for ``F.conv_transposeNd``.

    ``F.conv_transposeNd`` with padding ``p`` and output padding ``q`` yields the padded
    coordinates ``[p, (N-1)S + F_eff + q - p)``; the adjoint wants ``[before, before + L)``.
    """
    p = min(before, after)
    t = r + p - after
    q = max(t, 0)
    return p, q, before - p, q - t
