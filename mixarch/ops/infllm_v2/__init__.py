"""InfLLM-V2 sparse attention (MiniCPM4 / MiniCPM-SALA sparse layers): exact torch reference.

- :func:`infllm_v2_attention`: the public op (dense below ``dense_len`` keys, else stage 1 + stage 2).
- :mod:`~mixarch.ops.infllm_v2.compress`: mean-pooled compressed keys and the incremental decode cache.
- :mod:`~mixarch.ops.infllm_v2.select`: stage-1 scores, block max-pool, init/local forcing, top-k
  (its module doc states the exact selection semantics and how they relate to the released code and paper).
"""

from mixarch.ops.infllm_v2.attention import (
    forced_blocks,
    infllm_v2_attention,
    selected_token_mask,
    sparse_block_attention,
    with_forced_blocks,
)
from mixarch.ops.infllm_v2.compress import (
    C2_FACTOR,
    CompressedKeyCache,
    compress_keys,
    num_compressed,
    update_compressed,
)
from mixarch.ops.infllm_v2.select import block_scores, select_blocks, stage1_scores

__all__ = [
    "C2_FACTOR",
    "CompressedKeyCache",
    "block_scores",
    "compress_keys",
    "forced_blocks",
    "infllm_v2_attention",
    "num_compressed",
    "select_blocks",
    "selected_token_mask",
    "sparse_block_attention",
    "stage1_scores",
    "update_compressed",
    "with_forced_blocks",
]
