"""HALO's measurement step: score every layer with only that layer converted to its linear replacement.

:func:`layer_swap_scores` swaps one layer's mixer at a time for a replacement (e.g. the stage-1 trained Lightning
student, or :func:`attention_to_lightning`'s weight-transfer init), calls user-given evaluation functions and
restores the layer. Feed the resulting ``retrieval`` / ``commonsense`` lists to the ``halo`` layout selector.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from mixarch.mixers.lightning import LightningAttention, LightningParams
from mixarch.model.context import LayerContext
from mixarch.model.hybrid import Block, HybridLM


def layer_swap_scores(model: HybridLM, replacement: Callable[[int, Block], nn.Module],
                      evaluations: Mapping[str, Callable[[HybridLM], float]],
                      layers: Sequence[int] | None = None) -> dict[str, list[float]]:
    """``{name: [score with only layer l replaced, for each layer l]}``.

    ``replacement(l, block)`` returns the module that stands in for ``block.mixer`` (same forward contract);
    each ``evaluations[name](model)`` returns a float. The model is restored after every layer, also on error.
    Layers not in ``layers`` (default: all) get ``nan``.
    """
    n = len(model.blocks)
    layers = range(n) if layers is None else layers
    scores = {name: [float("nan")] * n for name in evaluations}
    for index in layers:
        block = model.blocks[index]
        original = block.mixer
        block.mixer = replacement(index, block)
        try:
            for name, evaluate in evaluations.items():
                scores[name][index] = float(evaluate(model))
        finally:
            block.mixer = original
    return scores


@torch.no_grad()
def attention_to_lightning(attention: nn.Module, ctx: LayerContext, positional: nn.Module,
                           params: LightningParams | None = None, init_std: float = 0.02) -> LightningAttention:
    """HALO stage-1 initialization: a Lightning layer that reuses a softmax layer's weights.

    Copies W_q, W_o and the q/k norms, and W_k, W_v with each KV head repeated for the query heads of its group
    (un-shared KV, ``expand_kv_proj``). The output norm starts at one and the output gate at N(0, init_std).
    ``attention`` is any layer with ``q_proj``/``k_proj``/``v_proj``/``o_proj`` and head counts (``attention``,
    ``sliding_window``, ``infllm_v2``). ``positional`` is the student's positional module (RoPE under HyPE).
    """
    h, hkv, hd = attention.n_heads, attention.n_kv_heads, attention.head_dim
    params = params or LightningParams(n_heads=h, n_kv_heads=h, head_dim=hd, qk_norm=attention.q_norm is not None,
                                       bias=attention.q_proj.bias is not None)
    if (params.n_heads, params.head_dim) != (h, hd):
        raise ValueError(f"params: the student needs the teacher's {h} heads of {hd}")
    like = attention.q_proj.weight
    with torch.device(like.device):
        student = LightningAttention(params, ctx, positional).to(like.dtype)

    def expand(w: torch.Tensor) -> torch.Tensor:  # [hkv * hd, ...] -> [n_kv_heads * hd, ...]
        return w.unflatten(0, (hkv, hd)).repeat_interleave(params.n_kv_heads // hkv, dim=0).flatten(0, 1)

    if params.n_kv_heads % hkv:
        raise ValueError(f"params.n_kv_heads ({params.n_kv_heads}) must be a multiple of the teacher's {hkv}")
    student.q_proj.load_state_dict(attention.q_proj.state_dict())
    student.o_proj.load_state_dict(attention.o_proj.state_dict())
    for name in ("k_proj", "v_proj"):
        src, dst = getattr(attention, name), getattr(student, name)
        dst.weight.copy_(expand(src.weight))
        if src.bias is not None:
            dst.bias.copy_(expand(src.bias))
    if student.q_norm is not None and attention.q_norm is not None:
        student.q_norm.load_state_dict(attention.q_norm.state_dict())
        student.k_norm.load_state_dict(attention.k_norm.state_dict())
    if student.o_norm is not None:
        student.o_norm.reset_parameters()
    if student.z_proj is not None:
        student.z_proj.weight.normal_(0.0, init_std)
    return student
