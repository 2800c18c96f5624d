"""Decode steps with their fixed-shape parts replayed as CUDA graphs.

At batch 1 a decode step is bound by host work: every layer issues dozens of small kernels from Python. Most of a
step has the same shapes every time (the embedding of one token, FFNs, the LM head, and mixers whose cache is a
fixed-size state, such as Lightning attention); only softmax and sparse attention read a cache that grows. A
:class:`DecodeStep` cuts the step into *units* (embedding, each block's mixer sublayer, each block's FFN sublayer,
the head), joins consecutive fixed-shape units into *runs*, and replays each run as one CUDA graph; the other
units run eagerly between them.

A mixer opts in with the class attribute ``static_decode = True``: its one-token forward reads the positions, its
input and fixed-shape cache tensors (``cache.state``, ``cache.extras``) and replaces those tensors with new ones
of the same shape, with no host synchronization and no Python state but ``positions``. During capture the
replaced tensors are copied back into the original ones inside the graph, so the cache keeps pointing at fixed
buffers that each replay updates in place.

The first step runs eagerly (it compiles kernels and allocates lazily created handles); the second captures the
runs (after one warm-up of each run on the capture stream, on scratch copies of its cache tensors) and replays
them; later steps only replay. ``graphs=False`` runs the same units eagerly, which tests the decomposition on
machines without CUDA.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from mixarch.model.cache import ModelCache
from mixarch.model.hybrid import HybridLM


@dataclass(frozen=True)
class Unit:
    """One part of a decode step: ``kind`` is embed, mixer, ffn or head; ``layer`` the block index (or -1)."""

    kind: str
    layer: int = -1


def static_decode(model: HybridLM, unit: Unit) -> bool:
    """Whether ``unit`` has the same shapes at every decode step (and may be replayed from a CUDA graph): mixers
    that set ``static_decode = True``; FFNs unless they set ``static_decode = False`` (e.g. data-dependent
    routing); the embedding and the head."""
    if unit.kind == "mixer":
        return bool(getattr(model.blocks[unit.layer].mixer, "static_decode", False))
    if unit.kind == "ffn":
        return bool(getattr(model.blocks[unit.layer].ffn, "static_decode", True))
    return True


def plan(model: HybridLM) -> list[tuple[bool, list[Unit]]]:
    """The step's units in order (no FFN unit for blocks without an FFN), grouped into maximal runs:
    ``(static, units)``."""
    units = [Unit("embed")]
    for i, block in enumerate(model.blocks):
        units.append(Unit("mixer", i))
        if block.ffn is not None:
            units.append(Unit("ffn", i))
    units.append(Unit("head"))
    runs: list[tuple[bool, list[Unit]]] = []
    for unit in units:
        static = static_decode(model, unit)
        if runs and runs[-1][0] == static:
            runs[-1][1].append(unit)
        else:
            runs.append((static, [unit]))
    return runs


def run_units(model: HybridLM, units: list[Unit], x: torch.Tensor, positions: torch.Tensor,
              cache: ModelCache) -> torch.Tensor:
    """Apply ``units`` in order: token ids ``[B, 1]`` in when the first is ``embed``, else hidden ``[B, 1, D]``;
    logits ``[B, V]`` out when the last is ``head``, else hidden."""
    for unit in units:
        if unit.kind == "embed":
            x = model.embed_tokens(x)
        elif unit.kind == "mixer":
            x = model.blocks[unit.layer].mixer_sublayer(x, positions=positions, cache=cache[unit.layer])
        elif unit.kind == "ffn":
            x = model.blocks[unit.layer].ffn_sublayer(x)
        else:
            x = model.logits(x)[:, -1]
    return x


def _cache_tensors(cache: ModelCache, units: list[Unit]) -> dict[tuple[int, str], torch.Tensor | None]:
    """The replaceable cache tensors of the mixer units: ``(layer, "state" or "extras.<name>") -> tensor``."""
    out: dict[tuple[int, str], torch.Tensor | None] = {}
    for unit in units:
        if unit.kind == "mixer":
            layer = cache[unit.layer]
            out[unit.layer, "state"] = layer.state
            out.update({(unit.layer, f"extras.{name}"): t for name, t in layer.extras.items()})
    return out


def _set(cache: ModelCache, key: tuple[int, str], value: torch.Tensor | None) -> None:
    layer, slot = cache[key[0]], key[1]
    if slot == "state":
        layer.state = value
    else:
        layer.extras[slot.removeprefix("extras.")] = value


def _get(cache: ModelCache, key: tuple[int, str]) -> torch.Tensor | None:
    layer, slot = cache[key[0]], key[1]
    return layer.state if slot == "state" else layer.extras.get(slot.removeprefix("extras."))


class _GraphedRun:
    """One run of fixed-shape units captured as a CUDA graph, with static input, position and output buffers and
    the run's cache tensors (updated in place by each replay)."""

    def __init__(self, model: HybridLM, units: list[Unit], x: torch.Tensor, positions: torch.Tensor,
                 cache: ModelCache, stream: torch.cuda.Stream):
        self.x, self.positions = x.clone(), positions.clone()
        self.buffers = _cache_tensors(cache, units)
        missing = [key for key, t in self.buffers.items() if t is None]
        if missing:
            raise RuntimeError(f"cannot capture decode units {units}: no cache tensor {missing} after prefill")
        device = x.device
        try:
            torch.cuda.current_stream(device).synchronize()  # capture starts from a quiet device
            with torch.cuda.device(device), torch.cuda.stream(stream):
                # warm-up on the capture stream (lazy handles, workspaces), on scratch copies of the cache tensors
                for key, t in self.buffers.items():
                    _set(cache, key, t.clone())
                run_units(model, units, self.x, self.positions, cache)
                self._restore(cache)
                stream.synchronize()
                self.graph = torch.cuda.CUDAGraph()
                # thread_local: a server's other threads may use the GPU while this one captures
                with torch.cuda.graph(self.graph, stream=stream, capture_error_mode="thread_local"):
                    self.out = run_units(model, units, self.x, self.positions, cache)
                    for key, before in self.buffers.items():
                        after = _get(cache, key)
                        if after is not before:
                            if after is None or after.shape != before.shape or after.dtype != before.dtype:
                                raise RuntimeError(f"decode unit of layer {key[0]} changed the shape of its cache "
                                                   f"tensor {key[1]}: it cannot be marked static_decode")
                            before.copy_(after)
        finally:  # capture computes nothing: the original tensors still hold the cache, whatever happened
            self._restore(cache)

    def _restore(self, cache: ModelCache) -> None:
        for key, before in self.buffers.items():
            _set(cache, key, before)

    def __call__(self, x: torch.Tensor, positions: torch.Tensor, cache: ModelCache) -> torch.Tensor:
        for key, before in self.buffers.items():  # the cache was changed from outside (an eager forward)
            current = _get(cache, key)
            if current is not before:
                before.copy_(current)
                _set(cache, key, before)
        self.x.copy_(x)
        self.positions.copy_(positions)
        self.graph.replay()
        return self.out


