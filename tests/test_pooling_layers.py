"""Pooling, global pooling and max unpooling layers against torch.nn.functional, the
NumPy references in cnnkit.ops.reference (written from the math) and the decks' tables."""

from __future__ import annotations

import copy
import json
import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnkit import ConfigError, ShapeError
from cnnkit.layers import global_pooling as gp
from cnnkit.layers import pooling as pl
from cnnkit.layers import unpooling as up
from cnnkit.ops import reference as ref

MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
MAX_UNPOOL = {1: F.max_unpool1d, 2: F.max_unpool2d, 3: F.max_unpool3d}
ADAPTIVE_AVG = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}
ADAPTIVE_MAX = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}

LAYERS = {
    "max": {1: pl.MaxPooling1D, 2: pl.MaxPooling2D, 3: pl.MaxPooling3D},
    "min": {1: pl.MinPooling1D, 2: pl.MinPooling2D, 3: pl.MinPooling3D},
    "avg": {1: pl.AveragePooling1D, 2: pl.AveragePooling2D, 3: pl.AveragePooling3D},
}
GLOBAL = {
    "avg": {
        1: gp.GlobalAveragePooling1D,
        2: gp.GlobalAveragePooling2D,
        3: gp.GlobalAveragePooling3D,
    },
    "max": {1: gp.GlobalMaxPooling1D, 2: gp.GlobalMaxPooling2D, 3: gp.GlobalMaxPooling3D},
}
UNPOOL = {1: up.MaxUnpooling1D, 2: up.MaxUnpooling2D, 3: up.MaxUnpooling3D}
SIZES = {1: [(7,), (8,)], 2: [(5, 6), (7, 4)], 3: [(3, 5, 4), (4, 3, 5)]}


# --------------------------------------------------------------------------- helpers


def t(a) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def rand(*shape) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64)


