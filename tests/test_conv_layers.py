"""Conv1D/2D/3D, DepthwiseConv*, SeparableConv*, SpatialSeparableConv2D against references.

References: torch.nn.functional on an explicitly padded input (forward and autograd
backward), cnnkit.ops.reference.conv_nd (NumPy loops from the decks' formula),
scipy.signal.correlate, and the decks' worked examples (seed 003 Sobel, seed 004 padding).
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from cnnkit import ConfigError, ShapeError
from cnnkit.layers.conv import Conv1D, Conv2D, Conv3D
from cnnkit.layers.separable import (
    DepthwiseConv1D,
    DepthwiseConv2D,
    DepthwiseConv3D,
    SeparableConv1D,
    SeparableConv2D,
    SpatialSeparableConv2D,
)
from cnnkit.ops import arithmetic
from cnnkit.ops.reference import conv_nd

CONV = {1: Conv1D, 2: Conv2D, 3: Conv3D}
DEPTHWISE = {1: DepthwiseConv1D, 2: DepthwiseConv2D, 3: DepthwiseConv3D}
SEPARABLE = {1: SeparableConv1D, 2: SeparableConv2D}
FCONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
# (N, C, *spatial) per rank, and a kernel with an even entry (asymmetric 'same' pads)
SHAPES = {1: (2, 4, 11), 2: (2, 4, 9, 8), 3: (1, 4, 6, 7, 5)}
KERNELS = {1: (4,), 2: (3, 2), 3: (3, 2, 3)}
PAIRS = {1: ((2, 1),), 2: ((0, 2), (1, 0)), 3: ((1, 0), (0, 1), (2, 2))}
NP_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


# ------------------------------------------------------------------ test-side math


def keras_same(n: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TensorFlow's SAME: ceil(n/s) outputs, total padding split with the extra after."""
    k_eff = d * (k - 1) + 1
    out = -(-n // s)
    total = max((out - 1) * s + k_eff - n, 0)
    return total // 2, total - total // 2


def ref_pads(padding, sizes, kernel, strides, dilation) -> list[tuple[int, int]]:
    nd = len(sizes)
    kernel, strides, dilation = (
        tuple(v) if isinstance(v, tuple) else (v,) * nd for v in (kernel, strides, dilation)
    )
    if padding == "valid":
        return [(0, 0)] * nd
    if padding == "same":
        return [keras_same(*a) for a in zip(sizes, kernel, strides, dilation)]
    if padding == "full":
        return [(d * (k - 1),) * 2 for k, d in zip(kernel, dilation)]
    if isinstance(padding, int):
        return [(padding, padding)] * nd
    return list(padding)


def flat(pads) -> list[int]:
    out: list[int] = []
    for b, a in reversed(pads):
        out += [b, a]
    return out


def randomized(layer):
    """Float64 layer with random parameters (the default bias is all zeros)."""
    layer = layer.double()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn_like(p))
    return layer


