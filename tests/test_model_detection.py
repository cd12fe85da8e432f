"""Mask R-CNN through ``cnnkit.Model``: compile without a loss, fit on images and target
dicts, evaluate with COCO mAP, predict detection dicts, save / load; checked against a
hand-written loop in torchvision's calling convention and ``detection_map``."""

from __future__ import annotations

import math

import pytest
import torch

import cnnkit
from cnnkit._core.errors import ConfigError, ShapeError
from cnnkit.data.synthetic import shapes
from cnnkit.metrics import detection_map
from cnnkit.models import create
from cnnkit.train.schedules import WarmupStepDecay, warmup_step_decay

LOSSES = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}


@pytest.fixture(scope="module")
def data():
    return shapes(4, size=48, task="instance", seed=3)


def _net(seed: int = 0):
    torch.manual_seed(seed)
    return create("mask_rcnn", num_classes=3, backbone="small")


def _sgd(params):
    return torch.optim.SGD(params, lr=0.01, momentum=0.9)


def _compiled(net, **kwargs):
    model = cnnkit.Model(net)
    options = dict(optimizer=_sgd, precision="fp32", channels_last=False, device="cpu")
    return model.compile(**{**options, **kwargs})


def test_fit_equals_a_hand_written_loop(data):
    x, y = data
    weights = {"loss_mask": 2.0, "loss_classifier": 0.5}
    model = _compiled(_net(), loss_weights=weights, global_clipnorm=1.0)
    torch.manual_seed(7)
    history = model.fit(x, y, epochs=2, batch_size=2, shuffle=False, verbose=0)
    # the same by hand: fit draws its shuffle seed first, then the samplers draw per batch
    ref = _net()
    ref.train()
    opt = _sgd(ref.parameters())
    torch.manual_seed(7)
    torch.randint(0, 2**62, (1,))
    expected: dict[str, list[float]] = {}
    for _ in range(2):
        sums: dict[str, float] = {}
        for b in range(0, 4, 2):
            losses = ref(list(x[b : b + 2]), y[b : b + 2])
            total = sum(v * weights.get(k, 1.0) for k, v in losses.items())
            opt.zero_grad()
            total.backward()
            torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
            opt.step()
            for k, v in {"loss": total, **losses}.items():
                sums[k] = sums.get(k, 0.0) + 2 * float(v.detach())
        for k, v in sums.items():
            expected.setdefault(k, []).append(v / 4)
    assert set(history.history) == {"loss", *LOSSES}
    for k, values in expected.items():
        assert history.history[k] == pytest.approx(values, rel=1e-4, abs=1e-6), k
    state, ref_state = model.module.state_dict(), ref.state_dict()
    for k in ref_state:
        torch.testing.assert_close(state[k], ref_state[k], rtol=1e-4, atol=1e-5)


def test_evaluate_and_predict_match_the_model_and_detection_map(data):
    x, y = data
    model = _compiled(_net(1))
    model.fit(list(x), y, epochs=1, batch_size=2, verbose=0)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    torch.manual_seed(3)
    scores = model.evaluate(x, y, batch_size=3)
    assert set(scores) == {"loss", "bbox", "segm"}
    # all buffers (batch-norm statistics) and weights are untouched by evaluating
    assert all(torch.equal(v, before[k]) for k, v in model.module.state_dict().items())
    preds = model.predict(x, batch_size=3)
    assert len(preds) == 4 and set(preds[0]) == {"boxes", "labels", "scores", "masks"}
    net = model.module.eval()
    with torch.no_grad():
        direct = net(list(x))
    for p, d in zip(preds, direct):
        torch.testing.assert_close(p["boxes"], d["boxes"])
        assert torch.equal(p["labels"], d["labels"])
        assert p["masks"].dtype == torch.bool and p["masks"].shape == (len(d["scores"]), 48, 48)
        assert torch.equal(p["masks"], d["masks"][:, 0] > 0.5)
    for iou in ("bbox", "segm"):
        ref = detection_map(preds, y, iou_type=iou)
        assert {k: scores[iou][k] for k in ("map", "map_50", "map_75", "mar_100")} == {
            k: ref[k] for k in ("map", "map_50", "map_75", "mar_100")
        }
    # the loss: train-mode losses with frozen batch-norm statistics, by hand
    torch.manual_seed(3)
    net.train()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    with torch.no_grad():
        total = sum(
            float(sum(net(list(x[b : b + 3]), y[b : b + 3]).values())) * len(x[b : b + 3])
            for b in (0, 3)
        )
    assert scores["loss"] == pytest.approx(total / 4, rel=1e-5)


