"""``TextDataModule``: local .txt / .jsonl / .parquet documents, tokenized and packed into fixed-length rows.

Each document is tokenized and followed by the tokenizer's end-of-document id; all documents of a split are
concatenated (in file order) and cut into rows of ``seq_len + 1`` tokens (the remainder is dropped):
``input_ids = row[:-1]``, ``labels = row[1:]``. A ``.txt`` file is one document; a ``.jsonl`` line and a
``.parquet`` row hold one in the column ``text_key``; a directory stands for its files of those kinds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from mixarch.data.loader import SegmentDataset, SplitLoaders, make_loader
from mixarch.data.segment import Segment
from mixarch.data.synthetic import model_vocab_size
from mixarch.data.tokenizers import make_tokenizer
from mixarch.errors import MixarchError

SUFFIXES = (".txt", ".jsonl", ".parquet")


def expand(paths: list[str], key: str) -> list[Path]:
    """Files named by ``paths`` (directories expand to their supported files, sorted)."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix in SUFFIXES and f.is_file())
            if not found:
                raise MixarchError(f"directory has no {', '.join(SUFFIXES)} files", source=str(p), key=key)
            files += found
        elif not p.exists():
            raise MixarchError("file not found", source=str(p), key=key)
        elif p.suffix not in SUFFIXES:
            raise MixarchError(f"unsupported file type; expected one of {', '.join(SUFFIXES)}", source=str(p),
                               key=key)
        else:
            files.append(p)
    return files


def read_documents(path: Path, text_key: str) -> Iterator[str]:
    """The documents of one file; malformed content raises a MixarchError naming the file (and line)."""
    if path.suffix == ".txt":
        yield path.read_text(encoding="utf-8", errors="replace")
    elif path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise MixarchError(f"line {n}: not valid JSON ({err.msg})", source=str(path)) from None
                if not isinstance(record, dict) or not isinstance(record.get(text_key), str):
                    raise MixarchError(f"line {n}: expected an object with a string {text_key!r}",
                                       source=str(path)) from None
                yield record[text_key]
    else:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise MixarchError("reading .parquet needs `pyarrow` (pip install 'mixarch[text]')",
                               source=str(path)) from None
        try:
            table = pq.read_table(path, columns=[text_key])
        except Exception as err:  # pyarrow raises several types for unreadable files and missing columns
            raise MixarchError(f"cannot read column {text_key!r}: {str(err).splitlines()[0]}",
                               source=str(path)) from None
        yield from (t for t in table.column(text_key).to_pylist() if t is not None)


def pack(docs: list[list[int]], eos_id: int, seq_len: int) -> Segment:
    """Documents (token lists) + EOS each, concatenated and cut into ``[N, seq_len + 1]`` rows; returns
    inputs ``[N, seq_len]`` and next-token labels ``[N, seq_len]``."""
    stream = torch.tensor([t for doc in docs for t in (*doc, eos_id)], dtype=torch.long)
    n = (stream.numel() - 1) // seq_len
    rows = stream[: n * seq_len + 1]
    inputs = rows[:-1].view(n, seq_len) if n else torch.zeros(0, seq_len, dtype=torch.long)
    labels = rows[1:].view(n, seq_len) if n else torch.zeros(0, seq_len, dtype=torch.long)
    return Segment(inputs, labels)


class TextDataModule(SplitLoaders, pl.LightningDataModule):
    """Packed language-modeling rows from local files; ``tokenizer`` is ``byte`` or a tokenizer.json path.
    Without ``val_files`` the last ``val_fraction`` of the training rows is held out for validation (with
    ``val_fraction: 0``, or a single row, validation runs on the training rows)."""

    def __init__(self, train_files: list[str], val_files: list[str] | None = None, tokenizer: str = "byte",
                 eos_token: str | None = None, seq_len: int = 256, text_key: str = "text",
                 val_fraction: float = 0.05, batch_size: int = 16, num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.train_files, self.val_files = train_files, val_files or []
        self.tokenizer_spec, self.eos_token, self.text_key = tokenizer, eos_token, text_key
        self.seq_len, self.val_fraction = seq_len, val_fraction
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.datasets: dict[str, SegmentDataset] = {}
        self.slice_keys: tuple[str, ...] = ()

    def tokenize(self, files: list[str], key: str, tokenizer) -> Segment:
        docs = []
        for path in expand(files, key):
            for doc in read_documents(path, self.text_key):
                try:
                    docs.append(tokenizer.encode(doc))
                except ValueError as err:
                    raise MixarchError(str(err), source=str(path)) from None
        segment = pack(docs, tokenizer.eos_id, self.seq_len)
        if len(segment) == 0:
            raise MixarchError(f"fewer than {self.seq_len + 1} tokens in {', '.join(files)}; lower data.seq_len",
                               key=key)
        return segment

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        tokenizer = make_tokenizer(self.tokenizer_spec, self.eos_token)
        vocab = model_vocab_size(self.trainer)
        if vocab is not None and tokenizer.vocab_size > vocab:
            raise MixarchError(f"the tokenizer has {tokenizer.vocab_size} ids but the model's vocab_size is "
                               f"{vocab}", key="data.tokenizer")
        train = self.tokenize(self.train_files, "data.train_files", tokenizer)
        if self.val_files:
            val = self.tokenize(self.val_files, "data.val_files", tokenizer)
        elif self.val_fraction > 0 and len(train) > 1:
            n_val = max(1, int(len(train) * self.val_fraction))
            train, val = (Segment(train.inputs[:-n_val], train.labels[:-n_val]),
                          Segment(train.inputs[-n_val:], train.labels[-n_val:]))
        else:
            val = train
        self.datasets = {"train": SegmentDataset(train), "val": SegmentDataset(val), "test": SegmentDataset(val)}

    def _loader(self, split: str, train: bool) -> DataLoader:
        return make_loader(self.datasets[split], self.trainer, self.batch_size, train=train, seed=self.seed,
                           num_workers=self.num_workers)