def check_against(layer, x, ref_fn, params):
    """Forward and backward (input and every parameter) of ``layer`` vs ``ref_fn``."""
    x1 = x.clone().requires_grad_()
    y = layer(x1)
    x2 = x.clone().requires_grad_()
    ps = [p.detach().clone().requires_grad_() for p in params]
    yr = ref_fn(x2, *ps)
    assert y.shape == yr.shape
    torch.testing.assert_close(y, yr)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, [x1, *params], g)
    want = torch.autograd.grad(yr, [x2, *ps], g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    return y.detach()


def np_(t: torch.Tensor | None):
    return None if t is None else t.detach().numpy()


# ------------------------------------------------------------------ Conv grid

GRID = list(
    itertools.product((1, 2, 3), (1, 2, 3), ("valid", "same", "full", 1, "pairs"), (1, 2), (1, 2))
)


@pytest.mark.parametrize("nd,stride,padding,dilation,groups", GRID)
def test_conv_grid_matches_functional_and_reference(nd, stride, padding, dilation, groups):
    shape, kernel = SHAPES[nd], KERNELS[nd]
    if padding == "pairs":
        padding = PAIRS[nd]
    layer = randomized(CONV[nd](6, kernel, stride, padding, dilation, groups, in_channels=shape[1]))
    x = torch.randn(shape, dtype=torch.float64)
    pads = ref_pads(padding, shape[2:], kernel, stride, dilation)

    def ref(x, w, b):
        return FCONV[nd](F.pad(x, flat(pads)), w, b, stride, 0, dilation, groups)

    y = check_against(layer, x, ref, [layer.weight, layer.bias])
    assert layer.compute_output_shape(shape) == tuple(y.shape)
    assert layer.compute_output_shape(shape[1:]) == tuple(y.shape[1:])
    want = conv_nd(np_(x), np_(layer.weight), np_(layer.bias), stride, padding, dilation, groups)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-10, atol=1e-10)
    # spatial sizes by the decks' formula with floor, M = floor((N - F_eff + P)/S) + 1
    for n, k, (b, a), m in zip(shape[2:], kernel, pads, y.shape[2:]):
        assert m == (n - dilation * (k - 1) - 1 + b + a) // stride + 1


@pytest.mark.parametrize("nd", (1, 2, 3))
@pytest.mark.parametrize("mode", ("valid", "same", "full"))
def test_single_channel_matches_scipy_correlate(nd, mode):
    sizes = (13, 9, 7)[:nd]
    kernel = (3, 5, 3)[:nd]  # odd: scipy's 'same' centres the kernel like Keras
    x = np.random.default_rng(nd).normal(size=sizes)
    w = np.random.default_rng(10 + nd).normal(size=kernel)
    layer = CONV[nd](1, kernel, padding=mode, use_bias=False, in_channels=1).double()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w)[None, None])
    y = layer(torch.from_numpy(x)[None, None])[0, 0].detach().numpy()
    np.testing.assert_allclose(y, scipy.signal.correlate(x, w, mode=mode), atol=1e-12)


PADDING_MODE_GRID = list(
    itertools.product((1, 2, 3), ("reflect", "replicate", "circular"), ("same", 2, "pairs"), (1, 2))
)


@pytest.mark.parametrize("nd,mode,padding,stride", PADDING_MODE_GRID)
def test_padding_modes_match_numpy_pad(nd, mode, padding, stride):
    shape, kernel = SHAPES[nd], KERNELS[nd]
    if padding == "pairs":
        padding = PAIRS[nd]
    layer = randomized(
        CONV[nd](3, kernel, stride, padding, padding_mode=mode, in_channels=shape[1])
    )
    x = torch.randn(shape, dtype=torch.float64)
    pads = ref_pads(padding, shape[2:], kernel, stride, 1)

    def ref(x, w, b):
        return FCONV[nd](F.pad(x, flat(pads), mode=mode), w, b, stride)

    y = check_against(layer, x, ref, [layer.weight, layer.bias])
    assert layer.compute_output_shape(shape) == tuple(y.shape)
    xp = np.pad(np_(x), [(0, 0), (0, 0), *pads], mode=NP_MODE[mode])
    want = conv_nd(xp, np_(layer.weight), np_(layer.bias), stride, 0)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------ decks' examples

SEED004_IMAGE = [
    [3, 3, 4, 4, 7, 0],
    [9, 7, 6, 5, 8, 2],
    [6, 5, 5, 6, 9, 2],
    [7, 1, 3, 2, 7, 8],
    [0, 3, 7, 1, 8, 3],
    [4, 0, 4, 3, 2, 2],
]
VERTICAL_EDGE = [[1, 0, -1]] * 3


