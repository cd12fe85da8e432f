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
