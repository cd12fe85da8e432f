"""Model.fit against a hand-written PyTorch loop: same model, data, batch, optimizer, precision.

    python bench/fit_overhead.py [--quick] [--models mnist_cnn cifar_cnn] [--precisions fp32 bf16]

Both run in this process, alternating, one epoch each per round over the same in-memory
tensors; the figure is samples/s (median over rounds) and the ratio fit / hand-written.
The target (issue 3) is a ratio >= 0.97.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

import cnnkit
from cnnkit.models import create

SHAPES = {"mnist_cnn": (1, 28, 28), "cifar_cnn": (3, 32, 32), "cifar_fcn": (3, 32, 32)}


def hand_written_epoch(module, x, y, batch_size, optimizer, precision):
    """The loop a PyTorch user writes: shuffle, slice, forward, cross-entropy, step."""
    module.train()
    order = torch.randperm(len(x))
    for start in range(0, len(x), batch_size):
        idx = order[start : start + batch_size]
        xb, yb = x[idx], y[idx]
        with precision.autocast():
            logits = module(xb)
        loss = F.cross_entropy(logits.float(), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return loss.item()


def without_softmax(name):
    """The registry model with its final softmax switched off: a plain logits model."""
    model = create(name)
    model[-1].emit_logits = True
    return model


def bench(name, precision_name, n, batch_size, rounds):
    shape = SHAPES[name]
    torch.manual_seed(0)
    x = torch.randn(n, *shape)
    y = torch.randint(0, 10, (n,))

    raw = without_softmax(name)
    raw_opt = torch.optim.Adam(raw.parameters(), lr=1e-3, foreach=True)
    precision = cnnkit.train.resolve_precision(precision_name, torch.device("cpu"))

    model = cnnkit.Model(create(name))
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        device="cpu",
        precision=precision_name,
    )
    # warm-up both
    hand_written_epoch(
        raw, x[: batch_size * 4], y[: batch_size * 4], batch_size, raw_opt, precision
    )
    model.fit(x[: batch_size * 4], y[: batch_size * 4], batch_size=batch_size, epochs=1, verbose=0)

    hand, fit = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        hand_written_epoch(raw, x, y, batch_size, raw_opt, precision)
        hand.append(n / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
        fit.append(n / (time.perf_counter() - t0))
    h, f = statistics.median(hand), statistics.median(fit)
    return h, f


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--models", nargs="+", default=["mnist_cnn", "cifar_cnn"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    n = 1024 if args.quick else 4096
    rounds = 3 if args.quick else 5
    print(
        f"# fit overhead  torch {torch.__version__}  {platform.processor() or platform.machine()}  "
        f"threads {torch.get_num_threads()}  native bf16: {cnnkit.train.cpu_has_native_bf16()}"
    )
    print(f"# {n} samples per epoch, batch {args.batch_size}, median of {rounds} rounds")
    print("| model | precision | hand-written samples/s | Model.fit samples/s | fit / hand |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name in args.models:
        for prec in args.precisions:
            h, f = bench(name, prec, n, args.batch_size, rounds)
            print(f"| {name} | {prec} | {h:,.0f} | {f:,.0f} | {f / h:.3f} |", flush=True)


if __name__ == "__main__":
    main()
