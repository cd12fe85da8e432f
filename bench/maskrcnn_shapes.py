"""Mask R-CNN with the 'small' backbone, trained from scratch on CPU on synthetic shapes.

Issue 6's target: mask mAP@0.5 >= 0.7 on held-out images within 30 minutes of CPU
training. Data: ``cnnkit.data.synthetic.shapes(task='instance')`` (circles, squares,
triangles; 1-3 per image; labels 1..3), train and held-out sets from different seeds.

    python bench/maskrcnn_shapes.py        # 1000 images, 6 epochs, 1 thread: 19 min on a
                                           # shared, loaded 2-core CPU; mask mAP@0.5 1.0
    python bench/maskrcnn_shapes.py --epochs 2 --lr-steps   # a quicker look
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import cnnkit
from cnnkit.data.synthetic import SyntheticDataset, shapes
from cnnkit.data.transforms import RandomHorizontalFlip
from cnnkit.models import create
from cnnkit.train.optimizers import Named
from cnnkit.train.schedules import warmup_step_decay


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--n-val", type=int, default=200)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--lr-steps", type=int, nargs="*", default=[5])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--objectness", default="sigmoid", choices=["sigmoid", "softmax"])
    p.add_argument("--pooler", default="align", choices=["align", "pool"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "auto", "bf16"])
    p.add_argument("--json", help="write the results to this file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    x, y = shapes(args.n_train, size=args.size, task="instance", seed=args.seed)
    xv, yv = shapes(args.n_val, size=args.size, task="instance", seed=args.seed + 1000)
    model = cnnkit.Model(create(
        "mask_rcnn", num_classes=3, backbone="small", objectness=args.objectness,
        pooler=args.pooler,
    ))  # fmt: skip
    model.compile(
        optimizer=Named("sgd", momentum=0.9, weight_decay=1e-4), learning_rate=args.lr,
        lr_schedule=warmup_step_decay(args.lr_steps, warmup_iters=100), global_clipnorm=10.0,
        precision=args.precision,
    )  # fmt: skip
    start = time.perf_counter()
    history = model.fit(
        SyntheticDataset(x, y, RandomHorizontalFlip()), epochs=args.epochs,
        batch_size=args.batch_size,
    ).history  # fmt: skip
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    scores = model.evaluate(xv, yv, batch_size=args.batch_size)
    eval_s = time.perf_counter() - start
    result = {
        "settings": vars(args),
        "train_seconds": round(train_s, 1),
        "eval_seconds": round(eval_s, 1),
        "final_loss": history["loss"][-1],
    }
    for iou_type, res in scores.items():
        if not isinstance(res, dict):
            continue
        for key in ("map", "map_50", "map_75", "mar_100"):
            result[f"{iou_type}_{key}"] = round(float(res[key]), 4)
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
