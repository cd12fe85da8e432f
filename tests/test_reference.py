"""cnnkit.ops.reference against scipy, torch.nn.functional, the math, and the decks' examples."""

from __future__ import annotations

import ast
import math
import pathlib

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from cnnkit import ConfigError, ShapeError
from cnnkit.ops import reference as ref

# --------------------------------------------------------------------------- helpers


def t(a) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def torch_pad(pairs) -> list[int]:
    """(before, after) per spatial dim -> F.pad's argument (last dim first)."""
    out: list[int] = []
    for before, after in reversed(pairs):
        out += [before, after]
    return out


def keras_same(n: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TensorFlow's 'same' padding: output ceil(n/s), the odd element after."""
    k_eff = d * (k - 1) + 1
    out = -(-n // s)
    total = max((out - 1) * s + k_eff - n, 0)
    return total // 2, total - total // 2


def dilate_kernel(k: np.ndarray, d) -> np.ndarray:
    """Insert d-1 zeros between kernel elements along every axis."""
    d = (d,) * k.ndim if isinstance(d, int) else d
    out = np.zeros(tuple(dd * (n - 1) + 1 for n, dd in zip(k.shape, d)))
    out[tuple(slice(None, None, dd) for dd in d)] = k
    return out


def symbolic(rows: list[str], values: dict[str, float]) -> np.ndarray:
    """A slide's matrix written with names ('k1 k2 0 ...') -> numbers."""
    return np.array([[values.get(e, 0.0) if e != "0" else 0.0 for e in r.split()] for r in rows])


PRIMES = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31]
CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
MAX_UNPOOL = {1: F.max_unpool1d, 2: F.max_unpool2d, 3: F.max_unpool3d}
LINEAR_MODE = {1: "linear", 2: "bilinear", 3: "trilinear"}


def test_reference_imports_no_torch():
    src = pathlib.Path(ref.__file__).read_text()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            assert not any(a.name.split(".")[0] == "torch" for a in node.names)
        if isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] != "torch"


# --------------------------------------------------------------------------- conv_matrix


def test_conv_matrix_seed000_slide_2x2_kernel():
    """Seed 000, "Convolution Math II": a 2x2 kernel on a 3x3 input is a 4x9 matrix."""
    k = dict(zip(["k1", "k2", "k3", "k4"], PRIMES))
    slide = [
        "k1 k2 0 k3 k4 0 0 0 0",
        "0 k1 k2 0 k3 k4 0 0 0",
        "0 0 0 k1 k2 0 k3 k4 0",
        "0 0 0 0 k1 k2 0 k3 k4",
    ]
    K = ref.conv_matrix([[k["k1"], k["k2"]], [k["k3"], k["k4"]]], (3, 3))
    np.testing.assert_array_equal(K, symbolic(slide, k))


def test_conv_matrix_seed000_slide_padded_3x3_kernel():
    """Seed 000, "Convolution Math III": a 3x3 kernel u, padding 1, on a 3x3 input h."""
    u = {f"u{i + 1}": p for i, p in enumerate(PRIMES[:9])}
    slide = [
        "u5 u6 0 u8 u9 0 0 0 0",
        "u4 u5 u6 u7 u8 u9 0 0 0",
        "0 u4 u5 0 u7 u8 0 0 0",
        "u2 u3 0 u5 u6 0 u8 u9 0",
        "u1 u2 u3 u4 u5 u6 u7 u8 u9",
        "0 u1 u2 0 u4 u5 0 u7 u8",
        "0 0 0 u2 u3 0 u5 u6 0",
        "0 0 0 u1 u2 u3 u4 u5 u6",
        "0 0 0 0 u1 u2 0 u4 u5",
    ]
    kernel = np.array(PRIMES[:9], dtype=float).reshape(3, 3)
    expected = symbolic(slide, u)
    np.testing.assert_array_equal(ref.conv_matrix(kernel, (3, 3), padding=1), expected)
    np.testing.assert_array_equal(ref.conv_matrix(kernel, (3, 3), padding="same"), expected)


