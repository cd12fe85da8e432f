"""Data loading speed: in-memory load times, and whether loaders keep a training step fed.

    python bench/data_loading.py [--quick] [--device cpu|cuda] [--workers 0 2 4]

1. MNIST from the real IDX files in ../shared/data (or $CNNKIT_DATA): seconds to read
   train + test into memory (``mnist(...)`` + ``.tensors()``), median of rounds.
2. CIFAR-10 in its real on-disk format (five 10,000-image pickled batches + test batch;
   the content is random since CIFAR-10 cannot be fetched here), written once to a
   temporary folder: seconds for ``cifar10(...)`` + ``.tensors()`` from the extracted
   batches and from the ``.tar.gz``.
3. The decks' ``cifar_cnn`` trained on that CIFAR-format dataset through a ``DataLoader``
   (shuffle, batch 128, per-item ``ArrayDataset.__getitem__``) with 0..k worker
   processes, and by in-memory slicing: per step, the time spent waiting for the batch
   (data) vs the forward/backward/Adam step (compute). Issue 4's target: data time under
   5% of step time with worker processes.
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from cnnkit.data import cifar10, mnist
from cnnkit.models import create

REPO = Path(__file__).resolve().parents[1]


def shared_mnist() -> Path | None:
    for base in (os.environ.get("CNNKIT_DATA"), REPO.parent / "shared" / "data"):
        if base and (Path(base) / "mnist" / "train-images-idx3-ubyte.gz").is_file():
            return Path(base) / "mnist"
    return None


def timed(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def write_cifar10(folder: Path, per_batch: int = 10_000, seed: int = 0) -> Path:
    """CIFAR-10's python layout with random pixels, plus the matching tarball."""
    rng = np.random.default_rng(seed)
    out = folder / "extracted" / "cifar-10-batches-py"
    out.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"batch_label": name.encode(),
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, per_batch).tolist(),
            b"filenames": [f"{i}.png".encode() for i in range(per_batch)],
        }
        (out / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [f"c{i}".encode() for i in range(10)]}
    (out / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    (folder / "tarball").mkdir()
    with tarfile.open(
        folder / "tarball" / "cifar-10-python.tar.gz", "w:gz", compresslevel=1
    ) as tar:
        tar.add(out, "cifar-10-batches-py")
    return folder


def make_model(device):
    model = create("cifar_cnn")
    model[-1].emit_logits = True  # plain logits for cross-entropy
    model.to(device).train()
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def step(model, opt, xb, yb):
    loss = F.cross_entropy(model(xb), yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def feed_ratio(batches, model, opt, device, steps: int, warmup: int = 3):
    """Mean data-wait and compute seconds per step over ``steps`` steps."""
    data_t, step_t = [], []
    it = iter(batches)
    for i in range(steps + warmup):
        t0 = time.perf_counter()
        xb, yb = next(it)
        xb = xb.to(device, non_blocking=True)
        yb = yb.to(device, non_blocking=True)
        sync(device)
        t1 = time.perf_counter()
        step(model, opt, xb, yb)
        sync(device)
        t2 = time.perf_counter()
        if i >= warmup:
            data_t.append(t1 - t0)
            step_t.append(t2 - t1)
    return statistics.mean(data_t), statistics.mean(step_t)


def in_memory_batches(x, y, batch_size):
    while True:
        order = torch.randperm(len(x))
        for s in range(0, len(x) - batch_size + 1, batch_size):
            idx = order[s : s + batch_size]
            yield x[idx], y[idx]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--workers", nargs="+", type=int, default=[0, 2])
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    device = torch.device(args.device)
    rounds = 2 if args.quick else 3
    steps = 10 if args.quick else 40
    print(
        f"# data loading  torch {torch.__version__}  {platform.processor() or platform.machine()}"
        f"  cpus {os.cpu_count()}  threads {torch.get_num_threads()}  device {device}"
        + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else "")
    )

    folder = shared_mnist()
    if folder is None:
        print("MNIST: skipped (no ../shared/data/mnist or $CNNKIT_DATA/mnist)")
    else:
        secs = timed(
            lambda: (mnist(folder, "train").tensors(), mnist(folder, "test").tensors()), rounds
        )
        print(f"MNIST train+test into memory (60,000 + 10,000 images, md5-checked): {secs:.2f} s")

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        root = write_cifar10(Path(tmp))
        print(f"(wrote CIFAR-10-format files: {time.perf_counter() - t0:.1f} s)")
        secs = timed(
            lambda: (cifar10(root / "extracted", "train", verify=False).tensors(),
                     cifar10(root / "extracted", "test", verify=False).tensors()),
            rounds,
        )  # fmt: skip
        print(f"CIFAR-10 train+test into memory from extracted batches: {secs:.2f} s")
        secs = timed(lambda: cifar10(root / "tarball", "train", verify=False).tensors(), rounds)
        print(f"CIFAR-10 train into memory straight from the .tar.gz: {secs:.2f} s")

        train = cifar10(root / "extracted", "train", verify=False)
        model, opt = make_model(device)
        print(f"\ncifar_cnn, batch {args.batch_size}, {steps} steps after warm-up, mean per step:")
        print("| loader | data ms | step ms | data / step |")
        print("| --- | ---: | ---: | ---: |")
        x, y = train.tensors()
        d, s = feed_ratio(in_memory_batches(x, y, args.batch_size), model, opt, device, steps)
        print(f"| in-memory slicing | {d * 1e3:.2f} | {s * 1e3:.1f} | {d / s:.1%} |", flush=True)
        for workers in args.workers:
            loader = DataLoader(
                train,
                batch_size=args.batch_size,
                shuffle=True,
                num_workers=workers,
                persistent_workers=workers > 0,
                pin_memory=device.type == "cuda",
                drop_last=True,
            )
            d, s = feed_ratio(loader, model, opt, device, steps)
            print(f"| DataLoader, {workers} workers | {d * 1e3:.2f} | {s * 1e3:.1f} | {d / s:.1%} |",
                  flush=True)  # fmt: skip
            del loader


if __name__ == "__main__":
    main()
