"""Test setup of mixarch-gla: mixarch's hypothesis profile and NaN poisoning from its pytest plugin."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

# profiles registered by mixarch's pytest11 plugin (mixarch.testing.pytest_plugin)
settings.load_profile(os.environ.get("MIXARCH_HYPOTHESIS_PROFILE", "mixarch-ci"))
# tiny tensors: one thread per test process is faster than several competing for the cores
torch.set_num_threads(int(os.environ.get("MIXARCH_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _poison(poison_empty):
    """Every test runs with NaN-filled torch.empty / empty_like / new_empty (mixarch's ``poison_empty``)."""
    yield
