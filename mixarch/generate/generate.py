"""Generation over the per-layer decode cache, for any blueprint.

Prompts of different lengths are left-padded into one batch whose pad counts go to ``model.new_cache(pad)``
(every mixer ignores padding and starts its positions after it). The prompt runs through the cache in chunks
of ``prefill_chunk`` tokens, which bounds activation memory for long prompts: softmax and sparse layers keep
K/V, Lightning and other linear layers a fixed-size state. Then one token per row per step is decoded with
``logits_to_keep=1``; rows finish independently (a stop token or their ``max_new_tokens``) and the batch stops
when every row has.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

import torch

from mixarch.generate.graphs import DecodeStep
from mixarch.generate.sampling import SamplingParams, next_tokens
from mixarch.model.cache import ModelCache
from mixarch.model.hybrid import HybridLM


@dataclass(frozen=True)
class Step:
    """One decode step of a batch. Row ``b``: ``tokens[b]`` is its new token (None when the row finished
    earlier, or finishes now on a stop token, which is not emitted); ``finish_reasons[b]`` is ``"stop"`` or
    ``"length"`` at the step where the row finishes, else None."""

    tokens: list[int | None]
    finish_reasons: list[str | None]


@dataclass(frozen=True)
class GenerationResult:
    """The continuation of one prompt: generated ``tokens`` (without the stop token), why it ended
    (``"stop"`` or ``"length"``) and the prompt's length."""

    tokens: list[int]
    finish_reason: str
    prompt_tokens: int


