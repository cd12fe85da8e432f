"""COCO-style mean average precision and recall of object detections and instance masks.

The COCO detection metrics (Lin et al. 2014, "Microsoft COCO: Common Objects in
Context"; the reference implementation is ``pycocotools.cocoeval.COCOeval``), used for
seed 003's Mask R-CNN case study. For every class, IoU threshold ``t`` in
``0.50:0.05:0.95``, area range and detection budget:

1. In each image, the class's detections are sorted by score (ties keep input order)
   and cut to the budget; each in turn takes the still unmatched true object of its
   class with the highest IoU ``>= t`` (ties go to the later object), preferring objects
   inside the area range over those outside it (these are "ignored").
2. Detections of all images are pooled and sorted by score; a detection matched to an
   ignored object, or unmatched with its own area outside the range, is dropped.
3. ``precision(recall)`` is made monotone (``p(r) = max_{r' >= r} p(r')``) and read at
   the 101 recalls ``0, 0.01, ..., 1``; AP is their mean, recall is the final recall.

``map`` is the mean AP over IoU thresholds and classes (all areas, ``max_detections``
per image and class), ``map_50`` / ``map_75`` at one threshold, ``map_small`` /
``map_medium`` / ``map_large`` for areas in ``[0, 32^2]``, ``[32^2, 96^2]`` and
``[96^2, 1e10]`` (closed ranges, as COCOeval: an area of exactly ``32^2`` is small and
medium), ``mar_1`` / ``mar_10`` / ``mar_100`` the mean recall with 1, 10 and
``max_detections`` detections per image and class. Everything matches COCOeval on the
same input, number for number, including its conventions:

- A class counts in a mean only if it has true objects in the area range; a value no
  class defines (e.g. ``map_small`` without small objects) is ``-1``, as COCOeval.
- The detection budget applies per image and per class, as COCOeval.
- Area, used for the size ranges: the box area ``(x2 - x1) (y2 - y1)`` for
  ``iou_type='bbox'`` and the mask's pixel count for ``'segm'``, for detections and
  true objects alike (pycocotools reads true objects' areas from their ``area`` field;
  give it these values to reproduce the numbers).
- Crowd regions (COCO's ``iscrowd``) are not supported: every target is an object.
- Box IoU comes from :func:`torchvision.ops.box_iou` (``0`` where both boxes are empty),
  mask IoU is pixel-count intersection over union from one matrix product per image.

Input size: any; one image with ``P`` detections and ``T`` objects costs a ``P x T``
IoU matrix, and the matching runs over all images and classes at once, one step per
detection rank (at most ``max_detections`` steps).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torchvision

from cnnkit._core.errors import ConfigError, ShapeError, check_choice

#: COCOeval's IoU thresholds 0.50, 0.55, ..., 0.95 (built exactly as pycocotools does).
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1)
#: COCOeval's recall points 0, 0.01, ..., 1 at which precision is read.
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, int(np.round((1.00 - 0.0) / 0.01)) + 1)
#: COCOeval's area ranges (closed intervals, in pixels^2).
AREA_RANGES = (
    ("all", 0.0, 1e5**2),
    ("small", 0.0, 32.0**2),
    ("medium", 32.0**2, 96.0**2),
    ("large", 96.0**2, 1e5**2),
)
# masks are intersected in float32 below this many pixels (exact integer counts)
_FLOAT32_EXACT = 2**24
# matrix-product chunk: predicted masks times pixels per block
_CHUNK_ELEMENTS = 2**25


def detection_map(
    predictions: Sequence[Mapping[str, torch.Tensor]],
    targets: Sequence[Mapping[str, torch.Tensor]],
    iou_type: str = "bbox",
    iou_thresholds: Sequence[float] | None = None,
    max_detections: int = 100,
) -> dict[str, float | dict[int, float]]:
    """COCO mAP and mAR of ``predictions`` against ``targets``, equal to pycocotools.

    Args:
        predictions: one dict per image with ``boxes (Tensor[P, 4])`` as
            ``(x1, y1, x2, y2)``, ``labels (Tensor[P])`` (integers), ``scores (Tensor[P])``
            and, for ``iou_type='segm'``, ``masks (Tensor[P, H, W])`` (bool or 0/1;
            ``(P, 1, H, W)`` is accepted). torchvision's detection output format.
        targets: one dict per image with ``boxes``, ``labels`` and (``'segm'``) ``masks``.
            For ``'segm'`` the boxes are not used and may be left out.
        iou_type: ``'bbox'`` (box IoU) or ``'segm'`` (mask IoU).
        iou_thresholds: IoU thresholds in ``[0, 1]``; default COCO's ``0.50:0.05:0.95``.
            ``map_50`` / ``map_75`` are ``-1`` unless 0.5 / 0.75 is one of them.
        max_detections: detections per image and class for ``map`` and the ``mar_*``
            figures of the largest budget (the third of ``1, 10, max_detections``).

    Returns:
        ``map``, ``map_50``, ``map_75``, ``map_small``, ``map_medium``, ``map_large``,
        ``mar_1``, ``mar_10``, ``mar_<max_detections>`` (``mar_100`` by default),
        ``mar_small``, ``mar_medium``, ``mar_large`` as floats (``-1`` where undefined) and
        ``map_per_class``: ``{label: AP}`` for every label among targets and predictions
        (``-1`` for labels without targets).
    """
    iou_type = check_choice("iou_type", iou_type, ("bbox", "segm"))
    thresholds = _check_thresholds(iou_thresholds)
    max_dets = (1, 10, _check_max_detections(max_detections))
    preds, gts = _check_lists(predictions, targets)
    inputs = _prepare(preds, gts, iou_type)
    precision, recall, classes = _evaluate(*inputs, thresholds, max_dets)
    return _summarise(precision, recall, classes, thresholds, max_dets)


# --------------------------------------------------------------------------- input checks


def _check_thresholds(iou_thresholds: Sequence[float] | None) -> np.ndarray:
    if iou_thresholds is None:
        return COCO_IOU_THRESHOLDS.copy()
    try:
        thr = np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"iou_thresholds must be a sequence of numbers in [0, 1]; received {iou_thresholds!r}."
        ) from err
    if thr.size == 0 or not np.all((thr >= 0) & (thr <= 1)):
        raise ConfigError(
            f"iou_thresholds must be a non-empty sequence of numbers in [0, 1]; received "
            f"{iou_thresholds!r}."
        )
    return thr


def _check_max_detections(max_detections: int) -> int:
    if isinstance(max_detections, bool) or not isinstance(max_detections, (int, np.integer)):
        raise ConfigError(f"max_detections must be a positive int; received {max_detections!r}.")
    if max_detections < 1:
        raise ConfigError(f"max_detections must be a positive int; received {max_detections!r}.")
    return int(max_detections)


def _check_lists(predictions: object, targets: object) -> tuple[list, list]:
    for name, value in (("predictions", predictions), ("targets", targets)):
        if isinstance(value, (Mapping, str, bytes, torch.Tensor)) or not isinstance(
            value, Sequence
        ):
            raise ConfigError(
                f"{name} must be a list with one dict per image; received {type(value).__name__}."
            )
    if len(predictions) != len(targets):
        raise ShapeError(
            f"predictions and targets must have one entry per image each; received "
            f"{len(predictions)} predictions and {len(targets)} targets."
        )
    return list(predictions), list(targets)


def _field(item: Mapping, key: str, where: str) -> torch.Tensor:
    if key not in item:
        raise ConfigError(
            f"{where} is missing the key {key!r}; it has keys {sorted(map(str, item))}."
        )
    value = item[key]
    if isinstance(value, torch.Tensor):
        return value.detach()
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError) as err:
        raise ConfigError(f"{where}[{key!r}] must be a tensor; received {value!r}.") from err


def _shaped(t: torch.Tensor, shape: tuple, where: str, what: str) -> torch.Tensor:
    """``t`` if its shape matches ``shape`` (``None`` = any size), else a ShapeError."""
    if t.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, t.shape)):
        raise ShapeError(f"{where} must have shape {what}; received {tuple(t.shape)}.")
    return t


def _masks(item: Mapping, where: str, n: int) -> torch.Tensor:
    m = _field(item, "masks", where)
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    name = f"{where}['masks']"
    _shaped(m, (n, None, None), name, f"({n}, H, W), one mask per label")
    if m.dtype != torch.bool:
        if m.is_complex() or not bool(((m == 0) | (m == 1)).all()):
            raise ConfigError(
                f"{name} must be binary (bool or 0/1); received dtype {m.dtype} with other "
                "values. Binarise first, e.g. masks > 0.5."
            )
        m = m != 0
    return m


def _raw(i: int, pred: object, target: object, iou_type: str) -> list:
    """Image i's ``[p_boxes, p_labels, scores, t_boxes, t_labels]``, shapes checked."""
    for name, item in (("predictions", pred), ("targets", target)):
        if not isinstance(item, Mapping):
            raise ConfigError(
                f"{name}[{i}] must be a dict of tensors; received {type(item).__name__}."
            )
    out = []
    for where, item, keys in (
        (f"predictions[{i}]", pred, ("labels", "scores")),
        (f"targets[{i}]", target, ("labels",)),
    ):
        if iou_type == "bbox":
            box = _field(item, "boxes", where)
            _shaped(box, (None, 4), f"{where}['boxes']", "(K, 4) as (x1, y1, x2, y2)")
            n = box.shape[0]
        else:
            lab = _shaped(_field(item, "labels", where), (None,), f"{where}['labels']", "(K,)")
            box, n = None, lab.shape[0]
        out.append(box)
        for key in keys:
            want = f"({n},), one per {'box' if iou_type == 'bbox' else 'mask'}"
            out.append(_shaped(_field(item, key, where), (n,), f"{where}[{key!r}]", want))
    return out


