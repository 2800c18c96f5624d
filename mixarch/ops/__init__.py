"""Functional sequence-mixing ops, layout ``[B, T, H, D]``; each has an fp32 reference it is tested against."""

from mixarch.ops.infllm_v2 import infllm_v2_attention
from mixarch.ops.lightning import alibi_slopes, lightning_attention
from mixarch.ops.sliding_window import naive_sliding_window_attention, sliding_window_attention
from mixarch.ops.softmax import attention_mask, naive_softmax_attention, softmax_attention

__all__ = ["alibi_slopes", "attention_mask", "lightning_attention", "naive_softmax_attention", "softmax_attention"]
__all__ += [
    "infllm_v2_attention",
    "naive_sliding_window_attention",
    "sliding_window_attention",
]
