"""NumPy reference implementations, written straight from the lecture decks' math.

Slow on purpose: explicit loops over output positions and kernel offsets, so each
function reads like the formula it implements. They are the references the fast
torch layers are tested against, and import no torch.

All arrays are channels-first (``x (ndarray[N, C, *spatial])``) and computed in float64.
Weights use PyTorch's layouts: ``w (ndarray[C_out, C_in/groups, *kernel])`` for a
convolution, ``w (ndarray[C_in, C_out/groups, *kernel])`` for a transposed one.

The cross-correlation of the decks (seed 000 "Convolution II", seed 004)::

    ConvolvedFeature(i, j) = sum_c sum_u sum_v x[c, i*s + u*d, j*s + v*d] * w[c, u, v] + b
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cnnkit._core.errors import ConfigError, ShapeError, check_choice
from cnnkit.ops.arithmetic import (
    conv_output_size,
    resolve_padding,
    transposed_conv_output_size,
)

__all__ = [
    "batch_norm",
    "conv_matrix",
    "conv_nd",
    "conv_transpose_nd",
    "dense",
    "max_pool_with_indices",
    "max_unpool_nd",
    "pool_nd",
    "transposed_conv_1d",
    "upsample_bed_of_nails",
    "upsample_linear",
    "upsample_nearest",
]

POOL_MODES = ("max", "min", "avg")


# --------------------------------------------------------------------------- argument helpers


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _array(value, name: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an array of numbers; received {value!r}.") from None


def _ntuple(name: str, value, nd: int, minimum: int = 1) -> tuple[int, ...]:
    """An int or a tuple of ``nd`` ints, each ``>= minimum``."""
    if _is_int(value):
        values = (int(value),) * nd
    elif isinstance(value, Sequence) and not isinstance(value, str):
        values = tuple(value)
        if len(values) != nd or not all(_is_int(v) for v in values):
            raise ConfigError(
                f"{name} must be an int or a tuple of {nd} int(s); received {value!r}."
            )
        values = tuple(int(v) for v in values)
    else:
        raise ConfigError(f"{name} must be an int or a tuple of {nd} int(s); received {value!r}.")
    for v in values:
        if v < minimum:
            what = "positive" if minimum == 1 else f">= {minimum}"
            raise ShapeError(f"{name} must be {what}; received {value!r}.")
    return values


def _spatial_rank(x: np.ndarray, what: str) -> int:
    nd = x.ndim - 2
    if nd not in (1, 2, 3):
        raise ShapeError(
            f"{what} expects x of rank 3, 4 or 5 (N, C, *spatial with 1-3 spatial dims); "
            f"received shape {x.shape} (rank {x.ndim})."
        )
    return nd


def _resolve_pads(padding, spatial, kernel, stride, dilation, *, pool=False):
    """Padding spec -> one ``(before, after)`` pair per spatial dimension.

    ``padding`` is an int, ``'valid'``/``'same'``/``'full'``, one entry per dimension
    (each an int or a pair), or, for a single dimension, a pair ``(before, after)``.
    """
    nd = len(spatial)
    if isinstance(padding, str):
        if pool and padding.lower() == "full":
            raise ConfigError(
                "padding='full' is not defined for pooling; use 'valid', 'same' or an int."
            )
        per_dim = [padding] * nd
    elif _is_int(padding):
        per_dim = [int(padding)] * nd
    elif isinstance(padding, Sequence):
        padding = tuple(padding)
        if nd == 1 and len(padding) == 2 and all(_is_int(p) for p in padding):
            per_dim = [padding]
        elif len(padding) == nd:
            per_dim = list(padding)
        else:
            raise ConfigError(
                f"padding must be an int, 'valid', 'same', 'full' or {nd} per-dimension "
                f"entries (ints or (before, after) pairs); received {padding!r}."
            )
    else:
        raise ConfigError(f"padding must be an int, a tuple or a string; received {padding!r}.")
    return [
        resolve_padding(per_dim[i], spatial[i], kernel[i], stride[i], dilation[i])
        for i in range(nd)
    ]


def _out_shape(spatial, kernel, stride, pads, dilation) -> tuple[int, ...]:
    return tuple(
        conv_output_size(spatial[i], kernel[i], stride[i], pads[i], dilation[i], floor=True)
        for i in range(len(spatial))
    )


# --------------------------------------------------------------------------- convolution


def conv_matrix(kernel, input_shape, stride=1, padding=0, dilation=1) -> np.ndarray:
    """The matrix ``K`` of seed 000's "Convolution as matrix multiplication".

    ``K @ x.ravel()`` is the (cross-correlation) convolution of ``x`` with ``kernel``,
    raveled row-major. Zero padding means the columns of padded positions are simply
    absent: ``K`` has shape ``(out_elems, in_elems)``.

    Args:
        kernel (ndarray[k] or ndarray[kh, kw]): a single-channel kernel.
        input_shape: ``L`` (an int) or ``(L,)`` for 1D, ``(H, W)`` for 2D.
        stride, dilation: an int or one per dimension.
        padding: int, per-dimension tuple, a pair ``(before, after)`` (1D) or
            ``'valid'``/``'same'``/``'full'``.

    >>> conv_matrix([1.0, 2.0], 3)
    array([[1., 2., 0.],
           [0., 1., 2.]])
    """
    kernel = _array(kernel, "kernel")
    if _is_int(input_shape):
        input_shape = (int(input_shape),)
    if not isinstance(input_shape, Sequence) or isinstance(input_shape, str):
        raise ConfigError(
            f"input_shape must be an int or a tuple of ints (L,) or (H, W); received {input_shape!r}."
        )
    input_shape = _ntuple("input_shape", input_shape, len(input_shape))
    nd = len(input_shape)
    if kernel.ndim != nd or nd not in (1, 2, 3):
        raise ShapeError(
            f"conv_matrix expects a 1D or 2D kernel with an input_shape of the same rank; "
            f"received kernel shape {kernel.shape} and input_shape {input_shape}."
        )
    ksize = kernel.shape
    stride = _ntuple("stride", stride, nd)
    dilation = _ntuple("dilation", dilation, nd)
    pads = _resolve_pads(padding, input_shape, ksize, stride, dilation)
    out_shape = _out_shape(input_shape, ksize, stride, pads, dilation)

    K = np.zeros((math.prod(out_shape), math.prod(input_shape)))
    for o in np.ndindex(*out_shape):
        row = np.ravel_multi_index(o, out_shape)
        for u in np.ndindex(*ksize):
            # input position read by kernel offset u for output o (unpadded coordinates)
            pos = tuple(o[i] * stride[i] - pads[i][0] + u[i] * dilation[i] for i in range(nd))
            if all(0 <= pos[i] < input_shape[i] for i in range(nd)):
                K[row, np.ravel_multi_index(pos, input_shape)] += kernel[u]
    return K


def _check_conv_shapes(x, w, b, groups, what, transposed=False):
    if w.ndim != x.ndim:
        raise ShapeError(
            f"{what}: the weight must have rank {x.ndim} for an input of shape {x.shape}; "
            f"received weight shape {w.shape}."
        )
    c_in = x.shape[1]
    if transposed:
        if w.shape[0] != c_in:
            raise ShapeError(
                f"{what}: weight shape {w.shape} expects {w.shape[0]} input channels "
                f"(layout C_in, C_out/groups, *kernel); received x with {c_in} channels."
            )
        if c_in % groups:
            raise ShapeError(f"{what}: groups={groups} must divide the {c_in} input channels.")
        c_out = w.shape[1] * groups
    else:
        if w.shape[1] * groups != c_in:
            raise ShapeError(
                f"{what}: weight shape {w.shape} with groups={groups} expects "
                f"{w.shape[1] * groups} input channels; received x with {c_in} channels."
            )
        c_out = w.shape[0]
        if c_out % groups:
            raise ShapeError(
                f"{what}: groups={groups} must divide the {c_out} output channels of "
                f"weight shape {w.shape}."
            )
    if b is not None and b.shape != (c_out,):
        raise ShapeError(f"{what}: the bias must have shape ({c_out},); received {b.shape}.")
    return c_in, c_out


def conv_nd(x, w, b=None, stride=1, padding=0, dilation=1, groups=1) -> np.ndarray:
    """Direct multi-channel cross-correlation in 1D, 2D or 3D.

    ``y[n, o, i, j] = sum_c sum_u sum_v xp[n, c, i*s + u*d, j*s + v*d] * w[o, c, u, v] + b[o]``
    with ``xp`` the zero-padded input and ``c`` running over the channels of ``o``'s group.

    Args:
        x (ndarray[N, C_in, *spatial]), w (ndarray[C_out, C_in/groups, *kernel]),
        b (ndarray[C_out] or None).
        stride, dilation: an int or one per dimension.
        padding: int, per-dimension tuple (ints or ``(before, after)`` pairs), or
            ``'valid'``, ``'same'`` (Keras: output ``ceil(n/s)``, extra padding after), ``'full'``.

    Returns:
        ndarray[N, C_out, *out] with ``out = floor((n + p_b + p_a - d(k-1) - 1)/s) + 1``.
    """
    x, w = _array(x, "x"), _array(w, "w")
    b = None if b is None else _array(b, "b")
    nd = _spatial_rank(x, "conv_nd")
    groups = _ntuple("groups", groups, 1)[0]
    c_in, c_out = _check_conv_shapes(x, w, b, groups, "conv_nd")
    spatial, ksize = x.shape[2:], w.shape[2:]
    stride = _ntuple("stride", stride, nd)
    dilation = _ntuple("dilation", dilation, nd)
    pads = _resolve_pads(padding, spatial, ksize, stride, dilation)
    out_shape = _out_shape(spatial, ksize, stride, pads, dilation)

    xp = np.pad(x, [(0, 0), (0, 0), *pads])
    y = np.zeros((x.shape[0], c_out, *out_shape))
    cin_g, cout_g = c_in // groups, c_out // groups
    for g in range(groups):
        ci = slice(g * cin_g, (g + 1) * cin_g)
        co = slice(g * cout_g, (g + 1) * cout_g)
        for o in np.ndindex(*out_shape):
            acc = np.zeros((x.shape[0], cout_g))
            for u in np.ndindex(*ksize):
                pos = tuple(o[i] * stride[i] + u[i] * dilation[i] for i in range(nd))
                # sum over the group's channels: (N, cin_g) @ (cin_g, cout_g)
                acc += xp[(slice(None), ci, *pos)] @ w[(co, slice(None), *u)].T
            y[(slice(None), co, *o)] = acc
    if b is not None:
        y += b.reshape((1, c_out) + (1,) * nd)
    return y


def conv_transpose_nd(
    x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1, groups=1
) -> np.ndarray:
    """Transposed convolution (PyTorch semantics) by scatter-add in 1D, 2D or 3D.

    Each input element stamps the kernel, scaled by its value, into the output at
    ``i*s + u*d`` (seed 003, "Transposed Convolution"); ``padding`` then crops ``p``
    elements from both ends and ``output_padding`` adds elements at the end.

    Args:
        x (ndarray[N, C_in, *spatial]), w (ndarray[C_in, C_out/groups, *kernel]),
        b (ndarray[C_out] or None).
        padding, output_padding: an int or one int per dimension.

    Returns:
        ndarray[N, C_out, *out] with ``out = (n-1)s - 2p + d(k-1) + output_padding + 1``.
    """
    x, w = _array(x, "x"), _array(w, "w")
    b = None if b is None else _array(b, "b")
    nd = _spatial_rank(x, "conv_transpose_nd")
    groups = _ntuple("groups", groups, 1)[0]
    c_in, c_out = _check_conv_shapes(x, w, b, groups, "conv_transpose_nd", transposed=True)
    spatial, ksize = x.shape[2:], w.shape[2:]
    stride = _ntuple("stride", stride, nd)
    dilation = _ntuple("dilation", dilation, nd)
    if isinstance(padding, str):
        raise ConfigError(
            f"conv_transpose_nd takes an int padding (or one per dimension); received {padding!r}."
        )
    padding = _ntuple("padding", padding, nd, minimum=0)
    output_padding = _ntuple("output_padding", output_padding, nd, minimum=0)
    out_shape = tuple(
        transposed_conv_output_size(
            spatial[a], ksize[a], stride[a], padding[a], output_padding[a], dilation[a]
        )
        for a in range(nd)
    )

    full_shape = tuple(out_shape[i] + 2 * padding[i] for i in range(nd))
    full = np.zeros((x.shape[0], c_out, *full_shape))
    cin_g, cout_g = c_in // groups, c_out // groups
    for g in range(groups):
        ci = slice(g * cin_g, (g + 1) * cin_g)
        co = slice(g * cout_g, (g + 1) * cout_g)
        for i in np.ndindex(*spatial):
            xi = x[(slice(None), ci, *i)]  # (N, cin_g)
            for u in np.ndindex(*ksize):
                pos = tuple(i[a] * stride[a] + u[a] * dilation[a] for a in range(nd))
                full[(slice(None), co, *pos)] += xi @ w[(ci, slice(None), *u)]
    crop = tuple(slice(padding[a], padding[a] + out_shape[a]) for a in range(nd))
    y = full[(slice(None), slice(None), *crop)]
    if b is not None:
        y = y + b.reshape((1, c_out) + (1,) * nd)
    return y


def transposed_conv_1d(x, w, stride=1, padding=0, output_padding=0) -> np.ndarray:
    """Single-channel 1D transposed convolution as ``K^T @ x`` (seed 003, Example 2).

    ``K = conv_matrix(w, L_out, stride, padding)`` is the matrix of the regular
    convolution that maps ``L_out`` elements to ``len(x)``; its transpose maps them back.
    For ``w = (w1, w2, w3)`` and ``x = (z7, z8, z9, z10)``:
    ``(w1 z7, w2 z7 + w1 z8, w3 z7 + w2 z8 + w1 z9, ..., w3 z10)``.

    Args:
        x (ndarray[L_in]), w (ndarray[k]); padding an int or a pair (before, after).

    Returns:
        ndarray[L_out], ``L_out = (L_in - 1) s - p_b - p_a + k + output_padding``.
    """
    x, w = _array(x, "x"), _array(w, "w")
    if x.ndim != 1 or w.ndim != 1:
        raise ShapeError(
            f"transposed_conv_1d expects 1-D x and w; received shapes {x.shape} and {w.shape}."
        )
    if isinstance(padding, str):
        raise ConfigError(
            f"transposed_conv_1d takes an int or (before, after) padding; received {padding!r}."
        )
    n_out = transposed_conv_output_size(len(x), len(w), stride, padding, output_padding)
    K = conv_matrix(w, n_out, stride, padding)
    if K.shape[0] != len(x):  # cannot happen when output_padding < stride
        raise ShapeError(f"K has {K.shape[0]} rows but x has {len(x)} elements.")
    return K.T @ x


# --------------------------------------------------------------------------- pooling


def _pool_setup(x, pool_size, stride, padding, what):
    nd = _spatial_rank(x, what)
    ksize = _ntuple("pool_size", pool_size, nd)
    stride = ksize if stride is None else _ntuple("stride", stride, nd)
    spatial = x.shape[2:]
    ones = (1,) * nd
    pads = _resolve_pads(padding, spatial, ksize, stride, ones, pool=True)
    out_shape = _out_shape(spatial, ksize, stride, pads, ones)
    return nd, spatial, ksize, stride, pads, out_shape


def _window(o, spatial, ksize, stride, pads):
    """Start (unpadded coordinates) and the slices of the window's real elements."""
    starts = [o[i] * stride[i] - pads[i][0] for i in range(len(o))]
    lo = [max(s, 0) for s in starts]
    hi = [min(starts[i] + ksize[i], spatial[i]) for i in range(len(o))]
    if any(h <= lo_ for lo_, h in zip(lo, hi)):
        raise ShapeError(
            f"Pooling window at output {o} covers only padding (padding {pads}, pool size "
            f"{ksize}); use a padding of at most half the pool size."
        )
    return starts, lo, tuple(slice(a, b) for a, b in zip(lo, hi))


