"""Test-wide settings: deterministic seeds, one torch thread for every test.

Tolerances that hold on every machine: float64 comparisons with a reference use
``rtol=1e-10`` (with ``atol=1e-12`` for values near zero), because oneDNN and NumPy take
other kernels, and so other summation orders, on AVX-512/AMX CPUs than on AVX2 ones
(seen: 1.4e-11 relative on 3D average pooling). float32 comparisons use 1e-5..1e-4.
Tests that compare exact numbers compile with ``precision='fp32'``: ``'auto'`` is bf16 on
CPUs with native bf16 (``CNNKIT_ASSUME_NATIVE_BF16=1`` makes any CPU decide so) and AMP
on CUDA; tests/test_bf16.py covers those paths.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

# Property tests draw the same examples on every run, so a red CI is reproducible.
# CNNKIT_FUZZ_RANDOM=1 draws new ones (with CNNKIT_FUZZ_EXAMPLES for tests/test_fuzz.py).
settings.register_profile("cnnkit", derandomize=True, database=None)
settings.register_profile("cnnkit-random", derandomize=False)
settings.load_profile("cnnkit-random" if os.environ.get("CNNKIT_FUZZ_RANDOM") == "1" else "cnnkit")

# Two xdist workers on two cores: one intra-op thread each. Two threads that spin-wait for
# each other on a shared core make the small models here 10-30x slower.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
    # a test that asked for deterministic kernels (or more threads, e.g. the CLI's
    # --threads) must not change the next one
    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(1)


def shuffled_digits(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits resized to ``size`` (cnnkit.data.digits), in a fixed shuffled order."""
    from cnnkit.data import digits

    ds = digits(size=size)
    perm = torch.randperm(len(ds.x), generator=torch.Generator().manual_seed(0))
    return ds.x[perm], ds.y[perm]
