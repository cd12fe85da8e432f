"""cnnkit.metrics.detection_map against pycocotools' COCOeval on the same detections.

The reference is built from the same lists: one COCO image per list entry (ids from 1,
in list order), one annotation per target (ids from 1, ``iscrowd = 0``) and one result
per prediction, boxes converted to COCO's ``(x, y, w, h)``. COCOeval takes true objects'
areas (for the small/medium/large ranges) from the annotations' ``area`` field: it is
set to the box area for ``'bbox'`` and to the mask's pixel count for ``'segm'``, which is
what detection_map uses (and what COCOeval itself computes for the results). Masks go to
pycocotools as ``mask.encode`` of Fortran-ordered ``uint8`` arrays.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch

from cnnkit._core.errors import CnnkitError, ConfigError, ShapeError
from cnnkit.metrics import detection_map

pytest.importorskip("pycocotools")
from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

# COCOeval.stats order
KEYS = ["map", "map_50", "map_75", "map_small", "map_medium", "map_large",
        "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large"]  # fmt: skip
TOL = 1e-9


def _rle(mask: torch.Tensor) -> dict:
    return mask_utils.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))


def coco_eval(preds, targets, iou_type, max_dets=(1, 10, 100), iou_thrs=None) -> COCOeval:
    images, anns, results, cats = [], [], [], set()
    for i, (p, t) in enumerate(zip(preds, targets)):
        h, w = t["masks"].shape[-2:] if iou_type == "segm" else (1000, 1000)
        images.append({"id": i + 1, "height": int(h), "width": int(w)})
        for k in range(len(t["labels"])):
            ann = {"id": len(anns) + 1, "image_id": i + 1, "iscrowd": 0}
            ann["category_id"] = int(t["labels"][k])
            if iou_type == "bbox":
                x1, y1, x2, y2 = (float(v) for v in t["boxes"][k])
                ann["bbox"], ann["area"] = [x1, y1, x2 - x1, y2 - y1], (x2 - x1) * (y2 - y1)
            else:
                ann["segmentation"] = _rle(t["masks"][k])
                ann["area"] = float(t["masks"][k].sum())
                ann["bbox"] = list(mask_utils.toBbox(ann["segmentation"]))
            anns.append(ann)
            cats.add(ann["category_id"])
        for k in range(len(p["labels"])):
            res = {"image_id": i + 1, "category_id": int(p["labels"][k])}
            res["score"] = float(p["scores"][k])
            if iou_type == "bbox":
                x1, y1, x2, y2 = (float(v) for v in p["boxes"][k])
                res["bbox"] = [x1, y1, x2 - x1, y2 - y1]
            else:
                res["segmentation"] = _rle(p["masks"][k])
            results.append(res)
            cats.add(res["category_id"])
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": images,
            "annotations": anns,
            "categories": [{"id": c, "name": str(c)} for c in sorted(cats)],
        }
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), iou_type)
        ev.params.maxDets = list(max_dets)
        if iou_thrs is not None:
            ev.params.iouThrs = np.asarray(iou_thrs, dtype=np.float64)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _mean(s: np.ndarray) -> float:
    return float(np.mean(s[s > -1])) if (s > -1).any() else -1.0


def assert_matches_coco(preds, targets, iou_type="bbox") -> dict:
    out = detection_map(preds, targets, iou_type=iou_type)
    ev = coco_eval(preds, targets, iou_type)
    np.testing.assert_allclose([out[k] for k in KEYS], ev.stats, rtol=0, atol=TOL)
    prec = ev.eval["precision"][:, :, :, 0, -1]
    per_class = {c: _mean(prec[:, :, k]) for k, c in enumerate(ev.params.catIds)}
    assert out["map_per_class"].keys() == per_class.keys()
    np.testing.assert_allclose(
        list(out["map_per_class"].values()), list(per_class.values()), rtol=0, atol=TOL
    )
    return out


# --------------------------------------------------------------------------- builders


def _box_masks(boxes: torch.Tensor, size: int, ellipse=None) -> torch.Tensor:
    """Masks of pixels whose centres lie in each box (or in its inscribed ellipse)."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    out = np.zeros((len(boxes), size, size), dtype=bool)
    for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        if ellipse is not None and ellipse[k]:
            rx, ry = max((x2 - x1) / 2, 0.5), max((y2 - y1) / 2, 0.5)
            out[k] = ((xx - (x1 + x2) / 2) / rx) ** 2 + ((yy - (y1 + y2) / 2) / ry) ** 2 <= 1
        else:
            out[k] = (xx >= x1) & (xx <= x2) & (yy >= y1) & (yy <= y2)
    return torch.from_numpy(out)