def test_conv_matrix_seed003_K():
    """Seed 003, Example 2: K of a kernel (w1, w2, w3) on 6 inputs."""
    w = dict(zip(["w1", "w2", "w3"], PRIMES))
    slide = [
        "w1 w2 w3 0 0 0",
        "0 w1 w2 w3 0 0",
        "0 0 w1 w2 w3 0",
        "0 0 0 w1 w2 w3",
    ]
    np.testing.assert_array_equal(ref.conv_matrix(PRIMES[:3], 6), symbolic(slide, w))


@pytest.mark.parametrize(
    "shape, k, stride, padding, dilation",
    [
        ((9,), (3,), 1, 0, 1),
        ((10,), (3,), 2, 1, 1),
        ((11,), (2,), 3, (2, 1), 2),
        ((5, 6), (2, 3), 1, 0, 1),
        ((7, 7), (3, 3), 2, 1, 1),
        ((6, 8), (3, 2), (1, 2), ((1, 0), (2, 1)), (2, 1)),
        ((5, 5), (2, 2), 3, 2, 2),
    ],
)
def test_conv_matrix_matches_scipy_correlate(shape, k, stride, padding, dilation):
    rng = np.random.default_rng(1)
    x, kernel = rng.normal(size=shape), rng.normal(size=k)
    nd = len(shape)
    s = (stride,) * nd if isinstance(stride, int) else stride
    d = (dilation,) * nd if isinstance(dilation, int) else dilation
    if isinstance(padding, int):
        pads = [(padding, padding)] * nd
    elif nd == 1:
        pads = [padding]
    else:
        pads = [(p, p) if isinstance(p, int) else p for p in padding]
    full = scipy.signal.correlate(np.pad(x, pads), dilate_kernel(kernel, d), mode="valid")
    expected = full[tuple(slice(None, None, ss) for ss in s)]
    K = ref.conv_matrix(kernel, shape, stride, padding, dilation)
    assert K.shape == (expected.size, x.size)
    np.testing.assert_allclose(K @ x.ravel(), expected.ravel(), atol=1e-12)


