"""Test helpers for mixarch and its plugins.

- :mod:`mixarch.testing.compare`: relative-RMSE and elementwise comparisons.
- :mod:`mixarch.testing.poison`: NaN-poisoned ``torch.empty`` so reads of unwritten memory show up.
- :mod:`mixarch.testing.strategies`: hypothesis strategies (odd shapes, seeds) and seeded tensors.
- :mod:`mixarch.testing.mixers`: the conformance checks every mixer plugin can run.
"""

from mixarch.testing.compare import assert_close, assert_close_rel, rel_rmse
from mixarch.testing.poison import nan_poison

__all__ = ["assert_close", "assert_close_rel", "rel_rmse", "nan_poison"]
