"""The 2D classification zoo (issue 5): LeNet-5, AlexNet, VGG, GoogLeNet, ResNet and the
decks' own models, against torchvision's modules, the papers' and decks' figures, and
NumPy/SciPy references."""

from __future__ import annotations

import io
import math
from contextlib import redirect_stdout

import numpy as np
import pytest
import torch
import torchvision
from scipy.signal import correlate2d
from scipy.spatial.distance import cdist
from torch import nn

import cnnkit
from cnnkit import ConfigError
from cnnkit.cli.main import main as cli_main
from cnnkit.layers import summary
from cnnkit.models import create
from cnnkit.models.base import is_conv
from cnnkit.models.googlenet import GoogLeNetOutputs, googlenet_loss
from cnnkit.models.lenet import (
    C3_CONNECTIONS,
    ConnectionTableConv2D,
    EuclideanRBF,
    TrainableSubsampling2D,
    rbf_centres,
    scaled_tanh,
)
from conftest import shuffled_digits

QUIET = dict(print_fn=lambda line: None)
META = torch.device("meta")


def n_params(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def no_lazy(module: nn.Module) -> bool:
    return not any(isinstance(p, nn.parameter.UninitializedParameter) for p in module.parameters())


def conv_p(k: int, c_in: int, c_out: int) -> int:
    """Hand formula (seed 002): F * F * C_in * C_out + C_out."""
    return k * k * c_in * c_out + c_out


def dense_p(n: int, m: int) -> int:
    """Hand formula (seed 002): N * M + bias."""
    return n * m + m


# --------------------------------------------------------------------- counts vs torchvision

TV_PAIRS = [
    ("vgg11", {}, "vgg11", {}),
    ("vgg13", {}, "vgg13", {}),
    ("vgg16", {}, "vgg16", {}),
    ("vgg19", {}, "vgg19", {}),
    ("vgg11", {"batch_norm": True}, "vgg11_bn", {}),
    ("vgg16", {"batch_norm": True}, "vgg16_bn", {}),
    ("vgg19", {"batch_norm": True}, "vgg19_bn", {}),
    ("resnet18", {}, "resnet18", {}),
    ("resnet34", {}, "resnet34", {}),
    ("resnet50", {}, "resnet50", {}),
    ("resnet101", {}, "resnet101", {}),
    ("resnet152", {}, "resnet152", {}),
    ("googlenet", {}, "googlenet", {"aux_logits": False, "init_weights": False}),
    ("googlenet", {"aux_logits": True}, "googlenet", {"aux_logits": True, "init_weights": False}),
]


@pytest.mark.parametrize("ours,kw,theirs,tv_kw", TV_PAIRS, ids=[p[2] + str(p[1]) for p in TV_PAIRS])
def test_parameter_tensors_equal_torchvision(ours, kw, theirs, tv_kw):
    with META:
        model = create(ours, **kw)
        ref = getattr(torchvision.models, theirs)(weights=None, **tv_kw)
    assert no_lazy(model)
    assert n_params(model) == n_params(ref)
    # the same tensors, shape for shape (buffers included), up to order for GoogLeNet's heads
    ours_shapes = sorted(tuple(t.shape) for t in model.state_dict().values())
    ref_shapes = sorted(tuple(t.shape) for t in ref.state_dict().values())
    assert ours_shapes == ref_shapes


def test_counts_quoted_in_issue():
    with META:
        got = {
            "vgg16": n_params(create("vgg16")),
            "resnet50": n_params(create("resnet50")),
            "googlenet": n_params(create("googlenet")),
            "googlenet_aux": n_params(create("googlenet", aux_logits=True)),
            "alexnet": n_params(create("alexnet")),
        }
    assert got == {
        "vgg16": 138_357_544,
        "resnet50": 25_557_032,
        "googlenet": 6_624_904,
        "googlenet_aux": 13_004_888,
        "alexnet": 62_378_344,
    }


def test_googlenet_paper_5x5_branch():
    """branch3_kernel=5: each third-branch conv grows from 3x3 to 5x5 (16 more weights per
    input-output pair of Table 1's '#5x5 reduce' x '#5x5')."""
    pairs = [(16, 32), (32, 96), (16, 48), (24, 64), (24, 64), (32, 64), (32, 128)]
    pairs += [(32, 128), (48, 128)]
    with META:
        tv = n_params(create("googlenet"))
        paper = create("googlenet", branch3_kernel=5)
    assert n_params(paper) == tv + sum(16 * a * b for a, b in pairs)
    assert paper.features.inception3a.branch3[1][0].kernel_size == (5, 5)
    with pytest.raises(ConfigError, match="branch3_kernel"):
        create("googlenet", branch3_kernel=7)


# --------------------------------------------------------------------- outputs vs torchvision


def _random_torchvision(name: str, **kw) -> nn.Module:
    """A torchvision model with random weights and non-trivial batch-norm statistics,
    allocated without torchvision's (slow) initialisation."""
    with META:
        ref = getattr(torchvision.models, name)(weights=None, **kw)
    ref = ref.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, t in ref.state_dict().items():
            if key.endswith("num_batches_tracked"):
                t.zero_()
            elif key.endswith("running_var"):
                t.uniform_(0.5, 1.5, generator=gen)
            elif t.dim() > 1:
                bound = 1.0 / math.sqrt(t[0].numel())
                t.uniform_(-bound, bound, generator=gen)
            else:
                t.uniform_(-0.2, 0.2, generator=gen)
                if key.endswith(".weight"):  # batch-norm scale
                    t.add_(1.0)
    return ref


def _copy_in_order(model: nn.Module, ref_state: dict[str, torch.Tensor]) -> None:
    """Load ``ref_state``'s tensors into ``model`` position by position (shapes checked)."""
    keys = list(model.state_dict())
    assert len(keys) == len(ref_state)
    pairs = dict(zip(keys, ref_state.values()))
    assert all(model.state_dict()[k].shape == v.shape for k, v in pairs.items())
    model.load_state_dict(pairs, assign=True)


@pytest.mark.parametrize("name", ["resnet18", "vgg11"])
def test_same_outputs_as_torchvision(name):
    ref = _random_torchvision(name).eval()
    with META:
        model = create(name)
    _copy_in_order(model, ref.state_dict())
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = ref(x)
        got = model(x)
        feats = model.forward_features(x)
    assert want.abs().max() > 1e-3  # not a degenerate comparison
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.forward_head(feats), want, rtol=1e-5, atol=1e-5)


