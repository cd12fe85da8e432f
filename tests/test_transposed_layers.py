"""Conv1DTranspose/2DTranspose/3DTranspose against independent references.

Sizes: cnnkit.ops.arithmetic.transposed_conv_output_size (Keras' formulas for the string
paddings, PyTorch's for ints). Values: the adjoint property -- a transposed convolution
is the input gradient of the matching convolution of its output size (TensorFlow's
definition of 'same'/'valid'), computed with torch.autograd; F.conv_transposeNd for int
pads; the NumPy scatter-add reference and the matrix K^T (seed 003).
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
from cnnkit.layers.transposed import Conv1DTranspose, Conv2DTranspose, Conv3DTranspose
from cnnkit.ops import arithmetic
from cnnkit.ops.reference import conv_matrix, conv_transpose_nd, transposed_conv_1d

TRANSPOSED = {1: Conv1DTranspose, 2: Conv2DTranspose, 3: Conv3DTranspose}
FCONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
FCONVT = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
SHAPES = {1: (2, 4, 8), 2: (2, 4, 6, 5), 3: (1, 4, 3, 6, 3)}
KERNELS = {1: (4,), 2: (3, 2), 3: (2, 3, 2)}
PAIRS = {1: ((2, 1),), 2: ((0, 2), (1, 0)), 3: ((1, 0), (0, 1), (1, 1))}


def keras_same(n: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TensorFlow's SAME pads of a convolution of an input of size n."""
    k_eff = d * (k - 1) + 1
    out = -(-n // s)
    total = max((out - 1) * s + k_eff - n, 0)
    return total // 2, total - total // 2


def adjoint_conv_pads(padding, out_sizes, kernel, stride, dilation):
    """Pads of the convolution (of the transposed layer's output size L) it is the adjoint of."""
    nd = len(out_sizes)
    if padding == "same":
        return [keras_same(n, k, stride, dilation) for n, k in zip(out_sizes, kernel)]
    if padding == "valid":
        return [(0, 0)] * nd
    if padding == "full":
        return [(dilation * (k - 1),) * 2 for k in kernel]
    if isinstance(padding, int):
        return [(padding, padding)] * nd
    return list(padding)


def flat(pads) -> list[int]:
    out: list[int] = []
    for b, a in reversed(pads):
        out += [b, a]
    return out


def randomized(layer):
    layer = layer.double()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn_like(p))
    return layer


def np_(t):
    return None if t is None else t.detach().numpy()


def grid():
    """Valid (nd, stride, padding, output_padding, dilation, groups) configurations."""
    out = []
    for nd, s, padding, with_op, d, g in itertools.product(
        (1, 2, 3), (1, 2, 3), ("valid", "same", "full", 1, "pairs"), (False, True), (1, 2), (1, 2)
    ):
        op = None
        if with_op:
            op = s - 1  # < stride, so the matching convolution gives back N
            k_effs = [d * (k - 1) + 1 for k in KERNELS[nd]]
            if padding == "same" and any(not 1 <= ke % 2 + op <= s for ke in k_effs):
                continue  # rejected, as TensorFlow rejects it (test_same_output_padding_rejected)
        out.append((nd, s, padding, op, d, g))
    return out


