"""Where generation time goes: each block's mixer and FFN timed during one prefill and a few decode steps, summed
by kind (``mixer <type>``, ``ffn``) with the rest (embedding, norms, head, sampling, Python between modules).

On CUDA the parts are timed with events recorded from forward hooks (no extra syncs, so a launch-bound decode step
shows where its wall time goes); on CPU with the wall clock. Used by ``bench/e2e.py --breakdown``.
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch

from mixarch.generate import stream


class LayerTimer:
    """Forward hooks on every block's mixer and FFN; :meth:`take` returns milliseconds per kind since the last
    call and forgets them."""

    def __init__(self, model, device: torch.device):
        self.cuda = device.type == "cuda"
        self.spans: list[tuple[str, object, object]] = []
        self.open: list[tuple[str, object]] = []
        self.handles = []
        for layer, block in zip(model.resolved.layers, model.blocks):
            for label, module in ((f"mixer {layer.mixer.type}", block.mixer), ("ffn", block.ffn)):
                if module is not None:
                    self.handles.append(module.register_forward_pre_hook(lambda *_, label=label: self._start(label)))
                    self.handles.append(module.register_forward_hook(lambda *_: self._stop()))

    def _mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def _start(self, label: str) -> None:
        self.open.append((label, self._mark()))

    def _stop(self) -> None:
        label, start = self.open.pop()
        self.spans.append((label, start, self._mark()))

    def take(self) -> dict[str, float]:
        if self.cuda:
            torch.cuda.synchronize()
        out: dict[str, float] = defaultdict(float)
        for label, start, end in self.spans:
            out[label] += start.elapsed_time(end) if self.cuda else (end - start) * 1e3
        self.spans.clear()
        return dict(out)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def breakdown(model, context: int, chunk: int | None, steps: int, device: torch.device) -> list[tuple[str, float, float]]:
    """(part, prefill ms, decode ms per step) for one greedy generation from a random prompt of ``context`` tokens;
    the last part, ``rest``, is the wall time not inside a mixer or FFN."""
    prompt = torch.randint(model.resolved.model.vocab_size, (context,)).tolist()
    timer = LayerTimer(model, device)
    it = stream(model, [prompt], max_new_tokens=steps + 1, prefill_chunk=chunk, cuda_graphs=False)  # hooks: eager
    try:
        start = time.perf_counter()
        next(it)
        prefill_wall = (time.perf_counter() - start) * 1e3
        prefill = timer.take()
        start = time.perf_counter()
        for _ in range(steps):
            next(it)
        decode_wall = (time.perf_counter() - start) * 1e3 / steps
        decode = {k: v / steps for k, v in timer.take().items()}
    finally:
        it.close()
        timer.remove()
    parts = sorted(set(prefill) | set(decode))
    rows = [(p, prefill.get(p, 0.0), decode.get(p, 0.0)) for p in parts]
    rows.append(("rest", prefill_wall - sum(prefill.values()), decode_wall - sum(decode.values())))
    return rows


def breakdown_table(name: str, context_label: str, rows: list[tuple[str, float, float]]) -> list[str]:
    """Markdown rows: part, prefill ms and share, decode ms per step and share."""
    total_p, total_d = sum(r[1] for r in rows), sum(r[2] for r in rows)
    return [f"| {name} | {context_label} | {part} | {p:,.1f} | {p / total_p:.0%} | {d:.2f} | {d / total_d:.0%} |"
            for part, p, d in rows]
