"""Text data: reading local files, packing documents with EOS, tokenizers, and clear errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch  # noqa: F401 - imported before capsys, so Lightning's log handler keeps the real stderr
import pytest
import yaml
from helpers import run_cli

from mixarch.data.text import TextDataModule, pack, read_documents
from mixarch.data.tokenizers import ByteTokenizer, make_tokenizer
from mixarch.errors import MixarchError

TINY = Path(__file__).resolve().parents[1] / "blueprints" / "tiny.yaml"


def test_pack_separates_documents_with_eos():
    seg = pack([[1, 2, 3], [4, 5], [6, 7, 8, 9]], eos_id=0, seq_len=4)
    # stream 1 2 3 0 4 5 0 6 7 8 9 0 -> rows of 5 overlapping by one token: [1 2 3 0 4], [4 5 0 6 7]
    assert seg.inputs.tolist() == [[1, 2, 3, 0], [4, 5, 0, 6]]
    assert seg.labels.tolist() == [[2, 3, 0, 4], [5, 0, 6, 7]]
    assert pack([[1]], 0, 4).inputs.shape == (0, 4)


def test_byte_tokenizer_roundtrip_and_nul():
    tok = ByteTokenizer()
    assert tok.encode("hé") == list("hé".encode()) and tok.vocab_size == 256 and tok.eos_id == 0
    with pytest.raises(ValueError, match="NUL"):
        tok.encode("a\x00b")


def test_reads_txt_jsonl_and_directories(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("first document")
    (tmp_path / "d" / "b.jsonl").write_text(json.dumps({"text": "second"}) + "\n\n" + json.dumps({"text": "third"}))
    dm = TextDataModule([str(tmp_path / "d")], seq_len=8, val_fraction=0.0)
    dm.setup("fit")
    seg = dm.datasets["train"].segment
    # 28 tokens (3 documents + EOS each) -> 3 rows of 8 inputs; the remainder is dropped
    assert bytes(seg.inputs.flatten().tolist()).decode() == "first document\x00second\x00th"
    assert bytes(seg.labels[-1].tolist()).decode() == "cond\x00thi"


def test_jsonl_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": broken}\n')
    with pytest.raises(MixarchError, match="line 2: not valid JSON") as err:
        list(read_documents(bad, "text"))
    assert err.value.source == str(bad)
    bad.write_text('{"body": "x"}\n')
    with pytest.raises(MixarchError, match="line 1: expected an object with a string 'text'"):
        list(read_documents(bad, "text"))


def test_hf_tokenizer_json(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    model = tokenizers.models.WordLevel({"<unk>": 0, "</s>": 1, "hello": 2, "world": 3}, unk_token="<unk>")
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    hf = make_tokenizer(str(tmp_path / "tokenizer.json"))
    assert hf.encode("hello world hello") == [2, 3, 2] and hf.eos_id == 1 and hf.vocab_size == 4
    with pytest.raises(MixarchError, match="no end-of-document token among <eos>"):
        make_tokenizer(str(tmp_path / "tokenizer.json"), eos_token="<eos>")
    (tmp_path / "broken.json").write_text("{}")
    with pytest.raises(MixarchError, match="not a valid tokenizer.json"):
        make_tokenizer(str(tmp_path / "broken.json"))


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["one", "two"]}), tmp_path / "d.parquet")
    assert list(read_documents(tmp_path / "d.parquet", "text")) == ["one", "two"]
    with pytest.raises(MixarchError, match="cannot read column 'body'"):
        list(read_documents(tmp_path / "d.parquet", "body"))


def fit_text(capsys, tmp_path, files, **params):
    data = {"base": str(TINY), "name": "text", "model": {"n_layers": 2}, "layout": {"params": {"pattern": "LA"}},
            "train": {"data": {"type": "text", "params": {"train_files": files, "seq_len": 32, **params}},
                      "trainer": {"max_steps": 2, "limit_val_batches": 0, "logger": False,
                                  "enable_checkpointing": False, "enable_progress_bar": False}}}
    path = tmp_path / "text.yaml"
    path.write_text(yaml.safe_dump(data))
    return run_cli(capsys, "fit", "-c", str(path), f"--trainer.default_root_dir={tmp_path}")


def test_bad_text_inputs_exit_2(capsys, tmp_path):
    rc, _, err = fit_text(capsys, tmp_path, [str(tmp_path / "missing.txt")])
    assert rc == 2 and f"{tmp_path / 'missing.txt'}: data.train_files: file not found" in err
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\nnot json\n')
    rc, _, err = fit_text(capsys, tmp_path, [str(tmp_path / "bad.jsonl")])
    assert rc == 2 and f"{tmp_path / 'bad.jsonl'}: line 2: not valid JSON" in err
    (tmp_path / "notes.csv").write_text("a,b")
    rc, _, err = fit_text(capsys, tmp_path, [str(tmp_path / "notes.csv")])
    assert rc == 2 and "unsupported file type" in err
    rc, _, err = fit_text(capsys, tmp_path, ["x.txt"], tokenizer=str(tmp_path / "nope.json"))
    assert rc == 2 and "data.tokenizer" in err