@pytest.mark.parametrize("nd,stride,padding,output_padding,dilation,groups", grid())
def test_transposed_grid_is_adjoint_of_conv(nd, stride, padding, output_padding, dilation, groups):
    shape, kernel = SHAPES[nd], KERNELS[nd]
    if padding == "pairs":
        padding = PAIRS[nd]
    layer = randomized(
        TRANSPOSED[nd](
            6, kernel, stride, padding, output_padding, dilation, groups, in_channels=shape[1]
        )
    )
    assert layer.weight.shape == (shape[1], 6 // groups, *kernel)
    specs = [padding] * nd if not isinstance(padding, tuple) else list(padding)
    sizes = tuple(
        arithmetic.transposed_conv_output_size(n, k, stride, p, output_padding, dilation)
        for n, k, p in zip(shape[2:], kernel, specs)
    )
    pads = adjoint_conv_pads(padding, sizes, kernel, stride, dilation)
    conv = FCONV[nd]

    def adjoint(y, w, b):
        x = torch.zeros((y.shape[0], 6, *sizes), dtype=y.dtype, requires_grad=True)
        c = conv(F.pad(x, flat(pads)), w, None, stride, 0, dilation, groups)
        assert c.shape == y.shape  # the convolution of L gives back N
        (gx,) = torch.autograd.grad(c, x, y, create_graph=True)
        return gx + b.reshape(1, -1, *(1,) * nd)

    y = torch.randn(shape, dtype=torch.float64)
    y1 = y.clone().requires_grad_()
    out = layer(y1)
    assert tuple(out.shape[2:]) == sizes
    assert layer.compute_output_shape(shape) == tuple(out.shape)
    assert layer.compute_output_shape(shape[1:]) == tuple(out.shape[1:])
    y2 = y.clone().requires_grad_()
    w2 = layer.weight.detach().clone().requires_grad_()
    b2 = layer.bias.detach().clone().requires_grad_()
    want = adjoint(y2, w2, b2)
    torch.testing.assert_close(out, want)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, [y1, layer.weight, layer.bias], g)
    ref = torch.autograd.grad(want, [y2, w2, b2], g)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b)

    # <C x, y> == <x, C^T y> without bias
    x = torch.randn((shape[0], 6, *sizes), dtype=torch.float64)
    cx = conv(F.pad(x, flat(pads)), layer.weight, None, stride, 0, dilation, groups)
    ct_y = out - layer.bias.reshape(1, -1, *(1,) * nd)
    torch.testing.assert_close((cx * y).sum(), (x * ct_y).sum())

    # NumPy scatter-add (seed 003) with no padding, then the adjoint's crop [before, before + L)
    full = conv_transpose_nd(np_(y), np_(layer.weight), None, stride, 0, 0, dilation, groups)
    extra = [(0, max(0, b + n - f)) for (b, _), n, f in zip(pads, sizes, full.shape[2:])]
    full = np.pad(full, [(0, 0), (0, 0), *extra])
    crop = tuple(slice(b, b + n) for (b, _), n in zip(pads, sizes))
    ref_np = full[(slice(None), slice(None), *crop)] + np_(layer.bias).reshape(1, -1, *(1,) * nd)
    np.testing.assert_allclose(out.detach().numpy(), ref_np, rtol=1e-10, atol=1e-10)

    if isinstance(padding, int):  # PyTorch's own op and the reference with int pads
        op = output_padding or 0
        torch.testing.assert_close(
            out,
            FCONVT[nd](y, layer.weight, layer.bias, stride, padding, op, groups, dilation),
        )
        np.testing.assert_allclose(
            out.detach().numpy(),
            conv_transpose_nd(
                np_(y), np_(layer.weight), np_(layer.bias), stride, padding, op, dilation, groups
            ),
            rtol=1e-10,
            atol=1e-10,
        )


def k_transpose_grid():
    out = []
    for nd, padding, s, d, with_op in itertools.product(
        (1, 2), ("same", "valid", "full", ((1, 2),)), (1, 2, 3), (1, 2), (False, True)
    ):
        op = s - 1 if with_op else None
        k_effs = [d * (k - 1) + 1 for k in (3, 2)[:nd]]
        if padding == "same" and with_op and any(not 1 <= ke % 2 + op <= s for ke in k_effs):
            continue  # rejected, see test_same_output_padding_rejected
        out.append((nd, padding, s, d, op))
    return out


@pytest.mark.parametrize("nd,padding,stride,dilation,output_padding", k_transpose_grid())
def test_single_channel_is_k_transpose(nd, padding, stride, dilation, output_padding):
    """``K^T @ y`` with K = conv_matrix of the convolution of the output size (seed 003)."""
    kernel = (3, 2)[:nd]
    if isinstance(padding, tuple) and nd == 2:
        padding = ((1, 2), (0, 1))
    n = (6, 5)[:nd]
    layer = randomized(
        TRANSPOSED[nd](
            1, kernel, stride, padding, output_padding, dilation, use_bias=False, in_channels=1
        )
    )
    y = torch.randn((1, 1, *n), dtype=torch.float64)
    out = layer(y)[0, 0].detach().numpy()
    sizes = out.shape
    pads = adjoint_conv_pads(padding, sizes, kernel, stride, dilation)
    K = conv_matrix(np_(layer.weight)[0, 0], sizes, stride, pads, dilation)
    assert K.shape == (math.prod(n), math.prod(sizes))
    np.testing.assert_allclose(out.ravel(), K.T @ np_(y).ravel(), atol=1e-12)


