"""The tokenizer of a model directory: its ``tokenizer.json`` (Hugging Face ``tokenizers``) when there is one,
else the byte-level tokenizer; both are :mod:`mixarch.data.tokenizers`' classes with decoding added."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mixarch.data.tokenizers import ByteTokenizer, HFTokenizer
from mixarch.errors import MixarchError

TOKENIZER_FILE = "tokenizer.json"


class ByteTextTokenizer(ByteTokenizer):
    """UTF-8 bytes; invalid byte sequences decode to U+FFFD."""

    name = "byte"

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


class HFTextTokenizer(HFTokenizer):
    """A ``tokenizer.json``; special tokens are kept when decoding."""

    name = TOKENIZER_FILE

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)


def load_tokenizer(directory: str | Path, vocab_size: int | None = None) -> ByteTextTokenizer | HFTextTokenizer:
    """The tokenizer of the model in ``directory``; with ``vocab_size`` (the model's), check that its ids fit."""
    path = Path(directory) / TOKENIZER_FILE
    tokenizer = HFTextTokenizer(path) if path.is_file() else ByteTextTokenizer()
    if vocab_size is not None and tokenizer.vocab_size > vocab_size:
        raise MixarchError(f"the {tokenizer.name} tokenizer has {tokenizer.vocab_size} ids but the model's "
                           f"vocab_size is {vocab_size}", source=str(directory))
    return tokenizer