def test_googlenet_same_outputs_as_torchvision_with_aux_heads():
    ref = _random_torchvision("googlenet", aux_logits=True, init_weights=False)
    with META:
        model = create("googlenet", aux_logits=True)
    # torchvision registers aux1, aux2 before fc; cnnkit: stages, head (fc), aux1, aux2
    state = ref.state_dict()
    order = [k for k in state if not k.startswith(("aux", "fc"))]
    order += [k for k in state if k.startswith("fc")]
    order += [k for k in state if k.startswith("aux1")] + [k for k in state if k.startswith("aux2")]
    _copy_in_order(model, {k: state[k] for k in order})
    x = torch.randn(2, 3, 64, 64)
    ref.eval(), model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)
    # training mode: (logits, aux2, aux1), same dropout draws for the same seed
    ref.train(), model.train()
    torch.manual_seed(3)
    want = ref(x)
    torch.manual_seed(3)
    got = model(x)
    assert isinstance(got, GoogLeNetOutputs) and got._fields == want._fields
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_googlenet_aux_heads_and_loss():
    torch.manual_seed(0)
    model = create("googlenet", num_classes=5, aux_logits=True)
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([1, 4])
    out = model.train()(x)
    assert [tuple(o.shape) for o in out] == [(2, 5)] * 3
    loss = googlenet_loss(out, y)

    def nll(logits):  # -log softmax at the target, by hand
        z = logits.double()
        return (torch.logsumexp(z, 1) - z[torch.arange(2), y]).mean()

    expected = nll(out.logits) + 0.3 * (nll(out.aux_logits2) + nll(out.aux_logits1))
    torch.testing.assert_close(loss.double(), expected)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 5)
    torch.testing.assert_close(googlenet_loss(logits, y).double(), nll(logits))
    with pytest.raises(ConfigError, match="GoogLeNetOutputs"):
        googlenet_loss((logits, logits), y)


