"""Streaming metrics: batches accumulated == functional on the concatenation == scikit-learn."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import sklearn.metrics as skm
import torch
import torchvision

from cnnkit import ConfigError, ShapeError
from cnnkit import metrics as M


def batches(n, sizes=(7, 1, 30, 12)):
    """Split range(n) into random-ish consecutive batches."""
    out, i, j = [], 0, 0
    while i < n:
        b = sizes[j % len(sizes)]
        out.append(slice(i, min(n, i + b)))
        i, j = i + b, j + 1
    return out


def logits_data(n_classes, n=150, spatial=(), seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, n_classes, (n, *spatial), generator=g)
    logits = torch.randn(n, n_classes, *spatial, generator=g, dtype=torch.float64)
    logits += 2.0 * torch.nn.functional.one_hot(y, n_classes).movedim(-1, 1)  # mostly right
    return logits, y


def feed(metric, y_pred, y_true, sizes=(7, 1, 30, 12)):
    for s in batches(len(y_true), sizes):
        metric.update(y_pred[s], y_true[s])
    return metric.compute()


def quiet(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **kw)


# ------------------------------------------------------------------------ accuracy
@pytest.mark.parametrize("spatial", [(), (5, 4)])
def test_accuracy_from_scores_indices_onehot(spatial):
    logits, y = logits_data(4, spatial=spatial)
    pred = logits.argmax(1)
    want = skm.accuracy_score(y.flatten().numpy(), pred.flatten().numpy())
    assert feed(M.Accuracy(), logits, y) == pytest.approx(want, abs=1e-15)
    assert feed(M.Accuracy(), logits.softmax(1), y) == pytest.approx(want, abs=1e-15)
    assert feed(M.Accuracy(), pred, y) == pytest.approx(want, abs=1e-15)
    assert feed(M.Accuracy(), pred.numpy(), y.numpy()) == pytest.approx(want, abs=1e-15)
    assert feed(M.Accuracy(), logits, y[:, None]) == pytest.approx(want, abs=1e-15)
    if not spatial:
        onehot = torch.nn.functional.one_hot(y, 4).double()
        assert feed(M.Accuracy(), logits, onehot) == pytest.approx(want, abs=1e-15)


def test_accuracy_binary_probabilities_and_logits():
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 2, (120,), generator=g)
    logit = torch.randn(120, generator=g) + (y * 2 - 1)
    prob = torch.sigmoid(logit)
    for thr in (0.5, 0.3):
        want = skm.accuracy_score(y.numpy(), (prob.numpy() > thr).astype(int))
        assert feed(M.Accuracy(threshold=thr), prob, y) == pytest.approx(want)
        assert feed(M.Accuracy(threshold=thr), prob[:, None], y) == pytest.approx(want)
        assert feed(M.Accuracy(threshold=thr), prob[:, None], y[:, None].float()) == pytest.approx(
            want
        )
        got = feed(M.Accuracy(threshold=thr, from_logits=True), logit, y)
        assert got == pytest.approx(want)


def test_accuracy_ignore_index_and_reset():
    logits, y = logits_data(3, spatial=(6, 6), seed=2)
    y[:, 0, :] = 255
    keep = (y != 255).flatten().numpy()
    want = skm.accuracy_score(y.flatten().numpy()[keep], logits.argmax(1).flatten().numpy()[keep])
    m = M.Accuracy(ignore_index=255)
    assert feed(m, logits, y) == pytest.approx(want)
    m.reset()
    with pytest.raises(ShapeError, match=r"Accuracy.compute\(\) has no samples"):
        m.compute()
    assert feed(m, logits, y) == pytest.approx(want)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("spatial", [(), (3, 2)])
def test_top_k_vs_sklearn(k, spatial):
    logits, y = logits_data(5, spatial=spatial, seed=3)
    logits = logits.round()  # ties, broken as sklearn
    flat = logits.movedim(1, -1).reshape(-1, 5).numpy()
    want = quiet(skm.top_k_accuracy_score, y.flatten().numpy(), flat, k=k, labels=range(5))
    assert feed(M.TopKAccuracy(k), logits, y) == pytest.approx(want, abs=1e-15)
    assert quiet(M.top_k_accuracy_score, y, logits, k) == pytest.approx(want, abs=1e-15)


# ----------------------------------------------------------------- confusion matrix
@pytest.mark.parametrize("n_classes", [2, 3, 6])
def test_confusion_matrix_streaming(n_classes):
    logits, y = logits_data(n_classes, spatial=(4, 4), seed=4)
    pred = logits.argmax(1)
    want = skm.confusion_matrix(y.flatten(), pred.flatten(), labels=range(n_classes))
    np.testing.assert_array_equal(feed(M.ConfusionMatrix(n_classes), logits, y), want)
    lazy = M.ConfusionMatrix()  # class count from the scores
    np.testing.assert_array_equal(feed(lazy, logits, y), want)
    assert lazy.num_classes == n_classes
    np.testing.assert_array_equal(feed(M.ConfusionMatrix(n_classes), pred, y), want)
    np.testing.assert_array_equal(M.confusion_matrix(y, pred, num_classes=n_classes), want)
    got = feed(M.ConfusionMatrix(n_classes, normalize="true"), logits, y)
    np.testing.assert_allclose(
        got,
        skm.confusion_matrix(
            y.flatten(), pred.flatten(), normalize="true", labels=range(n_classes)
        ),
    )


def test_confusion_matrix_binary_scores_and_ignore():
    g = torch.Generator().manual_seed(5)
    y = torch.randint(0, 2, (3, 8, 8), generator=g)
    prob = torch.rand(3, 8, 8, generator=g, dtype=torch.float64)
    want = skm.confusion_matrix(y.flatten(), (prob.flatten() > 0.5).long(), labels=[0, 1])
    np.testing.assert_array_equal(feed(M.ConfusionMatrix(), prob, y), want)
    np.testing.assert_array_equal(feed(M.ConfusionMatrix(2), prob[:, None], y), want)
    y[0] = 9
    keep = y.flatten() != 9
    want = skm.confusion_matrix(y.flatten()[keep], (prob.flatten()[keep] > 0.5).long())
    np.testing.assert_array_equal(feed(M.ConfusionMatrix(2, ignore_index=9), prob, y), want)


CM_METRICS = [
    (M.Precision, M.precision_score, skm.precision_score),
    (M.Recall, M.recall_score, skm.recall_score),
    (M.F1Score, M.f1_score, skm.f1_score),
    (M.Dice, M.dice_score, skm.f1_score),
    (M.JaccardIndex, M.jaccard_score, skm.jaccard_score),
    (M.Specificity, M.specificity_score, None),
    (M.FalseOmissionRate, M.false_omission_rate, None),
]


@pytest.mark.parametrize("cls,fn,ref", CM_METRICS, ids=lambda x: getattr(x, "__name__", ""))
@pytest.mark.parametrize(
    "n_classes,average",
    [
        (2, "auto"),
        (2, "binary"),
        (2, "macro"),
        (4, "auto"),
        (4, "micro"),
        (4, "weighted"),
        (4, None),
    ],
)
def test_cm_metrics_streaming_eq_functional_eq_sklearn(cls, fn, ref, n_classes, average):
    logits, y = logits_data(n_classes, n=120, spatial=(3,), seed=6)
    logits[:, n_classes - 1] -= 5.0  # the last class is (almost) never predicted
    pred = logits.argmax(1)
    got = feed(cls(n_classes, average=average), logits, y)
    avg = ("binary" if n_classes == 2 else "macro") if average == "auto" else average
    want = fn(y, pred, average=avg, num_classes=n_classes, zero_division=0)
    if avg is None:
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    else:
        assert isinstance(got, float) and got == pytest.approx(want, rel=1e-10)
    if ref is not None:
        labels = [1] if avg == "binary" else range(n_classes)
        sk = ref(y.flatten(), pred.flatten(), average=avg, labels=labels, zero_division=0)
        np.testing.assert_allclose(got, sk, rtol=1e-10, atol=1e-12)


def test_balanced_accuracy_and_mean_iou_streaming():
    logits, y = logits_data(5, spatial=(4, 4), seed=7)
    pred = logits.argmax(1)
    yt, yp = y.flatten().numpy(), pred.flatten().numpy()
    want = skm.balanced_accuracy_score(yt, yp)
    assert feed(M.BalancedAccuracy(5), logits, y) == pytest.approx(want, rel=1e-10)
    present = np.union1d(yt, yp)
    want = skm.jaccard_score(yt, yp, labels=present, average="macro")
    assert feed(M.MeanIoU(6), pred, y) == pytest.approx(want, rel=1e-10)  # class 5 absent
    assert feed(M.MeanIoU(), logits, y) == pytest.approx(want, rel=1e-10)
    assert M.mean_iou(y, pred, num_classes=6) == pytest.approx(want, rel=1e-10)


def test_seed000_streaming():
    tp, fn, fp, tn = 18508, 53, 112, 166
    y = torch.cat([torch.ones(tp + fn), torch.zeros(fp + tn)]).long()
    p = torch.cat([torch.ones(tp), torch.zeros(fn), torch.ones(fp), torch.zeros(tn)]).long()
    perm = torch.randperm(len(y))
    y, p = y[perm], p[perm]

    def feed(m, p, y):
        return globals()["feed"](m, p, y, sizes=(4000, 1, 777))

    assert round(feed(M.Accuracy(), p, y), 3) == 0.991
    assert round(feed(M.Recall(2), p, y), 3) == 0.997
    assert round(feed(M.Precision(2), p, y), 3) == 0.994
    assert round(feed(M.BalancedAccuracy(2), p, y), 2) == 0.80
    assert round(feed(M.F1Score(2), p, y), 4) == 0.9956
    assert round(feed(M.FalseOmissionRate(2), p, y), 2) == 0.24
    assert round(feed(M.MeanIoU(2), p, y), 3) == 0.746
    np.testing.assert_array_equal(feed(M.ConfusionMatrix(2), p, y), [[tn, fp], [fn, tp]])


# ---------------------------------------------------------------- regression, boxes
def test_mse_mae_vs_sklearn():
    g = torch.Generator().manual_seed(8)
    p, t = torch.randn(90, 3, generator=g), torch.randn(90, 3, generator=g)
    assert feed(M.MeanSquaredError(), p, t) == pytest.approx(skm.mean_squared_error(t, p), rel=1e-6)
    assert feed(M.MeanAbsoluteError(), p, t) == pytest.approx(
        skm.mean_absolute_error(t, p), rel=1e-6
    )
    assert feed(M.MeanSquaredError(), p[:, :1], t[:, 0]) == pytest.approx(
        skm.mean_squared_error(t[:, 0], p[:, 0]), rel=1e-6
    )


def test_box_iou_streaming_vs_torchvision():
    g = torch.Generator().manual_seed(9)
    xy = torch.rand(60, 2, generator=g, dtype=torch.float64) * 10
    a = torch.cat([xy, xy + torch.rand(60, 2, generator=g, dtype=torch.float64) * 4 + 0.1], 1)
    b = a + torch.randn(60, 4, generator=g, dtype=torch.float64) * 0.3
    b[:, 2:] = torch.maximum(b[:, 2:], b[:, :2] + 0.05)
    want = torch.diagonal(torchvision.ops.box_iou(a, b)).mean().item()
    assert feed(M.BoxIoU(), a, b) == pytest.approx(want, rel=1e-10)


# -------------------------------------------------------------------- get_metric
def test_get_metric_names():
    expect = {
        "accuracy": M.Accuracy, "acc": M.Accuracy, "top_k_accuracy": M.TopKAccuracy,
        "precision": M.Precision, "recall": M.Recall, "f1": M.F1Score, "mean_iou": M.MeanIoU,
        "iou": M.MeanIoU, "dice": M.Dice, "mse": M.MeanSquaredError,
        "mae": M.MeanAbsoluteError, "balanced_accuracy": M.BalancedAccuracy,
        "confusion_matrix": M.ConfusionMatrix, "box_iou": M.BoxIoU,
    }  # fmt: skip
    for name, cls in expect.items():
        m = M.get_metric(name, num_classes=3)
        assert type(m) is cls and m.name == name
        if isinstance(m, M.ConfusionMatrix):
            assert m.num_classes == 3
    assert M.get_metric("top_k_accuracy").k == 5
    m = M.Accuracy(name="val_acc")
    assert M.get_metric(m) is m and m.name == "val_acc"
    assert M.Accuracy().name == "accuracy"
    assert isinstance(M.get_metric(M.Recall, num_classes=4), M.Recall)
    with pytest.raises(ConfigError, match=r"Unknown metric 'acuracy'.*Did you mean 'accuracy'"):
        M.get_metric("acuracy")
    with pytest.raises(ConfigError, match=r"received 3 \(int\)"):
        M.get_metric(3)


def test_function_metric_is_batch_weighted_mean():
    def neg_error(y_true, y_pred):
        return -(y_pred - y_true).abs().mean()

    m = M.get_metric(neg_error)
    assert m.name == "neg_error"
    g = torch.Generator().manual_seed(10)
    p, t = torch.randn(50, generator=g), torch.randn(50, generator=g)
    assert feed(m, p, t) == pytest.approx(-skm.mean_absolute_error(t, p), rel=1e-6)


# ----------------------------------------------------------------- state and sync
def test_update_never_syncs_meta_device():
    """On the meta device any .item()/bool() raises: update must not need the data."""
    meta = torch.device("meta")
    logits = torch.empty(8, 4, 5, device=meta)
    y = torch.empty(8, 5, dtype=torch.long, device=meta)
    for m in [M.Accuracy(), M.Accuracy(ignore_index=0), M.TopKAccuracy(2), M.ConfusionMatrix(4),
              M.MeanIoU(4, ignore_index=255), M.Precision(4), M.ConfusionMatrix()]:  # fmt: skip
        m.update(logits, y)
        assert all(getattr(m, s).device == meta for s in m._state_names)
    M.ConfusionMatrix(4).update(y, y)  # index predictions: checked at compute()
    M.Accuracy().update(torch.empty(8, device=meta), torch.empty(8, device=meta))
    M.MeanSquaredError().update(logits, logits)
    M.BoxIoU().update(torch.empty(3, 4, device=meta), torch.empty(3, 4, device=meta))


@pytest.mark.parametrize("cls", [M.ConfusionMatrix, M.TopKAccuracy])
def test_device_path_counts_bad_labels_for_compute(cls, monkeypatch):
    """The no-wait path used off the CPU (run here on the CPU) gives the same numbers."""
    logits, y = logits_data(4, n=60, spatial=(3,), seed=12)
    y[:5, 0] = 255  # ignored
    kw = {"ignore_index": 255}
    eager = cls(4, **kw) if cls is M.ConfusionMatrix else cls(2, **kw)
    lazy = cls(4, **kw) if cls is M.ConfusionMatrix else cls(2, **kw)
    want = feed(eager, logits, y)
    monkeypatch.setattr(cls, "_checks_now", staticmethod(lambda t: False))
    got = feed(lazy, logits, y)
    np.testing.assert_array_equal(got, want)
    lazy.reset()
    y[10:13, 1] = 4  # out of range: counted, not raised, then reported by compute()
    lazy.update(logits, y)
    with pytest.raises(ConfigError, match=r"received 3 label\(s\) outside \[0, num_classes\)"):
        lazy.compute()
    if cls is M.ConfusionMatrix:
        lazy.reset()
        lazy.update(logits.argmax(1) * 2, y.clamp(0, 3))  # predicted indices 0..6
        with pytest.raises(ConfigError, match=r"outside"):
            lazy.compute()


def test_state_is_tensors_on_buffers():
    m = M.ConfusionMatrix(3)
    assert {n for n, _ in m.named_buffers()} >= {"cm", "invalid"}
    assert m.state_dict() == {}  # not persisted with model checkpoints
    m.sync()  # no process group: a no-op
    feed(m, torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1]))
    np.testing.assert_array_equal(m.compute(), [[1, 0, 0], [0, 1, 1], [0, 0, 0]])


_DDP_WORKER = r"""
import json, sys
import torch, torch.distributed as dist
from cnnkit import ConfigError
from cnnkit import metrics as M

