"""Helpers for the core tests: write blueprints to files and run the CLI in-process."""

from __future__ import annotations

from pathlib import Path

import yaml

from mixarch.cli.main import main


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False) if not isinstance(data, str) else data)
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run ``mixarch *argv`` in-process; returns (exit status, stdout, stderr). Never lets an exception out."""
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def tiny_blueprint(**model_overrides) -> dict:
    """A small valid two-role blueprint as a dict."""
    model = {"d_model": 32, "n_layers": 4, "vocab_size": 50, "dtype": "float32"}
    model.update(model_overrides)
    return {
        "name": "t",
        "model": model,
        "positional": {"type": "rope", "params": {"theta": 10000}},
        "ffn": {"type": "swiglu", "params": {"hidden_size": 64}},
        "roles": {
            "full": {"mixer": {"type": "attention", "params": {"n_heads": 4, "n_kv_heads": 2}}},
            "local": {"mixer": {"type": "attention", "params": {"n_heads": 4, "window": 8}},
                      "positional": {"type": "nope"}},
        },
        "layout": {"selector": "pattern", "params": {"pattern": "(LF)*2", "symbols": {"L": "local", "F": "full"}}},
    }
