"""One side of the allocator A/B in ``bench/run.py``: hand-written fp32 training of a
model with or without the fast path's glibc allocator settings (``CNNKIT_FASTPATH``).

    CNNKIT_FASTPATH=0 python bench/alloc_probe.py cifar_cnn 8 1   # prints samples/s
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _suite as S  # noqa: E402

from cnnkit.train import fastpath  # noqa: E402


def main() -> None:
    name, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(threads)
    fastpath.configure(flush_denormal=False)  # a no-op under CNNKIT_FASTPATH=0
    w = S.WORKLOADS[name]
    x, y = w.data(steps * w.batch)
    epoch = S.hand_written_trainer(w, x, y, torch.device("cpu"), None, False)
    epoch()  # warm-up
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    n = epoch()
    elapsed = time.perf_counter() - t0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(f"{n / elapsed} {faults / steps}")


if __name__ == "__main__":
    main()
