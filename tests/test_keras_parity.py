"""Differential test against real Keras 3 (torch backend): every Keras-named cnnkit layer,
over kernel sizes, strides, paddings ('same' with stride > 1 and even kernels, causal),
dilations and odd/even sizes. Each case builds the Keras layer (channels-last) and the
cnnkit layer (channels-first), copies Keras' weights into cnnkit's layout and compares
output shapes, values (fp32, 1e-5) and parameter counts.

``test_layer_equals_keras`` holds the cases that agree exactly; ``test_documented_difference``
the ones whose difference is documented (Flatten order, BatchNormalization's parameter
count, Concatenate's default axis), each checked to be exactly the documented one. The
pytest counts of the two are the totals quoted in the README.

Skipped when Keras is not installed (``pip install keras``; the torch backend needs no
TensorFlow).
"""

from __future__ import annotations

import itertools
import math
import os

import numpy as np
import pytest
import torch

os.environ["KERAS_BACKEND"] = "torch"  # must precede the first keras import
keras = pytest.importorskip("keras", reason="Keras 3 is not installed (pip install keras)")
if keras.backend.backend() != "torch":  # pragma: no cover - keras imported elsewhere first
    pytest.skip("Keras was imported with another backend", allow_module_level=True)

import cnnkit.layers as L  # noqa: E402
from cnnkit._core.errors import ConfigError  # noqa: E402
from cnnkit.layers.base import ACTIVATIONS  # noqa: E402

KL = keras.layers
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
ATOL = 1e-5


# ---------------------------------------------------------------------- helpers


def _last(x: np.ndarray) -> np.ndarray:
    """Channels-first -> channels-last."""
    return np.moveaxis(x, 1, -1)


def _first(y: np.ndarray) -> np.ndarray:
    """Channels-last -> channels-first."""
    return np.moveaxis(y, -1, 1)


def _np(t) -> np.ndarray:
    return keras.ops.convert_to_numpy(t)


def _kernel(w: np.ndarray, nd: int) -> torch.Tensor:
    """Keras ``(*k, a, b)`` -> PyTorch ``(b, a, *k)``."""
    return torch.from_numpy(np.ascontiguousarray(np.transpose(w, (nd + 1, nd, *range(nd)))))


def _depthwise(w: np.ndarray, nd: int) -> torch.Tensor:
    """Keras ``(*k, C, dm)`` -> PyTorch ``(C * dm, 1, *k)`` (channel c, multiplier m at c*dm+m)."""
    k = w.shape[:nd]
    flat = w.reshape(*k, -1)
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(flat, -1, 0))).unsqueeze(1)


def _copy(klayer, layer, nd: int) -> None:
    """Copy Keras' weights into the cnnkit layer, converting layouts."""
    ws = {w.path.split("/")[-1]: _np(w) for w in klayer.weights}
    with torch.no_grad():
        if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
            layer.weight.copy_(_depthwise(ws["kernel"], nd))
        elif isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
            layer.depthwise_weight.copy_(_depthwise(ws["depthwise_kernel"], nd))
            layer.pointwise_weight.copy_(_kernel(ws["pointwise_kernel"], nd))
        elif isinstance(layer, L.Dense):
            layer.weight.copy_(torch.from_numpy(ws["kernel"].T.copy()))
        elif isinstance(layer, L.BatchNormalization):
            layer.bn.weight.copy_(torch.from_numpy(ws["gamma"]))
            layer.bn.bias.copy_(torch.from_numpy(ws["beta"]))
            layer.bn.running_mean.copy_(torch.from_numpy(ws["moving_mean"]))
            layer.bn.running_var.copy_(torch.from_numpy(ws["moving_variance"]))
        elif "kernel" in ws:  # Conv (k, in, out) and ConvTranspose (k, out, in) alike
            layer.weight.copy_(_kernel(ws["kernel"], nd))
        if "bias" in ws and not isinstance(layer, L.BatchNormalization):
            layer.bias.copy_(torch.from_numpy(ws["bias"]))