@pytest.mark.parametrize("padding", (1, "same"))
def test_seed004_padding_example(padding):
    layer = Conv2D(1, 3, padding=padding, use_bias=False, in_channels=1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(VERTICAL_EDGE, dtype=torch.float32)[None, None])
    out = layer(torch.tensor(SEED004_IMAGE, dtype=torch.float32)[None, None])[0, 0]
    assert out.shape == (6, 6)  # padding 1 keeps 6x6 (the slide's 6x6 -> 8x8 -> 6x6)
    slide = {(0, 0): -10, (0, 2): 1, (1, 1): 3, (1, 2): 0, (2, 0): -13, (3, 0): -9}
    for (i, j), v in slide.items():
        assert out[i, j].item() == v
    want = scipy.signal.correlate2d(np.array(SEED004_IMAGE), np.array(VERTICAL_EDGE), mode="same")
    np.testing.assert_array_equal(out.detach().numpy(), want)


@pytest.mark.parametrize(
    "n,out,pads", [(7, 4, (1, 1)), (8, 4, (0, 1)), (5, 3, (1, 1)), (6, 3, (0, 1))]
)
def test_same_stride2_is_keras_asymmetric(n, out, pads):
    layer = randomized(Conv1D(2, 3, strides=2, padding="same", in_channels=1))
    x = torch.randn(1, 1, n, dtype=torch.float64)
    y = layer(x)
    assert y.shape[-1] == out == math.ceil(n / 2)
    want = F.conv1d(F.pad(x, pads), layer.weight, layer.bias, stride=2)
    torch.testing.assert_close(y, want)
    assert layer.compute_output_shape((1, 1, n)) == (1, 2, out)


def test_same_stride2_2d_caches_pads_per_input_size():
    layer = randomized(Conv2D(3, 3, strides=2, padding="same", in_channels=2))
    for h, w in [(7, 8), (8, 7), (7, 8), (9, 9)]:
        x = torch.randn(1, 2, h, w, dtype=torch.float64)
        pads = [keras_same(h, 3, 2, 1), keras_same(w, 3, 2, 1)]
        want = F.conv2d(F.pad(x, flat(pads)), layer.weight, layer.bias, stride=2)
        torch.testing.assert_close(layer(x), want)
        assert layer(x).shape[2:] == (math.ceil(h / 2), math.ceil(w / 2))


def test_activation_applied_after_conv():
    layer = randomized(Conv2D(4, 3, activation="relu", in_channels=2))
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(layer(x), F.relu(F.conv2d(x, layer.weight, layer.bias)))
    assert layer.activation == "relu"
    assert Conv2D(4, 3).activation is None and Conv2D(4, 3, activation="linear").activation is None


def test_receptive_fields_seed003():
    stack = [Conv1D(1, 2, strides=2), Conv1D(1, 2, strides=2)]
    specs = [(k[0], s[0], d[0]) for layer in stack for k, s, d in layer.receptive_field_layers()]
    assert arithmetic.receptive_field(specs)[-1].receptive_field == 4
    wavenet = [Conv1D(1, 2, dilation_rate=d) for d in (1, 2, 4)]
    specs = [(k[0], s[0], d[0]) for layer in wavenet for k, s, d in layer.receptive_field_layers()]
    assert arithmetic.receptive_field(specs)[-1].receptive_field == 8
    assert Conv2D(1, 3, strides=2, dilation_rate=2).receptive_field_layers() == [
        ((3, 3), (2, 2), (2, 2))
    ]


def test_parameter_and_mac_counts_seed002_seed003():
    alex = Conv2D(96, 11, strides=4, in_channels=3)
    assert sum(p.numel() for p in alex.parameters()) == 11 * 11 * 3 * 96 + 96 == 34944
    assert alex.count_macs((3, 227, 227)) == 55 * 55 * 11 * 11 * 3 * 96
    naive = Conv2D(32, 5, padding="same")
    assert naive.count_macs((192, 28, 28)) == 120_422_400
    reduce = Conv2D(16, 1)
    assert reduce.count_macs((192, 28, 28)) + naive.count_macs((16, 28, 28)) == 12_443_648
    grouped = Conv3D(8, (3, 1, 2), strides=2, padding="same", groups=2, in_channels=4)
    assert grouped.count_macs((1, 4, 5, 6, 7)) == 3 * 1 * 2 * (3 * 3 * 4) * 2 * 8
    assert sum(p.numel() for p in grouped.parameters()) == arithmetic.conv_params(
        4, 8, (3, 1, 2), groups=2
    )


