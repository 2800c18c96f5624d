"""The inference side of ``mixarch serve``: a LitServe ``LitAPI`` that generates each batch of requests.

A batch holds requests with any prompt lengths and parameters; each row samples with its own seeded generator
and finishes on its own (end-of-text, stop string or ``max_tokens``), so every request gets exactly what it
would get alone (greedy rows bit for bit up to floating-point ties between batch shapes).
"""

from __future__ import annotations

from dataclasses import asdict

import litserve as ls
from litserve.loops.streaming_loops import BatchedStreamingLoop

from mixarch.serve.spec import CompletionSpec


class CompletionAPI(ls.LitAPI):
    """Loads the model directory in ``setup``; ``predict`` streams one list of text deltas (dicts, None for
    finished rows) per decode step of a batch."""

    def __init__(self, directory: str, *, dtype: str | None = None, prefill_chunk: int | None = None,
                 max_batch_size: int = 8, batch_timeout: float = 0.01, max_tokens_limit: int = 1024):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout,
                         spec=CompletionSpec(str(directory), max_tokens_limit=max_tokens_limit),
                         loop=BatchedStreamingLoop())  # batched even at max_batch_size 1: predict gets lists
        self.directory, self.dtype, self.prefill_chunk = str(directory), dtype, prefill_chunk

    def setup(self, device):
        import torch

        import mixarch
        from mixarch.generate import load_tokenizer

        dtype = getattr(torch, self.dtype) if self.dtype else None
        self.model = mixarch.load(self.directory, device=device, dtype=dtype).eval()
        self.tokenizer = load_tokenizer(self.directory, self.model.resolved.model.vocab_size)

    def decode_request(self, request, **kwargs):
        return request  # validated and tokenized by the spec

    def batch(self, inputs):
        return list(inputs)

    def predict(self, jobs, **kwargs):
        from mixarch.generate import stream_text

        steps = stream_text(self.model, self.tokenizer, [j["ids"] for j in jobs], [j["params"] for j in jobs],
                            [j["stop"] for j in jobs], prefill_chunk=self.prefill_chunk)
        for deltas in steps:
            yield [asdict(d) if d is not None else None for d in deltas]

    def encode_response(self, outputs, **kwargs):
        yield from outputs