def _randomise(klayer) -> None:
    """Non-trivial values for every Keras weight (biases, BN statistics included)."""
    rng = np.random.default_rng(1)
    for w in klayer.weights:
        name = w.path.split("/")[-1]
        v = rng.standard_normal(w.shape).astype("float32") * 0.5
        if name in ("moving_variance", "gamma"):
            v = np.abs(v) + 0.5
        w.assign(v)


def _n_params(layer) -> int:
    return sum(p.numel() for p in layer.parameters())


def _run(case):
    """Build both layers on the case's input; return (keras output cf, cnnkit output, layers)."""
    klayer, layer, shape, nd, channels_last = case.build()
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype("float32")
    kx = _last(x) if channels_last else x
    ky = klayer(kx)
    layer.eval()
    with torch.no_grad():
        layer(torch.from_numpy(x))  # build
    if klayer.weights:
        _randomise(klayer)
        ky = klayer(kx)
        _copy(klayer, layer, nd)
    with torch.no_grad():
        y = layer(torch.from_numpy(x)).numpy()
    ky = _np(ky)
    return (_first(ky) if channels_last and ky.ndim > 2 else ky), y, klayer, layer


class Case:
    def __init__(self, cid, kfn, cfn, shape, nd=0, channels_last=True, doc=None):
        self.id, self.kfn, self.cfn, self.shape = cid, kfn, cfn, shape
        self.nd, self.channels_last, self.doc = nd, channels_last, doc

    def build(self):
        return self.kfn(), self.cfn(), self.shape, self.nd, self.channels_last


# ---------------------------------------------------------------------- cases

CASES: list[Case] = []


def _out_ok(n, k, s, pad, d=1):
    k_eff = d * (k - 1) + 1
    return pad != "valid" or n >= k_eff


def _add(cid, kfn, cfn, shape, nd=0, channels_last=True, doc=None):
    CASES.append(Case(cid, kfn, cfn, shape, nd, channels_last, doc))


def _same_pads(n, k, s):
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


# convolutions 1D-3D
_CONV = {1: ("Conv1D", [7, 8]), 2: ("Conv2D", [(7, 8), (8, 9)]), 3: ("Conv3D", [(5, 6, 4)])}
for nd, (name, sizes) in _CONV.items():
    kernels = [1, 2, 3, 4] if nd == 1 else ([2, 3, (2, 3)] if nd == 2 else [2, 3])
    strides = [1, 2, 3] if nd < 3 else [1, 2]
    pads = ["valid", "same", "causal"] if nd == 1 else ["valid", "same"]
    for k, s, p, d, n in itertools.product(kernels, strides, pads, [1, 2], sizes):
        if s > 1 and d > 1:  # Keras refuses strides > 1 with dilation > 1
            continue
        if nd == 3 and (d > 1 or p == "valid" and k == 3 and s == 2):
            continue
        kk, nn_ = (k,) * nd if isinstance(k, int) else k, (n,) * nd if isinstance(n, int) else n
        if not all(_out_ok(a, b, s, p, d) for a, b in zip(nn_, kk)):
            continue
        kw = dict(kernel_size=k, strides=s, padding=p, dilation_rate=d)
        _add(
            f"{name}-k{k}-s{s}-{p}-d{d}-n{n}",
            lambda name=name, kw=kw: getattr(KL, name)(4, activation="relu", **kw),
            lambda name=name, kw=kw: getattr(L, name)(4, activation="relu", **kw),
            (2, 3, *nn_),
            nd,
        )
for g in (2, 3):
    _add(
        f"Conv2D-groups{g}",
        lambda g=g: KL.Conv2D(6, 3, padding="same", groups=g),
        lambda g=g: L.Conv2D(6, 3, padding="same", groups=g),
        (2, 6, 7, 7),
        2,
    )