class DecodeStep:
    """``step(tokens [B, 1]) -> logits [B, V]``: one decode step of ``model`` over ``cache`` (which it advances),
    equal to ``model(tokens, cache=cache, logits_to_keep=1)[:, -1]``, its fixed-shape runs replayed as CUDA graphs
    from the second call on (``graphs=True``, CUDA only) or run eagerly (``graphs=False``).

    The logits are a new tensor each call. A run whose capture fails (an operation that cannot be captured in a
    unit marked static) runs eagerly from then on, with a warning naming it and the error. The units call the
    model's modules directly: a ``torch.compile``-wrapped model decodes uncompiled here.
    """

    def __init__(self, model: HybridLM, cache: ModelCache, *, graphs: bool = True):
        self.model, self.cache, self.graphs = model, cache, graphs
        self.runs = plan(model)
        self.calls = 0
        self.captured: list[_GraphedRun | None] = [None] * len(self.runs)
        self.eager_only: set[int] = set()
        self.stream: torch.cuda.Stream | None = None

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        b = tokens.shape[0]
        positions = self.model.positions(b, 1, self.cache, None, tokens.device)
        capture = self.graphs and tokens.is_cuda and self.calls >= 1
        if capture and self.stream is None:
            self.stream = torch.cuda.Stream(device=tokens.device)
        x, graphed = tokens, False
        for index, (static, units) in enumerate(self.runs):
            graphed = static and capture and index not in self.eager_only
            if graphed and self.captured[index] is None:
                try:
                    self.captured[index] = _GraphedRun(self.model, units, x, positions, self.cache, self.stream)
                except Exception as err:  # noqa: BLE001 - reported, and the run stays correct eagerly
                    warnings.warn(f"decode units {[(u.kind, u.layer) for u in units]} could not be captured as a "
                                  f"CUDA graph and run eagerly: {type(err).__name__}: {err}", RuntimeWarning,
                                  stacklevel=2)
                    self.eager_only.add(index)
                    graphed = False
            if graphed:
                x = self.captured[index](x, positions, self.cache)
            else:
                x = run_units(self.model, units, x, positions, self.cache)
        self.cache.advance(1)
        self.calls += 1
        return x.clone() if graphed else x  # a replayed head writes the same buffer at every step
