"""Text generation with the hybrid decode cache: sampling, batched ``generate``/``stream``, tokenizers and
incremental detokenization (used by ``mixarch generate`` and ``mixarch serve``)."""

from mixarch.generate.generate import GenerationResult, Step, generate, left_pad, prefill, stream
from mixarch.generate.sampling import SamplingParams
from mixarch.generate.text import TextDelta, TextStream, stream_text
from mixarch.generate.tokenizer import load_tokenizer

__all__ = ["GenerationResult", "SamplingParams", "Step", "TextDelta", "TextStream", "generate", "left_pad",
           "load_tokenizer", "prefill", "stream", "stream_text"]