def pool_nd(
    x, pool_size, stride=None, padding=0, mode="max", count_include_pad=False
) -> np.ndarray:
    """Max, min or average pooling in 1D, 2D or 3D (seed 002, seed 004).

    Padded positions are ignored by max/min and, unless ``count_include_pad``, left out
    of the average's count (Keras ``'same'``).

    Args:
        x (ndarray[N, C, *spatial]); pool_size, stride (default: pool_size): int or per dim.
        padding: int, per-dimension tuple (ints or pairs), ``'valid'`` or ``'same'``.
        mode: ``'max'``, ``'min'`` or ``'avg'``.

    Returns:
        ndarray[N, C, *out], ``out = floor((n + p_b + p_a - k)/s) + 1``.
    """
    mode = check_choice("pooling mode", mode, POOL_MODES)
    x = _array(x, "x")
    nd, spatial, ksize, stride, pads, out_shape = _pool_setup(
        x, pool_size, stride, padding, "pool_nd"
    )
    y = np.zeros(x.shape[:2] + out_shape)
    for o in np.ndindex(*out_shape):
        _, _, sl = _window(o, spatial, ksize, stride, pads)
        win = x[(slice(None), slice(None), *sl)].reshape(x.shape[0], x.shape[1], -1)
        if mode == "max":
            value = win.max(axis=-1)
        elif mode == "min":
            value = win.min(axis=-1)
        else:
            if count_include_pad:  # windows never pass the padded input (floor mode)
                count = math.prod(ksize)
            else:
                count = win.shape[-1]
            value = win.sum(axis=-1) / count
        y[(slice(None), slice(None), *o)] = value
    return y