# --------------------------------------------------------------------- shapes (paper tables)

# output sizes of each stage at the paper's input: ResNet Table 1, GoogLeNet Table 1,
# VGG's halving 224 -> 7, the decks' AlexNet table, LeNet-5's C1..C5
STAGE_SHAPES = {
    "resnet50": {
        "stem": (64, 56, 56),
        "layer1": (256, 56, 56),
        "layer2": (512, 28, 28),
        "layer3": (1024, 14, 14),
        "layer4": (2048, 7, 7),
    },
    "resnet18": {
        "stem": (64, 56, 56),
        "layer1": (64, 56, 56),
        "layer2": (128, 28, 28),
        "layer3": (256, 14, 14),
        "layer4": (512, 7, 7),
    },
    "vgg16": {
        "block1": (64, 112, 112),
        "block2": (128, 56, 56),
        "block3": (256, 28, 28),
        "block4": (512, 14, 14),
        "block5": (512, 7, 7),
    },
    "googlenet": {
        "conv1": (64, 112, 112),
        "maxpool1": (64, 56, 56),
        "conv2": (64, 56, 56),
        "conv3": (192, 56, 56),
        "maxpool2": (192, 28, 28),
        "inception3a": (256, 28, 28),
        "inception3b": (480, 28, 28),
        "maxpool3": (480, 14, 14),
        "inception4a": (512, 14, 14),
        "inception4b": (512, 14, 14),
        "inception4c": (512, 14, 14),
        "inception4d": (528, 14, 14),
        "inception4e": (832, 14, 14),
        "maxpool4": (832, 7, 7),
        "inception5a": (832, 7, 7),
        "inception5b": (1024, 7, 7),
    },
    "alexnet": {
        "conv1": (96, 55, 55),
        "pool1": (96, 27, 27),
        "conv2": (256, 27, 27),
        "pool2": (256, 13, 13),
        "conv3": (384, 13, 13),
        "conv4": (384, 13, 13),
        "conv5": (256, 13, 13),
        "pool5": (256, 6, 6),
    },
    "lenet5": {
        "c1": (6, 28, 28),
        "s2": (6, 14, 14),
        "c3": (16, 10, 10),
        "s4": (16, 5, 5),
        "c5": (120, 1, 1),
    },
}
INPUTS = {"resnet50": 224, "resnet18": 224, "vgg16": 224, "googlenet": 224, "alexnet": 227}
INPUTS["lenet5"] = 32


@pytest.mark.parametrize("name", list(STAGE_SHAPES))
def test_stage_shapes_at_paper_input(name):
    with META:
        model = create(name).eval()
        size = INPUTS[name]
        assert model.default_input_shape[1:] == (size, size)
        x = torch.zeros(2, *model.default_input_shape)
        stages = model.forward_stages(x)
        y = model(x)
    assert {k: tuple(v.shape[1:]) for k, v in stages.items()} == STAGE_SHAPES[name]
    assert model.stage_names == list(STAGE_SHAPES[name])
    assert y.shape == (2, 1000 if name != "lenet5" else 10)
    conv = model.last_conv
    assert is_conv(conv)
    # the last convolution's maps: the last stage that contains it, before any pooling
    assert (
        conv.filters
        == {
            "resnet50": 2048,
            "resnet18": 512,
            "vgg16": 512,
            "googlenet": 128,  # inception 5b's pool projection, its last registered conv
            "alexnet": 256,
            "lenet5": 120,
        }[name]
    )


def test_create_overrides_classes_and_channels():
    for name in ["alexnet", "vgg11", "resnet18", "resnet50", "googlenet", "lenet5"]:
        with META:
            model = create(name, num_classes=7, in_channels=1)
            assert no_lazy(model)
            x = torch.zeros(2, *model.default_input_shape)
            assert x.shape[1] == 1
            assert model.eval()(x).shape == (2, 7), name
    with pytest.raises(ConfigError, match="it accepts"):
        create("resnet18", depth=3)


