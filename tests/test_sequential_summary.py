"""Sequential and summary: seed 004's CIFAR CNN and FCN tables, MACs, receptive fields,
eager building, plain torch modules, shared parameters."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from torch import nn

import cnnkit
from cnnkit import ConfigError, ShapeError
from cnnkit.layers import (
    BatchNormalization,
    Dense,
    Dropout,
    Flatten,
    Sequential,
    summary,
)
from cnnkit.layers.conv import Conv2D
from cnnkit.layers.pooling import MaxPooling2D
from cnnkit.ops.arithmetic import conv_macs

QUIET = dict(print_fn=lambda line: None)


def cifar_cnn() -> Sequential:
    """Seed 004's CNN, channels-first."""
    return Sequential(
        [
            Conv2D(32, 3, activation="relu"),
            MaxPooling2D(2),
            Conv2D(64, 3, activation="relu"),
            Conv2D(128, 3, activation="relu"),
            Flatten(),
            Dense(128, activation="relu"),
            Dense(10, activation="softmax"),
        ],
        input_shape=(3, 32, 32),
    )


def cifar_fcn() -> Sequential:
    """Seed 004's fully connected net, written with Keras' add()."""
    model = Sequential()
    model.add(Dense(2048, input_dim=32 * 32 * 3, activation="relu"))
    model.add(Dense(1024, activation="relu"))
    model.add(Dense(512, activation="relu"))
    model.add(Dense(128, activation="relu"))
    model.add(Dense(10, activation="softmax"))
    return model


# Seed 004's Keras table (channels-last there): (None, 30, 30, 32) -> (None, 32, 30, 30) here
CNN_TABLE = [
    ("Conv2D", (None, 32, 30, 30), 896),
    ("MaxPooling2D", (None, 32, 15, 15), 0),
    ("Conv2D", (None, 64, 13, 13), 18496),
    ("Conv2D", (None, 128, 11, 11), 73856),
    ("Flatten", (None, 15488), 0),
    ("Dense", (None, 128), 1982592),
    ("Dense", (None, 10), 1290),
]
FCN_PARAMS = [6293504, 2098176, 524800, 65664, 1290]


def test_cifar_cnn_summary_matches_seed004():
    rows = cifar_cnn().summary(**QUIET)
    assert [(r.layer_type, r.output_shape, r.params) for r in rows] == CNN_TABLE
    assert rows.total_params == 2_077_130
    assert rows.trainable_params == 2_077_130 and rows.non_trainable_params == 0
    assert [r.trainable_params for r in rows] == [t[2] for t in CNN_TABLE]
    assert [r.name for r in rows] == [
        "conv2d",
        "max_pooling2d",
        "conv2d_1",
        "conv2d_2",
        "flatten",
        "dense",
        "dense_1",
    ]


def test_cifar_fcn_summary_matches_seed004():
    model = cifar_fcn()
    rows = model.summary(**QUIET)
    assert [r.params for r in rows] == FCN_PARAMS
    assert [r.output_shape for r in rows] == [
        (None, 2048),
        (None, 1024),
        (None, 512),
        (None, 128),
        (None, 10),
    ]
    assert rows.total_params == 8_983_434
    assert all(r.receptive_field is None for r in rows)  # no spatial input
    assert [r.macs for r in rows] == [3072 * 2048, 2048 * 1024, 1024 * 512, 512 * 128, 128 * 10]


def test_cifar_cnn_macs_are_conv_macs():
    rows = cifar_cnn().summary(**QUIET)
    assert rows[0].macs == conv_macs(3, 32, 3, 30)
    assert rows[1].macs == 0
    assert rows[2].macs == conv_macs(32, 64, 3, 13)
    assert rows[3].macs == conv_macs(64, 128, 3, 11)
    assert rows[5].macs == 15488 * 128 and rows[6].macs == 128 * 10
    assert rows.total_macs == sum(r.macs for r in rows)


def _hand_rf(chain):
    """r_l = r_{l-1} + (d (F - 1) + 1 - 1) j_{l-1},  j_l = j_{l-1} S  (seed 003)."""
    r, j, out = 1, 1, []
    for k, s, d in chain:
        r += d * (k - 1) * j
        j *= s
        out.append((r, j))
    return out


def test_cifar_cnn_receptive_fields():
    rows = cifar_cnn().summary(**QUIET)
    hand = _hand_rf([(3, 1, 1), (2, 2, 1), (3, 1, 1), (3, 1, 1)])
    assert (
        [(r.receptive_field, r.jump) for r in rows[:4]] == hand == [(3, 1), (4, 2), (8, 2), (12, 2)]
    )
    assert rows[4].receptive_field == 12  # Flatten keeps the field
    assert rows[5].receptive_field == "global" and rows[6].receptive_field == "global"


