"""Built-in ``sliding_window``: causal softmax attention over the ``window`` most recent keys.

The same layer as ``attention`` with the window required; its cache keeps only the last ``window`` keys and
values, so its memory is constant in the sequence length.
"""

from __future__ import annotations

from pydantic import Field, PositiveInt

from mixarch.hookspecs import hookimpl
from mixarch.mixers.attention import AttentionParams, SoftmaxAttention, kv_bytes_per_token, windowed_kv_bytes
from mixarch.registry import CacheSpec


class SlidingWindowParams(AttentionParams):
    window: PositiveInt = Field(description="keys visible per query, its own included")



@hookimpl
def mixarch_register_mixers(register):
    register("sliding_window", SoftmaxAttention, SlidingWindowParams, family="softmax",
             cache=CacheSpec(holds=("key", "value"), bytes_per_token=kv_bytes_per_token, bytes_at=windowed_kv_bytes),
             attention_kv_bytes_per_token=kv_bytes_per_token,
             description="sliding-window causal softmax attention (GQA); constant-size KV cache")
