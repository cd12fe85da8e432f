"""UpSampling1D/2D/3D against torch.nn.functional.interpolate, the NumPy references in
cnnkit.ops.reference (written from the math) and seed 002's unpooling examples."""

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
from cnnkit.layers import upsampling as us
from cnnkit.ops import reference as ref

UPSAMPLING = {1: us.UpSampling1D, 2: us.UpSampling2D, 3: us.UpSampling3D}
LINEAR_MODE = {1: "linear", 2: "bilinear", 3: "trilinear"}
SHAPES = {1: [(5,), (6,)], 2: [(3, 4), (5, 2)], 3: [(2, 3, 4), (3, 2, 1)]}


def t(a) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def rand(*shape) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64)


def linear_grad(fn, g: np.ndarray, sizes) -> np.ndarray:
    """x's gradient of sum(g * fn(x)) for a linear map fn acting per (N, C) plane."""
    plane = math.prod(sizes)
    jac = fn(np.eye(plane).reshape(plane, 1, *sizes)).reshape(plane, -1)  # (in, out)
    n, c = g.shape[:2]
    return (g.reshape(n * c, -1) @ jac.T).reshape(n, c, *sizes)


def block_sum(g: np.ndarray, size) -> np.ndarray:
    """Sum of each size-block: the gradient of nearest upsampling, from its definition."""
    n, c = g.shape[:2]
    shape = [n, c]
    for dim, s in zip(g.shape[2:], size):
        shape += [dim // s, s]
    axes = tuple(3 + 2 * i for i in range(len(size)))
    return g.reshape(shape).sum(axis=axes)


def cases():
    for nd in (1, 2, 3):
        for size in (1, 2, 3):
            for shape in SHAPES[nd]:
                yield nd, (size,) * nd, shape
    yield 2, (2, 3), (3, 4)
    yield 2, (1, 4), (2, 3)
    yield 3, (2, 1, 3), (2, 3, 2)
    yield 3, (3, 2, 2), (1, 2, 3)


CASES = list(cases())


def case_id(case) -> str:
    return f"{case[0]}d-s{case[1]}-n{case[2]}".replace(" ", "")


# --------------------------------------------------------------------------- grids


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_nearest(case):
    nd, size, shape = case
    layer = UPSAMPLING[nd](size)  # 'nearest' is Keras' default
    x = rand(2, 3, *shape).requires_grad_(True)
    y = layer(x)
    out = tuple(n * s for n, s in zip(shape, size))
    assert y.shape == (2, 3, *out)
    assert layer.compute_output_shape(x.shape) == tuple(y.shape)
    assert layer.compute_output_shape((None, 3, *shape)) == (None, 3, *out)
    np.testing.assert_array_equal(
        y.detach().numpy(), ref.upsample_nearest(x.detach().numpy(), size)
    )
    xn = x.detach().numpy()
    for axis, s in enumerate(size):  # NumPy's repeat, from the definition
        xn = np.repeat(xn, s, axis=2 + axis)
    np.testing.assert_array_equal(y.detach().numpy(), xn)
    torch.testing.assert_close(y, F.interpolate(x, size=out, mode="nearest"), rtol=0, atol=0)
    g = rand(*y.shape)
    (gx,) = torch.autograd.grad(y, x, g)
    np.testing.assert_allclose(gx.numpy(), block_sum(g.numpy(), size), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_bed_of_nails(case):
    nd, size, shape = case
    layer = UPSAMPLING[nd](size, interpolation="bed_of_nails")
    x = rand(2, 3, *shape).requires_grad_(True)
    y = layer(x)
    assert layer.compute_output_shape(x.shape) == tuple(y.shape)
    np.testing.assert_array_equal(
        y.detach().numpy(), ref.upsample_bed_of_nails(x.detach().numpy(), size)
    )
    g = rand(*y.shape)
    (gx,) = torch.autograd.grad(y, x, g)
    corners = (Ellipsis, *(slice(None, None, s) for s in size))
    np.testing.assert_array_equal(gx.numpy(), g.numpy()[corners])
    # the same as unpooling every top-left corner
    if nd == 2:
        h, w = shape
        idx = torch.arange(h * w).reshape(h, w)
        idx = (idx // w) * size[0] * w * size[1] + (idx % w) * size[1]
        unpooled = F.max_unpool2d(x, idx.expand_as(x), size, size)
        torch.testing.assert_close(y, unpooled, rtol=0, atol=0)


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("name", ["linear", "rank-specific"])
def test_linear(case, name):
    nd, size, shape = case
    mode = LINEAR_MODE[nd]
    layer = UPSAMPLING[nd](size, interpolation="linear" if name == "linear" else mode)
    x = rand(2, 3, *shape).requires_grad_(True)
    y = layer(x)
    assert layer.compute_output_shape(x.shape) == tuple(y.shape)
    np.testing.assert_allclose(
        y.detach().numpy(), ref.upsample_linear(x.detach().numpy(), size), rtol=1e-10, atol=1e-12
    )
    out = tuple(y.shape[2:])
    xt = x.detach().clone().requires_grad_(True)
    ty = F.interpolate(xt, size=out, mode=mode, align_corners=False)
    torch.testing.assert_close(y, ty)
    g = rand(*y.shape)
    (gx,) = torch.autograd.grad(y, x, g)
    (tgx,) = torch.autograd.grad(ty, xt, g)
    torch.testing.assert_close(gx, tgx)
    np.testing.assert_allclose(
        gx.numpy(),
        linear_grad(lambda a: ref.upsample_linear(a, size), g.numpy(), shape),
        rtol=1e-10,
        atol=1e-12,
    )


@pytest.mark.parametrize("size", [1, 2, 3, (2, 3)])
def test_bicubic_2d(size):
    x = rand(2, 3, 4, 5).requires_grad_(True)
    y = us.UpSampling2D(size, interpolation="bicubic")(x)
    sz = (size, size) if isinstance(size, int) else size
    xt = x.detach().clone().requires_grad_(True)
    ty = F.interpolate(xt, size=(4 * sz[0], 5 * sz[1]), mode="bicubic", align_corners=False)
    torch.testing.assert_close(y, ty)
    g = rand(*y.shape)
    torch.testing.assert_close(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(ty, xt, g)[0])


def test_nearest_is_exact_for_long_inputs_and_odd_factors():
    for s in (3, 5, 6, 7, 11):
        x = torch.arange(997, dtype=torch.float32).reshape(1, 1, 997)
        y = us.UpSampling1D(s)(x)
        np.testing.assert_array_equal(y[0, 0].numpy(), np.repeat(np.arange(997), s))


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("interpolation", ["nearest", "linear", "bed_of_nails"])
def test_gradcheck(nd, interpolation):
    layer = UPSAMPLING[nd]((2, 3, 1)[:nd], interpolation=interpolation)
    x = rand(1, 2, *(3, 2, 2)[:nd]).requires_grad_(True)
    assert torch.autograd.gradcheck(layer, (x,))


# --------------------------------------------------------------------------- the deck


def test_seed002_nearest_and_bed_of_nails():
    x = t([[[[1, 2], [3, 4]]]])
    np.testing.assert_array_equal(
        us.UpSampling2D(2)(x)[0, 0].numpy(),
        [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]],
    )
    np.testing.assert_array_equal(
        us.UpSampling2D((2, 2), interpolation="bed_of_nails")(x)[0, 0].numpy(),
        [[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]],
    )


def test_any_channels_and_receptive_field():
    layer = us.UpSampling2D(2)
    assert layer(rand(1, 3, 2, 2)).shape == (1, 3, 4, 4)
    assert layer(rand(2, 8, 3, 1)).shape == (2, 8, 6, 2)
    assert layer.receptive_field_layers() == []
    assert layer.count_macs((None, 3, 4, 4)) == 0


# --------------------------------------------------------------------------- bad input


def test_bad_interpolation_names():
    with pytest.raises(ConfigError, match=r"'bilinaer'.*Did you mean 'bilinear'"):
        us.UpSampling2D(2, interpolation="bilinaer")
    with pytest.raises(ConfigError, match=r"'nearst'.*Did you mean 'nearest'"):
        us.UpSampling1D(2, interpolation="nearst")
    with pytest.raises(ConfigError, match=r"'bilinear'.*2D.*'linear'"):
        us.UpSampling1D(2, interpolation="bilinear")
    with pytest.raises(ConfigError, match=r"'bilinear'.*'linear' \(= 'trilinear'\)"):
        us.UpSampling3D(2, interpolation="bilinear")
    with pytest.raises(ConfigError, match=r"'trilinear'.*3D.*'linear' \(= 'bilinear'\)"):
        us.UpSampling2D(2, interpolation="trilinear")
    with pytest.raises(ConfigError, match=r"'bicubic'.*2D"):
        us.UpSampling3D(2, interpolation="bicubic")
    with pytest.raises(ConfigError, match="None"):
        us.UpSampling2D(2, interpolation=None)
    assert us.UpSampling2D(2, interpolation="Bed-of-Nails").interpolation == "bed_of_nails"


def test_bad_sizes_and_ranks():
    with pytest.raises(ConfigError, match=r"UpSampling2D size.*\(2, 2, 2\)"):
        us.UpSampling2D((2, 2, 2))
    with pytest.raises(ConfigError, match="0"):
        us.UpSampling1D(0)
    with pytest.raises(ConfigError, match="1.5"):
        us.UpSampling2D(1.5)
    with pytest.raises(ShapeError, match=r"received shape \(3, 4, 4, 4\).*unsqueeze"):
        us.UpSampling3D(2)(rand(3, 4, 4, 4))
    with pytest.raises(ShapeError, match=r"\(1, 2, 3, 3\).*2D variant"):
        us.UpSampling1D(2)(rand(1, 2, 3, 3))


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "layer",
    [
        us.UpSampling1D(3, name="u"),
        us.UpSampling2D((2, 3), interpolation="bilinear"),
        us.UpSampling2D(2, interpolation="bicubic"),
        us.UpSampling2D(2, interpolation="bed_of_nails"),
        us.UpSampling3D((1, 2, 2), interpolation="linear"),
    ],
    ids=lambda layer: f"{type(layer).__name__}-{layer.interpolation}",
)
def test_get_config_round_trip(layer):
    cfg = layer.get_config()
    clone = type(layer)(**json.loads(json.dumps(cfg)))
    assert clone.get_config() == cfg
    x = rand(2, 3, *(3,) * layer.spatial_dims)
    y = layer(x)
    torch.testing.assert_close(clone(x), y)
    for other in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        torch.testing.assert_close(other(x), y)


def test_exported_from_cnnkit_layers():
    import cnnkit.layers as layers

    for name in us.__all__:
        assert getattr(layers, name) is getattr(us, name)
