"""Test-wide settings: deterministic seeds, one torch thread for every test."""

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
