"""cnnkit.ops.arithmetic against the decks' worked examples and PyTorch's real shapes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnkit import ShapeError
from cnnkit.ops.arithmetic import (
    conv_macs,
    conv_output_size,
    conv_params,
    dense_params,
    explain_conv_output_size,
    pool_output_size,
    receptive_field,
    same_padding,
    transposed_conv_output_size,
)

# ----------------------------------------------------------------- decks' examples


def test_alexnet_conv1_and_pool_sizes_seed002():
    # (227 - 11)/4 + 1 = 55 and (55 - 3)/2 + 1 = 27
    assert conv_output_size(227, 11, stride=4) == 55
    assert pool_output_size(55, 3, stride=2) == 27


def test_stride_table_seed004():
    assert conv_output_size(7, 3, stride=1) == 5
    assert conv_output_size(7, 3, stride=2) == 3


def test_stride_three_error_shows_arithmetic_seed004():
    with pytest.raises(ShapeError) as info:
        conv_output_size(7, 3, stride=3)
    msg = str(info.value)
    assert "(7 - 3 + 0)/3 + 1 = 2.33" in msg
    assert "a stride of 1, 2 or 4" in msg  # strides that divide 7 - 3
    assert "padding=1" in msg  # a padding that fits: (7 - 3 + 2)/3 + 1 = 3
    assert conv_output_size(7, 3, stride=3, padding=1) == 3
    assert conv_output_size(7, 3, stride=3, floor=True) == 2


def test_floored_case_seed004():
    # 6x6 input, 3x3 kernel, stride 2, padding 1: bottom row / right column uncovered
    with pytest.raises(ShapeError, match=r"\(6 - 3 \+ 2\*1\)/2 \+ 1 = 3.50"):
        conv_output_size(6, 3, stride=2, padding=1)
    assert conv_output_size(6, 3, stride=2, padding=1, floor=True) == 3


def test_preserving_padding_seed004():
    # P = (F - 1)/2 keeps 7x7 at stride 1 for F = 3, 5, 7
    for f, p in [(3, 1), (5, 2), (7, 3)]:
        assert conv_output_size(7, f, padding=p) == 7
        assert conv_output_size(7, f, padding="same") == 7


def test_dumoulin_cases_seed004():
    assert conv_output_size(4, 3) == 2  # no padding, unit strides
    assert conv_output_size(5, 4, padding=2) == 6  # zero padding, unit strides
    assert conv_output_size(5, 3, padding=1) == 5  # half padding
    assert conv_output_size(5, 3, padding="full") == 7  # full padding
    assert conv_output_size(5, 3, stride=2) == 2  # non-unit strides


def test_receptive_fields_seed003():
    regular = receptive_field([(2, 2), (2, 2)])
    assert [r.receptive_field for r in regular] == [2, 4]
    assert [r.jump for r in regular] == [2, 4]
    wavenet = receptive_field([(2, 1, 1), (2, 1, 2), (2, 1, 4)])
    assert [r.receptive_field for r in wavenet] == [2, 4, 8]


def test_receptive_field_matches_brute_force():
    # the input elements that can change one output element, found with autograd
    specs = [(3, 1, 1), (2, 2, 1), (3, 1, 2), (3, 2, 1)]
    x = torch.zeros(1, 1, 200, requires_grad=True)
    y = x
    for k, s, d in specs:
        y = F.conv1d(y, torch.ones(1, 1, k), stride=s, dilation=d)
    y[0, 0, y.shape[-1] // 2].backward()
    touched = (x.grad[0, 0] != 0).nonzero().flatten()
    rf = receptive_field(specs)[-1]
    assert int(touched.max() - touched.min() + 1) == rf.receptive_field
    assert rf.jump == math.prod(s for _, s, _ in specs)


def test_parameter_counts_seed002_seed003():
    assert conv_params(3, 96, 11) == 11 * 11 * 3 * 96 + 96 == 34_944
    assert conv_params(3, 96, (11, 11), bias=False) == 34_848
    assert conv_params(4, 8, 3, groups=2, ndim=1) == 3 * 2 * 8 + 8
    assert conv_params(2, 4, (3, 3, 3)) == 27 * 2 * 4 + 4
    assert dense_params(3072, 2048) == 6_293_504
    # inception 5x5 branch on 28x28x192 with 32 filters
    assert conv_macs(192, 32, 5, 28) == 120_422_400
    assert conv_macs(192, 32, (5, 5), (28, 28)) == 120_422_400
    reduced = conv_macs(192, 16, 1, (28, 28)) + conv_macs(16, 32, 5, (28, 28))
    assert reduced == 12_443_648


def test_conv_params_equal_torch_modules():
    for cin, cout, k, g, nd in [(3, 96, 11, 1, 2), (8, 4, 3, 2, 1), (6, 6, (1, 3, 5), 3, 3)]:
        conv = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)[nd - 1](cin, cout, k, groups=g)
        assert conv_params(cin, cout, k, groups=g, ndim=nd) == sum(
            p.numel() for p in conv.parameters()
        )


def test_same_padding_keras_semantics():
    assert same_padding(7, 3, 2) == (1, 1)
    assert same_padding(8, 3, 2) == (0, 1)  # the extra padding goes after
    assert same_padding(5, 1, 2) == (0, 0)
    assert conv_output_size(8, 3, stride=2, padding="same") == 4


def test_transposed_sizes():
    assert transposed_conv_output_size(4, 3) == 6  # seed 003's K^T: 4 -> 6
    assert transposed_conv_output_size(2, 3, padding=0) == 4  # seed 003 example 1
    assert transposed_conv_output_size(5, 3, stride=2, padding="same") == 10
    assert transposed_conv_output_size(5, 3, stride=2, padding="valid") == 11
    assert transposed_conv_output_size(5, 1, stride=3, padding="valid") == 15
    assert transposed_conv_output_size(5, 3, stride=2, padding=1, output_padding=1) == 10
    with pytest.raises(ShapeError, match="output_padding"):
        transposed_conv_output_size(5, 3, stride=2, output_padding=2)


def test_explainer_walks_through():
    text = explain_conv_output_size(7, 3, stride=3)
    assert "2.33" in text and "padding" in text
    assert "output size 3" in explain_conv_output_size(7, 3, stride=2)


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda: conv_output_size(0, 3), "received 0"),
        (lambda: conv_output_size(5, -1), "received -1"),
        (lambda: conv_output_size(5, 3, stride=0), "received 0"),
        (lambda: conv_output_size(2, 5), "larger than the padded input"),
        (lambda: conv_output_size(5, 3, padding="sane"), "'sane'"),
        (lambda: conv_params(3, 8, 3, groups=2), "groups=2"),
        (lambda: pool_output_size(4, 2, padding="full"), "full"),
        (lambda: receptive_field([(3, 1, 1, 0, 9)]), r"\(3, 1, 1, 0, 9\)"),
    ],
)
def test_bad_arguments_name_the_value(call, fragment):
    with pytest.raises(ValueError, match=fragment):
        call()


# ----------------------------------------------------------------- against PyTorch


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 40),
    k=st.integers(1, 7),
    s=st.integers(1, 4),
    p=st.integers(0, 3),
    d=st.integers(1, 3),
)
def test_floor_sizes_equal_pytorch(n, k, s, p, d):
    x = torch.zeros(1, 1, n)
    w = torch.zeros(1, 1, k)
    try:
        expected = F.conv1d(x, w, stride=s, padding=p, dilation=d).shape[-1]
    except RuntimeError:
        with pytest.raises(ShapeError):
            conv_output_size(n, k, s, p, d, floor=True)
        return
    assert conv_output_size(n, k, s, p, d, floor=True) == expected
    exact = (n + 2 * p - d * (k - 1) - 1) % s == 0
    if exact:
        assert conv_output_size(n, k, s, p, d) == expected
    else:
        with pytest.raises(ShapeError):
            conv_output_size(n, k, s, p, d)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 30), k=st.integers(1, 5), s=st.integers(1, 4), p=st.integers(0, 2))
def test_pool_floor_sizes_equal_pytorch(n, k, s, p):
    if p > k // 2:
        return  # torch's own restriction on pooling pads
    x = torch.zeros(1, 1, n)
    try:
        expected = F.max_pool1d(x, k, s, p).shape[-1]
    except RuntimeError:
        with pytest.raises(ShapeError):
            pool_output_size(n, k, s, p, floor=True)
        return
    assert pool_output_size(n, k, s, p, floor=True) == expected


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(1, 20),
    k=st.integers(1, 5),
    s=st.integers(1, 3),
    p=st.integers(0, 2),
    d=st.integers(1, 2),
    op=st.integers(0, 2),
)
def test_transposed_sizes_equal_pytorch(n, k, s, p, d, op):
    x = torch.zeros(1, 1, n)
    w = torch.zeros(1, 1, k)
    try:
        expected = F.conv_transpose1d(
            x, w, stride=s, padding=p, output_padding=op, dilation=d
        ).shape[-1]
    except RuntimeError:
        with pytest.raises(ShapeError):
            transposed_conv_output_size(n, k, s, p, op, d)
        return
    assert transposed_conv_output_size(n, k, s, p, op, d) == expected


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 30), k=st.integers(1, 6), s=st.integers(1, 4), d=st.integers(1, 2))
def test_same_padding_gives_ceil_for_any_stride(n, k, s, d):
    before, after = same_padding(n, k, s, d)
    x = F.pad(torch.zeros(1, 1, n), (before, after))
    out = F.conv1d(x, torch.zeros(1, 1, k), stride=s, dilation=d).shape[-1]
    assert out == -(-n // s) == conv_output_size(n, k, s, "same", d)
    assert 0 <= after - before <= 1