rank, world, init_file, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=world)
data = torch.load(sys.argv[5])
logits, y = data["logits"], data["y"]
part = slice(rank * 20, (rank + 1) * 20)
ms = [M.Accuracy(), M.ConfusionMatrix(4), M.F1Score(4), M.MeanSquaredError()]
for m in ms[:3]:
    m.update(logits[part], y[part])
ms[3].update(logits[part, 0], logits[part, 1])
for m in ms:
    m.sync()
    m.sync()  # idempotent
try:
    ms[0].update(logits[part], y[part])
    err = None
except ConfigError as e:
    err = str(e)
res = [ms[0].compute(), ms[1].compute().tolist(), ms[2].compute(), ms[3].compute(), err]
dist.destroy_process_group()
json.dump(res, open(out, "w"))
"""


def test_sync_reduces_every_state_once(monkeypatch):
    """With a (mocked) 2-rank group whose peer saw the same data, sync doubles each state."""
    from cnnkit.metrics import _streaming_base as base

    calls = []

    def all_reduce(t, op):
        calls.append(op)
        t.mul_(2)

    monkeypatch.setattr(base.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(base.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(base.dist, "all_reduce", all_reduce)
    logits, y = logits_data(3, n=30)
    cm, acc = M.ConfusionMatrix(3), M.Accuracy()
    for m in (cm, acc):
        m.update(logits, y)
    local = cm.compute()
    local_acc = acc.compute()
    cm.sync()
    acc.sync()
    acc.sync()  # idempotent
    assert len(calls) == 2 + 2 and all(op == base.dist.ReduceOp.SUM for op in calls)
    np.testing.assert_array_equal(cm.compute(), 2 * local)
    assert acc.compute() == local_acc
    with pytest.raises(ConfigError, match=r"update\(\) after sync\(\).*reset\(\)"):
        acc.update(logits, y)
    acc.reset()
    acc.update(logits, y)
    assert acc.compute() == local_acc


@pytest.mark.slow
def test_sync_all_reduces_across_two_processes(tmp_path):
    logits, y = logits_data(4, n=40, spatial=(3,), seed=11)
    torch.save({"logits": logits, "y": y}, tmp_path / "data.pt")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _DDP_WORKER,
                str(r),
                "2",
                str(tmp_path / "init"),
                str(tmp_path / f"out{r}.json"),
                str(tmp_path / "data.pt"),
            ],
            env=env,
        )  # fmt: skip
        for r in range(2)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    pred = logits.argmax(1)
    want_cm = skm.confusion_matrix(y.flatten(), pred.flatten(), labels=range(4))
    for r in range(2):
        acc, cm, f1, mse, err = json.loads((tmp_path / f"out{r}.json").read_text())
        assert acc == pytest.approx(skm.accuracy_score(y.flatten(), pred.flatten()))
        np.testing.assert_array_equal(cm, want_cm)
        assert f1 == pytest.approx(skm.f1_score(y.flatten(), pred.flatten(), average="macro"))
        assert mse == pytest.approx(skm.mean_squared_error(logits[:, 1], logits[:, 0]))
        assert err is not None and "reset()" in err


# ---------------------------------------------------------------------- bad input
def test_streaming_errors():
    logits, y = logits_data(3, n=10)
    with pytest.raises(ConfigError, match=r"y_true contains the label 7 but there are 3 classes"):
        M.ConfusionMatrix(3).update(logits, torch.full((10,), 7))
    with pytest.raises(ConfigError, match=r"y_pred contains the label -1"):
        M.Precision(3).update(torch.full((10,), -1), y)
    with pytest.raises(ConfigError, match=r"y_true contains the label 3 but there are 3 classes"):
        M.TopKAccuracy(2).update(logits, torch.full((10,), 3))
    with pytest.raises(ShapeError, match=r"num_classes=5\) received y_pred implying 3 classes"):
        M.ConfusionMatrix(5).update(logits, y)
    with pytest.raises(ConfigError, match=r"pass num_classes"):
        M.MeanIoU().update(y, y)
    with pytest.raises(ShapeError, match=r"y_pred \(10, 3\) and y_true \(9,\)"):
        M.Accuracy().update(logits, y[:9])
    with pytest.raises(ShapeError, match=r"y_true of shape \(10,\) and y_pred of shape \(9,\)"):
        M.Accuracy().update(y[:9], y)
    with pytest.raises(ShapeError, match=r"\(N, 4\); received \(5, 3\)"):
        M.BoxIoU().update(torch.zeros(5, 3), torch.zeros(5, 3))
    with pytest.raises(ShapeError, match=r"TopKAccuracy needs scores"):
        M.TopKAccuracy().update(y, y)
    with pytest.raises(ShapeError, match=r"MeanIoU.compute\(\) has no samples"):
        M.MeanIoU(3).compute()
    with pytest.raises(ConfigError, match=r"threshold must be in \(0, 1\); received 1.5"):
        M.Accuracy(threshold=1.5)
    with pytest.raises(ConfigError, match=r"Unknown average 'mean'"):
        M.Recall(3, average="mean")
    with pytest.raises(
        ConfigError, match=r"average='binary' needs num_classes=2; received num_classes=3"
    ):
        M.F1Score(3, average="binary")
    with pytest.raises(ConfigError, match=r"k must be a positive int; received 0"):
        M.TopKAccuracy(0)
    with pytest.raises(ConfigError, match=r"Unknown normalize 'row'"):
        M.ConfusionMatrix(3, normalize="row")
    m = M.Recall(3, zero_division=0)
    m.update(logits, y)
    assert math.isfinite(m.compute())