def pred(boxes, labels, scores, size=None):
    d = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.long),
        "scores": torch.tensor(scores, dtype=torch.float32),
    }
    if size:
        d["masks"] = _box_masks(d["boxes"], size)
    return d


def target(boxes, labels, size=None):
    d = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.long),
    }
    if size:
        d["masks"] = _box_masks(d["boxes"], size)
    return d


def random_case(seed: int, segm: bool, n_img: int = 4, n_cls: int = 3, size: int = 128):
    """Targets of mixed sizes; predictions = jittered copies (some relabelled), random
    boxes and near-duplicates, all with random scores."""
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for _ in range(n_img):
        nt = int(rng.integers(0, 7))
        side = rng.choice([10.0, 45.0, 110.0], size=nt) * rng.uniform(0.7, 1.2, size=nt)
        x1, y1 = rng.uniform(0, size - 16, nt), rng.uniform(0, size - 16, nt)
        x2 = np.minimum(x1 + side, size)
        y2 = np.minimum(y1 + side * rng.uniform(0.6, 1.4, nt), size)
        tb, tl = np.stack([x1, y1, x2, y2], 1).reshape(-1, 4), rng.integers(0, n_cls, nt)
        found = rng.random(nt) < 0.8
        pb, pl = tb[found] + rng.normal(0, 3, (found.sum(), 4)), tl[found].copy()
        relabel = rng.random(len(pl)) < 0.1
        pl[relabel] = rng.integers(0, n_cls, relabel.sum())
        nr = int(rng.integers(0, 4))
        rx, ry, rs = (
            rng.uniform(0, size - 8, nr),
            rng.uniform(0, size - 8, nr),
            rng.uniform(4, 90, nr),
        )
        pb = np.concatenate([pb, np.stack([rx, ry, rx + rs, ry + rs], 1).reshape(-1, 4)])
        pl = np.concatenate([pl, rng.integers(0, n_cls, nr)])
        dup = rng.random(len(pb)) < 0.25
        pb = np.concatenate([pb, pb[dup] + rng.normal(0, 2, (dup.sum(), 4))])
        pl = np.concatenate([pl, pl[dup]])
        pb = np.clip(pb, 0, size)
        pb[:, 2:] = np.maximum(pb[:, 2:], pb[:, :2] + 1)
        p = pred(pb, pl, rng.random(len(pb)))
        t = target(tb, tl)
        if segm:
            p["masks"] = _box_masks(p["boxes"], size, rng.random(len(pb)) < 0.5)
            t["masks"] = _box_masks(t["boxes"], size, rng.random(nt) < 0.5)
        preds.append(p)
        targets.append(t)
    return preds, targets


# --------------------------------------------------------------------------- hand-made cases

A, B, C = [10, 10, 30, 30], [50, 50, 170, 150], [0, 60, 40, 100]  # small, large, medium
FAR = [170, 170, 190, 190]
IOU_TYPES = ["bbox", "segm"]


def _size(iou_type):
    return 200 if iou_type == "segm" else None


@pytest.mark.parametrize("iou_type", IOU_TYPES)
def test_perfect_predictions_score_one(iou_type):
    s = _size(iou_type)
    preds = [pred([A, B, C], [1, 2, 1], [0.9, 0.8, 0.7], s), pred([B], [2], [0.5], s)]
    targets = [target([A, B, C], [1, 2, 1], s), target([B], [2], s)]
    out = assert_matches_coco(preds, targets, iou_type)
    # COCOeval's precision is tp / (tp + fp + eps): "1" is 1 - 2e-16
    # mar_1: one detection per image and class finds one of image 0's two class-1 objects
    want = {k: 0.75 if k == "mar_1" else 1.0 for k in KEYS}
    assert {k: out[k] for k in KEYS} == pytest.approx(want, abs=1e-12)
    assert out["map_per_class"] == pytest.approx({1: 1.0, 2: 1.0}, abs=1e-12)


