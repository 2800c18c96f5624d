"""pytest plugin (entry point ``pytest11``): fixtures and hypothesis profiles for mixarch and its plugins.

Fixtures are opt-in so that installing mixarch changes nothing in other projects' test runs.
"""

from __future__ import annotations

import os

import pytest


def _register_profiles() -> None:
    """Hypothesis profiles ``mixarch-ci`` (derandomized, few examples), ``mixarch-dev`` and ``mixarch-gpu``;
    ``MIXARCH_HYPOTHESIS_PROFILE`` loads one. Registered at import so that conftest files can load them."""
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:  # hypothesis is a test extra
        return
    common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.register_profile("mixarch-ci", max_examples=12, derandomize=True, print_blob=True, **common)
    settings.register_profile("mixarch-dev", max_examples=30, **common)
    settings.register_profile("mixarch-gpu", max_examples=200, **common)
    profile = os.environ.get("MIXARCH_HYPOTHESIS_PROFILE")
    if profile:
        settings.load_profile(profile)


_register_profiles()


@pytest.fixture
def poison_empty():
    """NaN-fill every float buffer from ``torch.empty``/``empty_like``/``new_empty`` during the test."""
    from mixarch.testing.poison import nan_poison

    with nan_poison():
        yield
