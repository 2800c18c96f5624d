"""Positional encodings: modules applied to queries and keys inside a mixer."""

from mixarch.positional.base import NoPE, PositionalEncoding

__all__ = ["NoPE", "PositionalEncoding"]