@pytest.mark.parametrize("iou_type", IOU_TYPES)
def test_false_positive_ranked_first_halves_ap(iou_type):
    # precision 0 then 1/2 at recall 1: the interpolated precision is 1/2 everywhere
    s = _size(iou_type)
    out = assert_matches_coco(
        [pred([FAR, A], [1, 1], [0.9, 0.8], s)], [target([A], [1], s)], iou_type
    )
    assert out["map"] == pytest.approx(0.5, abs=1e-12)
    assert out["mar_100"] == 1.0 and out["mar_1"] == 0.0  # recall has no eps


@pytest.mark.parametrize("iou_type", IOU_TYPES)
def test_missed_object(iou_type):
    # recall stops at 1/2 with precision 1: 51 of the 101 recall points
    s = _size(iou_type)
    out = assert_matches_coco([pred([A], [1], [0.9], s)], [target([A, C], [1, 1], s)], iou_type)
    assert out["map"] == pytest.approx(51 / 101, abs=1e-12)
    assert out["mar_100"] == 0.5


@pytest.mark.parametrize("iou_type", IOU_TYPES)
def test_duplicate_detections(iou_type):
    s = _size(iou_type)
    preds = [pred([A, A, B, B], [1, 1, 1, 1], [0.6, 0.9, 0.95, 0.3], s)]
    out = assert_matches_coco(preds, [target([A, B], [1, 1], s)], iou_type)
    assert out["map"] == pytest.approx(1.0, abs=1e-12)  # duplicates rank below both objects
    preds = [pred([A, A, B], [1, 1, 1], [0.9, 0.8, 0.7], s)]
    out = assert_matches_coco(preds, [target([A, B], [1, 1], s)], iou_type)
    assert out["map"] == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-12)


@pytest.mark.parametrize("iou_type", IOU_TYPES)
def test_wrong_class(iou_type):
    s = _size(iou_type)
    out = assert_matches_coco([pred([A], [2], [0.9], s)], [target([A], [1], s)], iou_type)
    assert out["map"] == 0.0
    assert out["map_per_class"] == {1: 0.0, 2: -1.0}


@pytest.mark.parametrize("iou_type", IOU_TYPES)
def test_image_without_predictions(iou_type):
    s = _size(iou_type)
    preds = [pred([A], [1], [0.9], s), pred(np.zeros((0, 4)), [], [], s)]
    out = assert_matches_coco(preds, [target([A], [1], s), target([C], [1], s)], iou_type)
    assert out["map"] == pytest.approx(51 / 101, abs=1e-12)


@pytest.mark.parametrize("iou_type", IOU_TYPES)
def test_image_without_targets(iou_type):
    s = _size(iou_type)
    empty = target(np.zeros((0, 4)), [], s)
    preds = [pred([A], [1], [0.5], s), pred([B], [1], [0.9], s)]
    out = assert_matches_coco(preds, [target([A], [1], s), empty], iou_type)
    assert out["map"] == pytest.approx(0.5, abs=1e-12)
    preds = [pred([A], [1], [0.9], s), pred([B], [1], [0.5], s)]
    out = assert_matches_coco(preds, [target([A], [1], s), empty], iou_type)
    assert out["map"] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("iou_type", IOU_TYPES)
def test_equal_scores_across_images(iou_type):
    # ties keep image order, then input order, as COCOeval's mergesort
    s = _size(iou_type)
    preds = [pred([FAR, A], [1, 1], [1, 1], s), pred([C, FAR], [1, 1], [1, 1], s),
             pred([B], [1], [1], s)]  # fmt: skip
    targets = [target([A], [1], s), target([C], [1], s), target([B, FAR], [1, 1], s)]
    assert_matches_coco(preds, targets, iou_type)


def test_equal_ious_go_to_the_later_object():
    # the first detection overlaps both objects by 1/3: COCOeval gives it the later one,
    # so the second detection (IoU 0.82 with that one only) is a false positive
    preds = [pred([[5, 0, 15, 10], [11, 0, 21, 10]], [1, 1], [0.9, 0.8])]
    targets = [target([[0, 0, 10, 10], [10, 0, 20, 10]], [1, 1])]
    out = detection_map(preds, targets, iou_thresholds=[0.3])
    ev = coco_eval(preds, targets, "bbox", iou_thrs=[0.3])
    assert out["map"] == pytest.approx(_mean(ev.eval["precision"][:, :, :, 0, -1]), abs=TOL)
    assert out["map"] == pytest.approx(51 / 101, abs=1e-12)
    assert out["map_50"] == -1.0 and out["map_75"] == -1.0