def test_attributes_and_eager_build():
    layer = Conv2D(
        8, (3, 5), strides=2, padding="same", dilation_rate=(1, 2), groups=2, in_channels=4
    )
    assert layer.built and layer.weight.shape == (8, 2, 3, 5) and layer.bias.shape == (8,)
    attrs = (layer.filters, layer.kernel_size, layer.strides, layer.dilation_rate, layer.groups)
    assert attrs == (8, (3, 5), (2, 2), (1, 2), 2)
    assert (layer.padding, layer.use_bias, layer.padding_mode) == ("same", True, "zeros")
    lazy = Conv2D(8, 3, use_bias=False)
    assert not lazy.built and lazy.bias is None
    lazy(torch.zeros(1, 5, 6, 6))
    assert lazy.weight.shape == (8, 5, 3, 3) and lazy.bias is None
    from_shape = Conv1D(2, 3, input_shape=(3, 10))
    assert from_shape.built and from_shape.weight.shape == (2, 3, 3)
    with pytest.raises(ConfigError, match="in_channels=4 but input_shape"):
        Conv1D(2, 3, in_channels=4, input_shape=(3, 10))


def test_compute_output_shape_with_unknown_sizes():
    shape = (None, 3, None, 8)
    assert Conv2D(4, 3, 2, padding="same").compute_output_shape(shape) == (None, 4, None, 4)
    assert Conv2D(4, 3, padding="full").compute_output_shape(shape) == (None, 4, None, 10)


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        (Conv1D, dict(filters=4, kernel_size=3, padding=((1, 2),), padding_mode="reflect")),
        (Conv2D, dict(filters=4, kernel_size=(3, 2), strides=2, padding="same", groups=2)),
        (Conv2D, dict(filters=2, kernel_size=1, activation="relu", bias_initializer="ones")),
        (Conv3D, dict(filters=2, kernel_size=2, padding=(1, 0, 2), dilation_rate=(1, 2, 1))),
        (DepthwiseConv2D, dict(kernel_size=3, depth_multiplier=2, padding="same")),
        (SeparableConv1D, dict(filters=3, kernel_size=3, depth_multiplier=2, padding="full")),
        (SpatialSeparableConv2D, dict(filters=3, kernel_size=(3, 5), intermediate_filters=2)),
        (SpatialSeparableConv2D, dict(filters=3, kernel_size=3, strides=(2, 1), padding="same")),
    ],
)
def test_get_config_round_trip(cls, kwargs):
    layer = randomized(cls(**kwargs, in_channels=4))
    cfg = layer.get_config()
    again = cls(**json.loads(json.dumps(cfg))).double()
    again.load_state_dict(layer.state_dict())
    x = torch.randn((1, 4) + (9,) * layer.spatial_dims, dtype=torch.float64)
    torch.testing.assert_close(again(x), layer(x))
    assert json.loads(json.dumps(again.get_config())) == json.loads(json.dumps(cfg))


# ------------------------------------------------------------------ bad inputs


def test_wrong_rank_names_shape_and_hint():
    with pytest.raises(ShapeError, match=r"4-D input.*received shape \(3, 8, 8\).*unsqueeze"):
        Conv2D(2, 3)(torch.zeros(3, 8, 8))
    with pytest.raises(ShapeError, match=r"received shape \(1, 3, 8, 8, 8\).*3D variant"):
        Conv2D(2, 3)(torch.zeros(1, 3, 8, 8, 8))
    with pytest.raises(ShapeError, match=r"3-D input.*\(1, 3, 8, 8\)"):
        SeparableConv1D(2, 3)(torch.zeros(1, 3, 8, 8))