# transposed convolutions
_TCONV = {1: ("Conv1DTranspose", 5), 2: ("Conv2DTranspose", (5, 6)), 3: ("Conv3DTranspose", 4)}
for nd, (name, n) in _TCONV.items():
    kernels = [1, 2, 3, 4] if nd < 3 else [2, 3]
    strides = [1, 2, 3] if nd < 3 else [1, 2]
    for k, s, p, op in itertools.product(kernels, strides, ["valid", "same"], [None, 0, 1, 2]):
        if op is not None and op >= s:
            continue
        # 'same' with an output_padding that TensorFlow refuses (an even kernel with
        # output_padding=0, ...): cnnkit refuses it too, Keras' torch backend computes one
        refused = p == "same" and op is not None and not 1 <= (k % 2) + op <= s
        nn_ = (n,) * nd if isinstance(n, int) else n
        kw = dict(kernel_size=k, strides=s, padding=p, output_padding=op)
        _add(
            f"{name}-k{k}-s{s}-{p}-op{op}",
            lambda name=name, kw=kw: getattr(KL, name)(3, **kw),
            lambda name=name, kw=kw: getattr(L, name)(3, **kw),
            (2, 2, *nn_),
            nd,
            doc="tconv-refused" if refused else None,
        )
    if nd < 3:
        _add(
            f"{name}-dilated",
            lambda name=name: getattr(KL, name)(3, 3, dilation_rate=2),
            lambda name=name: getattr(L, name)(3, 3, dilation_rate=2),
            (2, 2, *((n,) * nd if isinstance(n, int) else n)),
            nd,
        )

# depthwise and separable (Keras has 1D and 2D)
for nd, cls in ((1, "DepthwiseConv1D"), (2, "DepthwiseConv2D")):
    for k, s, p, dm, n in itertools.product([2, 3], [1, 2], ["valid", "same"], [1, 2], [7, 8]):
        kw = dict(kernel_size=k, strides=s, padding=p, depth_multiplier=dm)
        _add(
            f"{cls}-k{k}-s{s}-{p}-dm{dm}-n{n}",
            lambda cls=cls, kw=kw: getattr(KL, cls)(**kw),
            lambda cls=cls, kw=kw: getattr(L, cls)(**kw),
            (2, 3, *((n,) * nd)),
            nd,
        )
    _add(
        f"{cls}-dilated",
        lambda cls=cls: getattr(KL, cls)(3, dilation_rate=2, padding="same"),
        lambda cls=cls: getattr(L, cls)(3, dilation_rate=2, padding="same"),
        (2, 3, *((9,) * nd)),
        nd,
    )
for nd, cls in ((1, "SeparableConv1D"), (2, "SeparableConv2D")):
    for k, s, p, dm, n in itertools.product([2, 3], [1, 2], ["valid", "same"], [1, 2], [7, 8]):
        kw = dict(kernel_size=k, strides=s, padding=p, depth_multiplier=dm)
        _add(
            f"{cls}-k{k}-s{s}-{p}-dm{dm}-n{n}",
            lambda cls=cls, kw=kw: getattr(KL, cls)(5, **kw),
            lambda cls=cls, kw=kw: getattr(L, cls)(5, **kw),
            (2, 3, *((n,) * nd)),
            nd,
        )

# pooling
for nd in (1, 2, 3):
    sizes = [7, 8] if nd < 3 else [5]
    for kind, pool, s, p, n in itertools.product(
        ["Max", "Average"], [2, 3], [None, 1, 2], ["valid", "same"], sizes
    ):
        name = f"{kind}Pooling{nd}D"
        kw = dict(pool_size=pool, strides=s, padding=p)
        before, after = _same_pads(n, pool, s or pool)
        # Keras' torch backend pads an asymmetric 'same' average by replicating the edge
        replicate = kind == "Average" and p == "same" and before != after and pool > 2
        _add(
            f"{name}-p{pool}-s{s}-{p}-n{n}",
            lambda name=name, kw=kw: getattr(KL, name)(**kw),
            lambda name=name, kw=kw: getattr(L, name)(**kw),
            (2, 3, *((n,) * nd)),
            nd,
            doc="avg-replicate" if replicate else None,
        )
    for kind, keep in itertools.product(["Max", "Average"], [False, True]):
        name = f"Global{kind}Pooling{nd}D"
        _add(
            f"{name}-keepdims{keep}",
            lambda name=name, keep=keep: getattr(KL, name)(keepdims=keep),
            lambda name=name, keep=keep: getattr(L, name)(keepdims=keep),
            (2, 3, *((5,) * nd)),
            nd,
        )