def max_pool_with_indices(x, pool_size, stride=None, padding=0):
    """Max pooling that remembers where each maximum was (seed 000).

    Returns:
        ``(y, indices)``: ``y (ndarray[N, C, *out])`` and ``indices (int64 ndarray[N, C, *out])``,
        the flat row-major index of each maximum within its ``(n, c)`` plane of the
        unpadded input (PyTorch's ``return_indices`` convention). On ties the first
        maximum in row-major window order wins, as in PyTorch.
    """
    x = _array(x, "x")
    _, spatial, ksize, stride, pads, out_shape = _pool_setup(
        x, pool_size, stride, padding, "max_pool_with_indices"
    )
    n, c = x.shape[:2]
    y = np.zeros((n, c) + out_shape)
    indices = np.zeros((n, c) + out_shape, dtype=np.int64)
    for o in np.ndindex(*out_shape):
        _, lo, sl = _window(o, spatial, ksize, stride, pads)
        win = x[(slice(None), slice(None), *sl)]
        flat = win.reshape(n, c, -1)
        arg = flat.argmax(axis=-1)  # first maximum in row-major order
        local = np.unravel_index(arg, win.shape[2:])
        pos = tuple(local[i] + lo[i] for i in range(len(lo)))
        y[(slice(None), slice(None), *o)] = np.take_along_axis(flat, arg[..., None], -1)[..., 0]
        indices[(slice(None), slice(None), *o)] = np.ravel_multi_index(pos, spatial)
    return y, indices


