"""Memory stays flat: 50 short epochs of the decks' MNIST CNN on CPU; resident memory
(RSS) growth after the first epoch must stay under 50 MB.

    python bench/memory_flat.py [--epochs 50] [--samples 512] [--threads 1]

Uses sklearn's digits resized to 28x28 (no download). Prints RSS after every 10th epoch
and the growth from the end of epoch 1 to the end of the last epoch.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

import torch


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit-mb", type=float, default=50.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import cnnkit
    from cnnkit.callbacks import Callback
    from cnnkit.data import digits
    from cnnkit.models import create

    ds = digits(size=28)
    x, y = ds.x[: args.samples], ds.y[: args.samples]
    torch.manual_seed(0)
    model = cnnkit.Model(create("mnist_cnn"))
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        device="cpu",
        precision="fp32",
    )
    readings: list[float] = []

    class Rss(Callback):
        def on_epoch_end(self, epoch, logs=None):
            gc.collect()
            readings.append(rss_mb())
            if (epoch + 1) % 10 == 0 or epoch == 0:
                print(f"epoch {epoch + 1:3d}: RSS {readings[-1]:.1f} MB, loss {logs['loss']:.4f}")

    start = time.perf_counter()
    model.fit(
        x, y, batch_size=64, epochs=args.epochs, validation_split=0.2, verbose=0,
        callbacks=[Rss()],
    )  # fmt: skip
    growth = readings[-1] - readings[0]
    peak = max(readings) - readings[0]
    print(
        f"memory_flat: {args.epochs} epochs of mnist_cnn on {len(x)} samples in "
        f"{time.perf_counter() - start:.1f} s; RSS after epoch 1 {readings[0]:.1f} MB, after "
        f"epoch {args.epochs} {readings[-1]:.1f} MB: growth {growth:+.1f} MB (peak "
        f"{peak:+.1f} MB; limit {args.limit_mb:.0f} MB)"
    )
    return 0 if growth < args.limit_mb else 1


if __name__ == "__main__":
    sys.exit(main())
