"""mixarch-gla: a Gated Linear Attention mixer plugin for mixarch (registers the mixer ``gla``)."""

from .ops import chunk_gla, naive_recurrent_gla

__all__ = ["chunk_gla", "naive_recurrent_gla"]
__version__ = "0.1.0"