def test_validation_logs_and_save_load(data, tmp_path):
    x, y = data
    model = _compiled(_net(2))
    history = model.fit(x, y, epochs=1, batch_size=2, validation_data=(x[:2], y[:2]), verbose=0)
    keys = set(history.history)
    assert {"val_loss", "val_bbox_map", "val_segm_map_50", "val_segm_mar_100"} <= keys
    assert all(math.isfinite(v[0]) for v in history.history.values())
    model.save(tmp_path / "m")
    loaded = cnnkit.load(tmp_path / "m")
    a, b = model.predict(x[:2]), loaded.predict(x[:2])
    for p, q in zip(a, b):
        assert torch.equal(p["boxes"], q["boxes"]) and torch.equal(p["masks"], q["masks"])


def test_bf16_and_channels_last_train(data):
    x, y = data
    model = _compiled(_net(), precision="bf16", channels_last=True)
    history = model.fit(x, y, epochs=1, batch_size=2, verbose=0)
    assert model._memory_format is torch.channels_last
    assert all(math.isfinite(v[0]) for v in history.history.values())
    preds = model.predict(x[:1])  # outputs in fp32 whatever the precision
    assert preds[0]["boxes"].dtype == torch.float32 and preds[0]["scores"].dtype == torch.float32


def test_bad_compile_and_data_are_clear_errors(data):
    x, y = data
    with pytest.raises(ConfigError, match="computes its own losses"):
        cnnkit.Model(_net()).compile(loss="mse")
    with pytest.raises(ConfigError, match="dict of numbers by loss name"):
        cnnkit.Model(_net()).compile(loss_weights=[1.0, 2.0])
    with pytest.raises(ConfigError, match="evaluate"):
        cnnkit.Model(_net()).compile(metrics=["accuracy"])
    model = _compiled(_net(), loss_weights={"loss_masks": 2.0})
    with pytest.raises(ConfigError, match="loss_masks"):
        model.fit(x, y, epochs=1, verbose=0)
    model = _compiled(_net())
    with pytest.raises(ShapeError, match="4 images but 3 targets"):
        model.fit(x, y[:3], epochs=1, verbose=0)
    with pytest.raises(ConfigError, match="one dict per image"):
        model.fit(x, [t["boxes"] for t in y], epochs=1, verbose=0)
    with pytest.raises(ShapeError, match=r"Tensor\[C, H, W\]"):
        model.fit([x[0][0]], y[:1], epochs=1, verbose=0)
    with pytest.raises(ConfigError, match="needs a loss"):
        cnnkit.Model(torch.nn.Linear(2, 2)).compile()


def test_warmup_step_decay_rates_and_state():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.02)
    sched = warmup_step_decay([2], gamma=0.1, warmup_iters=4)(opt)
    assert isinstance(sched, WarmupStepDecay)
    seen = []
    for _epoch in range(3):
        for _batch in range(3):
            seen.append(opt.param_groups[0]["lr"])
            sched.step_batch()
        sched.step()
    # Goyal et al.: linear from 0.001 x lr over 4 iterations, then x0.1 from epoch 2
    warm = [min(1.0, 0.001 + 0.999 * i / 4) for i in range(9)]
    decay = [1.0] * 6 + [0.1] * 3
    assert seen == pytest.approx([0.02 * w * d for w, d in zip(warm, decay)], rel=1e-12)
    again = warmup_step_decay([2], gamma=0.1, warmup_iters=4)(torch.optim.SGD([p], lr=0.02))
    again.load_state_dict(sched.state_dict())
    assert again.optimizer.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    with pytest.raises(ConfigError, match="boundaries"):
        warmup_step_decay([3, 2])