def test_receptive_field_per_dimension():
    model = Sequential(
        [
            Conv2D(4, 3, strides=2),
            Conv2D(4, 3, dilation_rate=2),
            MaxPooling2D(2),
            Conv2D(4, (3, 5)),
            Conv2D(4, (1, 3), strides=(1, 2)),
        ],
        input_shape=(1, 64, 64),
    )
    rows = model.summary(**QUIET)
    h = _hand_rf([(3, 2, 1), (3, 1, 2), (2, 2, 1), (3, 1, 1), (1, 1, 1)])
    w = _hand_rf([(3, 2, 1), (3, 1, 2), (2, 2, 1), (5, 1, 1), (3, 2, 1)])
    for row, (rh, jh), (rw, jw) in zip(rows, h, w):
        want_rf = rh if rh == rw else (rh, rw)
        want_j = jh if jh == jw else (jh, jw)
        assert (row.receptive_field, row.jump) == (want_rf, want_j)
    assert rows[-1].receptive_field == (21, 37) and rows[-1].jump == (4, 8)


def test_no_lazy_parameters_after_construction():
    model = cifar_cnn()
    assert model.built and all(getattr(m, "built", True) for m in model)
    assert not any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == 2_077_130  # before any forward
    keys = list(model.state_dict())
    assert keys[:2] == ["0.weight", "0.bias"] and "6.bias" in keys
    assert len(model) == 7 and isinstance(model[2], Conv2D) and isinstance(model[-1], Dense)
    assert model.output_shape == (None, 10)
    fcn = cifar_fcn()
    assert sum(p.numel() for p in fcn.parameters()) == 8_983_434
    assert fcn.input_shape == (3072,)


def test_first_layer_input_shape_builds_eagerly():
    model = Sequential(
        [Conv2D(32, 3, activation="relu", input_shape=(3, 32, 32)), Flatten(), Dense(10)]
    )
    assert model.input_shape == (3, 32, 32)
    assert model[2].weight.shape == (10, 32 * 30 * 30)


def test_forward_matches_compute_output_shape_and_softmax():
    model = cifar_cnn()
    x = torch.randn(4, 3, 32, 32)
    y = model(x)
    assert tuple(y.shape) == (4, 10)
    assert model.compute_output_shape((4, 3, 32, 32)) == (4, 10)
    assert model.compute_output_shape((3, 32, 32)) == (10,)
    torch.testing.assert_close(y.sum(1), torch.ones(4))
    # a plain torch reference with the same weights
    ref = x
    for i in (0, 2, 3):
        if i == 2:
            ref = nn.functional.max_pool2d(ref, 2)
        ref = torch.relu(nn.functional.conv2d(ref, model[i].weight, model[i].bias))
    ref = torch.relu(nn.functional.linear(ref.flatten(1), model[5].weight, model[5].bias))
    ref = torch.softmax(nn.functional.linear(ref, model[6].weight, model[6].bias), 1)
    torch.testing.assert_close(y, ref)


def test_printed_table(capsys):
    cifar_cnn().summary()
    out = capsys.readouterr().out
    assert "Total params: 2,077,130" in out
    assert "Trainable params: 2,077,130" in out and "Non-trainable params: 0" in out
    assert "Layer (type)" in out and "Output Shape" in out and "Param #" in out
    assert "conv2d_1 (Conv2D)" in out and "(None, 128, 11, 11)" in out and "1,982,592" in out
    lines = []
    rows = cifar_fcn().summary(print_fn=lines.append)
    assert "Total params: 8,983,434" in lines
    assert "\n".join(lines) + "\n" == rows.text


def test_plain_torch_modules_inside():
    model = Sequential(
        [nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2), Flatten(), nn.LazyLinear(5), Dense(2)],
        input_shape=(3, 10, 10),
    )
    assert not any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters())
    assert model[4].weight.shape == (5, 8 * 4 * 4)
    rows = model.summary(**QUIET)
    assert [r.output_shape for r in rows] == [
        (None, 8, 8, 8),
        (None, 8, 8, 8),
        (None, 8, 4, 4),
        (None, 128),
        (None, 5),
        (None, 2),
    ]
    assert rows[0].macs == 9 * 3 * 8 * 64 and rows[4].macs == 128 * 5
    assert [r.receptive_field for r in rows[:4]] == [3, 3, 4, 4]
    assert model(torch.zeros(2, 3, 10, 10)).shape == (2, 2)