def max_unpool_nd(y, indices, output_size) -> np.ndarray:
    """Max unpooling: put each value back where its maximum was, zeros elsewhere (seed 000).

    Args:
        y (ndarray[N, C, *in]), indices (int ndarray[N, C, *in]) from
        :func:`max_pool_with_indices`; output_size: the spatial output shape (or the full
        shape ``(N, C, *spatial)``).

    Returns:
        ndarray[N, C, *output_size].
    """
    y = _array(y, "y")
    indices = np.asarray(indices)
    nd = _spatial_rank(y, "max_unpool_nd")
    if indices.shape != y.shape or not np.issubdtype(indices.dtype, np.integer):
        raise ShapeError(
            f"max_unpool_nd expects integer indices of the same shape as y {y.shape}; "
            f"received {indices.dtype} indices of shape {indices.shape}."
        )
    size = tuple(output_size) if not _is_int(output_size) else (int(output_size),)
    if len(size) == nd + 2:
        size = size[2:]
    size = _ntuple("output_size", size, nd)
    plane = math.prod(size)
    if indices.size and (indices.min() < 0 or indices.max() >= plane):
        raise ShapeError(
            f"max_unpool_nd: indices must lie in [0, {plane}) for output_size {size}; "
            f"received values from {indices.min()} to {indices.max()}."
        )
    out = np.zeros(y.shape[:2] + (plane,))
    for n, c in np.ndindex(*y.shape[:2]):
        out[n, c, indices[n, c].ravel()] = y[n, c].ravel()
    return out.reshape(y.shape[:2] + size)


