"""Shared test setup: the derandomized hypothesis profile for CI, and NaN poisoning for every test."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():  # CPU CI runs the Triton kernels in the interpreter (read when kernels are defined)
    os.environ.setdefault("TRITON_INTERPRET", "1")

from hypothesis import settings  # noqa: E402

import mixarch.testing.pytest_plugin  # noqa: E402,F401  (registers the hypothesis profiles without its entry point)
from mixarch.testing.poison import nan_poison  # noqa: E402

settings.load_profile(os.environ.get("MIXARCH_HYPOTHESIS_PROFILE", "mixarch-ci"))
# tiny tensors: one thread per pytest-xdist worker avoids oversubscribing the cores (10x slower otherwise)
torch.set_num_threads(int(os.environ.get("MIXARCH_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _poison_fresh_buffers():
    """Freshly allocated float buffers are NaN in every test, so reads of unwritten memory fail loudly."""
    with nan_poison():
        yield