def test_channel_mismatch_after_build():
    layer = Conv2D(2, 3)
    layer(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ShapeError, match="built for 3 input channels; received 5"):
        layer(torch.zeros(1, 5, 8, 8))
    with pytest.raises(ShapeError, match="built for 3 input channels; received 5"):
        layer.compute_output_shape((1, 5, 8, 8))
    dw = DepthwiseConv2D(3, in_channels=2)
    with pytest.raises(ShapeError, match="built for 2 input channels; received 4"):
        dw(torch.zeros(1, 4, 8, 8))


@pytest.mark.parametrize(
    "layer,shape,match",
    [
        (Conv2D(2, 5), (1, 1, 3, 3), r"kernel of size 5 is larger than the padded input 3"),
        (Conv1D(1, 3, dilation_rate=3), (1, 1, 6), r"F_eff = 3\*\(3 - 1\) \+ 1 = 7"),
        (Conv3D(1, (1, 1, 4), strides=2), (1, 1, 5, 5, 3), r"sizes \(5, 5, 3\)"),
        (SeparableConv2D(2, 4), (1, 2, 3, 9), r"kernel of size 4.*padded input 3"),
        (DepthwiseConv1D(7), (1, 2, 6), r"kernel of size 7.*padded input 6"),
        (SpatialSeparableConv2D(2, (2, 6)), (1, 2, 9, 5), r"kernel of size 6.*padded input 5"),
    ],
)
def test_kernel_larger_than_input(layer, shape, match):
    with pytest.raises(ShapeError, match=match):
        layer.compute_output_shape(shape)
    with pytest.raises(ShapeError, match=match):
        layer(torch.zeros(shape))


def test_kernel_larger_than_input_after_build():
    layer = Conv2D(2, 3, in_channels=1)
    with pytest.raises(ShapeError, match=r"kernel of size 3 is larger than the padded input 2"):
        layer(torch.zeros(1, 1, 2, 8))


def test_groups_must_divide_channels_and_filters():
    with pytest.raises(ShapeError, match=r"groups=4 must divide.*received 6 input channels"):
        Conv2D(4, 3, groups=4)(torch.zeros(1, 6, 5, 5))
    with pytest.raises(ShapeError, match=r"groups=4.*6 input channels"):
        Conv2D(4, 3, groups=4, in_channels=6)
    with pytest.raises(ShapeError, match=r"groups=4.*6 input channels"):
        Conv2D(4, 3, groups=4).compute_output_shape((1, 6, 5, 5))
    with pytest.raises(ConfigError, match=r"groups=2 must divide filters=3"):
        Conv1D(3, 3, groups=2)