def keras_same(n: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow's 'same' pooling pads: output ceil(n/s), the odd element after."""
    total = max((-(-n // s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def pad_pairs(padding, sizes, k, s) -> list[tuple[int, int]]:
    """Our padding argument -> (before, after) per dim, written independently."""
    nd = len(sizes)
    if padding == "valid":
        return [(0, 0)] * nd
    if padding == "same":
        return [keras_same(n, kk, ss) for n, kk, ss in zip(sizes, k, s)]
    if isinstance(padding, int):
        return [(padding, padding)] * nd
    return [tuple(p) for p in padding]


def ref_padding(pairs):
    """(before, after) pairs in the format cnnkit.ops.reference accepts."""
    return pairs[0] if len(pairs) == 1 else tuple(pairs)


def expected_out(sizes, k, s, pairs) -> tuple[int, ...]:
    return tuple((n + b + a - kk) // ss + 1 for n, kk, ss, (b, a) in zip(sizes, k, s, pairs))


def torch_symmetric(pairs, k):
    """The symmetric pad torch's pooling accepts (<= k/2), or None."""
    if all(b == a and 2 * b <= kk for (b, a), kk in zip(pairs, k)):
        return tuple(b for b, _ in pairs)
    return None


def max_grad(g: np.ndarray, indices: np.ndarray, sizes) -> np.ndarray:
    """d(sum(g * maxpool(x)))/dx: each upstream gradient lands on its window's maximum."""
    n, c = g.shape[:2]
    plane = math.prod(sizes)
    flat = np.zeros(n * c * plane)
    offsets = (np.arange(n * c) * plane).reshape(n, c, *([1] * len(sizes)))
    np.add.at(flat, (indices + offsets).ravel(), g.ravel())
    return flat.reshape(n, c, *sizes)


def linear_grad(fn, g: np.ndarray, sizes) -> np.ndarray:
    """x's gradient of sum(g * fn(x)) for a map fn that is linear and acts per (N, C)
    plane: the Jacobian comes from fn applied to the basis of one plane."""
    plane = math.prod(sizes)
    jac = fn(np.eye(plane).reshape(plane, 1, *sizes)).reshape(plane, -1)  # (in, out)
    n, c = g.shape[:2]
    return (g.reshape(n * c, -1) @ jac.T).reshape(n, c, *sizes)


def paddings(nd: int, k: int):
    pads = ["valid", "same", 1, tuple((1, 0) if d % 2 == 0 else (0, 1) for d in range(nd))]
    if k == 3:
        pads.append(2)  # symmetric but more than torch's k/2: the F.pad path
    return pads


def pool_cases():
    for nd in (1, 2, 3):
        for k in (2, 3):
            for s in (1, 2, 3):
                for i, padding in enumerate(paddings(nd, k)):
                    # 3D: one of the two shapes per config (both mix odd and even sizes)
                    for sizes in SIZES[nd] if nd < 3 else [SIZES[3][(i + s) % 2]]:
                        yield nd, (k,) * nd, (s,) * nd, padding, sizes
    # per-dimension pool sizes and strides
    yield 2, (2, 3), (1, 2), "same", (5, 6)
    yield 2, (3, 2), (2, 3), ((2, 0), (0, 1)), (7, 4)
    yield 3, (3, 2, 2), (2, 1, 3), "same", (4, 5, 5)
    yield 3, (2, 3, 2), (1, 2, 2), "valid", (3, 5, 4)


POOL_CASES = list(pool_cases())


def case_id(case) -> str:
    nd, k, s, padding, sizes = case
    return f"{nd}d-k{k}-s{s}-p{padding}-n{sizes}".replace(" ", "")


# --------------------------------------------------------------------------- grids


@pytest.mark.parametrize("case", POOL_CASES, ids=case_id)
@pytest.mark.parametrize("mode", ["max", "min"])
def test_extremum_pooling_matches_references(mode, case):
    nd, k, s, padding, sizes = case
    layer = LAYERS[mode][nd](k, s, padding, return_indices=True)
    x = rand(2, 3, *sizes).requires_grad_(True)
    y, idx = layer(x)
    pairs = pad_pairs(padding, sizes, k, s)
    out = expected_out(sizes, k, s, pairs)
    assert y.shape == idx.shape == (2, 3, *out)
    assert layer.compute_output_shape(x.shape) == tuple(y.shape)
    assert layer.compute_output_shape((None, 3, *sizes)) == (None, 3, *out)
    assert layer.compute_output_shape((3, *sizes)) == (3, *out)
    assert idx.dtype == torch.int64

    xn = x.detach().numpy()
    sign = 1.0 if mode == "max" else -1.0
    ref_y, ref_idx = ref.max_pool_with_indices(sign * xn, k, s, ref_padding(pairs))
    np.testing.assert_allclose(y.detach().numpy(), sign * ref_y, rtol=0, atol=0)
    np.testing.assert_array_equal(idx.numpy(), ref_idx)
    if mode == "min":  # the direct min, not only -max(-x)
        np.testing.assert_allclose(
            y.detach().numpy(), ref.pool_nd(xn, k, s, ref_padding(pairs), mode="min"), atol=0
        )
    g = rand(*y.shape)
    (gx,) = torch.autograd.grad(y, x, g)
    np.testing.assert_allclose(gx.numpy(), max_grad(g.numpy(), ref_idx, sizes), atol=1e-12)

    sym = torch_symmetric(pairs, k)
    if sym is not None:  # torch can pool it directly: forward, indices and backward
        xt = x.detach().clone().requires_grad_(True)
        ty, tidx = MAX_POOL[nd](sign * xt, k, s, sym, return_indices=True)
        ty = sign * ty
        torch.testing.assert_close(y, ty, rtol=0, atol=0)
        torch.testing.assert_close(idx, tidx)
        (tgx,) = torch.autograd.grad(ty, xt, g)
        torch.testing.assert_close(gx, tgx)


@pytest.mark.parametrize("case", POOL_CASES, ids=case_id)
def test_average_pooling_matches_references(case):
    nd, k, s, padding, sizes = case
    layer = LAYERS["avg"][nd](k, s, padding)
    include = not isinstance(padding, str)  # PyTorch's default for explicit pads
    assert layer.count_include_pad is include
    x = rand(2, 3, *sizes).requires_grad_(True)
    y = layer(x)
    pairs = pad_pairs(padding, sizes, k, s)
    out = expected_out(sizes, k, s, pairs)
    assert y.shape == (2, 3, *out)
    assert layer.compute_output_shape(x.shape) == tuple(y.shape)

    def reference(a, cip=include):
        return ref.pool_nd(a, k, s, ref_padding(pairs), mode="avg", count_include_pad=cip)

    np.testing.assert_allclose(
        y.detach().numpy(), reference(x.detach().numpy()), rtol=1e-10, atol=1e-12
    )
    g = rand(*y.shape)
    (gx,) = torch.autograd.grad(y, x, g)
    np.testing.assert_allclose(
        gx.numpy(), linear_grad(reference, g.numpy(), sizes), rtol=1e-10, atol=1e-12
    )

    # the other count_include_pad choice
    other = LAYERS["avg"][nd](k, s, padding, count_include_pad=not include)(x)
    np.testing.assert_allclose(
        other.detach().numpy(), reference(x.detach().numpy(), not include), rtol=1e-10, atol=1e-12
    )

    sym = torch_symmetric(pairs, k)
    if sym is not None:
        xt = x.detach().clone().requires_grad_(True)
        ty = AVG_POOL[nd](xt, k, s, sym, count_include_pad=include)
        torch.testing.assert_close(y, ty)
        (tgx,) = torch.autograd.grad(ty, xt, g)
        torch.testing.assert_close(gx, tgx)


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("mode", ["max", "min", "avg"])
def test_pooling_defaults_and_gradcheck(nd, mode):
    """strides=None means pool_size; autograd agrees with finite differences on the slow
    (asymmetric 'same') path."""
    layer = LAYERS[mode][nd]()
    assert layer.strides == layer.pool_size == (2,) * nd
    x = rand(1, 2, *(5,) * nd)
    torch.testing.assert_close(layer(x), LAYERS[mode][nd](2, 2)(x))
    same = LAYERS[mode][nd](2, 1, "same")
    xg = rand(1, 1, *(4,) * nd).requires_grad_(True)
    assert torch.autograd.gradcheck(same, (xg,))


def test_min_pooling_is_minus_maxpool_of_minus_x():
    x = rand(2, 4, 9, 8)
    for padding in ("valid", "same", 1):
        y, idx = pl.MinPooling2D(3, 2, padding, return_indices=True)(x)
        my, midx = pl.MaxPooling2D(3, 2, padding, return_indices=True)(-x)
        torch.testing.assert_close(y, -my)
        torch.testing.assert_close(idx, midx)
        # the indices point at the minima
        np.testing.assert_array_equal(
            np.take_along_axis(x.reshape(2, 4, -1).numpy(), idx.reshape(2, 4, -1).numpy(), -1),
            y.reshape(2, 4, -1).numpy(),
        )


def test_same_pooling_ignores_padding_even_for_negative_inputs():
    """Keras 'same': a window of negatives keeps its negative maximum (padding never
    wins), and a window of large positives keeps its positive minimum."""
    x = -torch.rand(1, 1, 5, 5, dtype=torch.float64) - 1.0
    y = pl.MaxPooling2D(2, padding="same")(x)
    assert (y < 0).all()
    assert pl.MinPooling2D(2, padding="same")(-x).min() > 0
    a = pl.AveragePooling2D(2, padding="same")(torch.ones(1, 1, 5, 5))
    torch.testing.assert_close(a, torch.ones(1, 1, 3, 3))


def test_pooling_any_channels_and_batch():
    layer = pl.MaxPooling2D(2)
    assert layer(rand(1, 3, 4, 4)).shape == (1, 3, 2, 2)
    assert layer(rand(5, 7, 6, 6)).shape == (5, 7, 3, 3)  # no channel constraint
    layer.build((None, 3, 8, 8))
    assert layer(rand(2, 11, 4, 4)).shape == (2, 11, 2, 2)


def test_pooling_receptive_field_layers():
    assert pl.MaxPooling2D(3, 2).receptive_field_layers() == [((3, 3), (2, 2), (1, 1))]
    assert pl.AveragePooling1D(2).receptive_field_layers() == [((2,), (2,), (1,))]
    assert pl.MinPooling3D((2, 3, 1), 1).receptive_field_layers() == [
        ((2, 3, 1), (1, 1, 1), (1, 1, 1))
    ]
    assert pl.MaxPooling2D(2).count_macs((None, 3, 8, 8)) == 0


# --------------------------------------------------------------------------- the decks


def test_seed000_max_pool_then_unpool():
    """Seed 000: "Max Pooling: remember which element was max!" and the 4x4 unpooling."""
    x = t([[[[1, 2, 6, 3], [3, 5, 2, 1], [1, 2, 2, 1], [7, 3, 4, 8]]]])
    y, idx = pl.MaxPooling2D(2, return_indices=True)(x)
    np.testing.assert_array_equal(y[0, 0].numpy(), [[5, 6], [7, 8]])
    out = up.MaxUnpooling2D(2)(t([[[[1, 2], [3, 4]]]]), idx)
    np.testing.assert_array_equal(
        out[0, 0].numpy(), [[0, 0, 2, 0], [0, 1, 0, 0], [0, 0, 0, 0], [3, 0, 0, 4]]
    )


def test_seed002_max_pool_table():
    x = t([[[[7, 4, 6, 2], [3, 2, 3, 5], [1, 2, 1, 0], [5, 4, 2, 9]]]])
    np.testing.assert_array_equal(pl.MaxPooling2D(2)(x)[0, 0].numpy(), [[7, 6], [5, 9]])
    np.testing.assert_array_equal(
        pl.MaxPooling2D(pool_size=(2, 2), strides=2, padding="valid")(x)[0, 0].numpy(),
        [[7, 6], [5, 9]],
    )


# --------------------------------------------------------------------------- global pooling


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_pooling(nd, mode, keepdims):
    sizes = (5, 4, 3)[:nd]
    x = rand(2, 3, *sizes).requires_grad_(True)
    layer = GLOBAL[mode][nd](keepdims=keepdims)
    y = layer(x)
    dims = tuple(range(2, 2 + nd))
    expected = x.mean(dims, keepdim=keepdims) if mode == "avg" else x.amax(dims, keepdim=keepdims)
    torch.testing.assert_close(y, expected)
    adaptive = (ADAPTIVE_AVG if mode == "avg" else ADAPTIVE_MAX)[nd]
    xa = x.detach().clone().requires_grad_(True)
    ya = adaptive(xa, 1)
    ya = ya if keepdims else ya.reshape(2, 3)
    torch.testing.assert_close(y, ya)
    assert y.shape == ((2, 3) + (1,) * nd if keepdims else (2, 3))
    assert layer.compute_output_shape(x.shape) == tuple(y.shape)
    assert layer.compute_output_shape((None, 3, *sizes))[1] == 3
    assert layer.receptive_field_layers() is None
    g = rand(*y.shape)
    (gx,) = torch.autograd.grad(y, x, g)
    (gxa,) = torch.autograd.grad(ya, xa, g)
    torch.testing.assert_close(gx, gxa)
    # NumPy from the math
    xn = x.detach().numpy()
    want = xn.mean(axis=dims) if mode == "avg" else xn.max(axis=dims)
    np.testing.assert_allclose(y.detach().numpy().reshape(2, 3), want, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- unpooling


def unpool_cases():
    for nd in (1, 2, 3):
        for k in (2, 3):
            for s in (1, 2, 3):
                for p in range(k // 2 + 1):
                    for sizes in SIZES[nd]:
                        yield nd, k, s, p, sizes


@pytest.mark.parametrize(
    "nd,k,s,p,sizes", list(unpool_cases()), ids=lambda v: str(v).replace(" ", "")
)
def test_max_unpooling_matches_references(nd, k, s, p, sizes):
    x = rand(2, 3, *sizes)
    y, idx = MAX_POOL[nd](x, k, s, p, return_indices=True)  # torch's indices
    y = y.clone().requires_grad_(True)
    layer = UNPOOL[nd](k, s, p)
    default = tuple((n - 1) * s + k - 2 * p for n in y.shape[2:])
    assert layer.compute_output_shape(y.shape) == (2, 3, *default)
    if int(idx.max()) < math.prod(default):
        out = layer(y, idx)
        assert out.shape == (2, 3, *default)
        np.testing.assert_array_equal(
            out.detach().numpy(), ref.max_unpool_nd(y.detach().numpy(), idx.numpy(), default)
        )
        torch.testing.assert_close(out, MAX_UNPOOL[nd](y, idx, k, s, p))
    else:  # the padded pooling kept a maximum beyond PyTorch's default size
        with pytest.raises(ShapeError, match=r"output_size=x.shape"):
            layer(y, idx)
    # back to the input's size: every maximum where it was, zeros elsewhere
    full = layer(y, idx, output_size=x.shape)
    mask = ref.max_unpool_nd(np.ones(y.shape), idx.numpy(), sizes) > 0
    np.testing.assert_array_equal(full.detach().numpy(), np.where(mask, x.numpy(), 0.0))
    torch.testing.assert_close(layer(y, idx, output_size=sizes), full)
    # backward: each pooled value receives the gradient at its position
    g = rand(*full.shape)
    (gy,) = torch.autograd.grad(full, y, g)
    want = np.take_along_axis(g.reshape(2, 3, -1).numpy(), idx.reshape(2, 3, -1).numpy(), -1)
    np.testing.assert_array_equal(gy.numpy(), want.reshape(y.shape))


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("padding", ["same", "pairs"])
def test_unpooling_with_our_padded_pooling(nd, padding):
    """Indices from the F.pad path are in unpadded coordinates: unpooling to x's size
    puts every maximum back at its place."""
    sizes = (5, 7, 3)[:nd]
    pad = "same" if padding == "same" else ((1, 0),) * nd
    x = rand(1, 2, *sizes)
    y, idx = LAYERS["max"][nd](2, 2, pad, return_indices=True)(x)
    out = UNPOOL[nd](2, 2)(y, idx, output_size=x.shape)
    want = ref.max_unpool_nd(y.numpy(), idx.numpy(), sizes)
    np.testing.assert_array_equal(out.numpy(), want)
    np.testing.assert_array_equal(
        np.take_along_axis(x.reshape(1, 2, -1).numpy(), idx.reshape(1, 2, -1).numpy(), -1),
        y.reshape(1, 2, -1).numpy(),
    )


def test_unpooling_errors():
    layer = up.MaxUnpooling2D(2)
    y = rand(1, 2, 3, 3)
    idx = torch.zeros(1, 2, 3, 2, dtype=torch.int64)
    with pytest.raises(ShapeError, match=r"\(1, 2, 3, 3\).*\(1, 2, 3, 2\)"):
        layer(y, idx)
    with pytest.raises(ShapeError, match="indices"):
        layer(y, None)
    with pytest.raises(ConfigError, match="float64"):
        layer(y, rand(1, 2, 3, 3))
    idx = torch.zeros(1, 2, 3, 3, dtype=torch.int64)
    with pytest.raises(ShapeError, match=r"\(9, 9\)"):
        layer(y, idx, output_size=(9, 9))
    with pytest.raises(ShapeError, match=r"\(4, 6, 6\)"):
        layer(y, idx, output_size=(4, 6, 6))
    with pytest.raises(ShapeError, match=r"\(1, 3\)"):
        layer(y, idx, output_size=(1, 3, 6, 6))
    assert layer(y, idx.int(), output_size=(7, 7)).shape == (1, 2, 7, 7)
    with pytest.raises(ShapeError, match=r"received shape \(1, 2, 3\).*unsqueeze"):
        layer(rand(1, 2, 3), idx)
    with pytest.raises(ShapeError, match="must be positive"):
        up.MaxUnpooling1D(2, 1, padding=1).compute_output_shape((1, 1, 1))
    with pytest.raises(ConfigError, match=r"\(2, 2, 2\)"):
        up.MaxUnpooling2D((2, 2, 2))
    with pytest.raises(ConfigError, match="-1"):
        up.MaxUnpooling2D(2, padding=-1)


# --------------------------------------------------------------------------- bad input


def test_pooling_wrong_rank_has_a_hint():
    with pytest.raises(ShapeError, match=r"received shape \(2, 5, 5\).*unsqueeze"):
        pl.MaxPooling2D(2)(rand(2, 5, 5))
    with pytest.raises(ShapeError, match=r"\(1, 2, 4, 4, 4\).*3D variant"):
        pl.AveragePooling2D(2)(rand(1, 2, 4, 4, 4))
    with pytest.raises(ShapeError, match=r"\(1, 2, 4, 4\)"):
        gp.GlobalAveragePooling1D()(rand(1, 2, 4, 4))


def test_pool_larger_than_input():
    with pytest.raises(ShapeError, match=r"pool_size \(3, 3\).*\(1, 1, 2, 5\).*size 3.*2"):
        pl.MaxPooling2D(3)(rand(1, 1, 2, 5))
    with pytest.raises(ShapeError, match=r"\(1, 1, 2, 5\)"):
        pl.AveragePooling2D(3).compute_output_shape((1, 1, 2, 5))
    with pytest.raises(ShapeError, match=r"\(1, 1, 4\)"):
        pl.MinPooling1D(5, padding=0)(rand(1, 1, 4))
    # 'same' and enough padding always fit
    assert pl.MaxPooling2D(3, padding="same")(rand(1, 1, 2, 5)).shape == (1, 1, 1, 2)
    assert pl.MaxPooling1D(5, padding=1)(rand(1, 1, 4)).shape == (1, 1, 1)


def test_pooling_bad_arguments():
    with pytest.raises(ConfigError, match=r"MaxPooling2D pool_size.*\(2, 2, 2\)"):
        pl.MaxPooling2D((2, 2, 2))
    with pytest.raises(ConfigError, match="0"):
        pl.MaxPooling1D(0)
    with pytest.raises(ConfigError, match="-2"):
        pl.AveragePooling2D(2, strides=-2)
    with pytest.raises(ConfigError, match="'full'"):
        pl.MaxPooling2D(2, padding="full")
    with pytest.raises(ConfigError, match="'sam'"):
        pl.MinPooling2D(2, padding="sam")
    with pytest.raises(ConfigError, match=r"pool_size - 1 = 1"):
        pl.MaxPooling2D(2, padding=2)
    with pytest.raises(ConfigError, match="'yes'"):
        pl.MaxPooling2D(2, return_indices="yes")
    with pytest.raises(ConfigError, match="'no'"):
        pl.AveragePooling2D(2, count_include_pad="no")
    with pytest.raises(ConfigError, match="1"):
        gp.GlobalMaxPooling2D(keepdims=1)
    with pytest.raises(TypeError):
        pl.AveragePooling2D(2, return_indices=True)
    with pytest.raises(ShapeError, match="list"):
        pl.MaxPooling2D(2)([[1.0, 2.0]])


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "layer",
    [
        pl.MaxPooling1D(3, 2, "same", return_indices=True, name="p"),
        pl.MaxPooling2D((2, 3), (1, 2), ((1, 0), (0, 2))),
        pl.MaxPooling3D(2, padding=1),
        pl.MinPooling2D(3, 1, "same"),
        pl.AveragePooling1D(2, 1, 1),
        pl.AveragePooling2D(3, 2, "same", count_include_pad=True),
        pl.AveragePooling3D((1, 2, 2)),
        gp.GlobalAveragePooling2D(keepdims=True),
        gp.GlobalMaxPooling3D(name="g"),
        up.MaxUnpooling2D(3, 2, 1),
        up.MaxUnpooling1D(2),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_get_config_round_trip(layer):
    cfg = layer.get_config()
    cfg2 = json.loads(json.dumps(cfg))
    clone = type(layer)(**cfg2)
    assert clone.get_config() == cfg
    nd = layer.spatial_dims
    x = rand(2, 3, *(6,) * nd)
    if isinstance(layer, up.MaxUnpooling2D | up.MaxUnpooling1D):
        idx = torch.randint(0, 4, x.shape)
        torch.testing.assert_close(layer(x, idx), clone(x, idx))
        return
    a, b = layer(x), clone(x)
    for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        torch.testing.assert_close(u, v)
    # cached plans do not prevent copying or pickling
    for other in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        c = other(x)
        torch.testing.assert_close(
            c[0] if isinstance(c, tuple) else c, a[0] if isinstance(a, tuple) else a
        )


def test_exported_from_cnnkit_layers():
    import cnnkit.layers as layers

    for module in (pl, gp, up):
        for name in module.__all__:
            assert getattr(layers, name) is getattr(module, name)