def test_summary_of_any_module_torchvision_resnet18():
    resnet = importlib.import_module("torchvision.models.resnet").resnet18()
    resnet.train()
    resnet.layer1.eval()
    stats = resnet.bn1.running_mean.clone()
    rows = summary(resnet, (3, 64, 64), **QUIET)
    assert rows.total_params == sum(p.numel() for p in resnet.parameters())
    assert sum(r.params for r in rows) == rows.total_params
    assert resnet.training and not resnet.layer1.training and resnet.layer2.training
    assert torch.equal(resnet.bn1.running_mean, stats)
    by_name = {r.name: r for r in rows}
    conv1 = by_name["conv1"]
    assert conv1.output_shape == (None, 64, 32, 32) and conv1.macs == conv_macs(3, 64, 7, 32)
    assert (conv1.receptive_field, by_name["maxpool"].receptive_field) == (7, 11)  # 7 + 2*2
    # the projection shortcut continues the block's input field, not the main path's
    assert by_name["layer2.0.downsample.0"].receptive_field == 43 + 0 * 4
    assert by_name["layer2.0.conv2"].receptive_field == 43 + 2 * 4 + 2 * 8
    assert by_name["fc"].receptive_field == "global" and by_name["fc"].macs == 512 * 1000


def test_shared_parameters_counted_once():
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    rows = summary(model, (4,), **QUIET)
    assert [r.params for r in rows] == [20, 0, 0]
    assert rows.total_params == 20
    tied = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    tied[1].weight = tied[0].weight
    assert summary(tied, (3,), **QUIET).total_params == 9 + 3 + 3


def test_non_trainable_params():
    model = Sequential([Conv2D(4, 3), BatchNormalization(), Dropout(0.5)], input_shape=(2, 5, 5))
    model[0].bias.requires_grad_(False)
    rows = model.summary(**QUIET)
    assert rows.total_params == 4 * 2 * 9 + 4 + 8
    assert rows.non_trainable_params == 4
    assert rows[0].trainable_params == 72 and rows[1].params == 8


def test_build_on_first_forward_then_summary():
    model = Sequential([Conv2D(4, 3), Flatten(), Dense(3)])
    assert not model.built
    with pytest.raises(ConfigError, match="input_shape"):
        model.summary(**QUIET)
    model(torch.zeros(2, 1, 6, 6))
    assert model.input_shape == (1, 6, 6)
    assert model.summary(**QUIET).total_params == 4 * 9 + 4 + 4 * 16 * 3 + 3
    late = Sequential([Conv2D(4, 3), Flatten()])
    late.build((2, 5, 5))
    late.add(Dense(2))
    assert late[2].weight.shape == (2, 36)


def test_get_config_roundtrip():
    model = cifar_cnn()
    cfg = model.get_config()
    json.dumps(cfg)
    again = Sequential.from_config(cfg)
    assert sum(p.numel() for p in again.parameters()) == 2_077_130
    assert again.input_shape == (3, 32, 32)
    with pytest.raises(ConfigError, match="torch.nn.*ReLU"):
        Sequential.from_config(Sequential([nn.ReLU()], input_shape=(3,)).get_config())


def test_top_level_exports():
    # cnnkit.Sequential is the layer stack plus the training workflow
    assert issubclass(cnnkit.Sequential, Sequential) and cnnkit.summary is summary
    assert callable(cnnkit.Sequential.fit) and callable(cnnkit.Sequential.compile)


def test_sequential_errors():
    with pytest.raises(ConfigError, match=r"\(3, 0, 4\)"):
        Sequential(input_shape=(3, 0, 4))
    with pytest.raises(ConfigError, match="list"):
        Sequential(nn.ReLU(), nn.ReLU())
    with pytest.raises(ConfigError, match="int: 3"):
        Sequential().add(3)
    with pytest.raises(ShapeError, match=r"\(5,\).*\(10,\)"):
        Sequential([Dense(10, input_dim=4), Dense(2, input_dim=5)])
    with pytest.raises(ShapeError, match=r"input_shape=\(3, 8, 8\).*\(1, 8, 8\)"):
        Sequential([Conv2D(2, 3, input_shape=(1, 8, 8))], input_shape=(3, 8, 8))
    with pytest.raises(ShapeError):
        Sequential([Conv2D(2, 5)], input_shape=(1, 3, 3))  # kernel larger than input
    with pytest.raises(ConfigError, match="input_shape"):
        summary(nn.Linear(2, 2), **QUIET)
    with pytest.raises(ConfigError, match="str"):
        summary("model", (3,))