def left_pad(prompts: Sequence[Sequence[int]], *, pad_id: int = 0, device: torch.device | str = "cpu"
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Prompts as one left-padded batch: ids ``[B, T]`` (int64) and pad counts ``[B]`` (None if none)."""
    longest = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), longest), pad_id, dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, longest - len(p):] = torch.as_tensor(p, dtype=torch.long)
    counts = [longest - len(p) for p in prompts]
    pad = torch.tensor(counts, dtype=torch.long, device=device) if any(counts) else None
    return ids.to(device), pad


def prefill(model: HybridLM, input_ids: torch.Tensor, *, pad: torch.Tensor | None = None,
            chunk: int | None = None) -> tuple[torch.Tensor, ModelCache]:
    """Run ``input_ids`` ``[B, T]`` (left-padded by ``pad`` ``[B]``) through a new cache in chunks of ``chunk``
    tokens (None: all at once). Returns the logits of the last position ``[B, V]`` and the cache."""
    cache = model.new_cache(pad)
    t = input_ids.shape[1]
    step = chunk or t
    for start in range(0, t, step):
        logits = model(input_ids[:, start:start + step], cache=cache, logits_to_keep=1)
    return logits[:, -1], cache


def _row_params(n: int, params: Sequence[SamplingParams] | None, **shared) -> list[SamplingParams]:
    if params is None:
        shared["stop"] = frozenset(shared["stop"] or ())
        return [SamplingParams(**shared)] * n
    if len(params) != n:
        raise ValueError(f"got {len(params)} SamplingParams for {n} prompts")
    return list(params)


def _check_prompts(prompts: Sequence[Sequence[int]], vocab_size: int) -> None:
    if not prompts:
        raise ValueError("no prompts")
    for b, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {b} is empty (the model needs at least one token)")
        if min(p) < 0 or max(p) >= vocab_size:
            raise ValueError(f"prompt {b} has token ids outside the vocabulary [0, {vocab_size})")


def _generators(params: Sequence[SamplingParams], device: torch.device) -> list[torch.Generator | None]:
    out = []
    for sp in params:
        if sp.greedy:
            out.append(None)
            continue
        seed = sp.seed if sp.seed is not None else int(torch.randint(2**62, ()).item())
        out.append(torch.Generator(device=device).manual_seed(seed))
    return out


def stream(model: HybridLM, prompts: Sequence[Sequence[int]], *, max_new_tokens: int = 16,
           temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
           stop: Collection[int] = (), prefill_chunk: int | None = None,
           params: Sequence[SamplingParams] | None = None, cuda_graphs: bool = True) -> Iterator[Step]:
    """Generate continuations of token-id ``prompts`` as one batch: an iterator of :class:`Step`, one per decode
    step (arguments are checked before it is returned).

    The keyword sampling arguments apply to every prompt (see :class:`SamplingParams`); ``params`` gives one
    :class:`SamplingParams` per prompt instead. ``prefill_chunk``: prompt tokens per forward (None: all).
    ``cuda_graphs``: on a CUDA model, replay the decode step's fixed-shape parts as CUDA graphs from the second
    step on (:mod:`mixarch.generate.graphs`) when some row may decode ``MIN_GRAPH_STEPS`` (8) tokens or more;
    False decodes eagerly. CPU models always decode eagerly. The model runs in eval mode (its mode is restored afterwards) under
    ``torch.inference_mode``.
    """
    _check_prompts(prompts, model.resolved.model.vocab_size)
    if prefill_chunk is not None and prefill_chunk < 1:
        raise ValueError(f"prefill_chunk must be >= 1, got {prefill_chunk}")
    params = _row_params(len(prompts), params, max_new_tokens=max_new_tokens, temperature=temperature,
                         top_k=top_k, top_p=top_p, seed=seed, stop=stop)
    return _steps(model, prompts, params, prefill_chunk, cuda_graphs)


MIN_GRAPH_STEPS = 8  # fewer decode steps do not repay a capture (a device sync and a warm-up per run)


def _decoder(model: HybridLM, cache: ModelCache, ids: torch.Tensor, params: Sequence[SamplingParams],
             cuda_graphs: bool):
    """``tokens [B, 1] -> logits [B, V]`` of one decode step: a :class:`DecodeStep` replaying CUDA graphs, or the
    model's own forward (CPU, ``cuda_graphs=False``, or too few steps to repay the capture)."""
    if cuda_graphs and ids.is_cuda and max(p.max_new_tokens for p in params) >= MIN_GRAPH_STEPS:
        return DecodeStep(model, cache, graphs=True)
    return lambda tokens: model(tokens, cache=cache, logits_to_keep=1)[:, -1]


@torch.inference_mode()
def _steps(model: HybridLM, prompts: Sequence[Sequence[int]], params: Sequence[SamplingParams],
           prefill_chunk: int | None, cuda_graphs: bool) -> Iterator[Step]:
    device = model.embed.weight.device
    generators = _generators(params, device)
    was_training = model.training
    model.eval()
    try:
        ids, pad = left_pad(prompts, device=device)
        logits, cache = prefill(model, ids, pad=pad, chunk=prefill_chunk)
        decode = _decoder(model, cache, ids, params, cuda_graphs)
        produced = [0] * len(prompts)
        finished = [False] * len(prompts)
        while True:
            new = next_tokens(logits, params, generators)
            tokens, reasons = [], []
            for b, token in enumerate(new.tolist()):
                reason = None
                if finished[b] or token in params[b].stop:
                    token, reason = None, None if finished[b] else "stop"
                else:
                    produced[b] += 1
                    if produced[b] >= params[b].max_new_tokens:
                        reason = "length"
                finished[b] = finished[b] or reason is not None
                tokens.append(token)
                reasons.append(reason)
            yield Step(tokens, reasons)
            if all(finished):
                return
            logits = decode(new.unsqueeze(1))
    finally:
        model.train(was_training)


def generate(model: HybridLM, prompts: Sequence[Sequence[int]], *, max_new_tokens: int = 16,
             temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
             seed: int | None = None, stop: Collection[int] = (), prefill_chunk: int | None = None,
             params: Sequence[SamplingParams] | None = None, cuda_graphs: bool = True) -> list[GenerationResult]:
    """Generate continuations of token-id ``prompts`` (one batch); arguments as in :func:`stream`."""
    steps = stream(model, prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                   top_p=top_p, seed=seed, stop=stop, prefill_chunk=prefill_chunk, params=params,
                   cuda_graphs=cuda_graphs)
    tokens: list[list[int]] = [[] for _ in prompts]
    reasons: list[str] = [""] * len(prompts)
    for step in steps:
        for b, (token, reason) in enumerate(zip(step.tokens, step.finish_reasons)):
            if token is not None:
                tokens[b].append(token)
            if reason is not None:
                reasons[b] = reason
    return [GenerationResult(t, r, len(p)) for t, r, p in zip(tokens, reasons, prompts)]
