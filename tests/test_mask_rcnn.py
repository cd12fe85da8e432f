"""Mask R-CNN (seed 003's case study): anchors, box coder, sampling, ROIAlign/ROIPool, mask
targets, losses against hand computation, eval output format and a short overfit run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision
from torch.nn import functional as F

import cnnkit
from cnnkit._core.errors import ConfigError
from cnnkit.data.synthetic import shapes
from cnnkit.metrics import detection_map
from cnnkit.models import create
from cnnkit.models.mask_rcnn import AnchorGenerator, BoxCoder, binarize_masks, paste_masks
from cnnkit.models.mask_rcnn.pooling import RoIPooler, roi_align_separable
from cnnkit.models.mask_rcnn.roi_heads import mask_targets
from cnnkit.models.mask_rcnn.rpn import assign_anchors, sample_labels
from cnnkit.train.detection import evaluate_detection, fit_detection, predict_detection
from cnnkit.train.schedules import warmup_step_decay


def np_iou(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            w = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            h = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - w * h
            out[i, j] = w * h / union
    return out


def np_bilinear(f, y, x):
    """Bilinear value of the 2D array ``f`` at (y, x), ROIAlign's border rules: 0 beyond
    one cell outside the map, clamped to the edge cells otherwise."""
    h, w = f.shape
    if y < -1 or y > h or x < -1 or x > w:
        return 0.0
    y, x = min(max(y, 0.0), h - 1.0), min(max(x, 0.0), w - 1.0)
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * f[y0, x0] + (1 - ly) * lx * f[y0, x1]
            + ly * (1 - lx) * f[y1, x0] + ly * lx * f[y1, x1])  # fmt: skip


def np_roi_align(f, box, out, scale, samples):
    """ROIAlign (aligned: pixel centres at half-integers) of one map ``f`` from the math."""
    x1, y1, x2, y2 = (v * scale - 0.5 for v in box)
    bh, bw = (y2 - y1) / out, (x2 - x1) / out
    res = np.zeros((out, out))
    for i in range(out):
        for j in range(out):
            vals = [
                np_bilinear(
                    f, y1 + (i + (a + 0.5) / samples) * bh, x1 + (j + (b + 0.5) / samples) * bw
                )
                for a in range(samples)
                for b in range(samples)
            ]
            res[i, j] = np.mean(vals)
    return res


# ------------------------------------------------------------------------------ anchors


def test_fifteen_anchors_per_location_with_the_decks_sizes_and_ratios():
    gen = AnchorGenerator()
    assert gen.num_anchors_per_location == 15
    feat = torch.zeros(1, 1, 3, 4)
    anchors = gen([feat], [16])
    assert anchors.shape == (3 * 4 * 15, 4)
    a = anchors.numpy().reshape(3, 4, 15, 4)
    sizes, ratios = [32, 64, 128, 256, 512], [0.5, 1.0, 2.0]
    for y in range(3):
        for x in range(4):
            box = a[y, x]
            np.testing.assert_allclose((box[:, 0] + box[:, 2]) / 2, (x + 0.5) * 16, atol=1e-4)
            np.testing.assert_allclose((box[:, 1] + box[:, 3]) / 2, (y + 0.5) * 16, atol=1e-4)
            w, h = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
            expect = np.array([(s / np.sqrt(r), s * np.sqrt(r)) for s in sizes for r in ratios])
            np.testing.assert_allclose(np.stack([w, h], 1), expect, rtol=1e-5)
            np.testing.assert_allclose(w * h, np.repeat(np.square(sizes), 3), rtol=1e-5)
            np.testing.assert_allclose(h / w, np.tile(ratios, 5), rtol=1e-5)


def test_cross_boundary_anchors_get_no_label():
    anchors = torch.tensor(
        [[-10.0, 0, 20, 20], [0, 0, 20, 20], [50, 50, 70, 70], [55, 55, 70, 70], [40, 40, 65, 60]]
    )
    gt = torch.tensor([[0.0, 0, 20, 20], [50, 50, 70, 70]])
    labels, matched = assign_anchors(anchors, gt, (64, 64), 0.7, 0.3, allowed_border=0)
    iou = np_iou(gt, anchors)
    inside = np.array([False, True, False, False, False])
    assert labels[~torch.from_numpy(inside)].eq(-1).all()
    assert labels[1] == 1 and torch.equal(matched[1], gt[0])
    # keep cross-boundary anchors: labels follow the IoU rules of Faster R-CNN
    labels, _ = assign_anchors(anchors, gt, (64, 64), 0.7, 0.3, allowed_border=None)
    best = iou.max(0)
    expect = np.where(best >= 0.7, 1, np.where(best < 0.3, 0, -1))
    expect[iou.argmax(1)] = 1  # each true box's best anchor
    np.testing.assert_array_equal(labels.numpy(), expect)


@pytest.mark.parametrize("border", [0.0, None])
def test_anchor_shapes_never_labelled_in_training_propose_nothing(border):
    # 48 x 48 image, stride 16 (3 x 3 map), anchors of 16 and 64 pixels: a 64-pixel anchor
    # is cross-boundary everywhere, so with allowed_border=0 training never labels it; the
    # head below scores it highest (an untrained output), which must not make proposals
    from cnnkit.models.mask_rcnn.rpn import RegionProposalNetwork, RPNHead

    gen = AnchorGenerator(((16.0, 64.0),), (1.0,))
    head = RPNHead(4, 2)
    with torch.no_grad():
        head.cls_logits.weight.zero_()
        head.cls_logits.bias.copy_(torch.tensor([-5.0, 5.0]))  # (16 px, 64 px)
        head.bbox_pred.weight.zero_()
    rpn = RegionProposalNetwork(gen, head, allowed_border=border, nms_thresh=0.99).eval()
    features = [torch.rand(1, 4, 3, 3)]
    proposals, _ = rpn(features, [16], [(48, 48)])
    widths = (proposals[0][:, 2] - proposals[0][:, 0]).numpy()
    # reference: an anchor's shape is trainable where assign_anchors labels it somewhere
    anchors = gen(features, [16])
    labels, _ = assign_anchors(anchors, torch.zeros(0, 4), (48, 48), allowed_border=border)
    trainable = (labels.view(-1, 2) >= 0).any(0)  # per shape, over the 9 positions
    assert trainable.tolist() == ([True, False] if border is not None else [True, True])
    if border is not None:
        assert len(proposals[0]) == 9 and np.all(widths <= 16.0 + 1e-4)
    else:  # every anchor is labelled in training: the 64-pixel ones (clipped) come first
        assert widths[0] > 16.0 and len(proposals[0]) == 18


def test_box_coder_round_trip_and_formula():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(50, 2, generator=g) * 50
    ref = torch.cat([ref, ref + 1 + torch.rand(50, 2, generator=g) * 30], 1)
    boxes = torch.rand(50, 2, generator=g) * 50
    boxes = torch.cat([boxes, boxes + 1 + torch.rand(50, 2, generator=g) * 30], 1)
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    d = coder.encode(boxes, ref)
    torch.testing.assert_close(coder.decode(d, ref), boxes, atol=1e-4, rtol=1e-5)
    b, r = boxes[0].double().numpy(), ref[0].double().numpy()
    wa, ha = r[2] - r[0], r[3] - r[1]
    w, h = b[2] - b[0], b[3] - b[1]
    expect = [10 * ((b[0] + w / 2) - (r[0] + wa / 2)) / wa, 10 * ((b[1] + h / 2) - (r[1] + ha / 2)) / ha,
              5 * np.log(w / wa), 5 * np.log(h / ha)]  # fmt: skip
    np.testing.assert_allclose(d[0].numpy(), expect, rtol=1e-4, atol=1e-5)


def test_sampling_respects_the_batch_and_positive_fraction():
    labels = torch.tensor([1] * 30 + [0] * 500 + [-1] * 70)
    pos, neg = sample_labels(labels, 256, 0.5)
    assert len(pos) == 30 and len(neg) == 226
    assert labels[pos].eq(1).all() and labels[neg].eq(0).all()
    assert len(set(pos.tolist())) == 30 and len(set(neg.tolist())) == 226
    pos, neg = sample_labels(torch.tensor([2] * 300 + [0] * 300), 128, 0.25)
    assert (len(pos), len(neg)) == (32, 96)


def test_roi_sampling_labels_follow_iou_and_include_true_boxes():
    model = create("mask_rcnn", num_classes=3, backbone="small",
                   roi_kwargs=dict(batch_size_per_image=1000, positive_fraction=1.0))  # fmt: skip
    gt = {
        "boxes": torch.tensor([[10.0, 10, 30, 30], [40, 40, 60, 55]]),
        "labels": torch.tensor([2, 3]),
    }
    props = torch.tensor([[11.0, 11, 31, 31], [0, 0, 8, 8], [40, 40, 50, 50], [38, 41, 60, 56]])
    boxes, labels, matched = model.roi_heads.sample_proposals(props, gt)
    allb = torch.cat([props, gt["boxes"]])
    iou = np_iou(gt["boxes"], allb)
    expect = np.where(iou.max(0) >= 0.5, gt["labels"].numpy()[iou.argmax(0)], 0)
    order = [next(i for i in range(len(allb)) if torch.equal(allb[i], b)) for b in boxes]
    assert sorted(order) == list(range(6))
    np.testing.assert_array_equal(labels.numpy(), expect[order])


# ---------------------------------------------------------------------------- ROI ops


def test_roi_align_matches_numpy_bilinear_reference():
    g = torch.Generator().manual_seed(1)
    feat = torch.randn(2, 3, 6, 7, generator=g, dtype=torch.float64)
    rois = torch.tensor([[0, 1.3, 2.2, 9.7, 11.0], [1, -3.0, 0.5, 6.0, 4.0], [1, 4.0, 4.0, 14.5, 13.0]],
                        dtype=torch.float64)  # fmt: skip
    tv = torchvision.ops.roi_align(feat, rois, (3, 3), 0.5, 2, aligned=True)
    sep = roi_align_separable(feat, rois, 3, 0.5, 2)
    for r, roi in enumerate(rois):
        for c in range(3):
            ref = np_roi_align(feat[int(roi[0]), c].numpy(), roi[1:].tolist(), 3, 0.5, 2)
            np.testing.assert_allclose(tv[r, c].numpy(), ref, atol=1e-10)
            np.testing.assert_allclose(sep[r, c].numpy(), ref, atol=1e-10)


def test_separable_roi_align_gradient_equals_torchvision():
    g = torch.Generator().manual_seed(2)
    feat = torch.randn(2, 4, 8, 8, generator=g, requires_grad=True)
    rois = torch.tensor([[0, 2.0, 3.0, 20.0, 25.0], [1, -5.0, 10.0, 14.0, 31.0], [0, 0, 0, 32, 32]])
    w = torch.randn(3, 4, 7, 7, generator=g)
    (torchvision.ops.roi_align(feat, rois, (7, 7), 0.25, 2, aligned=True) * w).sum().backward()
    expect, feat.grad = feat.grad.clone(), None
    (roi_align_separable(feat, rois, 7, 0.25, 2) * w).sum().backward()
    torch.testing.assert_close(feat.grad, expect, atol=1e-5, rtol=1e-5)


def test_roi_align_interpolates_where_roi_pool_quantises():
    # on a ramp f(y, x) = x, bilinear sampling is exact: ROIAlign gives each bin's mean x;
    # ROIPool rounds the box to whole cells and takes each section's maximum
    feat = torch.arange(16.0).repeat(16, 1)[None, None]
    rois = torch.tensor([[0, 2.3, 2.3, 9.7, 9.7]])
    align = RoIPooler(2, "align")([feat], [1], [rois[:, 1:]])[0, 0]
    pool = RoIPooler(2, "pool")([feat], [1], [rois[:, 1:]])[0, 0]
    x1, x2 = 2.3 - 0.5, 9.7 - 0.5
    centres = [x1 + (x2 - x1) * (j + 0.5) / 2 for j in range(2)]
    torch.testing.assert_close(align, torch.tensor([centres, centres]))
    # roi_pool: box -> cells 2..10, split into 2 sections: x in 2..6 and 6..10 (max 6, 10)
    torch.testing.assert_close(pool, torch.tensor([[6.0, 10.0], [6.0, 10.0]]))
    assert not torch.allclose(align, pool)


def test_mask_targets_crop_and_resize():
    mask = np.zeros((20, 20), np.uint8)
    mask[4:12, 6:16] = 1
    gt = torch.from_numpy(np.stack([np.zeros_like(mask), mask]))
    boxes = torch.tensor([[4.0, 2.0, 18.0, 14.0], [6.0, 4.0, 16.0, 12.0]])
    out = mask_targets(gt, boxes, torch.tensor([1, 1]), 7)
    for k, box in enumerate(boxes.tolist()):
        ref = np_roi_align(mask.astype(float), box, 7, 1.0, 1) >= 0.5
        np.testing.assert_array_equal(out[k].numpy(), ref.astype(np.float32))
    assert out[1].eq(1).all()  # the box is exactly the object: all foreground


# ----------------------------------------------------------------------------- losses


def test_losses_equal_hand_computation():
    torch.manual_seed(0)
    x, y = shapes(2, size=48, task="instance", seed=5)
    big = dict(batch_size_per_image=100000, positive_fraction=1.0)
    model = create("mask_rcnn", num_classes=3, backbone="small", rpn_kwargs=big, roi_kwargs=big)
    model.train()
    losses = model(list(x), y)
    batch, sizes, targets = model.transform(list(x), y)
    feats = model.backbone(batch)
    # RPN: every labelled anchor is sampled
    logits, deltas = model.rpn.head(feats)
    anchors = model.rpn.anchor_generator(feats, [4])
    obj, box, n = [], 0.0, 0
    for i in range(2):
        labels, matched = assign_anchors(anchors, targets[i]["boxes"], sizes[i])
        keep = labels >= 0
        obj.append(
            F.binary_cross_entropy_with_logits(
                logits[i, keep, 0], labels[keep].float(), reduction="sum"
            )
        )
        pos = labels == 1
        t = BoxCoder().encode(matched[pos], anchors[pos])
        diff = (deltas[i, pos] - t).abs()
        box = box + torch.where(diff < 1 / 9, 0.5 * diff**2 * 9, diff - 0.5 / 9).sum()
        n += int(keep.sum())
    torch.testing.assert_close(losses["loss_objectness"], sum(obj) / n, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(losses["loss_rpn_box_reg"], box / n, rtol=1e-4, atol=1e-6)
    # ROI heads: the proposals of this forward plus the true boxes, all sampled
    proposals, _ = model.rpn(feats, [4], sizes, targets)
    rois = [torch.cat([p, t["boxes"]]) for p, t in zip(proposals, targets)]
    pooled = torchvision.ops.roi_align(
        feats[0], torch.cat([torch.cat([torch.full((len(r), 1), float(i)), r], 1) for i, r in enumerate(rois)]),
        (7, 7), 0.25, 2, aligned=True,
    )  # fmt: skip
    cls, reg = model.roi_heads.box_head(pooled)
    labels, matched_boxes, matched_idx = [], [], []
    for r, t in zip(rois, targets):
        iou = np_iou(t["boxes"], r)
        m = iou.argmax(0)
        labels.append(np.where(iou.max(0) >= 0.5, t["labels"].numpy()[m], 0))
        matched_boxes.append(t["boxes"][m])
        matched_idx.append(torch.from_numpy(m))
    labels = torch.from_numpy(np.concatenate(labels))
    torch.testing.assert_close(
        losses["loss_classifier"], F.nll_loss(F.log_softmax(cls, 1), labels), rtol=1e-4, atol=1e-6
    )
    pos = torch.nonzero(labels > 0).flatten()
    t = BoxCoder((10.0, 10.0, 5.0, 5.0)).encode(torch.cat(matched_boxes), torch.cat(rois))
    diff = (reg[pos, labels[pos] - 1] - t[pos]).abs()
    expect_box = torch.where(diff < 1 / 9, 4.5 * diff**2, diff - 0.5 / 9).sum() / len(labels)
    torch.testing.assert_close(losses["loss_box_reg"], expect_box, rtol=1e-4, atol=1e-6)
    all_rois = torch.cat(rois)
    mask_logits = model.roi_heads.mask_head(pooled[pos])
    mt = torch.cat(
        [mask_targets(t["masks"], r, m, 14) for r, m, t in zip(rois, matched_idx, targets)]
    )
    prob = torch.sigmoid(mask_logits[torch.arange(len(pos)), labels[pos] - 1])
    expect_mask = F.binary_cross_entropy(prob, mt[pos])
    torch.testing.assert_close(losses["loss_mask"], expect_mask, rtol=1e-4, atol=1e-5)
    assert len(all_rois) == len(labels)


def test_loss_weights_scale_the_head_losses():
    torch.manual_seed(0)
    x, y = shapes(1, size=48, task="instance", seed=6)
    kw = dict(num_classes=3, backbone="small")
    a = create("mask_rcnn", **kw).train()
    b = create(
        "mask_rcnn", roi_kwargs={"loss_weights": {"loss_mask": 2.0, "loss_classifier": 0.5}}, **kw
    )
    b.load_state_dict(a.state_dict())
    b.train()
    torch.manual_seed(1)
    la = a(list(x), y)
    torch.manual_seed(1)
    lb = b(list(x), y)
    torch.testing.assert_close(lb["loss_mask"], 2 * la["loss_mask"])
    torch.testing.assert_close(lb["loss_classifier"], 0.5 * la["loss_classifier"])


# ----------------------------------------------------------------------- eval outputs


def test_eval_outputs_are_image_sized_probability_masks():
    torch.manual_seed(0)
    model = create("mask_rcnn", num_classes=3, backbone="small", min_size=80, max_size=120).eval()
    images = [torch.rand(3, 48, 64), torch.rand(3, 40, 40)]
    with torch.no_grad():
        out = model(images)
    for img, det in zip(images, out):
        h, w = img.shape[-2:]
        d = len(det["boxes"])
        assert det["boxes"].shape == (d, 4) and det["labels"].shape == (d,) == det["scores"].shape
        assert det["masks"].shape == (d, 1, h, w) and det["masks"].dtype == torch.float32
        assert ((det["masks"] >= 0) & (det["masks"] <= 1)).all()
        assert (det["boxes"][:, [0, 2]] <= w + 1e-4).all() and (
            det["boxes"][:, [1, 3]] <= h + 1e-4
        ).all()
        assert det["labels"].min() >= 1 and det["labels"].max() <= 3
        assert (det["scores"][:-1] >= det["scores"][1:]).all() or d < 2
        binary = binarize_masks(det)
        assert binary.dtype == torch.bool and torch.equal(binary, det["masks"][:, 0] > 0.5)
    assert isinstance(binarize_masks(out), list)


def test_paste_masks_resizes_to_the_box():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(2, 1, 14, 14, generator=g)
    boxes = torch.tensor([[3.2, 5.0, 24.9, 17.4], [30.0, -4.0, 45.0, 10.0]])
    out = paste_masks(masks, boxes, 32, 40)
    assert out.shape == (2, 1, 32, 40)
    ref = F.interpolate(masks[:1], size=(12, 22), mode="bilinear", align_corners=False)[0, 0]
    torch.testing.assert_close(out[0, 0, 5:17, 3:25], ref)
    assert out[0].sum() == pytest.approx(float(ref.sum()), rel=1e-5)
    ref = F.interpolate(masks[1:], size=(14, 15), mode="bilinear", align_corners=False)[0, 0]
    torch.testing.assert_close(out[1, 0, 0:10, 30:40], ref[4:, :10])


def test_train_mode_needs_targets():
    model = create("mask_rcnn", num_classes=2, backbone="small").train()
    with pytest.raises(ConfigError, match="targets"):
        model([torch.rand(3, 32, 32)])


@pytest.mark.parametrize("options", [dict(objectness="softmax"), dict(pooler="pool")])
def test_options_train(options):
    torch.manual_seed(0)
    x, y = shapes(2, size=48, task="instance", seed=7)
    model = create("mask_rcnn", num_classes=3, backbone="small", **options).train()
    assert model.rpn.head.cls_logits.out_channels == (30 if "objectness" in options else 15)
    losses = model(list(x), y)
    total = sum(losses.values())
    total.backward()
    assert math.isfinite(float(total.detach()))


def test_overfits_two_images_in_seconds():
    x, y = shapes(2, size=64, task="instance", seed=3)
    torch.manual_seed(0)
    model = cnnkit.Model(create("mask_rcnn", num_classes=3, backbone="small"))
    model.compile(
        optimizer=lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9, weight_decay=1e-4),
        lr_schedule=warmup_step_decay(warmup_iters=10), global_clipnorm=10.0,
        precision="fp32", device="cpu",
    )  # fmt: skip
    hist = model.fit(x, y, epochs=50, batch_size=2, verbose=0).history
    assert hist["loss"][-1] < 0.4 * hist["loss"][0]
    assert hist["loss_mask"][-1] < 0.3 * hist["loss_mask"][0]
    scores = model.evaluate(x, y)
    assert scores["bbox"]["map_50"] >= 0.7 and scores["segm"]["map_50"] >= 0.7


def test_deprecated_wrappers_warn_and_train_through_model():
    x, y = shapes(2, size=48, task="instance", seed=3)
    model = create("mask_rcnn", num_classes=3, backbone="small")
    with pytest.deprecated_call():
        hist = fit_detection(model, x, y, epochs=1, batch_size=2, warmup_iters=0, hflip=True)
    assert set(hist) >= {"loss", "loss_mask", "learning_rate"}
    with pytest.deprecated_call():
        preds = predict_detection(model, x, mask_threshold=None)
    assert preds[0]["masks"].shape[1] == 1  # probabilities, as the model gives them
    with pytest.deprecated_call():
        scores = evaluate_detection(model, x, y)
    binary = [dict(p, masks=p["masks"][:, 0] > 0.5) for p in preds]
    assert scores["segm"] == detection_map(binary, y, iou_type="segm")