# ------------------------------------------------------------------ Keras sizes


@pytest.mark.parametrize(
    "n,k,s,d", list(itertools.product((1, 4, 7), (1, 2, 3, 5), (1, 2, 3), (1, 2)))
)
def test_keras_size_formulas(n, k, s, d):
    k_eff = d * (k - 1) + 1
    want = {
        "same": n * s,
        "valid": n * s + max(k_eff - s, 0),
        "full": n * s - (s + k_eff - 2),
    }
    for padding, size in want.items():
        if size < 1:
            continue
        layer = Conv1DTranspose(2, k, s, padding, dilation_rate=d, in_channels=1)
        assert layer(torch.zeros(1, 1, n)).shape[-1] == size
        assert layer.compute_output_shape((1, 1, n))[-1] == size
        assert arithmetic.transposed_conv_output_size(n, k, s, padding, None, d) == size


@pytest.mark.parametrize("padding", ("same", "valid", "full"))
@pytest.mark.parametrize("k,s,op", [(3, 2, 1), (5, 3, 2), (3, 3, 0), (4, 2, 1), (2, 3, 2)])
def test_explicit_output_padding_keras_formula(padding, k, s, op):
    pad = {"same": k // 2, "valid": 0, "full": k - 1}[padding]
    n = 4
    size = (n - 1) * s + k - 2 * pad + op
    assert padding != "same" or 1 <= k % 2 + op <= s  # TensorFlow accepts these
    layer = Conv1DTranspose(1, k, s, padding, output_padding=op, in_channels=1)
    assert layer(torch.zeros(1, 1, n)).shape[-1] == size
    assert layer.compute_output_shape((None, 1, n)) == (None, 1, size)


# ------------------------------------------------------------------ decks' examples


def test_seed003_k_transpose_example():
    w1, w2, w3 = 2.0, 3.0, 5.0
    z7, z8, z9, z10 = 7.0, 8.0, 9.0, 10.0
    slide = [
        w1 * z7,
        w2 * z7 + w1 * z8,
        w3 * z7 + w2 * z8 + w1 * z9,
        w3 * z8 + w2 * z9 + w1 * z10,
        w3 * z9 + w2 * z10,
        w3 * z10,
    ]
    K = np.array(
        [
            [w1, w2, w3, 0, 0, 0],
            [0, w1, w2, w3, 0, 0],
            [0, 0, w1, w2, w3, 0],
            [0, 0, 0, w1, w2, w3],
        ]
    )
    z = np.array([z7, z8, z9, z10])
    layer = Conv1DTranspose(1, 3, use_bias=False, in_channels=1).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([w1, w2, w3]).reshape(1, 1, 3))
    out = layer(torch.from_numpy(z).reshape(1, 1, 4))[0, 0].detach().numpy()
    assert out.shape == (6,)  # 4 -> 6
    np.testing.assert_array_equal(out, slide)
    np.testing.assert_array_equal(out, K.T @ z)
    np.testing.assert_array_equal(out, transposed_conv_1d(z, [w1, w2, w3]))


def test_seed003_2x2_to_4x4_is_full_padded_conv():
    """2x2 -> 4x4 with k=3, s=1: a convolution with p'=2 (full) and the flipped kernel."""
    layer = randomized(Conv2DTranspose(1, 3, use_bias=False, in_channels=1))
    y = torch.randn(1, 1, 2, 2, dtype=torch.float64)
    out = layer(y)[0, 0].detach().numpy()
    assert out.shape == (4, 4)
    w = np_(layer.weight)[0, 0]
    np.testing.assert_allclose(out, scipy.signal.convolve2d(np_(y)[0, 0], w, mode="full"))
    np.testing.assert_allclose(
        out, scipy.signal.correlate2d(np.pad(np_(y)[0, 0], 2), w[::-1, ::-1], mode="valid")
    )


# ------------------------------------------------------------------ misc