def test_reflect_padding_larger_than_input():
    with pytest.raises(ShapeError, match=r"padding_mode='reflect'.*\(1, 2, 3, 3\)"):
        Conv2D(1, 3, padding=4, padding_mode="reflect")(torch.zeros(1, 2, 3, 3))


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda: Conv2D(0, 3), ConfigError, r"filters a positive int; received 0"),
        (lambda: Conv2D(-2, 3), ConfigError, r"received -2"),
        (lambda: Conv2D(2.5, 3), ConfigError, r"received 2.5"),
        (lambda: Conv2D(2, (3, 3, 3)), ConfigError, r"kernel_size.*received \(3, 3, 3\)"),
        (lambda: Conv2D(2, 0), ConfigError, r"kernel_size.*received 0"),
        (lambda: Conv1D(2, 3, strides=0), ConfigError, r"strides.*received 0"),
        (lambda: Conv3D(2, 3, dilation_rate=(1, 2)), ConfigError, r"dilation_rate.*\(1, 2\)"),
        (
            lambda: Conv2D(2, 3, padding="sam"),
            ConfigError,
            r"'sam'; expected one of 'valid', 'same'",
        ),
        (lambda: Conv2D(2, 3, padding=-1), ConfigError, r"received -1"),
        (lambda: Conv2D(2, 3, padding=(1, 2, 3)), ConfigError, r"received \(1, 2, 3\)"),
        (lambda: Conv2D(2, 3, padding_mode="zero"), ConfigError, r"'zero'.*'zeros'"),
        (lambda: Conv2D(2, 3, activation="rleu"), ConfigError, r"'rleu'.*'relu'"),
        (lambda: Conv2D(2, 3, kernel_initializer="glorot"), ConfigError, r"'glorot'"),
        (lambda: Conv2D(2, 3, use_bias="yes"), ConfigError, r"received 'yes'"),
        (lambda: Conv2D(2, 3, in_channels=0), ConfigError, r"in_channels.*received 0"),
        (lambda: DepthwiseConv2D(3, depth_multiplier=0), ConfigError, r"depth_multiplier.*0"),
        (lambda: SeparableConv2D(4, 3, pointwise_initializer="x"), ConfigError, r"'x'"),
        (lambda: SpatialSeparableConv2D(4, 3, intermediate_filters=0), ConfigError, r"0"),
    ],
)
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


# ------------------------------------------------------------------ depthwise


@pytest.mark.parametrize(
    "nd,stride,padding,dilation,dm",
    list(itertools.product((1, 2, 3), (1, 3), ("valid", "same", 1), (1, 2), (1, 2))),
)
def test_depthwise_grid(nd, stride, padding, dilation, dm):
    shape, kernel = SHAPES[nd], KERNELS[nd]
    c = shape[1]
    layer = randomized(
        DEPTHWISE[nd](
            kernel, stride, padding, depth_multiplier=dm, dilation_rate=dilation, in_channels=c
        )
    )
    assert layer.weight.shape == (c * dm, 1, *kernel)
    x = torch.randn(shape, dtype=torch.float64)
    pads = ref_pads(padding, shape[2:], kernel, stride, dilation)

    def ref(x, w, b):
        return FCONV[nd](F.pad(x, flat(pads)), w, b, stride, 0, dilation, c)

    y = check_against(layer, x, ref, [layer.weight, layer.bias])
    assert layer.compute_output_shape(shape) == tuple(y.shape)
    want = conv_nd(np_(x), np_(layer.weight), np_(layer.bias), stride, padding, dilation, c)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-10, atol=1e-10)
    assert (
        sum(p.numel() for p in layer.parameters())
        == arithmetic.conv_params(c, c * dm, kernel, groups=c)
        == math.prod(kernel) * c * dm + c * dm
    )
    out = y.shape[2:]
    assert layer.count_macs(shape[1:]) == math.prod(kernel) * math.prod(out) * c * dm


# ------------------------------------------------------------------ separable


def separable_dense_kernel(dw: torch.Tensor, pw: torch.Tensor, c: int) -> torch.Tensor:
    """The full kernel of depthwise-then-pointwise: K[f, c] = sum_m pw[f, c dm + m] dw[c dm + m]."""
    dm = dw.shape[0] // c
    dwr = dw.reshape(c, dm, *dw.shape[2:])
    pwr = pw.reshape(pw.shape[0], c, dm)
    return torch.einsum("fcm,cm...->fc...", pwr, dwr)