@pytest.mark.parametrize("iou_type", IOU_TYPES)
def test_area_ranges_and_their_closed_boundaries(iou_type):
    s = _size(iou_type)
    on_edge = [100, 0, 132, 32]  # area exactly 32^2: small and medium in COCOeval
    preds = [pred([A, on_edge, B, C], [1, 1, 1, 2], [0.9, 0.8, 0.7, 0.6], s)]
    targets = [target([A, on_edge, B, [0, 60, 40, 101]], [1, 1, 1, 2], s)]
    out = assert_matches_coco(preds, targets, iou_type)
    assert all(out[k] > -1 for k in ("map_small", "map_medium", "map_large"))
    out = assert_matches_coco([pred([A], [1], [0.9], s)], [target([A], [1], s)], iou_type)
    assert (
        out["map_small"] == pytest.approx(1.0, abs=1e-12)
        and out["map_medium"] == -1.0
        and out["mar_large"] == -1.0
    )


def test_only_predictions_gives_minus_one():
    out = assert_matches_coco([pred([A], [1], [0.9])], [target(np.zeros((0, 4)), [])])
    assert all(out[k] == -1.0 for k in KEYS)


def test_no_predictions_at_all():
    # pycocotools cannot load an empty result list; every class with objects has AP 0
    targets = [target([A, B], [1, 2]), target([C], [1])]
    out = detection_map([pred(np.zeros((0, 4)), [], []) for _ in range(2)], targets)
    assert out["map"] == 0.0 and out["mar_100"] == 0.0 and out["map_medium"] == 0.0
    assert out["map_per_class"] == {1: 0.0, 2: 0.0}
    out = detection_map([], [])
    assert all(out[k] == -1.0 for k in KEYS) and out["map_per_class"] == {}


def test_mask_channel_axis_and_numpy_inputs():
    preds, targets = random_case(3, segm=True)
    ref = detection_map(preds, targets, iou_type="segm")
    preds4 = [{**p, "masks": p["masks"][:, None].to(torch.uint8)} for p in preds]
    np_targets = [{k: v.numpy() for k, v in t.items()} for t in targets]
    out = detection_map(preds4, np_targets, iou_type="segm")
    assert out == ref
    assert out["map"] == pytest.approx(coco_eval(preds, targets, "segm").stats[0], abs=TOL)


# --------------------------------------------------------------------------- random cases


@pytest.mark.parametrize("seed", range(24))
def test_random_boxes_match_cocoeval(seed):
    assert_matches_coco(*random_case(seed, segm=False), "bbox")


@pytest.mark.parametrize("seed", range(24))
def test_random_masks_match_cocoeval(seed):
    assert_matches_coco(*random_case(100 + seed, segm=True), "segm")


@pytest.mark.parametrize("iou_type", IOU_TYPES)
def test_detection_budget_per_image_and_class(iou_type):
    # more detections per image and class than the budget: COCOeval keeps the best
    preds, targets = random_case(7, segm=iou_type == "segm", n_img=3, n_cls=2)
    rng = np.random.default_rng(0)
    for p in preds:
        n = 120
        boxes = torch.tensor(rng.uniform(0, 60, (n, 2)), dtype=torch.float32).repeat(1, 2)
        boxes[:, 2:] += torch.tensor(rng.uniform(5, 60, (n, 2)), dtype=torch.float32)
        p["boxes"] = torch.cat([p["boxes"], boxes])
        p["labels"] = torch.cat([p["labels"], torch.zeros(n, dtype=torch.long)])
        p["scores"] = torch.cat([p["scores"], torch.tensor(rng.random(n), dtype=torch.float32)])
        if iou_type == "segm":
            p["masks"] = torch.cat([p["masks"], _box_masks(boxes, 128)])
    assert_matches_coco(preds, targets, iou_type)  # default budget 100
    out = detection_map(preds, targets, iou_type=iou_type, max_detections=3)
    ev = coco_eval(preds, targets, iou_type, max_dets=(1, 10, 3))  # sorted to 1, 3, 10
    prec, rec = ev.eval["precision"], ev.eval["recall"]
    assert out["map"] == pytest.approx(_mean(prec[:, :, :, 0, 1]), abs=TOL)
    assert out["map_small"] == pytest.approx(_mean(prec[:, :, :, 1, 1]), abs=TOL)
    assert out["mar_3"] == pytest.approx(_mean(rec[:, :, 0, 1]), abs=TOL)
    assert out["mar_10"] == pytest.approx(_mean(rec[:, :, 0, 2]), abs=TOL)


