"""`mixarch generate` on a `mixarch build --out` directory: text, --json batches, --stop, tokenizer.json, and
user errors (exit 2, one line)."""

from __future__ import annotations

import json

import pytest
from helpers import run_cli

import mixarch
from mixarch.cli.main import main
from mixarch.generate import generate, load_tokenizer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    assert main(["build", "blueprints/tiny.yaml", "--set", "model.init_std=0.5", "--out",
                                  str(out), "--json"]) == 0
    return out


def expected_text(directory, prompt: str, n: int) -> str:
    tokenizer = load_tokenizer(directory)
    result = generate(mixarch.load(directory), [tokenizer.encode(prompt)], max_new_tokens=n,
                      stop={tokenizer.eos_id})[0]
    return tokenizer.decode(result.tokens)


def test_generate_streams_the_greedy_continuation(capsys, model_dir):
    rc, out, err = run_cli(capsys, "generate", str(model_dir), "--prompt", "Hello, world", "--max-tokens", "12")
    assert rc == 0, err
    assert out == expected_text(model_dir, "Hello, world", 12) + "\n"
    assert "time to first token" in err


def test_generate_json_batch_with_sampling_and_chunked_prefill(capsys, model_dir):
    argv = ["generate", str(model_dir), "--prompt", "a much longer first prompt", "--prompt", "b", "--json",
            "--max-tokens", "6", "--temperature", "0.8", "--top-k", "20", "--top-p", "0.9", "--seed", "3"]
    rc, out, err = run_cli(capsys, *argv)
    assert rc == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["prompt"] for r in rows] == ["a much longer first prompt", "b"]
    assert [r["prompt_tokens"] for r in rows] == [26, 1]
    assert all(r["completion_tokens"] <= 6 and r["finish_reason"] in ("stop", "length") for r in rows)
    rc, again, _ = run_cli(capsys, *argv, "--prefill-chunk", "4")
    assert rc == 0 and again == out


def test_generate_stop_string(capsys, model_dir):
    full = expected_text(model_dir, "Hello", 16)
    stop = full[5:7]
    rc, out, _ = run_cli(capsys, "generate", str(model_dir), "--prompt", "Hello", "--max-tokens", "16",
                         "--stop", stop, "--json")
    row = json.loads(out)
    assert rc == 0 and row["text"] == full[:full.index(stop)] and row["finish_reason"] == "stop"


def test_generate_uses_the_directory_tokenizer_json(capsys, model_dir, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"<eos>": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate("the cat sat on a mat".split())}}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.decoder = tokenizers.decoders.WordPiece()
    directory = tmp_path / "with_tokenizer"
    directory.mkdir()
    for name in ("resolved.yaml", "model.safetensors"):
        (directory / name).write_bytes((model_dir / name).read_bytes())
    tok.save(str(directory / "tokenizer.json"))
    rc, out, err = run_cli(capsys, "generate", str(directory), "--prompt", "the cat sat", "--json",
                           "--max-tokens", "5")
    assert rc == 0, err
    row = json.loads(out)
    assert row["prompt_tokens"] == 3
    ids = generate(mixarch.load(directory), [[2, 3, 4]], max_new_tokens=5, stop={0})[0].tokens
    assert row["text"] == tok.decode(ids, skip_special_tokens=False)


@pytest.mark.parametrize("args, message", [
    (["--max-tokens", "0"], "--max-tokens: expected a positive integer"),
    (["--max-tokens", "many"], "--max-tokens: expected a positive integer"),
    (["--temperature", "-1"], "--temperature: expected a number >= 0"),
    (["--top-p", "0"], "--top-p: expected a number in (0, 1]"),
    (["--top-p", "1.5"], "--top-p: expected a number in (0, 1]"),
    (["--top-k", "0"], "--top-k: expected a positive integer"),
    (["--prefill-chunk", "-3"], "--prefill-chunk: expected a positive integer"),
    (["--dtype", "int8"], "--dtype: invalid choice"),
    (["--device", "tpu"], "--device: not a device"),
])
def test_generate_rejects_bad_options(capsys, model_dir, args, message):
    rc, out, err = run_cli(capsys, "generate", str(model_dir), "--prompt", "x", *args)
    assert rc == 2 and message in err and "Traceback" not in err and out == ""


def test_generate_rejects_bad_inputs(capsys, model_dir, tmp_path):
    rc, _, err = run_cli(capsys, "generate", str(tmp_path / "missing"), "--prompt", "x")
    assert rc == 2 and "not a directory written by `mixarch build --out`" in err
    rc, _, err = run_cli(capsys, "generate", str(model_dir), "--prompt", "")
    assert rc == 2 and "--prompt: the prompt is empty" in err
    rc, _, err = run_cli(capsys, "generate", str(model_dir), "--prompt", "a\x00b")
    assert rc == 2 and "NUL" in err
    rc, _, err = run_cli(capsys, "generate", str(model_dir))
    assert rc == 2 and "--prompt" in err
    small = tmp_path / "small"
    assert main(["build", "blueprints/tiny.yaml", "--set", "model.vocab_size=100", "--out",
                                  str(small), "--json"]) == 0
    capsys.readouterr()
    rc, _, err = run_cli(capsys, "generate", str(small), "--prompt", "x")
    assert rc == 2 and "byte tokenizer has 256 ids but the model's vocab_size is 100" in err
