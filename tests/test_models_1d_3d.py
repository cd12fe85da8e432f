"""The 1D and 3D nets of the zoo: char_cnn, fcn1d, resnet1d, tcn, c3d, c3d_small, volume_cnn.

Parameter counts are checked against hand counts from the papers' layer tables with
cnnkit.ops.arithmetic; fcn1d against a plain torch.nn rebuild; the TCN's causality and
receptive field by autograd; learning on the real UCR GunPoint set and on synthetic
moving-square clips.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import cnnkit
from cnnkit._core.errors import ConfigError
from cnnkit.data import ucr
from cnnkit.layers import Conv1D, summary
from cnnkit.models import create
from cnnkit.models.text import char_cnn_feature_length
from cnnkit.models.timeseries import tcn_receptive_field
from cnnkit.ops.arithmetic import conv_macs, conv_params, dense_params

UCR_LENGTHS = (150, 96, 286)  # GunPoint, ECG200, Coffee


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def bn(c: int) -> int:
    return 2 * c  # gamma and beta


def assert_all_grads(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.train()
    out = model(x)
    (out * torch.randn_like(out)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    return out


# --------------------------------------------------------------------------- char_cnn


def char_cnn_hand_count(features: int, units: int, classes: int, alphabet: int = 70) -> int:
    """Zhang et al. 2015, Tables 1 and 2: 6 convs (7, 7, 3, 3, 3, 3), 3 FC, 34 positions."""
    convs = conv_params(alphabet, features, 7, ndim=1) + conv_params(features, features, 7, ndim=1)
    convs += 4 * conv_params(features, features, 3, ndim=1)
    fcs = dense_params(34 * features, units) + dense_params(units, units)
    return convs + fcs + dense_params(units, classes)


def test_char_cnn_feature_length_is_the_papers_formula():
    # l6 = (l0 - 96) / 27 (the paper's formula; nested floors give the floored form)
    assert char_cnn_feature_length(1014) == (1014 - 96) // 27 == 34
    for length in range(123, 1200, 7):
        assert char_cnn_feature_length(length) == (length - 96) // 27
    assert char_cnn_feature_length(122) == 0
    with pytest.raises(ConfigError, match="122"):
        create("char_cnn", length=122)


def test_char_cnn_small_forward_and_parameters():
    model = create("char_cnn")
    assert model.default_input_shape == (70, 1014)
    assert n_params(model) == char_cnn_hand_count(256, 1024, 4) == 11_339_780
    x = torch.zeros(2, 70, 1014)
    x[:, torch.randint(0, 70, (1014,)), torch.arange(1014)] = 1.0  # one-hot characters
    model.eval()
    feats = model.forward_features(x)
    assert feats.shape == (2, 256, 34)
    out = model(x)
    assert out.shape == (2, 4)
    assert torch.equal(out, model.forward_head(feats))
    assert model.last_conv is model.features.conv6[0]
    assert model.last_conv.kernel_size == (3,)


def test_char_cnn_large_parameters_and_options():
    with torch.device("meta"):
        large = create("char_cnn", size="large", num_classes=14)  # DBPedia's 14 classes
        stages = large.forward_stages(torch.empty(1, 70, 1014))
    assert n_params(large) == char_cnn_hand_count(1024, 2048, 14)
    assert [tuple(s.shape[1:]) for s in stages.values()] == [
        (1024, 336),
        (1024, 110),
        (1024, 108),
        (1024, 106),
        (1024, 104),
        (1024, 34),
    ]
    small = create("char_cnn", in_channels=69, length=500, num_classes=2)
    assert small.default_input_shape == (69, 500)
    assert small(torch.zeros(1, 69, 500)).shape == (1, 2)
    assert create("char_cnn", alphabet_size=69, length=200).default_input_shape == (69, 200)
    with pytest.raises(ConfigError, match="medium"):
        create("char_cnn", size="medium")
    with pytest.raises(ConfigError, match="alphabet_size=69 and in_channels=70"):
        create("char_cnn", alphabet_size=69, in_channels=70)


# --------------------------------------------------------------------------- fcn1d / resnet1d


def test_fcn1d_parameters_and_lengths():
    model = create("fcn1d")
    hand = conv_params(1, 128, 8, ndim=1) + bn(128)
    hand += conv_params(128, 256, 5, ndim=1) + bn(256)
    hand += conv_params(256, 128, 3, ndim=1) + bn(128) + dense_params(128, 2)
    assert n_params(model) == hand == 264_962
    model.eval()
    for length in UCR_LENGTHS:
        stages = model.forward_stages(torch.randn(3, 1, length))
        assert [tuple(s.shape) for s in stages.values()] == [
            (3, 128, length),
            (3, 256, length),
            (3, 128, length),
        ]
        assert model(torch.randn(3, 1, length)).shape == (3, 2)
    assert model.last_conv is model.features.block3[0]
    three = create("fcn1d", num_classes=5, in_channels=3)  # e.g. a 3-axis accelerometer
    assert three(torch.randn(2, 3, 64)).shape == (2, 5)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_fcn1d_matches_a_plain_torch_rebuild():
    model = create("fcn1d", num_classes=3).eval()
    ref = nn.Sequential(
        nn.Conv1d(1, 128, 8, padding="same"),
        nn.BatchNorm1d(128, eps=1e-3),
        nn.ReLU(),
        nn.Conv1d(128, 256, 5, padding="same"),
        nn.BatchNorm1d(256, eps=1e-3),
        nn.ReLU(),
        nn.Conv1d(256, 128, 3, padding="same"),
        nn.BatchNorm1d(128, eps=1e-3),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(128, 3),
    ).eval()
    with torch.no_grad():
        for i, block in enumerate(model.features):
            conv, norm = block[0], block[1].bn
            ref[3 * i].weight.copy_(conv.weight)
            ref[3 * i].bias.copy_(conv.bias)
            for name in ("weight", "bias", "running_mean", "running_var"):
                stat = torch.rand_like(getattr(norm, name)) + 0.5
                getattr(norm, name).copy_(stat)
                getattr(ref[3 * i + 1], name).copy_(stat)
        ref[-1].weight.copy_(model.head[1].weight)
        ref[-1].bias.copy_(model.head[1].bias)
        x = torch.randn(4, 1, 96)
        torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-5)


def test_resnet1d_parameters_lengths_and_gradients():
    model = create("resnet1d")

    def block(c_in: int, f: int) -> int:
        main = conv_params(c_in, f, 8, ndim=1) + conv_params(f, f, 5, ndim=1)
        main += conv_params(f, f, 3, ndim=1) + 3 * bn(f)
        short = conv_params(c_in, f, 1, ndim=1) + bn(f) if c_in != f else bn(f)
        return main + short

    hand = block(1, 64) + block(64, 128) + block(128, 128) + dense_params(128, 2)
    assert n_params(model) == hand == 504_258
    for length in UCR_LENGTHS:
        out = assert_all_grads(model, torch.randn(2, 1, length))
        assert out.shape == (2, 2)
        model.zero_grad()
    # the main path's last conv, not block 3's shortcut (an identity batch norm there)
    assert model.last_conv is model.features.block3.main[-2]
    assert isinstance(model.features.block1.shortcut[0], Conv1D)


# --------------------------------------------------------------------------- tcn


def test_tcn_parameters_and_receptive_field():
    model = create("tcn")
    hand = 0
    c = 1
    for _ in range(8):
        # two causal convs (+ one weight-norm gain per output channel each), 1x1 downsample
        hand += 2 * 25 + conv_params(c, 25, 7, ndim=1) + conv_params(25, 25, 7, ndim=1)
        hand += conv_params(c, 25, 1, ndim=1) if c != 25 else 0
        c = 25
    hand += dense_params(25, 10)
    assert n_params(model) == hand == 66_910
    # Bai et al.: two convs per level with dilation 2**i -> 1 + 2 (k - 1)(2**L - 1)
    assert model.receptive_field == tcn_receptive_field(7, 8) == 1 + 2 * 6 * 255 == 3061
    conv = model.features.level3.net[0]
    assert conv.padding == (((7 - 1) * 4, 0),) and conv.dilation_rate == (4,)
    for length in (*UCR_LENGTHS, 784):
        model.eval()
        assert model.forward_features(torch.randn(2, 1, length)).shape == (2, 25, length)
        assert model(torch.randn(2, 1, length)).shape == (2, 10)


def test_tcn_is_causal():
    model = create("tcn", channels=(8, 8, 8), kernel_size=3, in_channels=2).eval()
    x = torch.randn(1, 2, 60)
    base = model.forward_features(x)
    for t in (0, 17, 59):
        x2 = x.clone()
        x2[:, :, t] += 5.0
        out = model.forward_features(x2)
        assert torch.equal(out[:, :, :t], base[:, :, :t])
        assert not torch.allclose(out[:, :, t], base[:, :, t])
    # autograd: output t has zero gradient with respect to every later input
    xg = x.clone().requires_grad_(True)
    feats = model.forward_features(xg)
    for t in (5, 30):
        (grad,) = torch.autograd.grad(feats[0, :, t].sum(), xg, retain_graph=True)
        assert grad[:, :, t + 1 :].abs().max() == 0
        assert grad[:, :, t].abs().max() > 0


def test_tcn_receptive_field_by_autograd():
    # positive weights and inputs keep every ReLU open, so the gradient of the last
    # output is non-zero exactly on its receptive field
    model = create("tcn", channels=(4, 4, 4), kernel_size=3, weight_norm=False, dropout=0.0)
    with torch.no_grad():
        for p in model.features.parameters():
            p.fill_(0.1)
    model.eval()
    rf = model.receptive_field
    assert rf == 1 + 2 * 2 * (1 + 2 + 4) == 29
    x = torch.rand(1, 1, 64).add_(0.1).requires_grad_(True)
    model.forward_features(x)[0, :, -1].sum().backward()
    seen = torch.nonzero(x.grad[0, 0]).flatten().tolist()
    assert seen == list(range(64 - rf, 64))


@pytest.mark.parametrize("pooling", ["last", "avg", "max"])
def test_tcn_heads_and_gradients(pooling):
    model = create("tcn", channels=(16, 16, 32), num_classes=3, pooling=pooling)
    for length in UCR_LENGTHS:
        assert assert_all_grads(model, torch.randn(2, 1, length)).shape == (2, 3)
        model.zero_grad()


# --------------------------------------------------------------------------- c3d


C3D_CONVS = [(3, 64), (64, 128), (128, 256), (256, 256), (256, 512), (512, 512), (512, 512)]
C3D_CONVS.append((512, 512))


def test_c3d_parameters_shapes_and_macs_on_meta():
    with torch.device("meta"):
        model = create("c3d")
        x = torch.empty(2, 3, 16, 112, 112)
        stages = model.forward_stages(x)
        out = model(x)
    convs = sum(conv_params(a, b, 3, ndim=3) for a, b in C3D_CONVS)
    fcs = dense_params(512 * 1 * 4 * 4, 4096) + dense_params(4096, 4096) + dense_params(4096, 487)
    assert n_params(model) == convs + fcs == 79_991_015
    # pool1 1x2x2 keeps the 16 frames; pool5 (padded, as Caffe's ceil mode) leaves 1x4x4
    assert [tuple(s.shape[1:]) for s in stages.values()] == [
        (64, 16, 56, 56),
        (128, 8, 28, 28),
        (256, 4, 14, 14),
        (512, 2, 7, 7),
        (512, 1, 4, 4),
    ]
    assert out.shape == (2, 487)
    (out.float().sum()).backward()
    assert all(p.grad is not None for p in model.parameters())
    # MACs: every 3x3x3 conv at its stage's resolution (same padding) + the three FCs
    sizes = [(16, 112, 112), (16, 56, 56), (8, 28, 28), (8, 28, 28), (4, 14, 14)]
    sizes += [(4, 14, 14), (2, 7, 7), (2, 7, 7)]
    hand_macs = sum(conv_macs(a, b, 3, s, ndim=3) for (a, b), s in zip(C3D_CONVS, sizes))
    hand_macs += 8192 * 4096 + 4096 * 4096 + 4096 * 487
    rows = summary(model, print_fn=lambda line: None)
    assert rows.total_macs == hand_macs
    assert 38.4e9 < hand_macs < 38.6e9  # the 38.5 GFLOPs usually quoted for C3D


def test_c3d_other_clips_and_classes():
    with torch.device("meta"):
        m = create("c3d", num_classes=101, clip_shape=(16, 96, 96))  # UCF101
        assert m(torch.empty(1, 3, 16, 96, 96)).shape == (1, 101)
        assert m.head[1].in_features == 8192
        small = create("c3d", clip_shape=(16, 32, 32))
        assert small.head[1].in_features == 512 * 1 * 2 * 2
    with pytest.raises(ConfigError, match="clip_shape"):
        create("c3d", clip_shape=(16, 112))


# --------------------------------------------------------------------------- c3d_small, volume_cnn


def test_c3d_small_parameters_and_clip_sizes():
    model = create("c3d_small")
    hand = sum(
        conv_params(a, b, 3, bias=False, ndim=3) + bn(b)
        for a, b in [(3, 16), (16, 32), (32, 64), (64, 128)]
    )
    assert n_params(model) == hand + dense_params(128, 10) == 293_370
    for clip in [(8, 32, 32), (16, 64, 64), (12, 40, 48)]:
        out = assert_all_grads(model, torch.randn(2, 3, *clip))
        assert out.shape == (2, 10)
        model.zero_grad()
    gray = create("c3d_small", in_channels=1, num_classes=4)
    assert gray(torch.randn(1, 1, 8, 32, 32)).shape == (1, 4)


def test_volume_cnn_parameters_and_sizes():
    model = create("volume_cnn")
    hand = sum(
        conv_params(a, b, 3, bias=False, ndim=3) + bn(b)
        for a, b in [(1, 8), (8, 16), (16, 32), (32, 64)]
    )
    assert n_params(model) == hand + dense_params(64, 2) == 73_162
    assert model.default_input_shape == (1, 28, 28, 28)
    for vol in [(28, 28, 28), (16, 32, 24)]:
        assert assert_all_grads(model, torch.randn(2, 1, *vol)).shape == (2, 2)
        model.zero_grad()


# --------------------------------------------------------------------------- learning


def _data_root() -> Path:
    env = os.environ.get("CNNKIT_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load_ucr(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train/test arrays of a UCR set via cnnkit.data.ucr (its reader is tested on its own)."""
    root = _data_root() / "ucr"
    if not (root / name / f"{name}_TRAIN.tsv").exists():
        pytest.skip(f"UCR {name} not found in {root} (set CNNKIT_DATA to the shared data)")
    train, test = ucr(root, name, "train"), ucr(root, name, "test")
    return train.x.numpy(), train.y.numpy(), test.x.numpy(), test.y.numpy()