@pytest.mark.parametrize(
    "nd,stride,padding,dilation,dm",
    list(itertools.product((1, 2), (1, 2), ("valid", "same", "full", "pairs"), (1, 2), (1, 2))),
)
def test_separable_grid(nd, stride, padding, dilation, dm):
    shape, kernel = SHAPES[nd], KERNELS[nd]
    if padding == "pairs":
        padding = PAIRS[nd]
    c = shape[1]
    layer = randomized(
        SEPARABLE[nd](5, kernel, stride, padding, dilation, depth_multiplier=dm, in_channels=c)
    )
    ones = (1,) * nd
    assert layer.depthwise_weight.shape == (c * dm, 1, *kernel)
    assert layer.pointwise_weight.shape == (5, c * dm, *ones)
    x = torch.randn(shape, dtype=torch.float64)
    pads = ref_pads(padding, shape[2:], kernel, stride, dilation)
    conv = FCONV[nd]

    def ref(x, dw, pw, b):  # two functional convolutions
        return conv(conv(F.pad(x, flat(pads)), dw, None, stride, 0, dilation, c), pw, b)

    params = [layer.depthwise_weight, layer.pointwise_weight, layer.bias]
    y = check_against(layer, x, ref, params)
    assert layer.compute_output_shape(shape) == tuple(y.shape)
    dense = separable_dense_kernel(layer.depthwise_weight, layer.pointwise_weight, c)
    want = conv_nd(np_(x), np_(dense), np_(layer.bias), stride, padding, dilation)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-10, atol=1e-10)
    out = y.shape[2:]
    k = math.prod(kernel)
    assert layer.count_macs(shape[1:]) == k * math.prod(out) * c * dm + math.prod(out) * c * dm * 5


@pytest.mark.parametrize("mode", ("reflect", "replicate", "circular"))
def test_separable_padding_mode(mode):
    layer = randomized(SeparableConv2D(3, 3, padding="same", padding_mode=mode, in_channels=2))
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64)
    xp = np.pad(np_(x), [(0, 0), (0, 0), (1, 1), (1, 1)], mode=NP_MODE[mode])
    dense = separable_dense_kernel(layer.depthwise_weight, layer.pointwise_weight, 2)
    want = conv_nd(xp, np_(dense), np_(layer.bias))
    np.testing.assert_allclose(layer(x).detach().numpy(), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("k,c,dm,f", [(3, 32, 1, 64), (5, 3, 2, 8), (1, 4, 3, 2)])
def test_separable_parameter_counts_keras_formula(k, c, dm, f):
    two_d = SeparableConv2D(f, k, depth_multiplier=dm, in_channels=c)
    n2 = sum(p.numel() for p in two_d.parameters())
    assert n2 == k * k * c * dm + c * dm * f + f  # Keras' documented formula
    assert n2 == arithmetic.conv_params(
        c, c * dm, k, groups=c, bias=False
    ) + arithmetic.conv_params(c * dm, f, 1)
    one_d = SeparableConv1D(f, k, depth_multiplier=dm, in_channels=c)
    assert sum(p.numel() for p in one_d.parameters()) == k * c * dm + c * dm * f + f
    no_bias = SeparableConv2D(f, k, depth_multiplier=dm, use_bias=False, in_channels=c)
    assert sum(p.numel() for p in no_bias.parameters()) == k * k * c * dm + c * dm * f


# ------------------------------------------------------------------ spatial separable

SOBEL_X = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]])


@pytest.mark.parametrize("padding", ("valid", "same", "full"))
def test_sobel_factorisation_seed003(padding):
    layer = SpatialSeparableConv2D(1, 3, padding=padding, use_bias=False, in_channels=1).double()
    with torch.no_grad():
        layer.column_weight.copy_(torch.tensor([1.0, 2.0, 1.0]).reshape(1, 1, 3, 1))
        layer.row_weight.copy_(torch.tensor([1.0, 0.0, -1.0]).reshape(1, 1, 1, 3))
    dense = Conv2D(1, 3, padding=padding, use_bias=False, in_channels=1).double()
    with torch.no_grad():
        dense.weight.copy_(torch.from_numpy(SOBEL_X).double()[None, None])
    rng = np.random.default_rng(3)
    for h, w in [(12, 10), (7, 9)]:
        img = rng.normal(size=(h, w))
        x = torch.from_numpy(img)[None, None]
        y = layer(x)[0, 0].detach().numpy()
        want = scipy.signal.correlate2d(img, SOBEL_X, mode=padding)
        np.testing.assert_allclose(y, want, atol=1e-12)
        np.testing.assert_allclose(y, dense(x)[0, 0].detach().numpy(), atol=1e-12)
    # 3 + 3 parameters instead of 9
    assert sum(p.numel() for p in layer.parameters()) == 6


