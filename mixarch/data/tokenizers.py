"""Tokenizers for the text DataModule: built-in byte-level, or a Hugging Face ``tokenizer.json`` file."""

from __future__ import annotations

from pathlib import Path

from mixarch.errors import MixarchError


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255; the NUL byte (id 0), which text does not contain, ends each document."""

    vocab_size = 256
    eos_id = 0

    def encode(self, text: str) -> list[int]:
        data = text.encode("utf-8")
        if b"\x00" in data:
            raise ValueError("contains a NUL character, which the byte tokenizer reserves as end of document")
        return list(data)


class HFTokenizer:
    """A ``tokenizers`` ``tokenizer.json`` from a local path; ``eos_token`` names the end-of-document token
    (default: the first of ``</s>``, ``<|endoftext|>``, ``<eos>``, ``<|end_of_text|>`` in the vocabulary)."""

    EOS_CANDIDATES = ("</s>", "<|endoftext|>", "<eos>", "<|end_of_text|>")

    def __init__(self, path: str | Path, eos_token: str | None = None):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise MixarchError("a tokenizer.json needs the `tokenizers` package (pip install 'mixarch[text]')",
                               key="data.tokenizer") from None
        path = Path(path)
        if not path.is_file():
            raise MixarchError("tokenizer file not found", source=str(path), key="data.tokenizer")
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises a bare Exception on malformed files
            raise MixarchError(f"not a valid tokenizer.json: {str(err).splitlines()[0]}", source=str(path),
                               key="data.tokenizer") from None
        names = (eos_token,) if eos_token else self.EOS_CANDIDATES
        ids = [self.tokenizer.token_to_id(n) for n in names]
        found = [i for i in ids if i is not None]
        if not found:
            raise MixarchError(f"no end-of-document token among {', '.join(names)}; set data.eos_token",
                               source=str(path), key="data.eos_token")
        self.eos_id = found[0]
        self.vocab_size = self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids


def make_tokenizer(spec: str, eos_token: str | None = None) -> ByteTokenizer | HFTokenizer:
    """``"byte"`` or the path of a ``tokenizer.json``."""
    return ByteTokenizer() if spec == "byte" else HFTokenizer(spec, eos_token)
