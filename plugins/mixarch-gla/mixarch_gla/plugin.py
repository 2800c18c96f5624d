"""mixarch entry point (group ``mixarch``, name ``gla``): registers the ``gla`` mixer."""

from __future__ import annotations

from mixarch.hookspecs import hookimpl
from mixarch.registry import CacheSpec, Dims

from .mixer import GLAParams, make_gla


def state_bytes(params: GLAParams, dims: Dims) -> int:
    """The recurrent state ``[H, Dk, Dv]`` of one sequence: fp32 for fp32/bf16/fp16 models, fp64 for fp64."""
    hk, hv = params.head_dims(dims.d_model)
    return params.n_heads * hk * hv * max(4, dims.dtype_bytes)


def attention_kv_bytes(params: GLAParams, dims: Dims) -> int:
    """This layer as softmax attention with its own heads: per token, K of ``head_k_dim`` and V of
    ``head_v_dim`` per head (``2 * n_heads * head_dim`` with ``head_dim`` their mean)."""
    hk, hv = params.head_dims(dims.d_model)
    return params.n_heads * (hk + hv) * dims.dtype_bytes


GLA_CACHE = CacheSpec(holds=("state",), fixed_bytes=state_bytes)


@hookimpl
def mixarch_register_mixers(register):
    register("gla", make_gla, GLAParams, family="linear", cache=GLA_CACHE,
             attention_kv_bytes_per_token=attention_kv_bytes,
             description="Gated Linear Attention (Yang et al. 2023): data-dependent per-channel forget gate, "
                         "chunked prefill, O(1) decode state")