def _locate(bad: torch.Tensor, counts: torch.Tensor) -> tuple[int, int]:
    """(image, index in image) of the first True of ``bad`` over concatenated images."""
    flat = int(torch.nonzero(bad)[0])
    ends = torch.cumsum(counts, 0)
    img = int(torch.searchsorted(ends, torch.tensor(flat), right=True))
    return img, flat - int(ends[img] - counts[img])


def _cat(tensors: list, dtype: torch.dtype, shape: tuple) -> torch.Tensor:
    return torch.cat([t.to("cpu", dtype) for t in tensors]) if tensors else torch.zeros(shape)


def _check_labels(raw: list, k: int, n: torch.Tensor, name: str) -> torch.Tensor:
    parts = [r[k] for r in raw]
    for i, lab in enumerate(parts):
        if lab.dtype == torch.bool or lab.is_complex():
            raise ConfigError(f"{name}[{i}]['labels'] must hold integers; received {lab.dtype}.")
    lab = _cat(parts, torch.float64, (0,))
    ok = torch.isfinite(lab) & (lab == torch.round(lab))
    if not bool(ok.all()):
        i, j = _locate(~ok, n)
        raise ConfigError(
            f"{name}[{i}]['labels'] must hold integers; received {lab[~ok][0].item()!r} at {j}."
        )
    return _cat([r[k] for r in raw], torch.long, (0,))