# --------------------------------------------------------------------------- upsampling


def _upsample_setup(x, size, what):
    x = _array(x, "x")
    nd = _spatial_rank(x, what)
    return x, nd, _ntuple("size", size, nd)


def upsample_nearest(x, size) -> np.ndarray:
    """Nearest-neighbour upsampling by integer factors (seed 002, "Unpooling").

    ``out[..., i, j] = x[..., floor(i / s_h), floor(j / s_w)]``: each element is repeated
    into a ``size`` block. ``x (ndarray[N, C, *spatial])`` -> ``ndarray[N, C, *(spatial*size)]``.
    """
    x, nd, size = _upsample_setup(x, size, "upsample_nearest")
    for a in range(nd):
        src = np.arange(x.shape[2 + a] * size[a]) // size[a]
        x = np.take(x, src, axis=2 + a)
    return x


def upsample_bed_of_nails(x, size) -> np.ndarray:
    """ "Bed of nails" upsampling (seed 002): each value in the top-left of its ``size``
    block, zeros elsewhere. ``x (ndarray[N, C, *spatial])`` -> ``ndarray[N, C, *(spatial*size)]``.
    """
    x, nd, size = _upsample_setup(x, size, "upsample_bed_of_nails")
    out = np.zeros(x.shape[:2] + tuple(x.shape[2 + a] * size[a] for a in range(nd)))
    out[(slice(None), slice(None), *(slice(None, None, s) for s in size))] = x
    return out


