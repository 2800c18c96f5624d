"""Built-in ``reference`` backends: the exact torch implementations, on any device (priority 0)."""

from __future__ import annotations

from mixarch.hookspecs import hookimpl


@hookimpl
def mixarch_register_kernels(register):
    from mixarch.ops.infllm_v2.attention import (
        composed_infllm_v2_decode,
        reference_infllm_v2_select,
        sparse_block_attention,
    )
    from mixarch.ops.lightning import reference_lightning_attention, reference_lightning_step

    register("lightning_attention", "reference", reference_lightning_attention,
             description="torch chunked form (recurrent for one token)")
    register("lightning_step", "reference", reference_lightning_step, description="torch decode step")
    register("infllm_v2_select", "reference", reference_infllm_v2_select,
             description="torch stage 1 + block max-pool + top-k")
    register("infllm_v2_sparse_attention", "reference", sparse_block_attention,
             description="torch masked attention over the selected blocks")
    register("infllm_v2_decode", "reference", composed_infllm_v2_decode,
             description="infllm_v2_select then infllm_v2_sparse_attention, each on its chosen backend")
