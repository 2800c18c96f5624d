"""Conformance checks for mixer plugins (built-in or third-party).

Typical use in a plugin's tests::

    from mixarch.testing.mixers import check_mixer

    def test_my_mixer():
        check_mixer("my_mixer", {"n_heads": 3})

``check_mixer`` builds the mixer inside a tiny model context and checks: parameters initialize
deterministically from the meta device (no NaN left after ``reset_parameters``), outputs are finite and
shaped right, token-by-token decode and chunked prefill + decode equal the full forward (fp64), the cache
holds exactly the bytes the plugin's metadata claims, and packed sequences (``cu_seqlens``) equal separate
runs when the mixer supports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mixarch.blueprint.resolve import dims_of
from mixarch.blueprint.schema import Component, LayerEntry, ModelSection, ResolvedBlueprint
from mixarch.model.cache import LayerCache
from mixarch.model.hybrid import HybridLM
from mixarch.plugins import get_host
from mixarch.registry import Dims
from mixarch.testing.compare import LAYER_REL_RMSE_TOL, assert_close, assert_close_rel
from mixarch.testing.strategies import seeded_randn


def tiny_resolved(layers: Sequence[tuple[str, dict[str, Any]]], *, d_model: int = 32, vocab_size: int = 61,
                  positional: tuple[str, dict] = ("rope", {}), ffn: tuple[str, dict] = ("swiglu", {"hidden_size": 48}),
                  name: str = "conformance", mup: dict | None = None, tie_embeddings: bool = True
                  ) -> ResolvedBlueprint:
    """A resolved blueprint with one layer per ``(mixer_type, mixer_params)``, validated by the plugins."""
    from mixarch.blueprint.resolve import revalidate

    host = get_host()
    model = ModelSection(d_model=d_model, n_layers=len(layers), vocab_size=vocab_size, mup=mup,
                         tie_embeddings=tie_embeddings)
    dims = dims_of(model)
    entries = []
    for i, (mixer_type, params) in enumerate(layers):
        spec = host.mixers.get(mixer_type)
        full = spec.params_model.model_validate(params, context={"dims": dims, "role": f"r{i}", "family": spec.family})
        entries.append(LayerEntry(index=i, role=f"r{i}", family=spec.family,
                                  mixer=Component(type=mixer_type, params=full.model_dump(mode="json")),
                                  positional=Component(type=positional[0], params=positional[1]),
                                  ffn=Component(type=ffn[0], params=ffn[1])))
    return revalidate(ResolvedBlueprint(name=name, model=model, layers=entries))


def build_mixer(mixer_type: str, params: dict[str, Any], *, d_model: int = 32, positional: tuple[str, dict] =
                ("rope", {}), dtype: torch.dtype = torch.float64, seed: int = 0, index: int = 0,
                n_layers: int = 1) -> tuple[nn.Module, Any, Dims]:
    """Build one initialized mixer module (via a one-layer model), returning (module, params model, dims)."""
    resolved = tiny_resolved([(mixer_type, params)] * n_layers, d_model=d_model, positional=positional)
    with torch.device("meta"):
        model = HybridLM(resolved)
    _poison_and_materialize(model, seed)
    mixer = model.blocks[index].mixer.to(dtype)
    spec = get_host().mixers.get(mixer_type)
    dims = Dims(d_model, n_layers, resolved.model.vocab_size, torch.finfo(dtype).bits // 8)
    pmodel = spec.params_model.model_validate(resolved.layers[index].mixer.params,
                                              context={"dims": dims, "role": resolved.layers[index].role,
                                                       "family": spec.family})
    return mixer, pmodel, dims


def _poison_and_materialize(model: HybridLM, seed: int) -> None:
    model.allocate("cpu")
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                t.fill_(float("nan"))
    model.init_weights(seed)
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise AssertionError(f"{name} is not initialized by init_weights/reset_parameters (still NaN)")


def run_chunks(mixer: nn.Module, x: torch.Tensor, chunks: Sequence[int], pad: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, LayerCache]:
    """Feed ``x`` [B, T, D] through ``mixer`` in chunks of the given lengths with one :class:`LayerCache`
    (``pad`` [B]: left-padding tokens per row)."""
    cache = LayerCache(pad)
    outs, start = [], 0
    b = x.shape[0]
    for n in chunks:
        positions = torch.arange(start, start + n).unsqueeze(0).expand(b, n)
        if pad is not None:
            positions = (positions - pad.unsqueeze(1)).clamp_min(0)
        outs.append(mixer(x[:, start:start + n], positions=positions, cache=cache))
        cache.seen_tokens += n
        start += n
    return torch.cat(outs, dim=1), cache


def full_forward(mixer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    b, t, _ = x.shape
    return mixer(x, positions=torch.arange(t).unsqueeze(0).expand(b, t))


def check_mixer(mixer_type: str, params: dict[str, Any], *, d_model: int = 32, seq_lens: Sequence[int] = (1, 15, 40),
                chunk: int = 7, seed: int = 0, positional: tuple[str, dict] = ("rope", {}),
                check_varlen: bool = True, check_padding: bool = True, rtol: float = 1e-9,
                atol: float = 1e-10) -> None:
    """Run every conformance check on one mixer configuration (fp64, so comparisons are tight)."""
    mixer, pmodel, dims = build_mixer(mixer_type, params, d_model=d_model, positional=positional, seed=seed)
    spec = get_host().mixers.get(mixer_type)
    for t in seq_lens:
        x = seeded_randn((2, t, d_model), seed + t, dtype=torch.float64)
        y = full_forward(mixer, x)
        assert y.shape == x.shape, f"{mixer_type}: output shape {tuple(y.shape)} != input {tuple(x.shape)}"
        assert torch.isfinite(y).all(), f"{mixer_type}: non-finite output at T={t}"
        y_step, cache = run_chunks(mixer, x, [1] * t)
        assert_close(f"{mixer_type} token-by-token decode (T={t})", y, y_step, rtol=rtol, atol=atol)
        chunks = [chunk] * (t // chunk) + ([t % chunk] if t % chunk else [])
        y_chunk, _ = run_chunks(mixer, x, chunks)
        assert_close(f"{mixer_type} chunked prefill (T={t}, chunk {chunk})", y, y_chunk, rtol=rtol, atol=atol)
        want = spec.cache.total(pmodel, dims, t) * x.shape[0]
        assert cache.nbytes() == want, (f"{mixer_type}: cache holds {cache.nbytes()} bytes after {t} tokens "
                                        f"(batch 2) but the plugin's metadata says {want}")
    if check_padding:
        check_padded_batch(mixer, mixer_type, d_model, seed, rtol=rtol, atol=atol)
    if check_varlen:
        lengths = [5, 1, 9]
        xs = [seeded_randn((1, n, d_model), seed + 100 + n, dtype=torch.float64) for n in lengths]
        ref = torch.cat([full_forward(mixer, x) for x in xs], dim=1)
        packed = torch.cat(xs, dim=1)
        cu = torch.tensor([0, 5, 6, 15], dtype=torch.int32)
        positions = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)
        out = mixer(packed, positions=positions, cu_seqlens=cu)
        assert_close(f"{mixer_type} packed (cu_seqlens) vs separate sequences", ref, out, rtol=rtol, atol=atol)


def check_padded_batch(mixer: nn.Module, mixer_type: str, d_model: int, seed: int, *, rtol: float = 1e-9,
                       atol: float = 1e-10) -> None:
    """A left-padded batch of sequences of different lengths (prefill in chunks, then decode) gives each row
    what the row alone gives, on its real tokens (padding tokens hold random values)."""
    lengths = [23, 9, 1]
    total = max(lengths) + 2  # every row has some padding... except none: row 0 gets 2
    pad = torch.tensor([total - n for n in lengths])
    rows = [seeded_randn((1, n, d_model), seed + 200 + n, dtype=torch.float64) for n in lengths]
    junk = seeded_randn((len(lengths), total, d_model), seed + 300, dtype=torch.float64)
    x = torch.stack([torch.cat([junk[i, : total - n], r[0]]) for i, (n, r) in enumerate(zip(lengths, rows))])
    out, _ = run_chunks(mixer, x, [6, 7, 1, 1, total - 15], pad)
    for i, (n, r) in enumerate(zip(lengths, rows)):
        alone, _ = run_chunks(mixer, r, [n])
        assert_close(f"{mixer_type}: padded row {i} (length {n}) vs alone", alone[0], out[i, total - n:],
                     rtol=rtol, atol=atol)


def check_model_decode(resolved: ResolvedBlueprint, *, seq_len: int = 24, prefill: int = 9, seed: int = 0,
                       rtol: float = 1e-9, atol: float = 1e-9) -> None:
    """Whole model in fp64: token-by-token decode and chunked prefill + decode equal the full forward (logits)."""
    with torch.device("meta"):
        model = HybridLM(resolved)
    _poison_and_materialize(model, seed)
    model = model.double()
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, resolved.model.vocab_size, (2, seq_len), generator=gen)
    full = model(ids)
    cache = model.new_cache()
    steps = torch.cat([model(ids[:, i:i + 1], cache=cache) for i in range(seq_len)], dim=1)
    assert_close(f"{resolved.name}: token-by-token decode vs full forward", full, steps, rtol=rtol, atol=atol)
    cache = model.new_cache()
    pre = model(ids[:, :prefill], cache=cache)
    rest = [model(ids[:, i:i + 1], cache=cache) for i in range(prefill, seq_len)]
    assert_close(f"{resolved.name}: prefill {prefill} + decode vs full forward", full,
                 torch.cat([pre, *rest], dim=1), rtol=rtol, atol=atol)


def check_mixer_precision(mixer_type: str, params: dict[str, Any], *, d_model: int = 32, seq_len: int = 65,
                          seed: int = 0, positional: tuple[str, dict] = ("rope", {})) -> None:
    """fp32 and bf16 copies of a mixer against fp64 runs of the same (rounded) weights: fp32 elementwise,
    bf16 by relative RMSE (:data:`LAYER_REL_RMSE_TOL`)."""
    import copy

    mixer, _, _ = build_mixer(mixer_type, params, d_model=d_model, positional=positional, seed=seed)
    x = seeded_randn((2, seq_len, d_model), seed + 1, dtype=torch.float64)
    for dtype in (torch.float32, torch.bfloat16):
        low = copy.deepcopy(mixer).to(dtype)
        ref = full_forward(copy.deepcopy(low).double(), x.to(dtype).double())
        out = full_forward(low, x.to(dtype))
        if dtype == torch.float32:
            assert_close(f"{mixer_type} fp32 vs fp64", ref, out)
        else:
            assert_close_rel(f"{mixer_type} bf16 vs fp64", ref, out.double(),
                             LAYER_REL_RMSE_TOL[dtype])
