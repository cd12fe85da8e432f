"""Mask R-CNN trained from scratch (no pretrained weights) on the balloon set, CPU.

Data: ``../shared/data/balloon`` (61 train / 13 val Flickr photos, one class, VIA
polygons; see its SOURCE.md), read with ``cnnkit.data.coco.via_instances``. Images and
masks are resized once so that the longer side is ``--max-side`` pixels (bilinear for
images, nearest for masks, boxes scaled); training and evaluation both run at that
resolution. Reports COCO box and mask mAP on the 13 validation images.

    python bench/maskrcnn_balloon.py            # resnet18 from scratch, 12 epochs
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from cnnkit.data.coco import via_instances
from cnnkit.models import create
from cnnkit.train.detection import evaluate_detection, fit_detection


def data_root() -> Path:
    env = os.environ.get("CNNKIT_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    return root / "balloon"


def load(split: str, max_side: int):
    ds = via_instances(data_root() / split, classes=["balloon"])
    images, targets = [], []
    for i in range(len(ds)):
        img, t = ds[i]
        h, w = img.shape[-2:]
        s = max_side / max(h, w)
        size = (round(h * s), round(w * s))
        images.append(F.interpolate(img[None], size=size, mode="bilinear", align_corners=False)[0])
        masks = F.interpolate(t["masks"][None].float(), size=size, mode="nearest")[0]
        sx, sy = size[1] / w, size[0] / h
        boxes = t["boxes"] * torch.tensor([sx, sy, sx, sy])
        targets.append({"boxes": boxes, "labels": t["labels"], "masks": masks.to(torch.uint8)})
    return images, targets


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="resnet18", choices=["resnet18", "resnet50", "small"])
    p.add_argument("--max-side", type=int, default=256)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--lr-steps", type=int, nargs="*", default=[9])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the results to this file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    x, y = load("train", args.max_side)
    xv, yv = load("val", args.max_side)
    load_s = time.perf_counter() - start
    extra = {}
    if args.backbone != "small":
        extra = dict(
            anchor_sizes=((16, 32, 64, 128, 256),),
            rpn_kwargs=dict(pre_nms_top_n=(600, 300), post_nms_top_n=(300, 100)),
            roi_kwargs=dict(batch_size_per_image=64, representation=256, mask_channels=128),
        )
    model = create("mask_rcnn", num_classes=1, backbone=args.backbone, min_size=None,
                   max_size=None, **extra)  # fmt: skip
    start = time.perf_counter()
    history = fit_detection(
        model, x, y, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        lr_steps=args.lr_steps, hflip=True, seed=args.seed, log_fn=print, warmup_iters=50,
    )  # fmt: skip
    train_s = time.perf_counter() - start
    scores = evaluate_detection(model, xv, yv, batch_size=2)
    result = {
        "settings": vars(args),
        "load_seconds": round(load_s, 1),
        "train_seconds": round(train_s, 1),
        "final_loss": history["loss"][-1],
    }
    for iou_type, res in scores.items():
        for key in ("map", "map_50", "map_75", "mar_100"):
            result[f"{iou_type}_{key}"] = round(float(res[key]), 4)
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