# upsampling, zero padding, cropping
for nd, size in ((1, 3), (2, (2, 3)), (3, 2)):
    name = f"UpSampling{nd}D"
    _add(
        f"{name}-{size}",
        lambda name=name, size=size: getattr(KL, name)(size),
        lambda name=name, size=size: getattr(L, name)(size),
        (2, 3, *((4,) * nd)),
        nd,
    )
_add(
    "UpSampling2D-bilinear",
    lambda: KL.UpSampling2D((2, 3), interpolation="bilinear"),
    lambda: L.UpSampling2D((2, 3), interpolation="bilinear"),
    (2, 3, 4, 5),
    2,
)
_BORDER_ARGS = {
    1: [1, (2, 0), (0, 3)],
    2: [1, (1, 2), ((0, 1), (2, 1))],
    3: [1, (1, 0, 2), ((1, 0), (0, 2), (1, 1))],
}
for nd, args in _BORDER_ARGS.items():
    for arg, kind in itertools.product(args, ["ZeroPadding", "Cropping"]):
        name = f"{kind}{nd}D"
        _add(
            f"{name}-{arg}",
            lambda name=name, arg=arg: getattr(KL, name)(arg),
            lambda name=name, arg=arg: getattr(L, name)(arg),
            (2, 3, *((6,) * nd)),
            nd,
        )

# batch norm (inference), dense, activations, reshape, dropout
for shape in ((4, 3), (2, 3, 6), (2, 3, 5, 4), (2, 2, 3, 3, 3)):
    _add(
        f"BatchNormalization-{len(shape)}d",
        lambda: KL.BatchNormalization(epsilon=1e-3),
        lambda: L.BatchNormalization(epsilon=1e-3),
        shape,
        len(shape) - 2,
        doc="bn-count",
    )
for units, act, shape in itertools.product([1, 5], ["relu", "softmax", None], [(3, 6), (2, 4, 6)]):
    _add(
        f"Dense-{units}-{act}-{len(shape)}d",
        lambda units=units, act=act: KL.Dense(units, activation=act),
        lambda units=units, act=act: L.Dense(units, activation=act),
        shape,
        channels_last=False,  # Dense acts on the last axis in both
    )
for act, shape in itertools.product(sorted(ACTIVATIONS), [(3, 7), (2, 3, 4, 5)]):
    _add(
        f"Activation-{act}-{len(shape)}d",
        lambda act=act: KL.Activation(act),
        lambda act=act: L.Activation(act),
        shape,
    )
for kw in ({}, {"negative_slope": 0.1}):
    _add(
        f"LeakyReLU-{kw}", lambda kw=kw: KL.LeakyReLU(**kw), lambda kw=kw: L.LeakyReLU(**kw), (3, 7)
    )
for kw in ({}, {"max_value": 1.0}, {"negative_slope": 0.1, "threshold": 0.5}):
    _add(f"ReLU-{kw}", lambda kw=kw: KL.ReLU(**kw), lambda kw=kw: L.ReLU(**kw), (3, 7))
_add(
    "Reshape",
    lambda: KL.Reshape((3, 4)),
    lambda: L.Reshape((3, 4)),
    (2, 12),
    channels_last=False,
)
for name, arg in (("Dropout", 0.5), ("SpatialDropout1D", 0.5), ("SpatialDropout2D", 0.5)):
    nd = {"Dropout": 2, "SpatialDropout1D": 1, "SpatialDropout2D": 2}[name]
    _add(
        name,
        lambda name=name, arg=arg: getattr(KL, name)(arg),
        lambda name=name, arg=arg: getattr(L, name)(arg),
        (2, 3, *((4,) * nd)),
        nd,
    )


# ---------------------------------------------------------------------- tests


EQUAL = [c for c in CASES if c.doc is None]
DOCUMENTED = [c for c in CASES if c.doc is not None]


@pytest.mark.parametrize("case", EQUAL, ids=[c.id for c in EQUAL])
def test_layer_equals_keras(case):
    ky, y, klayer, layer = _run(case)
    assert y.shape == ky.shape, (y.shape, ky.shape)
    np.testing.assert_allclose(y, ky, atol=ATOL, rtol=ATOL)
    assert _n_params(layer) == klayer.count_params()
    # compute_output_shape is arithmetic only; it agrees with the forward pass
    assert tuple(layer.compute_output_shape(case.shape)) == y.shape


