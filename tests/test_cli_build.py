"""`mixarch build`: the report, --json, --seq-len, --set, --out and loading back."""

from __future__ import annotations

import json

import torch
from helpers import run_cli, tiny_blueprint, write_yaml

import mixarch


def build_json(capsys, *argv):
    rc, out, err = run_cli(capsys, "build", *argv, "--json")
    assert rc == 0, err
    return json.loads(out)


def test_json_report_transformer(capsys):
    rep = build_json(capsys, "blueprints/transformer.yaml")
    assert rep["name"] == "transformer-1.7b" and rep["n_layers"] == 28
    assert rep["params"] == 1_720_574_976
    assert len(rep["layers"]) == 28
    first = rep["layers"][0]
    assert {"index", "role", "mixer", "positional", "params"} <= set(first)
    assert first["mixer"] == "attention" and first["positional"] == "rope"
    assert sum(layer["params"] for layer in rep["layers"]) + rep["params_embedding"] + 2048 == rep["params"]
    # K and V of 28 layers x 8 KV heads x 128 in bf16, per token
    per_token = 28 * 2 * 8 * 128 * 2
    assert rep["cache_bytes"] == {str(n): per_token * n for n in (4096, 131072, 1048576)}
    assert rep["full_attention_cache_bytes"] == rep["cache_bytes"]


def test_seq_len_and_window_cache(capsys, tmp_path):
    rep = build_json(capsys, "blueprints/tiny.yaml", "--seq-len", "10", "--seq-len", "2K")
    assert rep["seq_lens"] == [10, 2048]
    # tiny: 2 full layers + 2 window-16 layers; 2 KV heads x 16 dims, K and V, fp32
    per_token = 2 * 2 * 16 * 4
    assert rep["cache_bytes"]["10"] == 4 * 10 * per_token
    assert rep["cache_bytes"]["2048"] == 2 * 2048 * per_token + 2 * 16 * per_token
    assert rep["full_attention_cache_bytes"]["2048"] == 4 * 2048 * per_token


def test_set_overrides(capsys, tmp_path):
    rep = build_json(capsys, "blueprints/tiny.yaml", "--set", "model.n_layers=6", "--set",
                     "layout.params.pattern=(LA)*3")
    assert rep["n_layers"] == 6 and [la["role"] for la in rep["layers"]] == ["local", "attention"] * 3


def test_interpolation_and_base(capsys, tmp_path):
    base = tiny_blueprint()
    base["roles"]["full"]["mixer"]["params"]["head_dim"] = "${model.d_model}"
    write_yaml(tmp_path / "base.yaml", base)
    write_yaml(tmp_path / "child.yaml", {"base": "base.yaml", "name": "child", "model": {"d_model": 16}})
    rep = build_json(capsys, str(tmp_path / "child.yaml"))
    assert rep["name"] == "child" and rep["d_model"] == 16
    full = [la for la in rep["layers"] if la["role"] == "full"][0]
    assert full["mixer_params"]["head_dim"] == 16


def test_table_output(capsys):
    rc, out, _ = run_cli(capsys, "build", "blueprints/tiny.yaml")
    assert rc == 0
    for text in ("layers", "rope(θ=10000)", "parameters: 221,888", "decode cache", "all full attention", "1M"):
        assert text in out


def test_unused_role_is_reported(capsys, tmp_path):
    bp = tiny_blueprint()
    bp["roles"]["spare"] = {"mixer": {"type": "attention", "params": {"n_heads": 2}}}
    rep = build_json(capsys, str(write_yaml(tmp_path / "b.yaml", bp)))
    assert rep["warnings"] == ["role 'spare' is defined but no layer uses it"]


def test_out_writes_artifacts_that_load(capsys, tmp_path):
    rc, out, err = run_cli(capsys, "build", "blueprints/tiny.yaml", "--out", str(tmp_path / "m"), "--seed", "5")
    assert rc == 0, err
    loaded = mixarch.load(tmp_path / "m")
    fresh = mixarch.build("blueprints/tiny.yaml", seed=5)
    ids = torch.randint(0, 256, (1, 13))
    assert torch.equal(loaded(ids), fresh(ids))
    # the resolved table is itself a blueprint that builds the same model
    rep = build_json(capsys, str(tmp_path / "m" / "resolved.yaml"))
    assert rep["params"] == loaded.num_parameters()
    assert [la["role"] for la in rep["layers"]] == ["local", "attention", "local", "attention"]


def test_changing_a_component_type_in_a_child_drops_the_base_params(capsys, tmp_path):
    write_yaml(tmp_path / "base.yaml", tiny_blueprint())
    write_yaml(tmp_path / "child.yaml", {"base": "base.yaml", "name": "child",
                                         "roles": {"local": {"mixer": {"type": "short_conv",
                                                                       "params": {"kernel_size": 3}}}}})
    rep = build_json(capsys, str(tmp_path / "child.yaml"))
    local = [la for la in rep["layers"] if la["role"] == "local"][0]
    assert local["mixer"] == "short_conv" and local["mixer_params"] == {"kernel_size": 3, "gate": True}
    full = [la for la in rep["layers"] if la["role"] == "full"][0]
    assert full["mixer_params"]["n_kv_heads"] == 2  # same type: params still merge
