"""Inception module (seed 003) and ResidualBlock against hand formulas, functional
references and torchvision's GoogLeNet / ResNet blocks."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit import ConfigError, ShapeError
from cnnkit.layers import Inception, ResidualBlock, Sequential
from cnnkit.ops.arithmetic import conv_params

tv_googlenet = importlib.import_module("torchvision.models.googlenet")
tv_resnet = importlib.import_module("torchvision.models.resnet")


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _randomize_bn(bn: nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        c = bn.num_features
        bn.weight.copy_(torch.rand(c, generator=gen) + 0.5)
        bn.bias.copy_(torch.randn(c, generator=gen))
        bn.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
        bn.running_var.copy_(torch.rand(c, generator=gen) + 0.5)


# --------------------------------------------------------------------------- Inception


def test_naive_inception_seed003_672():
    m = Inception(128, 192, 96)
    # seed 003: 28 x 28 x (128 + 192 + 96 + 256) = 28 x 28 x 672
    assert m.compute_output_shape((None, 256, 28, 28)) == (None, 672, 28, 28)
    y = m(torch.randn(1, 256, 28, 28))
    assert y.shape == (1, 672, 28, 28)
    assert m.compute_output_shape((None, 256, 28, 28)) == (None, 672, 28, 28)  # built: composed
    # the pooled input passes through unchanged in the last 256 channels (max pooling, stride 1)
    x = torch.randn(1, 256, 6, 6)
    ref_pool = F.max_pool2d(x, 3, 1, 1)
    torch.testing.assert_close(m(x)[:, 416:], ref_pool)


GOOGLENET_3A = dict(pool_projection=32, reduce_3x3=96, reduce_5x5=16)


def test_googlenet_3a_shape_params_macs():
    m = Inception(64, 128, 32, **GOOGLENET_3A)
    assert m.compute_output_shape((None, 192, 28, 28)) == (None, 256, 28, 28)
    assert m(torch.zeros(1, 192, 28, 28)).shape == (1, 256, 28, 28)
    expected = (
        conv_params(192, 64, 1)
        + conv_params(192, 96, 1)
        + conv_params(96, 128, 3)
        + conv_params(192, 16, 1)
        + conv_params(16, 32, 5)
        + conv_params(192, 32, 1)
    )
    assert n_params(m) == expected
    # hand count from the decks' formula F^2 * out^2 * C_in * C_out, per conv
    hand = 28 * 28 * (192 * 64 + 192 * 96 + 9 * 96 * 128 + 192 * 16 + 25 * 16 * 32 + 192 * 32)
    assert m.count_macs((None, 192, 28, 28)) == hand
    assert m.receptive_field_layers() == [((5, 5), (1, 1), (1, 1))]


def test_googlenet_3a_vs_torchvision():
    ours = Inception(64, 128, 32, **GOOGLENET_3A, batch_norm=True, use_bias=False, in_channels=192)
    tv = tv_googlenet.Inception(192, 64, 96, 128, 16, 32, 32)
    # torchvision's 'branch3' uses a 3x3 kernel instead of the paper's 5x5 (a documented
    # bug, pytorch/vision#906): its count is smaller by 16 * 32 * (5*5 - 3*3)
    assert n_params(ours) == n_params(tv) + 16 * 32 * (25 - 9)
    tv_bn_params = 2 * (64 + 96 + 128 + 16 + 32 + 32)
    assert n_params(Inception(64, 128, 32, **GOOGLENET_3A, use_bias=False, in_channels=192)) == (
        n_params(tv) - tv_bn_params + 16 * 32 * 16
    )

    # forward equality on the branches that agree: copy the weights, eval mode
    gen = torch.Generator().manual_seed(0)
    ours, tv = ours.double().eval(), tv.double().eval()
    pairs = [
        (ours.branch1x1, [tv.branch1]),
        (ours.branch3x3, list(tv.branch2)),
        (ours.branch_pool, [tv.branch4[1]]),
    ]
    for seq, basics in pairs:
        convs = [m for m in seq if type(m).__name__ == "Conv2D"]
        bns = [m for m in seq if type(m).__name__ == "BatchNormalization"]
        for conv, bn, basic in zip(convs, bns, basics):
            with torch.no_grad():
                conv.weight.copy_(
                    torch.randn(conv.weight.shape, generator=gen, dtype=torch.float64) * 0.1
                )
                basic.conv.weight.copy_(conv.weight)
            _randomize_bn(basic.bn, gen)
            bn.bn.load_state_dict(basic.bn.state_dict())
    x = torch.randn(2, 192, 7, 7, dtype=torch.float64)
    y, ref = ours(x), tv(x)
    torch.testing.assert_close(y[:, :192], ref[:, :192], rtol=1e-10, atol=1e-10)  # 1x1 and 3x3
    torch.testing.assert_close(y[:, 224:], ref[:, 224:], rtol=1e-10, atol=1e-10)  # pool proj


def _inception_reference(m: Inception, x: torch.Tensor) -> torch.Tensor:
    """The module written out with F.conv2d / F.max_pool2d ('same' = symmetric pads here)."""

    def conv(c, t, k):
        return torch.relu(F.conv2d(t, c.weight, c.bias, padding=k // 2))

    b1 = conv(m.branch1x1[0], x, 1)
    b2 = conv(m.branch3x3[1], conv(m.branch3x3[0], x, 1), 3)
    b3 = conv(m.branch5x5[1], conv(m.branch5x5[0], x, 1), 5)
    b4 = conv(m.branch_pool[1], F.max_pool2d(x, 3, 1, 1), 1)
    return torch.cat([b1, b2, b3, b4], 1)


@pytest.mark.parametrize("hw", [(7, 7), (5, 8)])
def test_inception_matches_functional_reference_fwd_bwd(hw):
    m = Inception(4, 6, 3, pool_projection=2, reduce_3x3=5, reduce_5x5=2, in_channels=8).double()
    x = torch.randn(2, 8, *hw, dtype=torch.float64, requires_grad=True)
    y = m(x)
    xr = x.detach().clone().requires_grad_(True)
    ref = _inception_reference(m, xr)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-12)
    up = torch.randn(y.shape, dtype=torch.float64)
    w = m.branch5x5[1].weight
    g_x, g_w = torch.autograd.grad(y, [x, w], up)
    r_x, r_w = torch.autograd.grad(ref, [xr, w], up)
    torch.testing.assert_close(g_x, r_x, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_w, r_w, rtol=1e-10, atol=1e-12)
    assert m.compute_output_shape((None, 8, *hw)) == (None, 15, *hw)


def test_inception_errors_and_config():
    with pytest.raises(ConfigError, match="filters_1x1.*received 0"):
        Inception(0, 1, 1)
    with pytest.raises(ConfigError, match="reduce_3x3.*-2"):
        Inception(1, 1, 1, reduce_3x3=-2)
    m = Inception(2, 2, 2, in_channels=3)
    with pytest.raises(ShapeError, match="received 4 channels"):
        m(torch.zeros(1, 4, 5, 5))
    with pytest.raises(ShapeError, match=r"received shape \(4, 5, 5\)"):
        m(torch.zeros(4, 5, 5))
    cfg = Inception(64, 128, 32, **GOOGLENET_3A, in_channels=192).get_config()
    assert n_params(Inception(**cfg)) == 163_696


# --------------------------------------------------------------------------- ResidualBlock


def _tv_block(inplanes: int, planes: int, stride: int, bottleneck: bool) -> nn.Module:
    cls = tv_resnet.Bottleneck if bottleneck else tv_resnet.BasicBlock
    out = planes * cls.expansion
    down = None
    if stride != 1 or inplanes != out:
        down = nn.Sequential(tv_resnet.conv1x1(inplanes, out, stride), nn.BatchNorm2d(out))
    return cls(inplanes, planes, stride, down)


def _copy_into_torchvision(ours: ResidualBlock, tv: nn.Module, gen: torch.Generator) -> None:
    names = ["1", "2", "3"] if ours.bottleneck else ["1", "2"]
    pairs = [
        (
            getattr(ours, "conv" + n),
            getattr(ours, "bn" + n),
            getattr(tv, "conv" + n),
            getattr(tv, "bn" + n),
        )
        for n in names
    ]
    if ours.shortcut is not None:
        pairs.append((ours.shortcut[0], ours.shortcut[1], tv.downsample[0], tv.downsample[1]))
    else:
        assert tv.downsample is None
    for conv, bn, tconv, tbn in pairs:
        with torch.no_grad():
            conv.weight.copy_(
                torch.randn(conv.weight.shape, generator=gen, dtype=conv.weight.dtype) * 0.2
            )
            tconv.weight.copy_(conv.weight)
        _randomize_bn(tbn, gen)
        bn.bn.load_state_dict(tbn.state_dict())


RES_CONFIGS = [
    # inplanes, planes, stride, bottleneck, hw
    (8, 8, 1, False, (6, 6)),  # identity shortcut
    (8, 16, 2, False, (7, 6)),  # projection: stride and channels
    (8, 16, 1, False, (5, 5)),  # projection: channels only
    (16, 4, 1, True, (5, 6)),  # bottleneck, identity (16 == 4 * 4)
    (8, 4, 2, True, (7, 7)),  # bottleneck, projection
]


@pytest.mark.parametrize("inplanes,planes,stride,bottleneck,hw", RES_CONFIGS)
def test_residual_block_matches_torchvision(inplanes, planes, stride, bottleneck, hw):
    ours = ResidualBlock(
        planes,
        strides=stride,
        bottleneck=bottleneck,
        in_channels=inplanes,
        bn_epsilon=1e-5,
        bn_momentum=0.9,
    ).double()
    tv = _tv_block(inplanes, planes, stride, bottleneck).double()
    assert n_params(ours) == n_params(tv)
    assert (ours.shortcut is None) == (tv.downsample is None)
    _copy_into_torchvision(ours, tv, torch.Generator().manual_seed(1))

    x = torch.randn(3, inplanes, *hw, dtype=torch.float64)
    # eval mode: running statistics
    torch.testing.assert_close(ours.eval()(x), tv.eval()(x), rtol=1e-10, atol=1e-10)
    # train mode: batch statistics, gradients, running-stat updates
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    ya, yb = ours.train()(xa), tv.train()(xb)
    torch.testing.assert_close(ya, yb, rtol=1e-10, atol=1e-10)
    up = torch.randn(ya.shape, dtype=torch.float64)
    ga = torch.autograd.grad(ya, [xa, ours.conv1.weight], up)
    gb = torch.autograd.grad(yb, [xb, tv.conv1.weight], up)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(ours.bn1.bn.running_mean, tv.bn1.running_mean)
    torch.testing.assert_close(ours.bn2.bn.running_var, tv.bn2.running_var)
    assert ours.compute_output_shape((None, inplanes, *hw)) == (None, *ya.shape[1:])
    assert ResidualBlock(planes, stride, bottleneck).compute_output_shape(
        (None, inplanes, *hw)
    ) == (
        None,
        *ya.shape[1:],
    )


def test_residual_block_macs_and_receptive_field():
    # basic block 8 -> 16, stride 2 on 8x8: out 4x4
    b = ResidualBlock(16, strides=2, in_channels=8)
    hand = 9 * 16 * 8 * 16 + 9 * 16 * 16 * 16 + 16 * 8 * 16  # conv1, conv2, shortcut (4x4 = 16)
    assert b.count_macs((None, 8, 8, 8)) == hand
    assert b.receptive_field_layers() == [((3, 3), (2, 2), (1, 1)), ((3, 3), (1, 1), (1, 1))]
    bb = ResidualBlock(4, strides=2, bottleneck=True, in_channels=8)
    hand = (
        64 * 8 * 4 + 16 * 9 * 4 * 4 + 16 * 4 * 16 + 16 * 8 * 16
    )  # 1x1@8x8, 3x3@4x4, 1x1, shortcut
    assert bb.count_macs((None, 8, 8, 8)) == hand
    rows = Sequential([bb], input_shape=(8, 8, 8)).summary(print_fn=lambda line: None)
    assert rows[0].receptive_field == 3 and rows[0].jump == 2


def test_residual_block_errors():
    with pytest.raises(ConfigError, match="strides.*0"):
        ResidualBlock(8, strides=0)
    with pytest.raises(ConfigError, match="bottleneck.*'yes'"):
        ResidualBlock(8, bottleneck="yes")
    b = ResidualBlock(8, in_channels=8)
    with pytest.raises(ShapeError, match="received 3 channels"):
        b(torch.zeros(1, 3, 4, 4))
    assert n_params(ResidualBlock(**b.get_config())) == n_params(b)