PADS_2D = ("valid", "same", "full", ((1, 0), (0, 2)))
SPATIAL_GRID = list(itertools.product((1, 2, (2, 3)), PADS_2D, (1, (2, 1)), (3, (3, 2)), (None, 1)))


@pytest.mark.parametrize("stride,padding,dilation,kernel,mid", SPATIAL_GRID)
def test_spatial_separable_grid(stride, padding, dilation, kernel, mid):
    shape = (2, 3, 10, 9)
    layer = randomized(
        SpatialSeparableConv2D(
            4, kernel, stride, padding, dilation, intermediate_filters=mid, in_channels=3
        )
    )
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    m = 4 if mid is None else mid
    assert layer.column_weight.shape == (m, 3, kh, 1) and layer.row_weight.shape == (4, m, 1, kw)
    x = torch.randn(shape, dtype=torch.float64)
    pads = ref_pads(padding, shape[2:], (kh, kw), stride, dilation)
    s = (stride, stride) if isinstance(stride, int) else stride
    d = (dilation, dilation) if isinstance(dilation, int) else dilation

    def ref(x, col, row, b):  # the dense kh x kw kernel: sum over m of the outer products
        dense = torch.einsum("fmj,mci->fcij", row[:, :, 0], col[..., 0])
        return F.conv2d(F.pad(x, flat(pads)), dense, b, s, 0, d)

    params = [layer.column_weight, layer.row_weight, layer.bias]
    y = check_against(layer, x, ref, params)
    assert layer.compute_output_shape(shape) == tuple(y.shape)
    assert (
        y.shape[2:] == Conv2D(4, kernel, stride, padding, dilation).compute_output_shape(shape)[2:]
    )
    dense = torch.einsum("fmj,mci->fcij", layer.row_weight[:, :, 0], layer.column_weight[..., 0])
    want = conv_nd(np_(x), np_(dense), np_(layer.bias), stride, padding, dilation)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-10, atol=1e-10)
    h_out, w_out = y.shape[2:]
    assert layer.count_macs(shape[1:]) == kh * h_out * 9 * 3 * m + kw * h_out * w_out * m * 4
    assert sum(p.numel() for p in layer.parameters()) == kh * 3 * m + kw * m * 4 + 4
    rf = [((kh, 1), (s[0], 1), (d[0], 1)), ((1, kw), (1, s[1]), (1, d[1]))]
    assert layer.receptive_field_layers() == rf


@pytest.mark.parametrize("mode", ("reflect", "replicate", "circular"))
def test_spatial_separable_padding_mode(mode):
    kw = dict(padding_mode=mode, intermediate_filters=1, in_channels=2)
    layer = randomized(SpatialSeparableConv2D(2, 3, 2, "same", **kw))
    x = torch.randn(1, 2, 7, 8, dtype=torch.float64)
    pads = [keras_same(7, 3, 2, 1), keras_same(8, 3, 2, 1)]
    xp = np.pad(np_(x), [(0, 0), (0, 0), *pads], mode=NP_MODE[mode])
    dense = torch.einsum("fmj,mci->fcij", layer.row_weight[:, :, 0], layer.column_weight[..., 0])
    want = conv_nd(xp, np_(dense), np_(layer.bias), 2)
    np.testing.assert_allclose(layer(x).detach().numpy(), want, rtol=1e-10, atol=1e-10)