def _window_mean(x: np.ndarray, pool: int, stride: int, pads, mode: str) -> np.ndarray:
    """NumPy average pooling over the spatial axes of a channels-first array: padded with
    NaN (left out of the mean, TensorFlow) or by replicating the edge (Keras-torch)."""
    nd = x.ndim - 2
    width = [(0, 0), (0, 0), *pads]
    xp = (
        np.pad(x, width, mode="edge")
        if mode == "edge"
        else np.pad(x, width, constant_values=np.nan)
    )
    win = np.lib.stride_tricks.sliding_window_view(xp, (pool,) * nd, axis=tuple(range(2, 2 + nd)))
    win = win[(slice(None), slice(None), *[slice(None, None, stride)] * nd)]
    return np.nanmean(win.reshape(*win.shape[: 2 + nd], -1), axis=-1)


@pytest.mark.parametrize("case", DOCUMENTED, ids=[c.id for c in DOCUMENTED])
def test_documented_difference(case):
    """bn-count: equal values and trainable counts; Keras' count_params adds the moving
    statistics (buffers here). avg-replicate: an asymmetric 'same' average pooling; cnnkit
    leaves padded positions out of the mean (as Keras' TensorFlow and JAX backends),
    Keras' torch backend pads by replicating the edge. tconv-refused: a 'same' transposed
    convolution whose output_padding TensorFlow rejects; cnnkit rejects it too."""
    if case.doc == "tconv-refused":
        x = np.zeros((1, *case.shape[2:], case.shape[1]), "float32")
        assert _np(case.kfn()(x)).ndim == x.ndim  # Keras (torch backend) computes something
        with pytest.raises(ConfigError, match="does not map back to N"):
            case.cfn()
        return
    ky, y, klayer, layer = _run(case)
    assert y.shape == ky.shape
    trainable = sum(int(np.prod(w.shape)) for w in klayer.trainable_weights)
    assert _n_params(layer) == trainable
    if case.doc == "bn-count":
        np.testing.assert_allclose(y, ky, atol=ATOL, rtol=ATOL)
        buffers = sum(b.numel() for b in layer.buffers() if b.dim())
        assert klayer.count_params() == _n_params(layer) + buffers
        return
    x = np.random.default_rng(0).standard_normal(case.shape).astype("float32")
    pool, stride = layer.pool_size[0], layer.strides[0]
    pads = [_same_pads(n, pool, stride) for n in case.shape[2:]]
    np.testing.assert_allclose(y, _window_mean(x, pool, stride, pads, "nan"), atol=ATOL)
    np.testing.assert_allclose(ky, _window_mean(x, pool, stride, pads, "edge"), atol=ATOL)
    assert not np.allclose(y, ky, atol=ATOL)


MERGES = ["Add", "Multiply", "Average", "Subtract", "Maximum", "Minimum"]


@pytest.mark.parametrize("name", MERGES)
def test_merge_equals_keras(name):
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((2, 3, 4, 5)).astype("float32") for _ in range(2)]
    ky = _first(_np(getattr(KL, name)()([_last(x) for x in xs])))
    y = getattr(L, name)()([torch.from_numpy(x) for x in xs]).numpy()
    np.testing.assert_allclose(y, ky, atol=ATOL, rtol=ATOL)


def test_concatenate_on_channels_equals_keras():
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((2, c, 4, 5)).astype("float32") for c in (2, 3)]
    ky = _first(_np(KL.Concatenate(axis=-1)([_last(x) for x in xs])))
    y = L.Concatenate(axis=1)([torch.from_numpy(x) for x in xs]).numpy()
    np.testing.assert_allclose(y, ky, atol=ATOL, rtol=ATOL)


# ---------------------------------------------------------------------- documented


def test_documented_difference_flatten_order():
    """cnnkit flattens (C, H, W); Keras (H, W, C): the same values, permuted."""
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype("float32")
    ky = _np(KL.Flatten()(_last(x)))
    y = L.Flatten()(torch.from_numpy(x)).numpy()
    assert y.shape == ky.shape
    assert not np.allclose(y, ky)
    np.testing.assert_allclose(y, _first(ky.reshape(2, 4, 5, 3)).reshape(2, -1), atol=0)