@pytest.mark.parametrize("mode", ["same", "full"])
@pytest.mark.parametrize("shape, k, s, d", [((7,), (4,), 2, 1), ((6, 5), (3, 2), 2, 2)])
def test_conv_matrix_string_padding(mode, shape, k, s, d):
    rng = np.random.default_rng(2)
    x, kernel = rng.normal(size=shape), rng.normal(size=k)
    if mode == "same":
        pads = [keras_same(n, kk, s, d) for n, kk in zip(shape, k)]
    else:
        pads = [(d * (kk - 1),) * 2 for kk in k]
    full = scipy.signal.correlate(np.pad(x, pads), dilate_kernel(kernel, d), mode="valid")
    expected = full[(slice(None, None, s),) * len(shape)]
    if mode == "same":
        assert expected.shape == tuple(-(-n // s) for n in shape)
    K = ref.conv_matrix(kernel, shape, s, mode, d)
    np.testing.assert_allclose(K @ x.ravel(), expected.ravel(), atol=1e-12)


# --------------------------------------------------------------------------- conv_nd

CONV_CASES = [
    # nd, N, C_in, C_out, groups, spatial, kernel, stride, padding, dilation
    (1, 2, 3, 4, 1, (9,), (3,), 1, 0, 1),
    (1, 1, 4, 6, 2, (10,), (3,), 2, 1, 2),
    (1, 2, 4, 4, 4, (8,), (2,), 3, 2, 1),
    (2, 2, 3, 4, 1, (6, 7), (3, 2), (2, 1), (1, 0), (1, 2)),
    (2, 1, 4, 2, 2, (7, 7), (3, 3), 1, 2, 2),
    (2, 1, 6, 6, 3, (5, 6), (1, 1), 2, 0, 1),
    (3, 1, 2, 3, 1, (4, 5, 4), (2, 3, 2), (1, 2, 1), (1, 0, 1), 1),
    (3, 1, 4, 4, 2, (5, 5, 5), (3, 3, 3), 2, 1, (1, 1, 2)),
]


@pytest.mark.parametrize(
    "nd, n, cin, cout, groups, spatial, k, stride, padding, dilation", CONV_CASES
)
def test_conv_nd_matches_torch(nd, n, cin, cout, groups, spatial, k, stride, padding, dilation):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, cin, *spatial))
    w = rng.normal(size=(cout, cin // groups, *k))
    b = rng.normal(size=cout)
    y = ref.conv_nd(x, w, b, stride, padding, dilation, groups)
    expected = CONV[nd](t(x), t(w), t(b), stride, padding, dilation, groups).numpy()
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, atol=1e-12)
    np.testing.assert_allclose(
        ref.conv_nd(x, w, None, stride, padding, dilation, groups),
        CONV[nd](t(x), t(w), None, stride, padding, dilation, groups).numpy(),
        atol=1e-12,
    )


@pytest.mark.parametrize(
    "spatial, k, stride, dilation, padding",
    [
        ((9,), (3,), 2, 1, "same"),
        ((8,), (4,), 3, 1, "same"),
        ((7,), (2,), 1, 3, "full"),
        ((8,), (3,), 2, 1, ((0, 2),)),
        ((7, 6), (3, 2), 2, 1, "same"),
        ((6, 6), (2, 3), (1, 2), (2, 1), "same"),
        ((5, 6), (3, 3), 1, 1, "full"),
        ((6, 5), (2, 2), 1, 1, ((1, 0), (0, 2))),
        ((4, 5, 3), (2, 3, 2), 2, 1, "same"),
        ((3, 4, 3), (2, 2, 2), 1, 1, ((1, 0), 1, (0, 1))),
    ],
)
def test_conv_nd_asymmetric_and_string_padding(spatial, k, stride, dilation, padding):
    nd = len(spatial)
    rng = np.random.default_rng(4)
    x, w = rng.normal(size=(2, 2, *spatial)), rng.normal(size=(3, 2, *k))
    s = (stride,) * nd if isinstance(stride, int) else stride
    d = (dilation,) * nd if isinstance(dilation, int) else dilation
    if padding == "same":
        pads = [keras_same(spatial[i], k[i], s[i], d[i]) for i in range(nd)]
    elif padding == "full":
        pads = [(d[i] * (k[i] - 1),) * 2 for i in range(nd)]
    else:
        pads = [(p, p) if isinstance(p, int) else p for p in padding]
    expected = CONV[nd](F.pad(t(x), torch_pad(pads)), t(w), None, stride, 0, dilation).numpy()
    if padding == "same":
        assert expected.shape[2:] == tuple(-(-n // ss) for n, ss in zip(spatial, s))
    y = ref.conv_nd(x, w, stride=stride, padding=padding, dilation=dilation)
    np.testing.assert_allclose(y, expected, atol=1e-12)


@pytest.mark.parametrize("spatial, k", [((8,), (3,)), ((5, 6), (2, 3)), ((4, 5, 3), (2, 2, 3))])
def test_conv_nd_single_channel_matches_scipy(spatial, k):
    rng = np.random.default_rng(5)
    x, w = rng.normal(size=spatial), rng.normal(size=k)
    y = ref.conv_nd(x[None, None], w[None, None])[0, 0]
    np.testing.assert_allclose(y, scipy.signal.correlate(x, w, mode="valid"), atol=1e-12)


def test_conv_nd_seed004_padding_example():
    """Seed 004: 6x6 input, vertical-edge kernel, padding 1 -> 6x6 (DataHacker.rs figure)."""
    x = np.array(
        [
            [3, 3, 4, 4, 7, 0],
            [9, 7, 6, 5, 8, 2],
            [6, 5, 5, 6, 9, 2],
            [7, 1, 3, 2, 7, 8],
            [0, 3, 7, 1, 8, 3],
            [4, 0, 4, 3, 2, 2],
        ],
        dtype=float,
    )
    kernel = np.array([[1, 0, -1]] * 3, dtype=float)
    y = ref.conv_nd(x[None, None], kernel[None, None], padding=1)[0, 0]
    assert y.shape == (6, 6)
    # the numbers visible on the slide
    assert y[0, 0] == -10 and y[2, 0] == -13 and y[0, 2] == 1
    assert y[3, 0] == -9 and y[1, 1] == 3 and y[1, 2] == 0
    np.testing.assert_allclose(
        y, scipy.signal.correlate(np.pad(x, 1), kernel, mode="valid"), atol=1e-12
    )


# --------------------------------------------------------------------------- transposed


TCONV_CASES = [
    # nd, N, C_in, C_out, groups, spatial, kernel, stride, padding, output_padding, dilation
    (1, 2, 3, 2, 1, (5,), (3,), 1, 0, 0, 1),
    (1, 1, 4, 6, 2, (4,), (3,), 2, 1, 1, 1),
    (1, 2, 2, 2, 1, (4,), (2,), 3, 1, 2, 2),
    (2, 1, 3, 2, 1, (3, 4), (3, 2), (2, 1), (1, 0), (1, 0), 1),
    (2, 2, 4, 4, 4, (3, 3), (2, 3), 2, 0, 0, (1, 2)),
    (2, 1, 2, 3, 1, (4, 3), (4, 4), 2, 1, 0, 1),
    (3, 1, 2, 2, 1, (2, 3, 2), (2, 2, 3), (2, 1, 1), (0, 0, 1), (1, 0, 0), 1),
    (3, 1, 4, 2, 2, (2, 2, 2), (3, 3, 3), 2, 1, 1, (1, 2, 1)),
]


@pytest.mark.parametrize(
    "nd, n, cin, cout, groups, spatial, k, stride, padding, output_padding, dilation", TCONV_CASES
)
def test_conv_transpose_nd_matches_torch(
    nd, n, cin, cout, groups, spatial, k, stride, padding, output_padding, dilation
):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(n, cin, *spatial))
    w = rng.normal(size=(cin, cout // groups, *k))
    b = rng.normal(size=cout)
    y = ref.conv_transpose_nd(x, w, b, stride, padding, output_padding, dilation, groups)
    expected = CONV_T[nd](
        t(x), t(w), t(b), stride, padding, output_padding, groups, dilation
    ).numpy()
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, atol=1e-12)


@pytest.mark.parametrize(
    "spatial, k, stride, padding, dilation, groups",
    [
        ((9,), (3,), 2, 1, 1, 1),
        ((7, 8), (3, 2), (2, 3), (1, 0), (1, 2), 2),
        ((5, 4, 5), (2, 2, 3), 2, 1, 1, 1),
    ],
)
def test_conv_transpose_is_adjoint_of_conv(spatial, k, stride, padding, dilation, groups):
    """<conv(x), y> == <x, conv_transpose(y)>: the transposed convolution is K^T (seed 003)."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 4, *spatial))
    w = rng.normal(size=(6, 4 // groups, *k))
    cx = ref.conv_nd(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)
    y = rng.normal(size=cx.shape)
    nd = len(spatial)
    s = (stride,) * nd if isinstance(stride, int) else stride
    p = (padding,) * nd if isinstance(padding, int) else padding
    d = (dilation,) * nd if isinstance(dilation, int) else dilation
    # the output_padding that gives back the input size
    op = [
        spatial[i] - ((cx.shape[2 + i] - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + 1)
        for i in range(nd)
    ]
    ty = ref.conv_transpose_nd(y, w, None, stride, padding, tuple(op), dilation, groups)
    assert ty.shape == x.shape
    np.testing.assert_allclose(np.vdot(cx, y), np.vdot(x, ty), rtol=1e-10, atol=1e-12)


def test_transposed_conv_1d_seed003_worked_example():
    """Seed 003, Example 2: K^T (z7, z8, z9, z10) upsamples 4 -> 6."""
    w1, w2, w3 = 2.0, 3.0, 5.0
    z7, z8, z9, z10 = 7.0, 11.0, 13.0, 17.0
    expected = [
        w1 * z7,
        w2 * z7 + w1 * z8,
        w3 * z7 + w2 * z8 + w1 * z9,
        w3 * z8 + w2 * z9 + w1 * z10,
        w3 * z9 + w2 * z10,
        w3 * z10,
    ]
    np.testing.assert_array_equal(ref.transposed_conv_1d([z7, z8, z9, z10], [w1, w2, w3]), expected)
    # and the forward direction K z = (z7, ..., z10) of the same slide
    z = np.array([19.0, 23.0, 29.0, 31.0, 37.0, 41.0])
    fwd = [w1 * z[i] + w2 * z[i + 1] + w3 * z[i + 2] for i in range(4)]
    np.testing.assert_array_equal(ref.conv_matrix([w1, w2, w3], 6) @ z, fwd)


@pytest.mark.parametrize(
    "n, k, stride, padding, output_padding",
    [(4, 3, 1, 0, 0), (5, 3, 2, 1, 1), (3, 4, 3, 1, 2), (6, 2, 2, 0, 1), (4, 5, 1, 2, 0)],
)
def test_transposed_conv_1d_matches_scatter_and_torch(n, k, stride, padding, output_padding):
    rng = np.random.default_rng(8)
    x, w = rng.normal(size=n), rng.normal(size=k)
    y = ref.transposed_conv_1d(x, w, stride, padding, output_padding)
    expected = F.conv_transpose1d(
        t(x)[None, None], t(w)[None, None], None, stride, padding, output_padding
    )[0, 0].numpy()
    assert y.shape == expected.shape == ((n - 1) * stride - 2 * padding + k + output_padding,)
    np.testing.assert_allclose(y, expected, atol=1e-12)
    scatter = ref.conv_transpose_nd(
        x[None, None], w[None, None], stride=stride, padding=padding, output_padding=output_padding
    )[0, 0]
    np.testing.assert_allclose(y, scatter, atol=1e-12)


# --------------------------------------------------------------------------- pooling


def test_max_pool_and_unpool_seed000():
    """Seed 000: max pooling that remembers where the max was, then unpooling."""
    x = np.array([[1, 2, 6, 3], [3, 5, 2, 1], [1, 2, 2, 1], [7, 3, 4, 8]], dtype=float)
    y, idx = ref.max_pool_with_indices(x[None, None], 2)
    np.testing.assert_array_equal(y[0, 0], [[5, 6], [7, 8]])
    np.testing.assert_array_equal(ref.pool_nd(x[None, None], 2)[0, 0], [[5, 6], [7, 8]])
    up = ref.max_unpool_nd(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), idx, (4, 4))
    np.testing.assert_array_equal(
        up[0, 0], [[0, 0, 2, 0], [0, 1, 0, 0], [0, 0, 0, 0], [3, 0, 0, 4]]
    )


def test_max_pool_seed002():
    x = np.array([[7, 4, 6, 2], [3, 2, 3, 5], [1, 2, 1, 0], [5, 4, 2, 9]], dtype=float)
    np.testing.assert_array_equal(ref.pool_nd(x[None, None], (2, 2))[0, 0], [[7, 6], [5, 9]])
    y, _ = ref.max_pool_with_indices(x[None, None], 2, stride=2)
    np.testing.assert_array_equal(y[0, 0], [[7, 6], [5, 9]])


POOL_CASES = [
    # spatial, pool, stride, padding
    ((9,), 3, None, 0),
    ((10,), 3, 2, 1),
    ((7,), 2, 1, 1),
    ((6, 7), 2, None, 0),
    ((7, 6), (3, 2), (2, 1), (1, 1)),
    ((5, 5), 3, 1, 1),
    ((4, 5, 4), 2, None, 0),
    ((5, 4, 5), (3, 2, 3), (2, 1, 2), (1, 0, 1)),
]


@pytest.mark.parametrize("spatial, pool, stride, padding", POOL_CASES)
def test_pooling_matches_torch(spatial, pool, stride, padding):
    nd = len(spatial)
    rng = np.random.default_rng(9)
    x = rng.normal(size=(2, 3, *spatial))
    s = pool if stride is None else stride
    mx = MAX_POOL[nd](t(x), pool, s, padding)
    np.testing.assert_allclose(ref.pool_nd(x, pool, stride, padding, "max"), mx.numpy())
    mn = -MAX_POOL[nd](-t(x), pool, s, padding)
    np.testing.assert_allclose(ref.pool_nd(x, pool, stride, padding, "min"), mn.numpy())
    for include in (False, True):
        avg = AVG_POOL[nd](t(x), pool, s, padding, count_include_pad=include).numpy()
        y = ref.pool_nd(x, pool, stride, padding, "avg", count_include_pad=include)
        np.testing.assert_allclose(y, avg, atol=1e-12)


@pytest.mark.parametrize(
    "spatial, pool, stride",
    [
        ((7,), 2, 2),
        ((8,), 3, 2),
        ((5, 7), 2, 2),
        ((6, 5), (3, 2), (2, 3)),
        ((3, 5, 4), 2, (1, 2, 2)),
    ],
)
def test_pooling_same_padding_keras(spatial, pool, stride):
    """Keras 'same': output ceil(n/s); padding ignored by max/min, left out of the mean."""
    nd = len(spatial)
    rng = np.random.default_rng(10)
    x = rng.normal(size=(1, 2, *spatial))
    k = (pool,) * nd if isinstance(pool, int) else pool
    s = (stride,) * nd if isinstance(stride, int) else stride
    pads = torch_pad([keras_same(spatial[i], k[i], s[i]) for i in range(nd)])
    mx = MAX_POOL[nd](F.pad(t(x), pads, value=-math.inf), k, s).numpy()
    assert mx.shape[2:] == tuple(-(-n // ss) for n, ss in zip(spatial, s))
    np.testing.assert_allclose(ref.pool_nd(x, pool, stride, "same", "max"), mx)
    mn = -MAX_POOL[nd](F.pad(-t(x), pads, value=-math.inf), k, s).numpy()
    np.testing.assert_allclose(ref.pool_nd(x, pool, stride, "same", "min"), mn)
    total = AVG_POOL[nd](F.pad(t(x), pads), k, s).numpy()
    count = AVG_POOL[nd](F.pad(torch.ones_like(t(x)), pads), k, s).numpy()
    np.testing.assert_allclose(
        ref.pool_nd(x, pool, stride, "same", "avg"), total / count, atol=1e-12
    )


@pytest.mark.parametrize("spatial, pool, stride, padding", POOL_CASES)
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool_indices_and_unpool_match_torch(spatial, pool, stride, padding, ties):
    nd = len(spatial)
    rng = np.random.default_rng(11)
    size = (2, 2, *spatial)
    x = rng.integers(0, 3, size=size).astype(float) if ties else rng.normal(size=size)
    s = pool if stride is None else stride
    ty, tidx = MAX_POOL[nd](t(x), pool, s, padding, return_indices=True)
    y, idx = ref.max_pool_with_indices(x, pool, stride, padding)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    up = ref.max_unpool_nd(y, idx, spatial)
    tup = MAX_UNPOOL[nd](ty, tidx, pool, s, padding, output_size=spatial).numpy()
    if not ties:  # with ties several windows may share a position; skip the write order
        np.testing.assert_array_equal(up, tup)
    np.testing.assert_array_equal(ref.max_unpool_nd(y, idx, x.shape), up)


# --------------------------------------------------------------------------- upsampling


def test_upsampling_seed002():
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    np.testing.assert_array_equal(
        ref.upsample_nearest(x, 2)[0, 0],
        [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]],
    )
    np.testing.assert_array_equal(
        ref.upsample_bed_of_nails(x, 2)[0, 0],
        [[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]],
    )


UP_CASES = [((5,), 2), ((4,), 3), ((3, 4), 2), ((3, 2), (2, 3)), ((2, 3, 2), (2, 1, 3))]


@pytest.mark.parametrize("spatial, size", UP_CASES)
def test_upsample_nearest_and_linear_match_interpolate(spatial, size):
    nd = len(spatial)
    rng = np.random.default_rng(12)
    x = rng.normal(size=(2, 3, *spatial))
    sf = (size,) * nd if isinstance(size, int) else size
    sf_float = tuple(float(v) for v in sf)
    near = F.interpolate(t(x), scale_factor=sf_float, mode="nearest").numpy()
    np.testing.assert_array_equal(ref.upsample_nearest(x, size), near)
    lin = F.interpolate(
        t(x), scale_factor=sf_float, mode=LINEAR_MODE[nd], align_corners=False
    ).numpy()
    np.testing.assert_allclose(ref.upsample_linear(x, size), lin, atol=1e-12)
    lin_size = F.interpolate(
        t(x), size=tuple(n * f for n, f in zip(spatial, sf)), mode=LINEAR_MODE[nd]
    ).numpy()
    np.testing.assert_allclose(ref.upsample_linear(x, size), lin_size, atol=1e-12)


@pytest.mark.parametrize("spatial, size", UP_CASES)
def test_bed_of_nails_is_transposed_conv_with_one_hot_kernel(spatial, size):
    """Bed of nails == stride-s transposed convolution with a kernel (1, 0, ..., 0)."""
    nd = len(spatial)
    rng = np.random.default_rng(13)
    x = rng.normal(size=(1, 2, *spatial))
    sf = (size,) * nd if isinstance(size, int) else size
    w = torch.zeros((2, 1, *sf), dtype=torch.float64)
    w[(slice(None), 0) + (0,) * nd] = 1.0
    expected = CONV_T[nd](t(x), w, None, sf, groups=2).numpy()
    np.testing.assert_array_equal(ref.upsample_bed_of_nails(x, size), expected)


# --------------------------------------------------------------------------- others


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (2, 3, 4, 4), (1, 3, 2, 3, 2)])
def test_batch_norm_and_dense_match_torch(shape):
    rng = np.random.default_rng(14)
    x = rng.normal(size=shape)
    mean, gamma, beta = rng.normal(size=(3, 3))
    var = rng.uniform(0.5, 2.0, size=3)
    expected = F.batch_norm(t(x), t(mean), t(var), t(gamma), t(beta), False, 0.0, 1e-3).numpy()
    np.testing.assert_allclose(ref.batch_norm(x, mean, var, gamma, beta, 1e-3), expected)
    w, b = rng.normal(size=(5, shape[-1])), rng.normal(size=5)
    np.testing.assert_allclose(ref.dense(x, w, b), F.linear(t(x), t(w), t(b)).numpy())


# --------------------------------------------------------------------------- errors


def test_bad_inputs_raise_with_the_received_value():
    x = np.zeros((1, 3, 5, 5))
    with pytest.raises(ShapeError, match=r"received shape \(3, 5\)"):
        ref.conv_nd(np.zeros((3, 5)), np.zeros((2, 3, 3)))
    with pytest.raises(ShapeError, match="received x with 3 channels"):
        ref.conv_nd(x, np.zeros((2, 4, 3, 3)))
    with pytest.raises(ShapeError, match="groups=2"):
        ref.conv_nd(np.zeros((1, 4, 5, 5)), np.zeros((3, 2, 3, 3)), groups=2)
    with pytest.raises(ShapeError, match=r"received \(3,\)"):
        ref.conv_nd(x, np.zeros((2, 3, 3, 3)), np.zeros(3))
    with pytest.raises(ShapeError, match="larger than the padded input"):
        ref.conv_nd(x, np.zeros((2, 3, 7, 7)))
    with pytest.raises(ShapeError, match="received 0"):
        ref.conv_nd(x, np.zeros((2, 3, 3, 3)), stride=0)
    with pytest.raises(ConfigError, match="'samee'"):
        ref.conv_nd(x, np.zeros((2, 3, 3, 3)), padding="samee")
    with pytest.raises(ConfigError, match=r"received \(1, 2, 3\)"):
        ref.conv_nd(x, np.zeros((2, 3, 3, 3)), stride=(1, 2, 3))
    with pytest.raises(ShapeError, match=r"kernel shape \(2, 2\)"):
        ref.conv_matrix(np.zeros((2, 2)), 5)
    with pytest.raises(ConfigError, match="'same'"):
        ref.conv_transpose_nd(x, np.zeros((3, 2, 3, 3)), padding="same")
    with pytest.raises(ShapeError, match="received 2"):
        ref.conv_transpose_nd(x, np.zeros((3, 2, 3, 3)), stride=2, output_padding=2)
    with pytest.raises(ShapeError, match=r"\(2, 4\)"):
        ref.transposed_conv_1d(np.zeros((2, 4)), np.zeros(3))
    with pytest.raises(ConfigError, match="'mean'"):
        ref.pool_nd(x, 2, mode="mean")
    with pytest.raises(ConfigError, match="'full'"):
        ref.pool_nd(x, 2, padding="full")
    with pytest.raises(ShapeError, match="covers only padding"):
        ref.pool_nd(x, 2, padding=2)
    with pytest.raises(ShapeError, match="from 0 to 30"):
        ref.max_unpool_nd(np.ones((1, 1, 1, 2)), np.array([[[[0, 30]]]]), (4, 4))
    with pytest.raises(ShapeError, match="received 0"):
        ref.upsample_nearest(x, 0)
    with pytest.raises(ShapeError, match=r"\(5,\)"):
        ref.batch_norm(x, np.zeros(5), np.ones(5))
