"""InfLLM-V2 Triton kernels (backend ``triton`` of ``infllm_v2_select`` and ``infllm_v2_sparse_attention``).

- :mod:`.select`: stage 1 (compressed-key scores with the exact or C2 normalizer, summed over the KV group's
  heads), block max-pool, init/local forcing and top-k.
- :mod:`.sparse`: stage 2, block-sparse attention forward (decode: slot-split + merge) and backward.
- :mod:`.plugin`: the registration (priority 10 over the torch reference) and what the kernels support.

Nothing is imported here, so that loading the plugin on a machine without Triton stays cheap and harmless.
"""
