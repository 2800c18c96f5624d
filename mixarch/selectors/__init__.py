"""Layout selectors: decide the role of every layer."""

from mixarch.selectors.base import Selection

__all__ = ["Selection"]