def _check_boxes(raw: list, k: int, n: torch.Tensor, name: str) -> torch.Tensor:
    for i, r in enumerate(raw):
        if r[k].is_complex() or r[k].dtype == torch.bool:
            raise ConfigError(f"{name}[{i}]['boxes'] must be real numbers; received {r[k].dtype}.")
    b = _cat([r[k] for r in raw], torch.float64, (0, 4))
    bad = ~torch.isfinite(b).all(1) | (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
    if bool(bad.any()):
        i, j = _locate(bad, n)
        raise ConfigError(
            f"{name}[{i}]['boxes'] must be finite (x1, y1, x2, y2) with x1 <= x2 and "
            f"y1 <= y2; received box {j} = {raw[i][k][j].tolist()}."
        )
    return b


def _prepare(preds: list, gts: list, iou_type: str) -> tuple:
    """Checked, concatenated labels, scores and areas, and each image's IoU matrix."""
    raw = [_raw(i, p, t, iou_type) for i, (p, t) in enumerate(zip(preds, gts))]
    n_p = torch.tensor([r[1].shape[0] for r in raw], dtype=torch.long)
    n_t = torch.tensor([r[4].shape[0] for r in raw], dtype=torch.long)
    p_lab = _check_labels(raw, 1, n_p, "predictions")
    t_lab = _check_labels(raw, 4, n_t, "targets")
    for i, r in enumerate(raw):
        if r[2].is_complex() or r[2].dtype == torch.bool:
            raise ConfigError(f"predictions[{i}]['scores'] must be real; received {r[2].dtype}.")
    scores = _cat([r[2] for r in raw], torch.float64, (0,))
    if not bool(torch.isfinite(scores).all()):
        i, j = _locate(~torch.isfinite(scores), n_p)
        raise ConfigError(
            f"predictions[{i}]['scores'] must be finite; received {raw[i][2][j].item()!r} at {j}."
        )
    if iou_type == "bbox":
        pb, tb = _check_boxes(raw, 0, n_p, "predictions"), _check_boxes(raw, 3, n_t, "targets")
        p_area = (pb[:, 2] - pb[:, 0]) * (pb[:, 3] - pb[:, 1])
        t_area = (tb[:, 2] - tb[:, 0]) * (tb[:, 3] - tb[:, 1])
        p_split, t_split = pb.split(n_p.tolist()), tb.split(n_t.tolist())
        ious = [torchvision.ops.box_iou(a, b).nan_to_num_(0.0) for a, b in zip(p_split, t_split)]
        return p_lab, scores, p_area, t_lab, t_area, n_p, n_t, ious
    p_area, t_area, ious = [], [], []
    for i, (p, t) in enumerate(zip(preds, gts)):
        pw, tw = f"predictions[{i}]", f"targets[{i}]"
        pm, tm = _masks(p, pw, int(n_p[i])), _masks(t, tw, int(n_t[i]))
        if n_p[i] and n_t[i] and pm.shape[1:] != tm.shape[1:]:
            raise ShapeError(
                f"{pw}['masks'] and {tw}['masks'] must have the same (H, W); received "
                f"{tuple(pm.shape[1:])} and {tuple(tm.shape[1:])}."
            )
        a, b, iou = _mask_iou(pm, tm.to(pm.device))
        p_area.append(a)
        t_area.append(b)
        ious.append(iou.cpu())
    p_area, t_area = _cat(p_area, torch.float64, (0,)), _cat(t_area, torch.float64, (0,))
    return p_lab, scores, p_area, t_lab, t_area, n_p, n_t, ious


def _mask_iou(pm: torch.Tensor, tm: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Pixel areas of ``pm (P, H, W)``, ``tm (T, H, W)`` and their IoU ``(P, T)`` (float64)."""
    n_p, n_t, hw = pm.shape[0], tm.shape[0], pm.shape[1] * pm.shape[2]
    dtype = torch.float32 if hw < _FLOAT32_EXACT else torch.float64
    a = pm.reshape(n_p, hw).to(dtype)
    b = tm.reshape(n_t, tm.shape[1] * tm.shape[2]).to(dtype)
    p_area, t_area = a.sum(1).double(), b.sum(1).double()
    if n_p == 0 or n_t == 0:
        return p_area.cpu(), t_area.cpu(), torch.zeros(n_p, n_t, dtype=torch.float64)
    step = max(1, _CHUNK_ELEMENTS // max(hw, 1))
    inter = torch.cat([a[s : s + step] @ b.T for s in range(0, n_p, step)]).double()
    union = p_area[:, None] + t_area[None, :] - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1.0), 0.0)
    return p_area.cpu(), t_area.cpu(), iou


# --------------------------------------------------------------------------- evaluation


def _ranks(groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Position of each element within its group, for elements already in group order."""
    order = torch.argsort(groups, stable=True)
    counts = torch.bincount(groups, minlength=n_groups)
    starts = torch.cumsum(counts, 0) - counts
    ranks = torch.empty_like(groups)
    ranks[order] = torch.arange(groups.numel()) - starts[groups[order]]
    return ranks


def _evaluate(
    p_lab: torch.Tensor,
    p_score: torch.Tensor,
    p_area: torch.Tensor,
    t_lab: torch.Tensor,
    t_area: torch.Tensor,
    n_p: torch.Tensor,
    n_t: torch.Tensor,
    image_ious: list[torch.Tensor],
    thresholds: np.ndarray,
    max_dets: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """COCOeval's ``precision (T, R, K, A, M)`` and ``recall (T, K, A, M)``, and the labels."""
    f64 = torch.float64
    n_img = n_p.numel()
    if p_lab.numel() + t_lab.numel() == 0:
        n_thr, n_rec = len(thresholds), len(RECALL_THRESHOLDS)
        empty = np.empty((n_thr, n_rec, 0, len(AREA_RANGES), len(max_dets)))
        return empty, empty[:, 0], torch.zeros(0, dtype=torch.long)
    p_img = torch.repeat_interleave(torch.arange(n_img), n_p)
    t_img = torch.repeat_interleave(torch.arange(n_img), n_t)

    # groups = (image, class) pairs, ordered by image then class
    classes = torch.unique(torch.cat([p_lab, t_lab]))
    n_cls = classes.numel()
    keys = torch.cat([p_img * n_cls + torch.searchsorted(classes, p_lab),
                      t_img * n_cls + torch.searchsorted(classes, t_lab)])  # fmt: skip
    group_keys, inverse = torch.unique(keys, return_inverse=True)
    n_grp = group_keys.numel()
    grp_p, grp_t = inverse[: p_lab.numel()], inverse[p_lab.numel() :]
    grp_cls = group_keys % n_cls

    # rank of each detection in its group by score (ties keep input order), cut to budget
    by_score = torch.argsort(-p_score, stable=True)
    rank_p = torch.empty_like(grp_p)
    rank_p[by_score] = _ranks(grp_p[by_score], n_grp)
    keep = rank_p < max(max_dets)
    rank_t = _ranks(grp_t, n_grp)
    n_d = int(rank_p[keep].max()) + 1 if bool(keep.any()) else 0
    n_g = int(rank_t.max()) + 1 if rank_t.numel() else 0

    # padded per-group tensors
    det_valid = torch.zeros(n_grp, n_d, dtype=torch.bool)
    det_valid[grp_p[keep], rank_p[keep]] = True
    det_area = torch.zeros(n_grp, n_d, dtype=f64)
    det_area[grp_p[keep], rank_p[keep]] = p_area[keep]
    det_score = torch.zeros(n_grp, n_d, dtype=f64)
    det_score[grp_p[keep], rank_p[keep]] = p_score[keep]
    gt_valid = torch.zeros(n_grp, n_g, dtype=torch.bool)
    gt_valid[grp_t, rank_t] = True
    gt_area = torch.zeros(n_grp, n_g, dtype=f64)
    gt_area[grp_t, rank_t] = t_area
    ious = torch.full((n_grp, n_d, n_g), -1.0, dtype=f64)
    _scatter_ious(image_ious, n_p, n_t, p_lab, t_lab, keep, grp_p, rank_p, rank_t, ious)

    rng = torch.tensor([[lo, hi] for _, lo, hi in AREA_RANGES], dtype=f64)  # (A, 2)
    gt_ig = (gt_area[:, None, :] < rng[None, :, :1]) | (gt_area[:, None, :] > rng[None, :, 1:])
    det_out = (det_area[:, None, :] < rng[None, :, :1]) | (det_area[:, None, :] > rng[None, :, 1:])
    matched, matched_ig = _match(ious, det_valid, gt_valid, gt_ig, thresholds)  # (G, A, T, D)
    ignored = torch.where(matched, matched_ig, det_out[:, :, None, :])

    n_area = len(AREA_RANGES)
    npig = torch.zeros(n_cls, n_area, dtype=torch.long)  # true objects in range per class
    npig.index_add_(0, grp_cls, (gt_valid[:, None, :] & ~gt_ig).sum(-1))
    precision, recall = _accumulate(
        matched, ignored, det_valid, det_score, grp_cls, npig, thresholds, max_dets
    )
    return precision, recall, classes


def _scatter_ious(image_ious, n_p, n_t, p_lab, t_lab, keep, grp_p, rank_p, rank_t, ious) -> None:
    """Write every same-class (detection, object) IoU into ``ious[group, rank_d, rank_t]``."""
    flat = torch.cat([iou.reshape(-1) for iou in image_ious])
    if flat.numel() == 0:
        return
    pairs = n_p * n_t
    img = torch.repeat_interleave(torch.arange(n_p.numel()), pairs)
    local = torch.arange(flat.numel()) - (torch.cumsum(pairs, 0) - pairs)[img]
    di = (torch.cumsum(n_p, 0) - n_p)[img] + local // n_t[img]
    ti = (torch.cumsum(n_t, 0) - n_t)[img] + local % n_t[img]
    sel = (p_lab[di] == t_lab[ti]) & keep[di]
    di, ti = di[sel], ti[sel]
    ious[grp_p[di], rank_p[di], rank_t[ti]] = flat[sel]


def _match(
    ious: torch.Tensor,
    det_valid: torch.Tensor,
    gt_valid: torch.Tensor,
    gt_ig: torch.Tensor,
    thresholds: np.ndarray,
) -> tuple[torch.Tensor, torch.Tensor]:
    """COCOeval's greedy matching for all groups, areas and thresholds at once.

    Step ``j`` matches the ``j``-th best detection of every (image, class) group that has
    one and has objects. Returns ``matched (G, A, T, D)`` and whether the matched object
    is ignored (outside the area range).
    """
    n_grp, n_d, n_g = ious.shape
    n_area, n_thr = gt_ig.shape[1], len(thresholds)
    matched = torch.zeros(n_grp, n_area, n_thr, n_d, dtype=torch.bool)
    matched_ig = torch.zeros_like(matched)
    if n_d == 0 or n_g == 0:
        return matched, matched_ig
    # groups by number of detections to match (none without objects), most first, so that
    # step j only touches the first active[j] groups
    work = torch.where(gt_valid.any(1), det_valid.sum(1), 0)
    order = torch.argsort(work, descending=True)
    active = (work[:, None] > torch.arange(n_d)).sum(0).tolist()
    n_work = active[0]
    order = order[:n_work]
    ious, free = ious[order], gt_valid[order][:, None, None, :]
    regular = ~gt_ig[order][:, :, None, :]
    thr = torch.tensor(np.minimum(thresholds, 1 - 1e-10), dtype=ious.dtype)[None, None, :, None]
    taken = torch.zeros(n_work, n_area, n_thr, n_g, dtype=torch.bool)
    hit = torch.zeros(n_work, n_area, n_thr, n_d, dtype=torch.bool)
    hit_ig = torch.zeros_like(hit)
    index = torch.arange(n_g)
    for j, b in enumerate(active):
        if b == 0:
            break
        iou = ious[:b, j, None, None, :]  # (b, 1, 1, n_g)
        cand = (iou >= thr) & free[:b] & ~taken[:b]
        reg = cand & regular[:b]
        use = torch.where(reg.any(-1, keepdim=True), reg, cand)  # regular objects first
        vals = torch.where(use, iou, -1.0)
        best = use & (vals == vals.amax(-1, keepdim=True))
        pick = torch.where(best, index, -1).amax(-1, keepdim=True)  # ties: the later object
        onehot = index == pick
        taken[:b] |= onehot
        hit[:b, :, :, j] = pick[..., 0] >= 0
        hit_ig[:b, :, :, j] = (onehot & ~regular[:b]).any(-1)
    matched[order], matched_ig[order] = hit, hit_ig
    return matched, matched_ig


def _accumulate(
    matched: torch.Tensor,
    ignored: torch.Tensor,
    det_valid: torch.Tensor,
    det_score: torch.Tensor,
    grp_cls: torch.Tensor,
    npig: torch.Tensor,
    thresholds: np.ndarray,
    max_dets: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """Precision at the recall points and final recall, per class (COCOeval.accumulate)."""
    n_cls, n_area = npig.shape
    n_thr, n_rec, n_m = len(thresholds), len(RECALL_THRESHOLDS), len(max_dets)
    precision = -np.ones((n_thr, n_rec, n_cls, n_area, n_m))
    recall = -np.ones((n_thr, n_cls, n_area, n_m))

    # pooled detections, in (image, class, rank) order, then by class and score
    g_idx, rank = torch.nonzero(det_valid, as_tuple=True)
    cls = grp_cls[g_idx]
    order = torch.argsort(-det_score[g_idx, rank], stable=True)
    order = order[torch.argsort(cls[order], stable=True)]
    g_idx, rank, cls = g_idx[order], rank[order], cls[order]
    tp = (matched & ~ignored)[g_idx, :, :, rank]  # (N, A, T)
    fp = (~matched & ~ignored)[g_idx, :, :, rank]
    ends = torch.cumsum(torch.bincount(cls, minlength=n_cls), 0).tolist()
    rec_thr = torch.tensor(RECALL_THRESHOLDS, dtype=torch.float64)
    eps = np.spacing(1)
    for k in range(n_cls):
        start = ends[k - 1] if k else 0
        total = npig[k].double()[:, None, None]  # (A, 1, 1)
        defined = (npig[k] > 0).numpy()
        for m, budget in enumerate(max_dets):
            sel = torch.arange(start, ends[k])[rank[start : ends[k]] < budget]
            n = sel.numel()
            if n == 0:
                q = torch.zeros(n_area, n_thr, n_rec, dtype=torch.float64)
                rc_last = torch.zeros(n_area, n_thr, dtype=torch.float64)
            else:
                tp_sum = torch.cumsum(tp[sel].permute(1, 2, 0).double(), -1)  # (A, T, n)
                fp_sum = torch.cumsum(fp[sel].permute(1, 2, 0).double(), -1)
                rc = tp_sum / total
                pr = tp_sum / (fp_sum + tp_sum + eps)
                pr = torch.flip(torch.cummax(torch.flip(pr, (-1,)), -1).values, (-1,))
                at = torch.searchsorted(
                    rc.contiguous(), rec_thr.expand(n_area, n_thr, n_rec).contiguous()
                )
                q = torch.where(at < n, pr.gather(-1, at.clamp(max=n - 1)), 0.0)
                rc_last = rc[..., -1]
            q_np, rc_np = q.numpy(), rc_last.numpy()
            for a in np.flatnonzero(defined):
                precision[:, :, k, a, m] = q_np[a]
                recall[:, k, a, m] = rc_np[a]
    return precision, recall


def _mean(s: np.ndarray) -> float:
    s = s[s > -1]
    return float(np.mean(s)) if s.size else -1.0


def _summarise(
    precision: np.ndarray,
    recall: np.ndarray,
    classes: torch.Tensor,
    thresholds: np.ndarray,
    max_dets: tuple[int, ...],
) -> dict[str, float | dict[int, float]]:
    """COCOeval.summarize's twelve numbers (as a dict) plus AP per class."""

    def ap(area: int = 0, thr: float | None = None) -> float:
        s = precision if thr is None else precision[np.where(thr == thresholds)[0]]
        return _mean(s[:, :, :, area, -1])

    def ar(area: int = 0, m: int = -1) -> float:
        return _mean(recall[:, :, area, m])

    out: dict[str, float | dict[int, float]] = {
        "map": ap(),
        "map_50": ap(thr=0.5),
        "map_75": ap(thr=0.75),
        "map_small": ap(1),
        "map_medium": ap(2),
        "map_large": ap(3),
        f"mar_{max_dets[0]}": ar(0, 0),
        f"mar_{max_dets[1]}": ar(0, 1),
        f"mar_{max_dets[2]}": ar(0, 2),
        "mar_small": ar(1),
        "mar_medium": ar(2),
        "mar_large": ar(3),
    }
    out["map_per_class"] = {
        int(c): _mean(precision[:, :, k, 0, -1]) for k, c in enumerate(classes.tolist())
    }
    return out
