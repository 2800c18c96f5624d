"""Functional sequence-mixing ops, layout ``[B, T, H, D]``; each has an fp32 reference it is tested against."""

from mixarch.ops.softmax import attention_mask, naive_softmax_attention, softmax_attention

__all__ = ["attention_mask", "naive_softmax_attention", "softmax_attention"]
