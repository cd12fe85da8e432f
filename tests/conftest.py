"""Test-wide settings: deterministic seeds, one torch thread per xdist worker."""

from __future__ import annotations

import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # two workers on two cores: do not oversubscribe
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
    # a test that asked for deterministic kernels must not change the next one
    torch.use_deterministic_algorithms(False)


def shuffled_digits(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits resized to ``size`` (cnnkit.data.digits), in a fixed shuffled order."""
    from cnnkit.data import digits

    ds = digits(size=size)
    perm = torch.randperm(len(ds.x), generator=torch.Generator().manual_seed(0))
    return ds.x[perm], ds.y[perm]