def test_fcn1d_learns_gunpoint():
    x_train, y_train, x_test, y_test = load_ucr("GunPoint")
    assert x_train.shape == (50, 1, 150) and x_test.shape == (150, 1, 150)  # the README's sizes
    assert np.bincount(y_test).tolist() == [76, 74]
    epochs = 20
    model = cnnkit.Model(create("fcn1d", num_classes=2))
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        learning_rate=1e-3,
        lr_schedule=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs),
        device="cpu",
    )
    start = time.perf_counter()
    # Wang et al.'s batch size min(N / 10, 16) = 5 for GunPoint's 50 training series
    model.fit(x_train, y_train, batch_size=5, epochs=epochs, verbose=0)
    elapsed = time.perf_counter() - start
    acc = model.evaluate(x_test, y_test)["accuracy"]
    assert acc >= 0.85, f"test accuracy {acc:.3f} after {epochs} epochs ({elapsed:.1f} s)"


def moving_square_clips(
    n: int, rng: np.random.Generator, frames: int = 8, size: int = 32, side: int = 6, step: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Clips of a bright square moving right, left, down or up (labels 0-3) on noise."""
    x = rng.normal(0.0, 0.1, (n, 1, frames, size, size)).astype(np.float32)
    y = rng.integers(0, 4, n)
    directions = [(0, 1), (0, -1), (1, 0), (-1, 0)]
    travel = step * (frames - 1)
    for i in range(n):
        dr, dc = directions[y[i]]
        r0 = rng.integers(travel if dr < 0 else 0, size - side - (travel if dr > 0 else 0) + 1)
        c0 = rng.integers(travel if dc < 0 else 0, size - side - (travel if dc > 0 else 0) + 1)
        for t in range(frames):
            r, c = r0 + dr * step * t, c0 + dc * step * t
            x[i, 0, t, r : r + side, c : c + side] += 1.0
    return x, y


def test_moving_square_clips_are_what_they_claim():
    x, y = moving_square_clips(8, np.random.default_rng(1))
    for clip, label in zip(x, y):
        centres = []
        for frame in clip[0]:
            rows, cols = np.nonzero(frame > 0.6)
            centres.append((rows.mean(), cols.mean()))
        d = np.diff(np.array(centres), axis=0)
        expected = {0: (0, 2), 1: (0, -2), 2: (2, 0), 3: (-2, 0)}[int(label)]
        np.testing.assert_allclose(d, np.tile(expected, (7, 1)), atol=0.5)


def test_c3d_small_learns_motion_direction():
    rng = np.random.default_rng(0)
    x_train, y_train = moving_square_clips(256, rng)
    x_test, y_test = moving_square_clips(128, rng)
    model = cnnkit.Model(create("c3d_small", num_classes=4, in_channels=1))
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        learning_rate=3e-3,
        device="cpu",
    )
    model.fit(x_train, y_train, batch_size=16, epochs=2, verbose=0)
    # a single frame cannot tell the direction: the net must use time
    assert model.evaluate(x_test, y_test)["accuracy"] >= 0.9
