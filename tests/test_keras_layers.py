"""Keras-named layers added for issue 18, against torch.nn.functional references (these
run without Keras; tests/test_keras_parity.py compares with real Keras when present)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cnnkit._core.errors import ConfigError, ShapeError
from cnnkit.layers import (
    Activation,
    Conv1D,
    Conv2DTranspose,
    Cropping1D,
    Cropping2D,
    Cropping3D,
    Dense,
    DepthwiseConv1D,
    DepthwiseConv2D,
    LeakyReLU,
    ReLU,
    SeparableConv1D,
    SeparableConv2D,
    ZeroPadding1D,
    ZeroPadding2D,
    ZeroPadding3D,
)
from cnnkit.layers.padding import normalize_cropping

PAD_CASES = [
    (ZeroPadding1D, 2, [2, 2]),
    (ZeroPadding1D, (1, 3), [1, 3]),
    (ZeroPadding2D, 1, [1, 1, 1, 1]),
    (ZeroPadding2D, (1, 2), [2, 2, 1, 1]),
    (ZeroPadding2D, ((1, 0), (3, 2)), [3, 2, 1, 0]),
    (ZeroPadding3D, (1, 0, 2), [2, 2, 0, 0, 1, 1]),
    (ZeroPadding3D, ((0, 1), (2, 0), (1, 1)), [1, 1, 2, 0, 0, 1]),
]


@pytest.mark.parametrize(("cls", "arg", "fpad"), PAD_CASES)
def test_zero_padding_equals_f_pad(cls, arg, fpad):
    x = torch.randn(2, 3, *([5] * cls.spatial_dims))
    layer = cls(arg)
    y = layer(x)
    torch.testing.assert_close(y, F.pad(x, fpad))
    assert layer.compute_output_shape(x.shape) == tuple(y.shape)


@pytest.mark.parametrize(("cls", "arg", "fpad"), PAD_CASES)
def test_cropping_undoes_zero_padding(cls, arg, fpad):
    x = torch.randn(2, 3, *([4] * cls.spatial_dims))
    crop = {ZeroPadding1D: Cropping1D, ZeroPadding2D: Cropping2D, ZeroPadding3D: Cropping3D}[cls]
    padded = cls(arg)(x)
    layer = crop(arg)
    torch.testing.assert_close(layer(padded), x)
    assert layer.compute_output_shape(padded.shape) == tuple(x.shape)


def test_cropping2d_slices_as_keras_documents():
    x = torch.arange(2 * 6 * 7.0).reshape(1, 2, 6, 7)
    torch.testing.assert_close(Cropping2D(((1, 2), (0, 3)))(x), x[:, :, 1:4, 0:4])
    torch.testing.assert_close(Cropping2D((1, 2))(x), x[:, :, 1:5, 2:5])
    torch.testing.assert_close(Cropping2D()(x), x)  # Keras' default ((0, 0), (0, 0))


def test_cropping_everything_is_an_explained_shape_error():
    with pytest.raises(ShapeError, match=r"crops 3 \+ 2 = 5 elements from a spatial size of 5"):
        Cropping1D((3, 2))(torch.zeros(1, 1, 5))
    with pytest.raises(ShapeError, match="at least one must remain"):
        Cropping2D(((0, 0), (2, 2))).compute_output_shape((None, 3, 8, 4))


@pytest.mark.parametrize("bad", [-1, (1, 2, 3), ((1, 2), (3,)), "same", 1.5, True])
def test_bad_padding_and_cropping_arguments_name_the_value(bad):
    with pytest.raises(ConfigError, match="ZeroPadding2D expects padding"):
        ZeroPadding2D(bad)
    with pytest.raises(ConfigError, match="Cropping2D expects cropping"):
        Cropping2D(bad)


def test_normalize_cropping_forms():
    assert normalize_cropping(2, 2, "X", "padding") == ((2, 2), (2, 2))
    assert normalize_cropping((1, 2), 1, "X", "padding") == ((1, 2),)
    assert normalize_cropping((1, 2), 2, "X", "padding") == ((1, 1), (2, 2))


@pytest.mark.parametrize(("k", "d", "s"), [(3, 1, 1), (4, 2, 1), (2, 3, 2), (1, 1, 1)])
def test_causal_conv1d_is_left_padded_conv(k, d, s):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 11)
    layer = Conv1D(4, k, strides=s, padding="causal", dilation_rate=d)
    y = layer(x)
    ref = F.conv1d(F.pad(x, [d * (k - 1), 0]), layer.weight, layer.bias, s, 0, d)
    torch.testing.assert_close(y, ref)
    assert layer.compute_output_shape(x.shape) == tuple(y.shape)
    if s == 1:
        # output[t] depends on x[:t + 1] only
        x2 = x.clone()
        x2[..., 6:] += 1.0
        torch.testing.assert_close(layer(x2)[..., :6], y[..., :6])


def test_causal_depthwise_and_separable_1d():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9)
    dw = DepthwiseConv1D(3, padding="causal", depth_multiplier=2, dilation_rate=2)
    y = dw(x)
    torch.testing.assert_close(y, F.conv1d(F.pad(x, [4, 0]), dw.weight, dw.bias, 1, 0, 2, 3))
    sep = SeparableConv1D(5, 2, padding="causal")
    y = sep(x)
    mid = F.conv1d(F.pad(x, [1, 0]), sep.depthwise_weight, None, groups=3)
    torch.testing.assert_close(y, F.conv1d(mid, sep.pointwise_weight, sep.bias))


def test_causal_is_refused_where_it_means_nothing():
    from cnnkit.layers import Conv1DTranspose, Conv2D

    with pytest.raises(ConfigError, match="Unknown padding 'causal'"):
        Conv2D(2, 3, padding="causal")
    with pytest.raises(ConfigError, match="Unknown padding 'causal'"):
        Conv1DTranspose(2, 3, padding="causal")


def test_leaky_relu_uses_keras_slope():
    x = torch.linspace(-3, 3, 13)
    torch.testing.assert_close(Activation("leaky_relu")(x), F.leaky_relu(x, 0.2))
    dense = Dense(4, activation="leaky_relu", in_features=3)
    z = torch.randn(5, 3)
    torch.testing.assert_close(dense(z), F.leaky_relu(F.linear(z, dense.weight, dense.bias), 0.2))
    torch.testing.assert_close(LeakyReLU()(x), F.leaky_relu(x, 0.3))  # the layer: Keras' 0.3
    torch.testing.assert_close(LeakyReLU(negative_slope=0.05)(x), F.leaky_relu(x, 0.05))
    with pytest.raises(ConfigError, match="negative_slope"):
        LeakyReLU(negative_slope="big")


def test_relu_layer_arguments():
    x = torch.linspace(-3, 3, 25)
    torch.testing.assert_close(ReLU()(x), torch.relu(x))
    torch.testing.assert_close(ReLU(max_value=6.0)(x * 3), F.relu6(x * 3))
    y = ReLU(negative_slope=0.1, threshold=1.0)(x)
    torch.testing.assert_close(y, torch.where(x >= 1, x, 0.1 * (x - 1)))


def _max_abs(layer_fn, n=6):
    return max(float(layer_fn().detach().abs().max()) for _ in range(n))


def test_depthwise_glorot_fans_are_keras_fans():
    """Keras: kernel (k, k, C, dm) -> fan_in = C k^2, fan_out = dm k^2 (issue: 0.1095)."""
    torch.manual_seed(0)
    limit = math.sqrt(6 / (16 * 25 + 4 * 25))
    assert abs(limit - 0.1095) < 1e-4
    got = _max_abs(lambda: DepthwiseConv2D(5, depth_multiplier=4, in_channels=16).weight)
    assert 0.97 * limit < got <= limit
    got = _max_abs(
        lambda: SeparableConv2D(8, 5, depth_multiplier=4, in_channels=16).depthwise_weight
    )
    assert 0.97 * limit < got <= limit


def test_transposed_he_uniform_fan_in_is_keras():
    """Keras' transposed kernel (k, k, filters, C_in): fan_in = filters k^2."""
    torch.manual_seed(0)
    limit = math.sqrt(6 / (2 * 9))  # filters=2, C_in=32
    got = _max_abs(
        lambda: Conv2DTranspose(2, 3, kernel_initializer="he_uniform", in_channels=32).weight
    )
    assert 0.97 * limit < got <= limit
