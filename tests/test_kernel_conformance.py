"""Every registered kernel backend against its op's reference (the recipes live in mixarch.testing.conformance)."""

from mixarch.testing.conformance.test_backends import (  # noqa: F401 - collected here
    test_backend_matches_reference,
    test_every_registered_op_has_a_conformance_recipe,
)