def test_resnet_runs_on_small_inputs_and_grads_flow():
    torch.manual_seed(0)
    model = create("resnet18", num_classes=4)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 4) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


# --------------------------------------------------------------------- AlexNet


def test_alexnet_deck_figures_and_two_streams():
    with META:
        one = create("alexnet")
        two = create("alexnet", groups=2)
    rows = dict(one.named_parameters())
    # seed 002: conv1 11 * 11 * 3 * 96 + 96 = 34944; the first FC 6*6*256 * 4096 + 4096
    c1 = one.features.conv1[0]
    assert c1.weight.numel() + c1.bias.numel() == 34_944
    fc1 = one.head[1]
    assert fc1.weight.numel() + fc1.bias.numel() == dense_p(6 * 6 * 256, 4096) == 37_752_832
    assert n_params(one) == sum(p.numel() for p in rows.values())
    # Krizhevsky et al.: kernels of size 11x11x3, 5x5x48, 3x3x256, 3x3x192, 3x3x192
    kernels = [
        tuple(getattr(two.features, s)[0].weight.shape[1:]) for s in ("conv1", "conv2", "conv3")
    ]
    kernels += [tuple(getattr(two.features, s)[0].weight.shape[1:]) for s in ("conv4", "conv5")]
    assert kernels == [(3, 11, 11), (48, 5, 5), (256, 3, 3), (192, 3, 3), (192, 3, 3)]
    saved = (
        conv_p(5, 96, 256)
        - conv_p(5, 48, 256)
        + conv_p(3, 384, 384)
        - conv_p(3, 192, 384)
        + conv_p(3, 384, 256)
        - conv_p(3, 192, 256)
    )
    assert n_params(two) == 62_378_344 - saved == 60_965_224
    with pytest.raises(ConfigError, match="groups"):
        create("alexnet", groups=3)


# --------------------------------------------------------------------- LeNet-5


def test_lenet5_counts_classic_and_original():
    classic = create("lenet5")
    hand = conv_p(5, 1, 6) + conv_p(5, 6, 16) + conv_p(5, 16, 120)
    hand += dense_p(120, 84) + dense_p(84, 10)
    assert n_params(classic) == hand == 61_706
    original = create("lenet5", variant="original")
    assert n_params(original, trainable_only=True) == 60_000  # LeCun et al. 1998
    assert n_params(original) == 60_000  # the RBF centres are a buffer
    assert original.head[2].centres.shape == (10, 84)
    learnt = create("lenet5", variant="original", trainable_centres=True)
    assert n_params(learnt, trainable_only=True) == 60_000 + 840
    with pytest.raises(ConfigError, match="variant"):
        create("lenet5", variant="modern")
    with pytest.raises(ConfigError, match="in_channels"):
        create("lenet5", variant="original", in_channels=3)


def test_lenet5_original_per_layer_parameters_and_connections():
    """Section II.B of the paper: trainable parameters and connections of each layer."""
    model = create("lenet5", variant="original")
    rows = summary(model, **QUIET)
    params = {r.name.split(".")[-1]: r.params for r in rows}
    assert [params[k] for k in ("c1", "s2", "c3", "s4", "c5", "1")] == [
        156,
        12,
        1516,
        32,
        48120,
        10164,
    ]
    # connections = multiply-accumulates + one bias connection per output unit
    connections = {}
    for r in rows[:5]:
        units = math.prod(r.output_shape[1:])
        connections[r.name.split(".")[-1]] = r.macs + units
    assert connections == {"c1": 122_304, "s2": 5_880, "c3": 151_600, "s4": 2_000, "c5": 48_120}
    assert rows.total_params == 60_000


