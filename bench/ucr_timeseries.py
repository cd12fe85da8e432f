"""Wang et al. (2017)'s FCN and ResNet on the UCR sets in ../shared/data/ucr.

    python bench/ucr_timeseries.py [--epochs 200] [--models fcn1d resnet1d]
                                   [--datasets GunPoint ECG200 Coffee] [--seeds 0 1 2]

Training follows the paper where it can on a CPU: Adam (lr 1e-3), batch size
min(N_train / 10, 16), cross-entropy; the paper trains 1500-2000 epochs with a
reduce-on-plateau schedule, this script ``--epochs`` epochs with a cosine schedule. The
figure is the test accuracy after the last epoch (no model selection on the test set),
mean and range over seeds. The unit test (tests/test_models_1d_3d.py) runs the short
20-epoch version of the GunPoint case.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

import cnnkit
from cnnkit.data import ucr
from cnnkit.models import create


def data_root() -> Path:
    env = os.environ.get("CNNKIT_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load_ucr(name: str):
    """Train/test arrays of a UCR set (cnnkit.data.ucr: labels mapped to 0..K-1)."""
    root = data_root() / "ucr"
    train, test = ucr(root, name, "train"), ucr(root, name, "test")
    return train.x.numpy(), train.y.numpy(), test.x.numpy(), test.y.numpy(), len(train.classes)


def run(model_name: str, dataset: str, epochs: int, seed: int) -> tuple[float, float]:
    x_train, y_train, x_test, y_test, num_classes = load_ucr(dataset)
    torch.manual_seed(seed)
    model = cnnkit.Model(create(model_name, num_classes=num_classes))
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        learning_rate=1e-3,
        lr_schedule=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs),
        device="cpu",
    )
    batch_size = int(min(max(len(x_train) // 10, 1), 16))
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    return model.evaluate(x_test, y_test)["accuracy"], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--models", nargs="+", default=["fcn1d", "resnet1d"])
    parser.add_argument("--datasets", nargs="+", default=["GunPoint", "ECG200", "Coffee"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{args.threads} thread(s), {args.epochs} epochs"
    )
    print("| model | dataset | test accuracy (mean) | min - max | s per run |")
    print("|---|---|---|---|---|")
    for model_name in args.models:
        for dataset in args.datasets:
            results = [run(model_name, dataset, args.epochs, s) for s in args.seeds]
            accs = [a for a, _ in results]
            secs = sum(t for _, t in results) / len(results)
            print(
                f"| {model_name} | {dataset} | {np.mean(accs):.3f} | "
                f"{min(accs):.3f} - {max(accs):.3f} | {secs:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