def test_documented_difference_batchnorm_counts():
    """Keras counts the moving statistics in count_params; cnnkit keeps them as buffers."""
    kl = KL.BatchNormalization()
    kl.build((None, 4, 4, 6))
    layer = L.BatchNormalization()
    layer(torch.zeros(2, 6, 4, 4))
    trainable = sum(int(np.prod(w.shape)) for w in kl.trainable_weights)
    assert _n_params(layer) == trainable == 12
    assert kl.count_params() == _n_params(layer) + sum(
        b.numel() for b in layer.buffers() if b.dim()
    )


def test_documented_difference_batchnorm_moving_variance():
    """One training step: the moving variance moves with torch's unbiased batch variance
    (Keras: biased), so the two differ by exactly the factor m / (m - 1) in the update."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 2, 2)).astype("float32")
    kl = KL.BatchNormalization(momentum=0.5)
    kl(_last(x), training=True)
    layer = L.BatchNormalization(momentum=0.5)
    layer.train()
    layer(torch.from_numpy(x))
    m = 4 * 2 * 2
    biased = x.var(axis=(0, 2, 3))
    k_var = _np(kl.moving_variance)
    np.testing.assert_allclose(k_var, 0.5 * 1.0 + 0.5 * biased, atol=1e-5)
    np.testing.assert_allclose(
        layer.bn.running_var.numpy(), 0.5 * 1.0 + 0.5 * biased * m / (m - 1), atol=1e-5
    )


def test_documented_difference_default_axes():
    """Keras' Concatenate / BatchNormalization default to axis -1 (channels-last);
    cnnkit's to axis 1 (channels-first): each on its layout's channels."""
    assert KL.Concatenate().axis == -1 and L.Concatenate().axis == 1
    assert KL.BatchNormalization().axis == -1 and L.BatchNormalization().axis == 1


# ---------------------------------------------------------------------- initialisers

_INIT_CASES = [
    ("Conv2D", dict(filters=8, kernel_size=3), (1, 6, 9, 9), "kernel", "weight"),
    ("Conv2DTranspose", dict(filters=2, kernel_size=3), (1, 16, 5, 5), "kernel", "weight"),
    ("DepthwiseConv2D", dict(kernel_size=5, depth_multiplier=4), (1, 16, 9, 9), "kernel", "weight"),
    (
        "SeparableConv2D",
        dict(filters=8, kernel_size=5, depth_multiplier=4),
        (1, 16, 9, 9),
        "depthwise_kernel",
        "depthwise_weight",
    ),
    ("Dense", dict(units=7), (1, 30), "kernel", "weight"),
]


@pytest.mark.parametrize("init", ["glorot_uniform", "he_uniform"])
@pytest.mark.parametrize(("name", "kw", "shape", "kname", "cname"), _INIT_CASES)
def test_default_initialiser_uses_keras_fans(name, kw, shape, kname, cname, init):
    """The uniform limit from Keras' own compute_fans on Keras' kernel shape bounds the
    cnnkit weights, and the largest of a few draws comes within 3 % of it."""
    from keras.src.initializers.random_initializers import compute_fans

    key = "depthwise_initializer" if name.startswith(("Depthwise", "Separable")) else None
    key = key or "kernel_initializer"
    kl = getattr(KL, name)(**kw, **{key: init})
    kl.build(tuple(_last(np.zeros(shape)).shape) if len(shape) > 2 else shape)
    kshape = next(w.shape for w in kl.weights if w.path.endswith(kname))
    fan_in, fan_out = compute_fans(kshape)
    limit = math.sqrt(6 / (fan_in + fan_out)) if init == "glorot_uniform" else math.sqrt(6 / fan_in)
    assert np.abs(_np(next(w for w in kl.weights if w.path.endswith(kname)))).max() <= limit
    torch.manual_seed(0)
    biggest = 0.0
    for _ in range(4):
        layer = getattr(L, name)(**kw, **{key: init})
        layer(torch.zeros(shape))
        biggest = max(biggest, float(getattr(layer, cname).detach().abs().max()))
    assert 0.97 * limit < biggest <= limit * (1 + 1e-6)
