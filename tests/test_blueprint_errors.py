"""Every kind of bad blueprint input ends with exit status 2 and a message naming the file and key."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import run_cli, tiny_blueprint, write_yaml


def build_error(capsys, path, *extra) -> str:
    rc, out, err = run_cli(capsys, "build", str(path), *extra)
    assert rc == 2, f"expected exit 2, got {rc}; stderr: {err}"
    assert "Traceback" not in err and err.startswith("mixarch: error: ")
    first = err.splitlines()[0]
    assert first.count(": error: ") == 1 and len(set(first.split(": "))) == len(first.split(": ")), \
        f"location repeated: {first}"
    return err


def mutate(bp: dict, dotted: str, value) -> dict:
    node = bp
    *parents, last = dotted.split(".")
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return bp


DELETE = object()

CASES = [
    # (dotted key, new value, key path expected in the message, words expected in the message)
    ("model.d_modle", 32, "model.d_modle", ["unknown key", "expected one of: d_model"]),
    ("roles.full.mixer.params.n_haeds", 4, "roles.full.mixer.params.n_haeds", ["unknown key", "n_heads"]),
    ("extra_section", {"a": 1}, "extra_section", ["unknown key"]),
    ("roles.full.mixer.type", "atention", "roles.full.mixer.type", ["unknown mixer 'atention'",
                                                                      "available: attention"]),
    ("positional.type", "ropee", "positional.type", ["unknown positional 'ropee'", "available: rope"]),
    ("layout.selector", "patern", "layout.selector", ["unknown selector 'patern'", "available: pattern"]),
    ("roles.full.mixer.params.n_heads", -4, "roles.full.mixer.params.n_heads", ["greater than 0", "-4"]),
    ("model.d_model", "wide", "model.d_model", ["integer", "'wide'"]),
    ("roles.full.mixer.params.n_kv_heads", 3, "roles.full.mixer.params", ["multiple of n_kv_heads"]),
    ("model.n_layers", 5, "layout.params.pattern", ["expands to 4 layers but model.n_layers is 5"]),
    ("model.d_model", DELETE, "model.d_model", ["required key is missing"]),
    ("name", DELETE, "name", ["required key is missing"]),
    ("layout", DELETE, "layout", ["required with more than one role"]),
    ("layout.params.symbols.F", "fulll", "layout", ["'fulll'", "not defined under roles"]),
]


@pytest.mark.parametrize("dotted, value, key, words", CASES, ids=[c[0] + ("-del" if c[1] is DELETE else "")
                                                                   for c in CASES])
def test_bad_blueprint(capsys, tmp_path, dotted, value, key, words):
    path = write_yaml(tmp_path / "bad.yaml", mutate(tiny_blueprint(), dotted, value))
    err = build_error(capsys, path)
    assert str(path) in err and key in err, err
    for word in words:
        assert word in err, err


def test_indices_conflicts_and_range(capsys, tmp_path):
    bp = tiny_blueprint()
    bp["layout"] = {"selector": "indices", "params": {"roles": {"full": [0, 2], "local": [2]}, "default": "local"}}
    err = build_error(capsys, write_yaml(tmp_path / "b.yaml", bp))
    assert "layout.params.roles.local" in err and "layer 2 is already assigned to role 'full'" in err
    bp["layout"]["params"]["roles"] = {"full": [0, 9]}
    err = build_error(capsys, write_yaml(tmp_path / "b.yaml", bp))
    assert "layout.params.roles.full" in err and "layer index 9 is out of range for 4 layers" in err


def test_yaml_syntax_error_names_line(capsys, tmp_path):
    path = write_yaml(tmp_path / "broken.yaml", "name: x\nmodel: {d_model: 32,\n  n_layers: [\n")
    err = build_error(capsys, path)
    assert f"{path}:" in err and "YAML syntax error" in err


def test_duplicate_yaml_key(capsys, tmp_path):
    err = build_error(capsys, write_yaml(tmp_path / "dup.yaml", "name: a\nname: b\n"))
    assert "duplicate key" in err


def test_missing_and_empty_file(capsys, tmp_path):
    err = build_error(capsys, tmp_path / "nope.yaml")
    assert "nope.yaml: file not found" in err
    err = build_error(capsys, write_yaml(tmp_path / "empty.yaml", "\n# only a comment\n"))
    assert "empty.yaml: file is empty" in err
    err = build_error(capsys, write_yaml(tmp_path / "list.yaml", "- a\n- b\n"))
    assert "must be a mapping" in err


def test_cyclic_base(capsys, tmp_path):
    write_yaml(tmp_path / "a.yaml", {"base": "b.yaml", "name": "a"})
    write_yaml(tmp_path / "b.yaml", {"base": "a.yaml", "name": "b"})
    err = build_error(capsys, tmp_path / "a.yaml")
    assert "cyclic `base:` chain" in err and "a.yaml -> " in err


def test_missing_base_names_the_child(capsys, tmp_path):
    write_yaml(tmp_path / "child.yaml", {"base": "gone.yaml", "name": "c"})
    err = build_error(capsys, tmp_path / "child.yaml")
    assert "gone.yaml: file not found" in err


def test_error_in_base_names_the_base_file(capsys, tmp_path):
    bp = tiny_blueprint()
    bp["model"]["init_stdd"] = 0.1
    write_yaml(tmp_path / "base.yaml", bp)
    write_yaml(tmp_path / "child.yaml", {"base": "base.yaml", "name": "child"})
    err = build_error(capsys, tmp_path / "child.yaml")
    assert "base.yaml: model.init_stdd: unknown key" in err


def test_override_of_unknown_key(capsys, tmp_path):
    path = write_yaml(tmp_path / "ok.yaml", tiny_blueprint())
    err = build_error(capsys, path, "--set", "model.d_modl=64")
    assert "--set model.d_modl=64: model.d_modl: unknown key" in err
    err = build_error(capsys, path, "--set", "roles.full.mixer.params.heads=2")
    assert "roles.full.mixer.params.heads: unknown key" in err
    err = build_error(capsys, path, "--set", "model.d_model")
    assert "expected KEY=VALUE" in err


def test_override_with_bad_value_names_override(capsys, tmp_path):
    path = write_yaml(tmp_path / "ok.yaml", tiny_blueprint())
    err = build_error(capsys, path, "--set", "model.n_layers=-2")
    assert "--set model.n_layers=-2: model.n_layers" in err and "greater than 0" in err


def test_unresolvable_interpolation(capsys, tmp_path):
    bp = tiny_blueprint()
    bp["model"]["n_layers"] = "${model.depth}"
    err = build_error(capsys, write_yaml(tmp_path / "i.yaml", bp))
    assert "model.n_layers" in err and "model.depth" in err


def test_bad_cli_arguments(capsys, tmp_path):
    path = write_yaml(tmp_path / "ok.yaml", tiny_blueprint())
    err = build_error(capsys, path, "--seq-len", "lots")
    assert "--seq-len" in err and "'lots'" in err
    rc, _, err = run_cli(capsys, "build")
    assert rc == 2 and "BLUEPRINT" in err and "Traceback" not in err
    rc, _, err = run_cli(capsys, "nonsense")
    assert rc == 2 and "invalid choice" in err


def test_real_process_has_no_traceback(tmp_path):
    path = write_yaml(tmp_path / "bad.yaml", mutate(tiny_blueprint(), "roles.full.mixer.type", "atention"))
    proc = subprocess.run([sys.executable, "-m", "mixarch", "build", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") <= 3 and "available: attention" in proc.stderr
