"""Dense, Flatten, Activation, Reshape, Dropout, SpatialDropout, BatchNormalization and
the merge layers against torch.nn.functional / NumPy references, forward and backward."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit import ConfigError, ShapeError
from cnnkit.layers import (
    Activation,
    Add,
    Average,
    BatchNormalization,
    Concatenate,
    Dense,
    Dropout,
    Flatten,
    Multiply,
    Reshape,
    Sequential,
    SpatialDropout1D,
    SpatialDropout2D,
    SpatialDropout3D,
)

torch.manual_seed(0)


def _grads(out: torch.Tensor, tensors: list[torch.Tensor], seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    upstream = torch.randn(out.shape, generator=g, dtype=out.dtype)
    return list(torch.autograd.grad(out, tensors, upstream))


# --------------------------------------------------------------------------- Dense


@pytest.mark.parametrize("shape", [(4, 7), (3, 5, 7), (2, 3, 4, 7)])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("activation", [None, "relu", "tanh", "softmax"])
def test_dense_matches_f_linear_forward_backward(shape, use_bias, activation):
    layer = Dense(6, activation=activation, use_bias=use_bias).build((None, 7)).double()
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    assert layer.weight.shape == (6, 7)
    xr = x.detach().clone().requires_grad_(True)
    wr = layer.weight.detach().clone().requires_grad_(True)
    br = layer.bias.detach().clone().requires_grad_(True) if use_bias else None
    ref = F.linear(xr, wr, br)
    ref = {
        None: lambda t: t,
        "relu": torch.relu,
        "tanh": torch.tanh,
        "softmax": lambda t: torch.softmax(t, dim=-1),
    }[activation](ref)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-12)
    params = [layer.weight] + ([layer.bias] if use_bias else [])
    ref_params = [wr] + ([br] if use_bias else [])
    got = _grads(y, [x, *params])
    want = _grads(ref, [xr, *ref_params])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert layer.compute_output_shape(shape) == tuple(y.shape)
    assert layer.count_macs(shape) == 7 * 6 * math.prod(shape[1:-1])


def test_dense_input_dim_and_in_features_build_eagerly():
    d = Dense(2048, input_dim=32 * 32 * 3, activation="relu")
    assert d.built and d.input_shape == (3072,)
    assert sum(p.numel() for p in d.parameters()) == 3072 * 2048 + 2048  # seed 002: N*M + M
    t = Dense(5, in_features=3)
    assert t.built and t.input_shape is None and t.weight.shape == (5, 3)


def test_dense_glorot_uniform_bound():
    d = Dense(300, in_features=200)
    limit = math.sqrt(6.0 / (200 + 300))
    w = d.weight.detach()
    assert w.abs().max() <= limit
    # uniform(-l, l) has std l / sqrt(3)
    assert abs(w.std().item() - limit / math.sqrt(3)) < 0.02 * limit
    assert torch.count_nonzero(d.bias) == 0


def test_dense_get_config_roundtrip():
    d = Dense(7, activation="relu", use_bias=False, input_dim=3)
    d2 = Dense(**d.get_config())
    assert d2.get_config() == d.get_config()
    assert sum(p.numel() for p in d2.parameters()) == 21


@pytest.mark.parametrize("units", [0, -3, 2.5, "8", True])
def test_dense_bad_units(units):
    with pytest.raises(ConfigError, match=re_escape(repr(units))):
        Dense(units)


def test_dense_feature_mismatch_after_build():
    d = Dense(4, in_features=6)
    with pytest.raises(ShapeError, match=r"received shape \(2, 5\)"):
        d(torch.zeros(2, 5))
    with pytest.raises(ShapeError, match="Flatten"):
        d(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ShapeError, match=r"rank >= 2"):
        Dense(3)(torch.zeros(4))


def test_dense_conflicting_input_dim():
    with pytest.raises(ConfigError, match="input_dim=4"):
        Dense(3, input_dim=4, input_shape=(5,))


def re_escape(s: str) -> str:
    import re

    return re.escape(s)


# --------------------------------------------------------------------------- Flatten, Activation, Reshape


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 4), (2, 3, 4, 5), (1, 2, 3, 4, 5)])
def test_flatten_matches_reshape(shape):
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    y = Flatten()(x)
    ref = x.detach().numpy().reshape(shape[0], -1)
    np.testing.assert_array_equal(y.detach().numpy(), ref)
    assert Flatten().compute_output_shape((None, *shape[1:])) == (None, math.prod(shape[1:]))
    (g,) = _grads(y, [x])
    g_up = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
    torch.testing.assert_close(g, g_up.reshape(shape))


@pytest.mark.parametrize(
    "name,ref",
    [
        ("relu", torch.relu),
        ("sigmoid", torch.sigmoid),
        ("tanh", torch.tanh),
        ("softmax", lambda t: torch.softmax(t, dim=1)),
        ("log_softmax", lambda t: torch.log_softmax(t, dim=1)),
        ("elu", F.elu),
        (None, lambda t: t),
        ("linear", lambda t: t),
    ],
)
@pytest.mark.parametrize("shape", [(3, 5), (2, 4, 3, 3)])
def test_activation_matches_torch(name, ref, shape):
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    y = Activation(name)(x)
    xr = x.detach().clone().requires_grad_(True)
    r = ref(xr)
    torch.testing.assert_close(y, r, rtol=1e-10, atol=1e-12)
    if name not in (None, "linear"):
        for a, b in zip(_grads(y, [x]), _grads(r, [xr])):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_softmax_activation_sums_to_one_over_channels():
    y = Activation("softmax")(torch.randn(2, 5, 3, 3))
    torch.testing.assert_close(y.sum(dim=1), torch.ones(2, 3, 3))


def test_activation_unknown_name():
    with pytest.raises(ConfigError, match="'rellu'.*Did you mean 'relu'"):
        Activation("rellu")


def test_reshape():
    x = torch.randn(2, 48, dtype=torch.float64)
    y = Reshape((3, 4, -1))(x)
    np.testing.assert_array_equal(y.numpy(), x.numpy().reshape(2, 3, 4, 4))
    assert Reshape((3, 4, -1)).compute_output_shape((None, 48)) == (None, 3, 4, 4)
    assert Reshape((16, 3)).compute_output_shape((None, 6, 8)) == (None, 16, 3)
    with pytest.raises(ShapeError, match=r"\(5, 5\).*25 elements"):
        Reshape((3, 4))(torch.zeros(2, 5, 5))
    with pytest.raises(ShapeError, match="not a multiple of 7"):
        Reshape((7, -1)).compute_output_shape((None, 48))
    with pytest.raises(ConfigError, match=r"\(-1, -1\)"):
        Reshape((-1, -1))
    with pytest.raises(ConfigError, match=r"\(0, 3\)"):
        Reshape((0, 3))


# --------------------------------------------------------------------------- Dropout


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_dropout_statistics_and_scaling(rate):
    torch.manual_seed(1)
    layer = Dropout(rate)
    layer.train()
    x = torch.rand(200_000, dtype=torch.float64) + 0.5  # never zero
    x.requires_grad_(True)
    y = layer(x.unsqueeze(0)).squeeze(0)
    dropped = y == 0
    n = x.numel()
    # fraction dropped is Binomial(n, rate)/n: 5 standard deviations
    assert abs(dropped.double().mean().item() - rate) < 5 * math.sqrt(rate * (1 - rate) / n)
    kept = ~dropped
    torch.testing.assert_close(y[kept], x[kept] / (1 - rate))
    (g,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(g, kept.double() / (1 - rate))


def test_dropout_eval_identity_and_rate_zero():
    x = torch.randn(4, 10)
    layer = Dropout(0.5).eval()
    assert torch.equal(layer(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)


def test_dropout_seed_reproducible():
    x = torch.ones(3, 1000)
    a = Dropout(0.5, seed=3).train()(x)
    b = Dropout(0.5, seed=3).train()(x)
    c = Dropout(0.5, seed=4).train()(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(torch.unique(a).tolist()) == {0.0, 2.0}


@pytest.mark.parametrize("rate", [-0.1, 1, 1.5, "0.5", None])
def test_dropout_bad_rate(rate):
    with pytest.raises(ConfigError, match=re_escape(repr(rate))):
        Dropout(rate)
    with pytest.raises(ConfigError, match=re_escape(repr(rate))):
        SpatialDropout2D(rate)


@pytest.mark.parametrize(
    "cls,shape",
    [
        (SpatialDropout1D, (8, 64, 5)),
        (SpatialDropout2D, (8, 64, 3, 4)),
        (SpatialDropout3D, (8, 64, 2, 3, 2)),
    ],
)
def test_spatial_dropout_zeroes_whole_channels(cls, shape):
    torch.manual_seed(2)
    rate = 0.4
    x = torch.rand(shape, dtype=torch.float64) + 0.5
    y = cls(rate).train()(x)
    flat_y = y.reshape(shape[0], shape[1], -1)
    flat_x = x.reshape(shape[0], shape[1], -1)
    zero_ch = (flat_y == 0).all(dim=2)
    kept_ch = (flat_y != 0).all(dim=2)
    assert torch.all(zero_ch | kept_ch)  # every channel entirely dropped or entirely kept
    torch.testing.assert_close(flat_y[kept_ch], flat_x[kept_ch] / (1 - rate))
    n = shape[0] * shape[1]
    assert abs(zero_ch.double().mean().item() - rate) < 5 * math.sqrt(rate * (1 - rate) / n)
    assert torch.equal(cls(rate).eval()(x), x)


def test_spatial_dropout_rank_error():
    with pytest.raises(ShapeError, match=r"received shape \(2, 3, 4\)"):
        SpatialDropout2D(0.5)(torch.zeros(2, 3, 4))


# --------------------------------------------------------------------------- BatchNormalization


@pytest.mark.parametrize("shape", [(6, 3), (5, 3, 7), (4, 3, 5, 5), (3, 3, 2, 3, 4)])
@pytest.mark.parametrize("momentum", [0.99, 0.5])
def test_batch_norm_train_matches_f_batch_norm(shape, momentum):
    eps = 1e-3
    layer = BatchNormalization(momentum=momentum, epsilon=eps).build(shape).double()
    c = shape[1]
    with torch.no_grad():
        layer.bn.weight.copy_(torch.linspace(0.5, 1.5, c))
        layer.bn.bias.copy_(torch.linspace(-1, 1, c))
    w = layer.bn.weight.detach().clone().requires_grad_(True)
    b = layer.bn.bias.detach().clone().requires_grad_(True)
    rm = torch.zeros(c, dtype=torch.float64)
    rv = torch.ones(c, dtype=torch.float64)
    np_rm, np_rv = np.zeros(c), np.ones(c)
    layer.train()
    for step in range(3):
        x = (torch.randn(shape, dtype=torch.float64) * 2 + step).requires_grad_(True)
        y = layer(x)
        xr = x.detach().clone().requires_grad_(True)
        ref = F.batch_norm(xr, rm, rv, w, b, training=True, momentum=1 - momentum, eps=eps)
        torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
        got = _grads(y, [x, layer.bn.weight, layer.bn.bias], seed=step)
        want = _grads(ref, [xr, w, b], seed=step)
        for a, bb in zip(got, want):
            torch.testing.assert_close(a, bb, rtol=1e-10, atol=1e-10)
        # Keras' moving averages: moving = momentum * moving + (1 - momentum) * batch stat
        axes = tuple(i for i in range(len(shape)) if i != 1)
        xn = x.detach().numpy()
        np_rm = momentum * np_rm + (1 - momentum) * xn.mean(axis=axes)
        np_rv = momentum * np_rv + (1 - momentum) * xn.var(axis=axes, ddof=1)  # torch: unbiased
        np.testing.assert_allclose(layer.bn.running_mean.numpy(), np_rm, rtol=1e-10)
        np.testing.assert_allclose(layer.bn.running_var.numpy(), np_rv, rtol=1e-10)
    # eval: running statistics
    layer.eval()
    x = torch.randn(shape, dtype=torch.float64)
    view = (1, c) + (1,) * (len(shape) - 2)
    expect = (x.numpy() - np_rm.reshape(view)) / np.sqrt(np_rv.reshape(view) + eps)
    expect = expect * w.detach().numpy().reshape(view) + b.detach().numpy().reshape(view)
    np.testing.assert_allclose(layer(x).detach().numpy(), expect, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "center,scale,n_params",
    [(True, True, 8), (False, True, 4), (True, False, 4), (False, False, 0)],
)
def test_batch_norm_center_scale(center, scale, n_params):
    layer = BatchNormalization(center=center, scale=scale).build((None, 4, 3, 3)).double()
    assert sum(p.numel() for p in layer.parameters()) == n_params
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape))
    x = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    norm = F.batch_norm(x, None, None, training=True, eps=1e-3)
    gamma = (layer.bn.weight if center and scale else layer.weight) if scale else None
    beta = (layer.bn.bias if center and scale else layer.bias) if center else None
    ref = norm
    if gamma is not None:
        ref = ref * gamma.view(1, -1, 1, 1)
    if beta is not None:
        ref = ref + beta.view(1, -1, 1, 1)
    torch.testing.assert_close(layer.train()(x), ref, rtol=1e-10, atol=1e-10)


def test_batch_norm_holds_torch_module_and_converts_to_sync():
    model = Sequential([BatchNormalization()], input_shape=(3, 4, 4))
    assert isinstance(model[0].bn, nn.BatchNorm2d)
    assert model[0].bn.momentum == pytest.approx(0.01) and model[0].bn.eps == 1e-3
    with torch.no_grad():
        model[0].bn.running_mean.copy_(torch.tensor([0.1, 0.2, 0.3]))
    x = torch.randn(2, 3, 4, 4)
    before = model.eval()(x)
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(synced[0].bn, nn.SyncBatchNorm)
    torch.testing.assert_close(synced.eval()(x), before)
    assert isinstance(BatchNormalization().build((None, 3)).bn, nn.BatchNorm1d)
    assert isinstance(BatchNormalization().build((None, 3, 2, 2, 2)).bn, nn.BatchNorm3d)


def test_batch_norm_errors():
    with pytest.raises(ConfigError, match="axis=3"):
        BatchNormalization(axis=3)
    with pytest.raises(ShapeError, match=r"axis=-1.*\(2, 3, 4, 4\)"):
        BatchNormalization(axis=-1)(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ConfigError, match="1.5"):
        BatchNormalization(momentum=1.5)
    with pytest.raises(ConfigError, match="-1"):
        BatchNormalization(epsilon=-1)
    bn = BatchNormalization().build((None, 3, 4, 4))
    with pytest.raises(ShapeError, match="received 5 channels"):
        bn(torch.zeros(2, 5, 4, 4))
    with pytest.raises(ShapeError, match=r"built for 4-D.*\(2, 3, 4\)"):
        bn(torch.zeros(2, 3, 4))
    with pytest.raises(ShapeError, match="6-D"):
        BatchNormalization()(torch.zeros(1, 2, 1, 1, 1, 1))


# --------------------------------------------------------------------------- merge layers


@pytest.mark.parametrize("axis", [1, -1, 2])
def test_concatenate_matches_torch_cat(axis):
    shapes = [(2, 3, 4, 5), (2, 3, 4, 5), (2, 3, 4, 5)]
    xs = [torch.randn(s, dtype=torch.float64, requires_grad=True) for s in shapes]
    layer = Concatenate(axis=axis)
    y = layer(xs)
    np_ref = np.concatenate([x.detach().numpy() for x in xs], axis=axis)
    np.testing.assert_array_equal(y.detach().numpy(), np_ref)
    assert layer.compute_output_shape([(None, *s[1:]) for s in shapes]) == (None, *y.shape[1:])
    grads = _grads(y, xs)
    up = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
    for g, part in zip(grads, torch.split(up, [s[axis] for s in shapes], dim=axis)):
        torch.testing.assert_close(g, part)


def test_concatenate_channels_of_different_depth():
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4)
    y = Concatenate()((a, b))
    assert y.shape == (2, 8, 4, 4)
    assert torch.equal(y[:, :3], a) and torch.equal(y[:, 3:], b)
    assert Concatenate().compute_output_shape([(None, 3, None, 4), (None, 5, 4, 4)]) == (
        None,
        8,
        4,
        4,
    )


@pytest.mark.parametrize(
    "cls,ref",
    [
        (Add, lambda xs: xs[0] + xs[1] + xs[2]),
        (Multiply, lambda xs: xs[0] * xs[1] * xs[2]),
        (Average, lambda xs: (xs[0] + xs[1] + xs[2]) / 3),
    ],
)
def test_elementwise_merges(cls, ref):
    xs = [torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    y = cls()(xs)
    xr = [x.detach().clone().requires_grad_(True) for x in xs]
    r = ref(xr)
    torch.testing.assert_close(y, r, rtol=1e-10, atol=1e-12)
    for a, b in zip(_grads(y, xs), _grads(r, xr)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert cls().compute_output_shape([(None, 3, 4)] * 3) == (None, 3, 4)


def test_add_two_inputs():
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    torch.testing.assert_close(Add()([a, b]), a + b)


def test_merge_errors_name_all_shapes():
    with pytest.raises(ShapeError, match=r"\(2, 3, 4\), \(2, 1, 4\)"):
        Add()([torch.zeros(2, 3, 4), torch.zeros(2, 1, 4)])  # no silent broadcasting
    with pytest.raises(ShapeError, match=r"\(2, 3, 4, 4\), \(2, 5, 3, 4\).*dimension 2"):
        Concatenate()([torch.zeros(2, 3, 4, 4), torch.zeros(2, 5, 3, 4)])
    with pytest.raises(ShapeError, match="same rank"):
        Concatenate()([torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4)])
    with pytest.raises(ShapeError, match="axis=5"):
        Concatenate(axis=5)([torch.zeros(2, 3), torch.zeros(2, 3)])
    with pytest.raises(ShapeError, match="list of tensors.*Tensor"):
        Add()(torch.zeros(2, 3))
    with pytest.raises(ShapeError, match="ndarray"):
        Multiply()([torch.zeros(2), np.zeros(2)])
    with pytest.raises(ShapeError, match=r"\(None, 3\), \(None, 4\)"):
        Average().compute_output_shape([(None, 3), (None, 4)])
    with pytest.raises(ConfigError, match="'1'"):
        Concatenate(axis="1")
