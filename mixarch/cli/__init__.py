"""The ``mixarch`` command line."""