def test_c3_connection_table_is_table_one():
    # six maps read 3 contiguous S2 maps, six read 4 contiguous, three read 4
    # discontinuous, the last reads all six (Section II.B)
    def contiguous(row):
        return any(set(row) == {(s + i) % 6 for i in range(len(row))} for s in range(6))

    sizes = [len(r) for r in C3_CONNECTIONS]
    assert sizes == [3] * 6 + [4] * 9 + [6]
    assert all(contiguous(r) for r in C3_CONNECTIONS[:12])
    assert not any(contiguous(r) for r in C3_CONNECTIONS[12:15])
    assert sum(sizes) == 60 and 60 * 25 + 16 == 1516


def test_connection_table_conv_matches_scipy():
    torch.manual_seed(0)
    layer = ConnectionTableConv2D(C3_CONNECTIONS, 5, in_channels=6)
    with torch.no_grad():
        layer.bias.uniform_(-1, 1)
    x = torch.randn(2, 6, 14, 14)
    y = layer(x).detach().numpy()
    w = layer.dense_weight.detach().numpy()
    b = layer.bias.detach().numpy()
    xs = x.numpy()
    for n in range(2):
        for j, inputs in enumerate(C3_CONNECTIONS):
            ref = sum(correlate2d(xs[n, i], w[j, i], mode="valid") for i in inputs) + b[j]
            np.testing.assert_allclose(y[n, j], ref, rtol=1e-4, atol=1e-4)
            off = [i for i in range(6) if i not in inputs]
            assert not np.any(w[j, off])
    assert layer.packed_weight.shape == (60, 5, 5)


def test_trainable_subsampling_and_rbf_match_numpy():
    torch.manual_seed(0)
    sub = TrainableSubsampling2D(2, scaled_tanh, in_channels=3)
    with torch.no_grad():
        sub.bias.uniform_(-1, 1)
    x = torch.randn(2, 3, 6, 8)
    got = sub(x).detach().numpy()
    xs = x.numpy()
    sums = xs.reshape(2, 3, 3, 2, 4, 2).sum(axis=(3, 5))
    w, b = sub.weight.detach().numpy(), sub.bias.detach().numpy()
    ref = 1.7159 * np.tanh(2.0 / 3.0 * (sums * w[None, :, None, None] + b[None, :, None, None]))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert n_params(sub) == 6
    # scaled tanh: f(1) = 1, f(-1) = -1 (LeCun 1998, Appendix A)
    torch.testing.assert_close(
        scaled_tanh(torch.tensor([1.0, -1.0])), torch.tensor([1.0, -1.0]), atol=1e-4, rtol=0
    )

    centres = rbf_centres(10)
    assert set(centres.unique().tolist()) == {-1.0, 1.0}
    assert torch.cdist(centres, centres).add(torch.eye(10) * 1e3).min() > 0
    rbf = EuclideanRBF(centres)
    f = torch.randn(5, 84)
    ref = -cdist(f.numpy(), centres.numpy(), "sqeuclidean")
    np.testing.assert_allclose(rbf(f).numpy(), ref, rtol=1e-5, atol=1e-4)
    assert n_params(rbf) == 0 and n_params(EuclideanRBF(centres, trainable=True)) == 840


@pytest.fixture(scope="module")
def digits32():
    return shuffled_digits(32)


def test_lenet5_learns_digits(digits32):
    x, y = digits32
    cnnkit.seed_everything(0)
    model = cnnkit.Model(create("lenet5"))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x[:1400], y[:1400], batch_size=32, epochs=5, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    result = model.evaluate(x[1400:], y[1400:])
    assert result["accuracy"] >= 0.95


# --------------------------------------------------------------------- the decks' models