def upsample_linear(x, size) -> np.ndarray:
    """Linear / bilinear / trilinear upsampling by integer factors, half-pixel centres.

    Separable, one axis at a time: output index ``i`` reads the source coordinate
    ``src = max((i + 0.5) / s - 0.5, 0)`` and blends its neighbours
    ``(1 - l) x[i0] + l x[i1]`` with ``i0 = floor(src)``, ``i1 = min(i0 + 1, n - 1)``,
    ``l = src - i0`` (``align_corners=False``, as torch's ``F.interpolate`` and Keras).
    """
    x, nd, size = _upsample_setup(x, size, "upsample_linear")
    for a in range(nd):
        axis, n, s = 2 + a, x.shape[2 + a], size[a]
        src = np.maximum((np.arange(n * s) + 0.5) / s - 0.5, 0.0)
        i0 = np.floor(src).astype(np.int64)
        i1 = np.minimum(i0 + 1, n - 1)
        lam = (src - i0).reshape((-1,) + (1,) * (x.ndim - axis - 1))
        x = (1.0 - lam) * np.take(x, i0, axis=axis) + lam * np.take(x, i1, axis=axis)
    return x


# --------------------------------------------------------------------------- others


def batch_norm(x, mean, var, gamma=None, beta=None, eps=1e-5) -> np.ndarray:
    """``gamma * (x - mean) / sqrt(var + eps) + beta`` per channel (axis 1).

    ``x (ndarray[N, C, ...])``; ``mean``, ``var``, ``gamma``, ``beta`` of shape ``(C,)``.
    """
    x = _array(x, "x")
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    c = x.shape[1]
    params = {
        "mean": mean,
        "var": var,
        "gamma": 1.0 if gamma is None else gamma,
        "beta": 0.0 if beta is None else beta,
    }
    p = {}
    for k, v in params.items():
        arr = _array(v, k)
        if arr.ndim and arr.shape != (c,):
            raise ShapeError(f"batch_norm: {k} must have shape ({c},); received {arr.shape}.")
        p[k] = arr.reshape(shape) if arr.ndim else arr
    return p["gamma"] * (x - p["mean"]) / np.sqrt(p["var"] + eps) + p["beta"]


def dense(x, w, b=None) -> np.ndarray:
    """Fully connected layer ``y = x w^T + b`` (PyTorch layout ``w (ndarray[out, in])``)."""
    x, w = _array(x, "x"), _array(w, "w")
    if w.ndim != 2 or x.shape[-1] != w.shape[1]:
        raise ShapeError(
            f"dense: weight shape {w.shape} expects (out_features, {x.shape[-1]}) for x of "
            f"shape {x.shape}."
        )
    y = x @ w.T
    return y if b is None else y + _array(b, "b")