def test_custom_iou_thresholds():
    preds, targets = random_case(11, segm=False, n_img=6)
    thrs = [0.3, 0.5, 0.9]
    out = detection_map(preds, targets, iou_thresholds=thrs)
    prec = coco_eval(preds, targets, "bbox", iou_thrs=thrs).eval["precision"]
    assert out["map"] == pytest.approx(_mean(prec[:, :, :, 0, -1]), abs=TOL)
    assert out["map_50"] == pytest.approx(_mean(prec[1:2, :, :, 0, -1]), abs=TOL)
    assert out["map_75"] == -1.0


def test_hundreds_of_images():
    preds, targets = random_case(5, segm=False, n_img=200, n_cls=5, size=300)
    assert_matches_coco(preds, targets, "bbox")


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs_raise_cnnkit_errors_naming_the_value():
    good_p, good_t = pred([A], [1], [0.9], 64), target([A], [1], 64)
    with pytest.raises(ConfigError, match="predictions\\[0\\] is missing the key 'scores'"):
        detection_map([{"boxes": good_p["boxes"], "labels": good_p["labels"]}], [good_t])
    with pytest.raises(ConfigError, match="targets\\[0\\] is missing the key 'labels'"):
        detection_map([good_p], [{"boxes": good_t["boxes"]}])
    with pytest.raises(
        ConfigError, match=r"targets\[1\]\['boxes'\].*box 0 = \[5.0, 0.0, 2.0, 4.0\]"
    ):
        detection_map([good_p, good_p], [good_t, target([[5, 0, 2, 4]], [1])])
    with pytest.raises(ShapeError, match="2 predictions and 1 targets"):
        detection_map([good_p, good_p], [good_t])
    with pytest.raises(ConfigError, match="predictions\\[0\\] is missing the key 'masks'"):
        detection_map([pred([A], [1], [0.9])], [good_t], iou_type="segm")
    with pytest.raises(ShapeError, match=r"\(64, 64\) and \(32, 32\)"):
        detection_map([good_p], [target([A], [1], 32)], iou_type="segm")
    with pytest.raises(ShapeError, match=r"predictions\[0\]\['labels'\].*\(2,\)"):
        detection_map([{**good_p, "labels": torch.tensor([1, 1])}], [good_t])
    with pytest.raises(ShapeError, match=r"\(K, 4\).*\(1, 3\)"):
        detection_map([{**good_p, "boxes": torch.zeros(1, 3)}], [good_t])
    with pytest.raises(ConfigError, match="binary.*masks > 0.5"):
        detection_map([{**good_p, "masks": good_p["masks"] * 0.7}], [good_t], iou_type="segm")
    with pytest.raises(ConfigError, match="'keypoints'"):
        detection_map([good_p], [good_t], iou_type="keypoints")
    with pytest.raises(ConfigError, match="one dict per image; received dict"):
        detection_map(good_p, good_t)
    with pytest.raises(ConfigError, match="nan"):
        detection_map([{**good_p, "scores": torch.tensor([float("nan")])}], [good_t])
    with pytest.raises(ConfigError, match="1.5"):
        detection_map([good_p], [good_t], iou_thresholds=[0.5, 1.5])
    with pytest.raises(ConfigError, match="max_detections.*0"):
        detection_map([good_p], [good_t], max_detections=0)
    with pytest.raises(ConfigError, match="integers.*1.5"):
        detection_map([{**good_p, "labels": torch.tensor([1.5])}], [good_t])
    assert issubclass(ShapeError, CnnkitError) and issubclass(ConfigError, CnnkitError)
