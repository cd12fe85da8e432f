"""cnnkit.losses and cnnkit.ops.weight_maps against torch.nn.functional, torchvision and
NumPy written from the decks' formulas (seed 000's BCE, seed 002's E and w(x))."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from cnnkit import ConfigError, ShapeError
from cnnkit import losses as L
from cnnkit.ops import weight_maps as WM

DT = torch.float64
RNG = np.random.default_rng(0)


def _logits(*shape, scale=2.0):
    return (torch.randn(*shape, dtype=DT) * scale).requires_grad_(True)


def _grad(loss, x):
    (g,) = torch.autograd.grad(loss, x)
    return g


def _np_log_softmax(z, axis=1):
    m = z.max(axis=axis, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=axis, keepdims=True))


def _reduce_np(v, reduction):
    return {"mean": v.mean(), "sum": v.sum(), "none": v}[reduction]


# ============================================================================ cross-entropy

CE_SHAPES = [(6, 4), (2, 3, 4, 5), (3, 5, 7), (2, 3, 2, 3, 2)]


@pytest.mark.parametrize("shape", CE_SHAPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_vs_torch(shape, reduction, weighted, smoothing):
    x = _logits(*shape)
    c = shape[1]
    t = torch.randint(0, c, shape[:1] + shape[2:])
    t.view(-1)[::4] = -100  # ignored
    w = torch.rand(c, dtype=DT) + 0.5 if weighted else None
    got = L.cross_entropy(x, t, weight=w, label_smoothing=smoothing, reduction=reduction)
    ref = F.cross_entropy(x, t, weight=w, label_smoothing=smoothing, reduction=reduction)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(_grad(got.sum(), x), _grad(ref.sum(), x))


@pytest.mark.parametrize("shape", CE_SHAPES)
@pytest.mark.parametrize("ignore", [-100, 1])
def test_cross_entropy_vs_numpy_weighted_ignore(shape, ignore):
    x = _logits(*shape)
    c = shape[1]
    t = torch.randint(0, c, shape[:1] + shape[2:])
    t.view(-1)[::3] = ignore
    w = np.linspace(0.5, 2.0, c)
    got = L.cross_entropy(x, t, weight=w.tolist(), ignore_index=ignore)
    z = np.moveaxis(x.detach().numpy(), 1, -1).reshape(-1, c)
    tt = t.numpy().reshape(-1)
    keep = tt != ignore
    logp = _np_log_softmax(z, axis=1)
    wi = w[tt[keep]]
    nll = -logp[keep, tt[keep]]
    ref = (wi * nll).sum() / wi.sum()
    np.testing.assert_allclose(got.item(), ref, rtol=1e-10, atol=1e-12)
    # gradient: w_y (softmax - onehot) / sum w, zero at ignored
    p = np.exp(logp)
    g = np.zeros_like(z)
    g[keep] = wi[:, None] * (p[keep] - np.eye(c)[tt[keep]]) / wi.sum()
    g = np.moveaxis(g.reshape((shape[0],) + shape[2:] + (c,)), -1, 1)
    np.testing.assert_allclose(_grad(got, x).numpy(), g, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("shape", [(6, 4), (2, 3, 4, 4)])
def test_cross_entropy_soft_targets_keras_formula(shape):
    # Keras categorical_crossentropy (seed 000: H_p(q) = -sum_c q(c) log p(c)), mean over samples
    x = _logits(*shape)
    q = torch.softmax(torch.randn(shape, dtype=DT), 1)
    got = L.cross_entropy(x, q)
    logp = _np_log_softmax(x.detach().numpy(), 1)
    ref = -(q.numpy() * logp).sum(1).mean()
    np.testing.assert_allclose(got.item(), ref, rtol=1e-10, atol=1e-12)
    p = np.exp(logp)
    n = q[:, 0].numel()
    np.testing.assert_allclose(_grad(got, x).numpy(), (p - q.numpy()) / n, rtol=1e-9, atol=1e-12)


def test_categorical_equals_sparse_and_int_onehot():
    x = _logits(5, 4)
    t = torch.tensor([0, 3, 1, 1, 2])
    onehot = F.one_hot(t, 4)  # int64 one-hot accepted
    a = L.get_loss("categorical_crossentropy")(x, onehot.to(DT))
    b = L.get_loss("sparse_categorical_crossentropy")(x, t)
    c = L.cross_entropy(x, onehot)
    d = L.get_loss("sparse_categorical_crossentropy")(x, t[:, None].numpy().astype(np.float32))
    ref = F.cross_entropy(x, t)
    for v in (a, b, c, d):
        torch.testing.assert_close(v, ref)


def test_cross_entropy_per_pixel_singleton_channel_target():
    x = _logits(2, 3, 4, 4)
    t = torch.randint(0, 3, (2, 1, 4, 4))
    torch.testing.assert_close(L.cross_entropy(x, t), F.cross_entropy(x, t[:, 0]))


# ============================================================================ binary cross-entropy


def _np_bce(p, y):  # seed 000: -1/N sum y log p + (1 - y) log(1 - p)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


@pytest.mark.parametrize("shape", [(7,), (5, 1), (4, 3), (2, 3, 4, 4)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_logits_vs_torch_and_formula(shape, reduction):
    x = _logits(*shape)
    y = torch.rand(shape, dtype=DT).round()
    got = L.binary_cross_entropy(x, y, reduction=reduction)
    ref = F.binary_cross_entropy_with_logits(x, y, reduction=reduction)
    torch.testing.assert_close(got, ref)
    p = 1 / (1 + np.exp(-x.detach().numpy()))
    np.testing.assert_allclose(
        got.detach().numpy(), _reduce_np(_np_bce(p, y.numpy()), reduction), rtol=1e-10
    )
    g = _grad(got.sum(), x).numpy()
    scale = 1 / y.numel() if reduction == "mean" else 1.0
    np.testing.assert_allclose(g, (p - y.numpy()) * scale, rtol=1e-9, atol=1e-12)


def test_bce_pos_weight_per_channel_per_pixel():
    x = _logits(2, 3, 4, 4)
    y = torch.rand(2, 3, 4, 4, dtype=DT).round()
    pw = torch.tensor([1.0, 2.0, 0.5], dtype=DT)
    got = L.binary_cross_entropy(x, y, pos_weight=pw)
    ref = F.binary_cross_entropy_with_logits(x, y, pos_weight=pw.view(3, 1, 1))
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(_grad(got, x), _grad(ref, x))
    x2 = _logits(6, 3)
    y2 = torch.rand(6, 3, dtype=DT).round()
    torch.testing.assert_close(
        L.binary_cross_entropy(x2, y2, pos_weight=pw),
        F.binary_cross_entropy_with_logits(x2, y2, pos_weight=pw),
    )


def test_bce_singleton_target_reconciled():
    x = _logits(8, 1)
    y = torch.rand(8, dtype=DT).round()
    torch.testing.assert_close(
        L.get_loss("binary_crossentropy")(x, y), F.binary_cross_entropy_with_logits(x, y[:, None])
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_probs_vs_formula_and_torch(reduction):
    p = torch.rand(4, 5, dtype=DT).clamp(0.01, 0.99).requires_grad_(True)
    y = torch.rand(4, 5, dtype=DT).round()
    got = L.binary_cross_entropy_probs(p, y, reduction=reduction)
    ref_np = _reduce_np(_np_bce(p.detach().numpy(), y.numpy()), reduction)
    np.testing.assert_allclose(got.detach().numpy(), ref_np, rtol=1e-10, atol=1e-12)
    ref = F.binary_cross_entropy(p, y, reduction=reduction)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(_grad(got.sum(), p), _grad(ref.sum(), p))


def test_bce_probs_clamps_saturated():
    p = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=DT)
    y = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=DT)
    got = L.binary_cross_entropy_probs(p, y, eps=1e-7, reduction="none")
    pc = np.clip(p.numpy(), 1e-7, 1 - 1e-7)
    np.testing.assert_allclose(got.numpy(), _np_bce(pc, y.numpy()), rtol=1e-9)
    assert torch.isfinite(got).all()


# ============================================================================ stability


def test_stability_large_logits():
    big = torch.tensor(
        [[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 999.0]], dtype=DT, requires_grad=True
    )
    t = torch.tensor([1, 1])
    ce = L.cross_entropy(big, t, reduction="none")
    # log-sum-exp by hand: row 0 -> 1000 - (-1000) = 2000; row 1 -> log(1 + e^-1) (approx)
    np.testing.assert_allclose(
        ce.detach().numpy(), [2000.0, math.log1p(math.exp(-1.0))], rtol=1e-10, atol=1e-12
    )
    z = torch.tensor([1000.0, -1000.0, 1000.0, -1000.0], dtype=torch.float32, requires_grad=True)
    y = torch.tensor([0.0, 1.0, 1.0, 0.0])
    bce = L.binary_cross_entropy(z, y, reduction="none")
    np.testing.assert_allclose(bce.detach().numpy(), [1000.0, 1000.0, 0.0, 0.0])
    x4 = (torch.tensor([1000.0, -1000.0]).repeat(2, 3, 4, 1).permute(0, 3, 1, 2)).contiguous()
    x4.requires_grad_(True)
    t4 = torch.randint(0, 2, (2, 3, 4))
    wm = torch.rand(2, 3, 4)
    for loss in (
        L.cross_entropy(x4, t4),
        L.focal_loss(x4, t4),
        L.focal_loss(x4, F.one_hot(t4, 2).permute(0, 3, 1, 2).float()),
        L.dice_loss(x4, t4),
        L.dice_loss(x4[:, :1], t4),
        L.weighted_cross_entropy(x4, t4, wm),
        L.binary_cross_entropy(x4, torch.rand(2, 2, 3, 4).round()),
        L.get_loss("categorical_crossentropy")(x4, F.one_hot(t4, 2).permute(0, 3, 1, 2).float()),
    ):
        assert torch.isfinite(loss)
        assert torch.isfinite(_grad(loss, x4)).all()


# ============================================================================ focal


@pytest.mark.parametrize("alpha", [0.25, 0.7, -1.0, None])
@pytest.mark.parametrize("gamma", [0.0, 2.0, 3.5])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_focal_binary_vs_torchvision(alpha, gamma, reduction):
    x = _logits(3, 2, 4, 4)
    y = torch.rand(3, 2, 4, 4, dtype=DT).round()
    got = L.focal_loss(x, y, alpha=alpha, gamma=gamma, reduction=reduction)
    ref = sigmoid_focal_loss(
        x, y, alpha=-1 if alpha is None else alpha, gamma=gamma, reduction=reduction
    )
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(_grad(got.sum(), x), _grad(ref.sum(), x))


def test_focal_one_channel_index_target():
    x = _logits(4, 1, 3, 3)
    y = torch.randint(0, 2, (4, 3, 3))
    torch.testing.assert_close(
        L.focal_loss(x, y), sigmoid_focal_loss(x, y[:, None].to(DT), reduction="mean")
    )


@pytest.mark.parametrize("shape", [(8, 5), (2, 4, 3, 3)])
@pytest.mark.parametrize("alpha", [None, 0.25, "per_class"])
@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_focal_multiclass_vs_numpy(shape, alpha, gamma):
    x = _logits(*shape)
    c = shape[1]
    t = torch.randint(0, c, shape[:1] + shape[2:])
    t.view(-1)[::5] = -100
    a = np.linspace(0.2, 1.0, c) if alpha == "per_class" else alpha
    got = L.focal_loss(
        x, t, alpha=None if a is None else (a.tolist() if alpha == "per_class" else a), gamma=gamma
    )
    z = np.moveaxis(x.detach().numpy(), 1, -1).reshape(-1, c)
    tt = t.numpy().reshape(-1)
    keep = tt != -100
    logp = _np_log_softmax(z, 1)[keep, tt[keep]]
    fl = -((1 - np.exp(logp)) ** gamma) * logp
    if alpha == "per_class":
        fl = fl * a[tt[keep]]
    elif alpha is not None:
        fl = fl * alpha
    np.testing.assert_allclose(got.item(), fl.mean(), rtol=1e-10, atol=1e-12)
    # d/dz_j = -a (delta_tj - p_j) [(1 - p_t)^g - g (1 - p_t)^(g - 1) p_t log p_t] / n_kept
    p = np.exp(_np_log_softmax(z, 1))
    pt = np.exp(logp)
    aw = a[tt[keep]] if alpha == "per_class" else (1.0 if alpha is None else alpha)
    fac = -aw * ((1 - pt) ** gamma - gamma * (1 - pt) ** (gamma - 1) * pt * logp) / keep.sum()
    g = np.zeros_like(z)
    g[keep] = fac[:, None] * (np.eye(c)[tt[keep]] - p[keep])
    g = np.moveaxis(g.reshape((shape[0],) + shape[2:] + (c,)), -1, 1)
    np.testing.assert_allclose(_grad(got, x).numpy(), g, rtol=1e-9, atol=1e-12)
    if gamma == 0 and alpha is None:  # plain cross-entropy
        torch.testing.assert_close(got, F.cross_entropy(x, t))


# ============================================================================ dice


def _np_dice(p, t, smooth, axes):
    inter = (p * t).sum(axis=axes)
    return 1 - (2 * inter + smooth) / (p.sum(axis=axes) + t.sum(axis=axes) + smooth)


@pytest.mark.parametrize("shape", [(2, 3, 5, 5), (3, 4, 6), (2, 2, 3, 3, 3)])
@pytest.mark.parametrize("multiclass", [True, False])
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("smooth", [1.0, 0.0])
def test_dice_softmax_vs_numpy(shape, multiclass, batch, smooth):
    x = _logits(*shape)
    c = shape[1]
    t = torch.randint(0, c, shape[:1] + shape[2:])
    got = L.dice_loss(x, t, smooth=smooth, multiclass=multiclass, batch=batch, reduction="none")
    p = np.exp(_np_log_softmax(x.detach().numpy(), 1))
    oh = np.moveaxis(np.eye(c)[t.numpy()], -1, 1)
    axes = tuple(range(2, len(shape)))
    if batch:
        axes = (0,) + axes
    if not multiclass:
        axes = axes + (1,)
    ref = _np_dice(p, oh, smooth, axes)
    np.testing.assert_allclose(got.detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        L.dice_loss(x, t, smooth, multiclass, batch=batch).item(),
        ref.mean(),
        rtol=1e-10,
        atol=1e-12,
    )
    same = L.dice_loss(x, torch.as_tensor(oh), smooth, multiclass, batch=batch, reduction="sum")
    np.testing.assert_allclose(same.item(), ref.sum(), rtol=1e-10, atol=1e-12)
    # gradient of the mean from the formula, chained through the softmax
    ip = (p * oh).sum(axis=axes, keepdims=True)
    den = p.sum(axis=axes, keepdims=True) + oh.sum(axis=axes, keepdims=True) + smooth
    dp = -(2 * oh * den - (2 * ip + smooth)) / den**2 / ref.size
    dz = p * (dp - (p * dp).sum(axis=1, keepdims=True))
    g = _grad(L.dice_loss(x, t, smooth, multiclass, batch=batch), x).numpy()
    np.testing.assert_allclose(g, dz, rtol=1e-9, atol=1e-12)


def test_dice_sigmoid_one_channel_vs_numpy():
    x = _logits(3, 1, 6, 6)
    y = torch.randint(0, 2, (3, 6, 6))
    got = L.dice_loss(x, y, reduction="none")
    p = 1 / (1 + np.exp(-x.detach().numpy()))
    ref = _np_dice(p, y.numpy()[:, None].astype(float), 1.0, (2, 3))
    np.testing.assert_allclose(got.detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    # activation=None takes probabilities
    probs = torch.sigmoid(x)
    torch.testing.assert_close(L.dice_loss(probs, y, activation=None), got.mean())


# ============================================================================ regression


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("param", [0.5, 1.0, 2.0])
def test_regression_vs_torch_and_numpy(reduction, param):
    a = _logits(4, 3, 5, scale=3.0)
    b = torch.randn(4, 3, 5, dtype=DT) * 3
    e = (a - b).detach().numpy()
    ae = np.abs(e)
    cases = [
        (L.mse(a, b, reduction), F.mse_loss(a, b, reduction=reduction), e**2),
        (L.mae(a, b, reduction), F.l1_loss(a, b, reduction=reduction), ae),
        (
            L.huber(a, b, delta=param, reduction=reduction),
            F.huber_loss(a, b, delta=param, reduction=reduction),
            np.where(ae <= param, 0.5 * e**2, param * (ae - 0.5 * param)),
        ),
        (
            L.smooth_l1_loss(a, b, beta=param, reduction=reduction),
            F.smooth_l1_loss(a, b, beta=param, reduction=reduction),
            np.where(ae < param, 0.5 * e**2 / param, ae - 0.5 * param),
        ),
    ]
    for got, ref, np_val in cases:
        torch.testing.assert_close(got, ref)
        np.testing.assert_allclose(
            got.detach().numpy(), _reduce_np(np_val, reduction), rtol=1e-10, atol=1e-12
        )
        torch.testing.assert_close(_grad(got.sum(), a), _grad(ref.sum(), a))


def test_regression_no_silent_broadcast():
    pred = _logits(6, 1)
    y = torch.randn(6, dtype=DT)
    torch.testing.assert_close(
        L.get_loss("mean_squared_error")(pred, y), F.mse_loss(pred, y[:, None])
    )
    with pytest.raises(ShapeError, match=r"\(5,\)"):
        L.mse(pred, torch.randn(5, dtype=DT))


# ============================================================================ weighted CE (seed 002)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shared", [False, True])
def test_weighted_cross_entropy_vs_seed002_E(reduction, shared):
    x = _logits(2, 3, 5, 6)
    t = torch.randint(0, 3, (2, 5, 6))
    wm = RNG.uniform(0.5, 10, (5, 6) if shared else (2, 5, 6))
    got = L.weighted_cross_entropy(x, t, wm, reduction=reduction)
    logp = _np_log_softmax(x.detach().numpy(), 1)
    w_full = np.broadcast_to(wm, (2, 5, 6))
    lp_true = np.take_along_axis(logp, t.numpy()[:, None], 1)[:, 0]
    e_px = -w_full * lp_true  # E = -sum_x w(x) log p_l(x)(x)
    ref = {"sum": e_px.sum(), "mean": e_px.sum() / e_px.size, "none": e_px}[reduction]
    np.testing.assert_allclose(got.detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    g = w_full[:, None] * (np.exp(logp) - np.moveaxis(np.eye(3)[t.numpy()], -1, 1))
    if reduction == "mean":
        g = g / e_px.size
    np.testing.assert_allclose(_grad(got.sum(), x).numpy(), g, rtol=1e-9, atol=1e-12)


def test_weighted_cross_entropy_special_cases():
    x = _logits(2, 4, 3, 3)
    t = torch.randint(0, 4, (2, 3, 3))
    torch.testing.assert_close(
        L.weighted_cross_entropy(x, t, torch.ones(2, 3, 3)), F.cross_entropy(x, t)
    )
    cw = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=DT)
    torch.testing.assert_close(
        L.weighted_cross_entropy(x, t, cw[t], reduction="sum"),
        F.cross_entropy(x, t, weight=cw, reduction="sum"),
    )
    t2 = t.clone()
    t2[0] = -100
    got = L.weighted_cross_entropy(x, t2, torch.full((2, 1, 3, 3), 2.0), reduction="mean")
    torch.testing.assert_close(got, 2 * F.cross_entropy(x[1:], t[1:]))
    mod = L.WeightedCrossEntropyLoss(reduction="sum")
    torch.testing.assert_close(mod(x, t, torch.ones(3, 3)), F.cross_entropy(x, t, reduction="sum"))


# ============================================================================ weight map (seed 002)


def _blobs24():
    lab = np.zeros((24, 24), np.int32)
    lab[3:9, 3:10] = 1
    lab[3:9, 12:18] = 2  # 2-pixel gap (cols 10, 11) to object 1
    yy, xx = np.mgrid[:24, :24]
    lab[(yy - 17) ** 2 + (xx - 9) ** 2 <= 16] = 3
    return lab


def _brute_weight_map(lab, w0, sigma, class_weights="balanced"):
    """Explicit loops: distance from every pixel to every pixel of every object."""
    h, w = lab.shape
    objs = {}
    for i in range(h):
        for j in range(w):
            if lab[i, j] > 0:
                objs.setdefault(int(lab[i, j]), []).append((i, j))
    n_fg = sum(len(v) for v in objs.values())
    n_bg = h * w - n_fg
    if class_weights == "balanced":
        wfg = max(n_bg / n_fg, 1.0) if n_fg else 1.0
        wbg = max(n_fg / n_bg, 1.0) if n_bg else 1.0
    elif class_weights is None:
        wfg = wbg = 1.0
    else:
        wbg, wfg = class_weights.get(0, 1.0), class_weights.get(1, 1.0)
    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            out[i, j] = wfg if lab[i, j] > 0 else wbg
            if lab[i, j] == 0 and len(objs) >= 2:
                ds = sorted(min(math.hypot(i - a, j - b) for a, b in pix) for pix in objs.values())
                out[i, j] += w0 * math.exp(-((ds[0] + ds[1]) ** 2) / (2 * sigma**2))
    return out


@pytest.mark.parametrize("w0,sigma", [(10, 5), (5, 2), (1, 8)])
@pytest.mark.parametrize("class_weights", ["balanced", None, {0: 0.3, 1: 2.0}])
def test_weight_map_vs_brute_force(w0, sigma, class_weights):
    lab = _blobs24()
    ref = _brute_weight_map(lab, w0, sigma, class_weights)
    exact = WM.unet_weight_map(lab, w0, sigma, class_weights, atol=0)
    assert exact.dtype == np.float32 and exact.shape == lab.shape
    np.testing.assert_allclose(exact, ref, rtol=1e-5, atol=1e-5)
    fast = L.unet_weight_map(lab, w0, sigma, class_weights)  # default atol=1e-6
    np.testing.assert_allclose(fast, ref, rtol=1e-5, atol=2e-6)


def test_weight_map_batch_and_ids():
    lab = _blobs24()
    other = np.zeros_like(lab)
    other[2:6, 2:6] = 5
    other[2:6, 8:12] = 9
    batch = np.stack([lab, other])
    out = WM.unet_weight_map(batch)
    np.testing.assert_allclose(out[0], _brute_weight_map(lab, 10, 5), rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(out[1], _brute_weight_map(other, 10, 5), rtol=1e-5, atol=2e-6)
    # huge, non-contiguous ids give the same map; a mask with label_components too
    sparse = np.where(lab > 0, lab * 10_000_019 + 7, 0).astype(np.int64)
    np.testing.assert_allclose(WM.unet_weight_map(sparse), out[0], rtol=1e-6)
    np.testing.assert_allclose(
        WM.unet_weight_map(lab > 0, label_components=True), out[0], rtol=1e-6
    )


def test_weight_map_properties():
    lab = np.zeros((20, 30), np.int32)
    lab[5:15, 5:12] = 1
    lab[5:15, 13:20] = 2  # one-pixel gap at column 12
    w0, sigma = 10.0, 5.0
    border = WM.unet_weight_map(lab, w0, sigma, None) - 1.0
    # gap pixel: d1 = d2 = 1 -> w0 exp(-4 / (2 sigma^2))
    np.testing.assert_allclose(border[10, 12], w0 * math.exp(-4 / (2 * sigma**2)), rtol=1e-6)
    # pixel above the gap: d1 = d2 = sqrt(1 + 1)
    np.testing.assert_allclose(border[4, 12], w0 * math.exp(-8 / (2 * sigma**2)), rtol=1e-6)
    assert border.max() == pytest.approx(border[10, 12], rel=1e-6)
    assert np.all(border[lab > 0] == 0)  # border term on background only
    assert border[10, 12] > border[10, 25] > 0
    # w0 scales the border term linearly; a larger sigma widens it
    np.testing.assert_allclose(
        WM.unet_weight_map(lab, 2 * w0, sigma, None) - 1, 2 * border, rtol=1e-5, atol=1e-6
    )
    wide = WM.unet_weight_map(lab, w0, 2 * sigma, None) - 1
    assert wide[10, 25] > border[10, 25] and wide[10, 12] > border[10, 12]
    # balanced: the rarer class (foreground) gets n_bg / n_fg, background 1
    n_fg = np.count_nonzero(lab)
    bal = WM.unet_weight_map(lab, 0.0, sigma)
    np.testing.assert_allclose(bal[lab > 0], (lab.size - n_fg) / n_fg, rtol=1e-6)
    np.testing.assert_allclose(bal[lab == 0], 1.0)
    # fewer than two objects: no border term
    one = np.where(lab == 1, 1, 0)
    np.testing.assert_allclose(WM.unet_weight_map(one, w0, sigma, None), 1.0)
    np.testing.assert_allclose(WM.unet_weight_map(np.zeros((5, 5), int)), 1.0)


def test_weight_map_classes_and_truncation():
    rng = np.random.default_rng(1)
    lab = np.zeros((96, 96), np.int32)
    yy, xx = np.mgrid[:96, :96]
    for k, (cy, cx) in enumerate(rng.uniform(8, 88, (8, 2)), 1):
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= 20] = k
    exact = WM.unet_weight_map(lab, atol=0)
    for atol in (1e-6, 1e-3, 0.1):
        err = np.abs(WM.unet_weight_map(lab, atol=atol) - exact).max()
        assert err <= atol * 1.001 + 1e-6
    cls = (lab % 3).astype(np.int64)
    counts = np.bincount(cls.ravel(), minlength=3)
    wc = WM.class_weight_map(cls)
    np.testing.assert_allclose(wc, (counts.max() / counts)[cls], rtol=1e-6)
    with_cls = WM.unet_weight_map(lab, classes=cls, atol=0)
    np.testing.assert_allclose(
        with_cls - wc, exact - WM.unet_weight_map(lab, 0.0), rtol=1e-5, atol=1e-5
    )


# ============================================================================ get_loss and modules


def test_get_loss_names():
    x = _logits(6, 4)
    t = torch.randint(0, 4, (6,))
    y = torch.randn(6, 4, dtype=DT)
    yb = torch.rand(6, 4, dtype=DT).round()
    pairs = {
        "sparse_categorical_crossentropy": (t, F.cross_entropy(x, t)),
        "categorical_crossentropy": (F.one_hot(t, 4).to(DT), F.cross_entropy(x, t)),
        "binary_crossentropy": (yb, F.binary_cross_entropy_with_logits(x, yb)),
        "mse": (y, F.mse_loss(x, y)),
        "mean_squared_error": (y, F.mse_loss(x, y)),
        "mae": (y, F.l1_loss(x, y)),
        "mean_absolute_error": (y, F.l1_loss(x, y)),
        "huber": (y, F.huber_loss(x, y)),
        "smooth_l1": (y, F.smooth_l1_loss(x, y)),
        "focal": (yb, sigmoid_focal_loss(x, yb, reduction="mean")),
    }
    for name, (target, ref) in pairs.items():
        fn = L.get_loss(name)
        assert fn.__name__ == L.get_loss(name).__name__
        torch.testing.assert_close(fn(x, target), ref, msg=name)
    x4 = _logits(2, 3, 4, 4)
    t4 = torch.randint(0, 3, (2, 4, 4))
    torch.testing.assert_close(L.get_loss("dice")(x4, t4), L.dice_loss(x4, t4))
    torch.testing.assert_close(
        L.get_loss("focal", gamma=0.0, alpha=None)(x4, t4), F.cross_entropy(x4, t4)
    )
    torch.testing.assert_close(L.get_loss("huber", delta=0.5)(x, y), F.huber_loss(x, y, delta=0.5))
    own = lambda a, b: (a - b).abs().max()  # noqa: E731
    assert L.get_loss(own) is own
    assert set(["mse", "categorical_crossentropy", "dice"]) <= set(L.list_losses())


def test_modules_match_functional():
    x = _logits(3, 4, 5)
    t = torch.randint(0, 4, (3, 5))
    w = [1.0, 2.0, 0.5, 1.5]
    m = L.CrossEntropyLoss(weight=w, label_smoothing=0.1).to(DT)
    assert m.weight.dtype == DT
    torch.testing.assert_close(
        m(x, t), F.cross_entropy(x, t, weight=torch.tensor(w, dtype=DT), label_smoothing=0.1)
    )
    torch.testing.assert_close(L.DiceLoss(smooth=0.5)(x, t), L.dice_loss(x, t, smooth=0.5))
    torch.testing.assert_close(
        L.FocalLoss(alpha=[1, 2, 3, 4], gamma=1.0)(x, t), L.focal_loss(x, t, [1, 2, 3, 4], 1.0)
    )
    yb = torch.rand(3, 4, 5, dtype=DT).round()
    torch.testing.assert_close(
        L.BinaryCrossEntropyLoss(pos_weight=[1, 2, 3, 4])(x, yb),
        F.binary_cross_entropy_with_logits(
            x, yb, pos_weight=torch.tensor([1.0, 2, 3, 4], dtype=DT).view(4, 1)
        ),
    )


# ============================================================================ bad inputs


_X = torch.randn(4, 3, dtype=DT)
_X3 = torch.randn(4, 3, 5, dtype=DT)
_LONG = dict(dtype=torch.long)
_NAN = float("nan")
_Z44 = np.zeros((4, 4), int)

BAD_INPUTS = [  # (call, error type, pattern naming the received value)
    (lambda: L.cross_entropy(_X, torch.tensor([0, 7, 1, 2])), ConfigError, r"label 7.*C=3"),
    (lambda: L.cross_entropy(_X, torch.tensor([0, -3, 1, 2])), ConfigError, r"label -3"),
    (lambda: L.focal_loss(_X, torch.tensor([0, 3, 1, 2])), ConfigError, r"label 3"),
    (lambda: L.dice_loss(_X3[:2], torch.tensor([[0, 1, 2, 5, 0]] * 2)), ConfigError, r"label 5"),
    (
        lambda: L.weighted_cross_entropy(
            _X[..., None], torch.tensor([[0], [4], [1], [2]]), np.ones((4, 1))
        ),
        ConfigError,
        r"label 4",
    ),
    (lambda: L.binary_cross_entropy(_X, torch.full((4, 3), 1.5)), ConfigError, r"1\.5"),
    (lambda: L.cross_entropy(_X, torch.tensor([0.0, 1.5, 1.0, 2.0])), ConfigError, r"1\.5"),
    (
        lambda: L.cross_entropy(_X3, torch.zeros(4, 6, **_LONG)),
        ShapeError,
        r"target shape \(4, 6\)",
    ),
    (lambda: L.binary_cross_entropy(_X3, torch.zeros(4, 2, 5)), ShapeError, r"shape \(4, 2, 5\)"),
    (lambda: L.dice_loss(_X3, torch.zeros(3, 5, **_LONG)), ShapeError, r"target shape \(3, 5\)"),
    (
        lambda: L.weighted_cross_entropy(_X3, torch.zeros(4, 5, **_LONG), torch.ones(4, 4)),
        ShapeError,
        r"received shape \(4, 4\)",
    ),
    (lambda: L.cross_entropy(_X, torch.zeros(4, **_LONG), weight=[1.0, 2]), ShapeError, r"\(2,\)"),
    (lambda: L.binary_cross_entropy(_X3, 0 * _X3, pos_weight=torch.ones(5)), ShapeError, r"\(5,\)"),
    (lambda: L.dice_loss(torch.zeros(7), torch.zeros(7)), ShapeError, r"\(7,\)"),
    (lambda: L.cross_entropy(_X, torch.tensor([0.0, _NAN, 1.0, 2.0])), ConfigError, "nan"),
    (lambda: L.cross_entropy(_X, torch.full((4, 3), _NAN, dtype=DT)), ConfigError, "nan"),
    (lambda: L.binary_cross_entropy(_X, torch.full((4, 3), _NAN)), ConfigError, "nan"),
    (lambda: L.mse(_X, torch.full((4, 3), float("inf"))), ConfigError, "inf"),
    (
        lambda: L.weighted_cross_entropy(
            _X[..., None], torch.zeros(4, 1, **_LONG), np.full((4, 1), np.nan)
        ),
        ConfigError,
        "nan",
    ),
    (lambda: L.mse(_X, _X, reduction="avg"), ConfigError, "'avg'"),
    (lambda: L.cross_entropy(_X, torch.zeros(4, **_LONG), label_smoothing=1.5), ConfigError, "1.5"),
    (lambda: L.focal_loss(_X, torch.zeros(4, **_LONG), gamma=-1), ConfigError, "-1"),
    (
        lambda: L.cross_entropy(torch.zeros(4, 3, **_LONG), torch.zeros(4)),
        ConfigError,
        "torch.int64",
    ),
    (lambda: L.huber(_X, _X, delta=-0.5), ConfigError, "-0.5"),
    (lambda: L.CrossEntropyLoss(reduction="avg"), ConfigError, "'avg'"),
    (lambda: L.DiceLoss(activation="softmaxx"), ConfigError, "'softmaxx'"),
    (
        lambda: L.get_loss("categorical_crossentropi"),
        ConfigError,
        "Did you mean 'categorical_crossentropy'",
    ),
    (lambda: L.get_loss("focal", gamm=2), ConfigError, "'gamm'.*Did you mean 'gamma'"),
    (lambda: L.get_loss(42), ConfigError, "42"),
    (
        lambda: L.get_loss("categorical_crossentropy")(_X, torch.tensor([0, 1, 2, 1])),
        ShapeError,
        r"target shape \(4,\).*'sparse_categorical_crossentropy'",
    ),
    (
        lambda: L.get_loss("sparse_categorical_crossentropy")(_X, torch.eye(3)[[0, 1, 2, 1]]),
        ShapeError,
        r"\(4, 3\).*'categorical_crossentropy'",
    ),
    (lambda: WM.unet_weight_map(np.array([[0, -2], [1, 1]])), ConfigError, "-2"),
    (lambda: WM.unet_weight_map(np.array([[0, 0.5], [1, 1]])), ConfigError, "0.5"),
    (lambda: WM.unet_weight_map(np.array([[0, np.nan], [1, 1]])), ConfigError, "nan"),
    (lambda: WM.unet_weight_map(np.zeros((1, 2, 2, 2), int)), ShapeError, r"\(1, 2, 2, 2\)"),
    (lambda: WM.unet_weight_map(_Z44, sigma=0), ConfigError, "sigma.*0"),
    (lambda: WM.unet_weight_map(_Z44, w0=-1), ConfigError, "w0.*-1"),
    (lambda: WM.unet_weight_map(_Z44, class_weights="balance"), ConfigError, "'balance'"),
    (lambda: WM.unet_weight_map(_Z44, class_weights={"fg": 2.0}), ConfigError, "'fg'"),
    (lambda: WM.unet_weight_map(_Z44, classes=np.zeros((3, 3), int)), ShapeError, r"\(3, 3\)"),
]


@pytest.mark.parametrize("call,exc,pattern", BAD_INPUTS)
def test_bad_inputs_name_the_value(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_validate_false_skips_checks():
    # torch then raises its own (less helpful) error
    with pytest.raises((RuntimeError, IndexError)):
        L.cross_entropy(_X, torch.tensor([0, 7, 1, 2]), validate=False)
