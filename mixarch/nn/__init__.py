"""Small building blocks shared by mixers and the model: norms and rotary embeddings."""

from mixarch.nn.norm import RMSNorm
from mixarch.nn.rotary import apply_rotary

__all__ = ["RMSNorm", "apply_rotary"]