def test_activation_and_attributes():
    layer = randomized(
        Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu", in_channels=2)
    )
    y = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    out = layer(y)
    assert out.shape == (1, 4, 6, 6) and bool((out >= 0).all())
    assert (layer.filters, layer.kernel_size, layer.strides, layer.padding) == (
        4,
        (3, 3),
        (2, 2),
        "same",
    )
    assert layer.activation == "relu" and layer.output_padding is None and layer.use_bias
    lazy = Conv3DTranspose(2, 2, groups=2)
    assert not lazy.built
    lazy(torch.zeros(1, 4, 2, 2, 2))
    assert lazy.weight.shape == (4, 1, 2, 2, 2)
    assert lazy.receptive_field_layers() == []


def test_count_macs():
    layer = Conv2DTranspose(8, 3, strides=2, padding="same", groups=2, in_channels=4)
    # every input element scatters a 3x3 kernel to the 8/2 outputs of its group
    assert layer.count_macs((4, 5, 6)) == 5 * 6 * 4 * 3 * 3 * 4
    assert sum(p.numel() for p in layer.parameters()) == arithmetic.conv_params(4, 8, 3, groups=2)


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        (
            Conv1DTranspose,
            dict(filters=3, kernel_size=3, strides=2, padding=((2, 0),), output_padding=1),
        ),
        (
            Conv2DTranspose,
            dict(
                filters=4,
                kernel_size=(3, 2),
                strides=2,
                padding="same",
                groups=2,
                activation="tanh",
            ),
        ),
        (Conv3DTranspose, dict(filters=2, kernel_size=2, padding="full", dilation_rate=2)),
    ],
)
def test_get_config_round_trip(cls, kwargs):
    layer = randomized(cls(**kwargs, in_channels=4))
    cfg = layer.get_config()
    again = cls(**json.loads(json.dumps(cfg))).double()
    again.load_state_dict(layer.state_dict())
    x = torch.randn((1, 4) + (3,) * layer.spatial_dims, dtype=torch.float64)
    torch.testing.assert_close(again(x), layer(x))
    assert json.loads(json.dumps(again.get_config())) == json.loads(json.dumps(cfg))


# ------------------------------------------------------------------ bad inputs


def test_same_output_padding_rejected():
    with pytest.raises(ConfigError, match=r"output_padding=0.*F_eff = 2.*between 1 and 2"):
        Conv1DTranspose(1, 2, strides=2, padding="same", output_padding=0)


@pytest.mark.parametrize(
    "make,error,match",
    [
        (
            lambda: Conv2DTranspose(2, 3, strides=2, output_padding=2),
            ConfigError,
            r"max\(2, 1\) = 2\); received output_padding=\(2, 2\)",
        ),
        (lambda: Conv1DTranspose(2, 3, output_padding=-1), ConfigError, r"received -1"),
        (lambda: Conv1DTranspose(3, 3, groups=2), ConfigError, r"groups=2 must divide filters=3"),
        (lambda: Conv2DTranspose(0, 3), ConfigError, r"filters a positive int; received 0"),
        (lambda: Conv2DTranspose(2, 3, padding="vaild"), ConfigError, r"'vaild'"),
        (lambda: Conv2DTranspose(2, (3, 3, 3)), ConfigError, r"received \(3, 3, 3\)"),
        (lambda: Conv2DTranspose(2, 3, activation="sigmod"), ConfigError, r"'sigmod'"),
        (
            lambda: Conv2DTranspose(4, 3, groups=4, in_channels=6),
            ShapeError,
            r"groups=4.*6 input channels",
        ),
    ],
)
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_bad_inputs():
    with pytest.raises(ShapeError, match=r"4-D input.*received shape \(2, 5, 5\).*unsqueeze"):
        Conv2DTranspose(2, 3)(torch.zeros(2, 5, 5))
    layer = Conv2DTranspose(2, 3)
    layer(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ShapeError, match="built for 3 input channels; received 2"):
        layer(torch.zeros(1, 2, 4, 4))
    with pytest.raises(ShapeError, match=r"groups=2.*3 input channels"):
        Conv1DTranspose(2, 3, groups=2)(torch.zeros(1, 3, 4))
    small = Conv1DTranspose(1, 3, padding=3, in_channels=1)
    with pytest.raises(ShapeError, match=r"output size is -2 \(\(2 - 1\)\*1 - 6 \+ 3 \+ 0 = -2\)"):
        small(torch.zeros(1, 1, 2))
    with pytest.raises(ShapeError, match=r"sizes \(2,\)"):
        small.compute_output_shape((1, 1, 2))