def test_deck_model_counts():
    got = {n: n_params(create(n)) for n in ["mnist_cnn", "mnist_deep", "cifar_cnn", "cifar_fcn"]}
    got["gap_cnn"] = n_params(create("gap_cnn"))
    mnist_cnn = conv_p(3, 1, 64) + conv_p(3, 64, 32) + dense_p(24 * 24 * 32, 10)
    mnist_deep = conv_p(7, 1, 64) + conv_p(3, 64, 128) + conv_p(3, 128, 128)
    mnist_deep += conv_p(3, 128, 256) + conv_p(3, 256, 256)
    mnist_deep += dense_p(256 * 3 * 3, 128) + dense_p(128, 64) + dense_p(64, 10)
    gap = conv_p(3, 1, 32) + conv_p(3, 32, 64) + conv_p(3, 64, 128) + conv_p(3, 128, 256)
    gap += 2560 + 10  # seed 003: a GAP vector of 256 -> 10 classes: 2560 weights
    assert got == {
        "mnist_cnn": mnist_cnn,
        "mnist_deep": mnist_deep,
        "cifar_cnn": 2_077_130,  # seed 004
        "cifar_fcn": 8_983_434,  # seed 004
        "gap_cnn": gap,
    }


def test_mnist_deep_is_seed001_layer_for_layer():
    model = create("mnist_deep").eval()
    kinds = [type(m).__name__ for m in model]
    seed001 = "Conv2D MaxPooling2D Conv2D Conv2D MaxPooling2D Conv2D Conv2D MaxPooling2D"
    assert kinds == seed001.split() + "Flatten Dense Dropout Dense Dropout Dense".split()
    assert [m.filters for m in model if is_conv(m)] == [64, 128, 128, 256, 256]
    assert model[0].kernel_size == (7, 7) and model[0].padding == "same"
    assert [m.rate for m in model if type(m).__name__ == "Dropout"] == [0.5, 0.5]
    x = torch.randn(3, 1, 28, 28)
    stages = model.forward_stages(x)
    assert [tuple(v.shape[1:]) for v in stages.values()][-1] == (256, 3, 3)
    assert model.last_conv is model[6]
    torch.testing.assert_close(model.forward_head(model.forward_features(x)), model(x))


@pytest.mark.parametrize("name", ["mnist_cnn", "mnist_deep", "cifar_cnn", "cifar_fcn", "gap_cnn"])
def test_deck_models_interface_and_softmax_head(name):
    from cnnkit.train.heads import trace_heads

    model = create(name, num_classes=6).eval()
    assert model[-1].activation == "softmax"
    x = torch.randn(2, *model.default_input_shape)
    y = model(x)
    torch.testing.assert_close(y.sum(1), torch.ones(2))
    torch.testing.assert_close(model.forward_head(model.forward_features(x)), y)
    stages = model.forward_stages(x)
    assert list(stages) == model.stage_names
    heads = trace_heads(model, x)  # the training loop finds the switchable softmax
    assert len(heads) == 1 and heads[0].kind == "softmax" and heads[0].switchable
    if name == "cifar_fcn":
        with pytest.raises(ConfigError, match="no convolutional layer"):
            _ = model.last_conv
    else:
        assert is_conv(model.last_conv)


def test_gap_cnn_logits_are_the_mean_of_its_class_activation_maps():
    """Zhou et al. 2016: with GAP + one dense layer, class score j = mean over positions of
    CAM_j = sum_k w_jk f_k, plus the bias."""
    torch.manual_seed(0)
    model = create("gap_cnn").eval()
    x = torch.randn(2, 1, 28, 28)
    maps = model.forward_features(x)
    assert maps.shape == (2, 256, 7, 7)
    dense = model[-1]
    cam = torch.einsum("jk,nkhw->njhw", dense.weight, maps)
    logits = cam.mean((2, 3)) + dense.bias
    torch.testing.assert_close(model(x), torch.softmax(logits, 1))
    assert not any(type(m).__name__.startswith("MaxPooling") for m in model)


def test_cli_summary_and_save_load(tmp_path):
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli_main(["summary", "cifar_cnn"]) == 0
    text = out.getvalue()
    assert "Total params: 2,077,130" in text and "conv2d_1 (Conv2D)" in text
    torch.manual_seed(1)
    model = cnnkit.Model(create("gap_cnn", num_classes=3))
    x = torch.randn(2, 1, 28, 28)
    ref = model.predict(x)
    model.save(tmp_path / "gap")
    np.testing.assert_array_equal(cnnkit.load(tmp_path / "gap").predict(x), ref)
