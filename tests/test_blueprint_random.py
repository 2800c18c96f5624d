"""Property tests over random blueprints: valid ones build and run, corrupted ones fail cleanly."""

from __future__ import annotations

import copy

import torch
from helpers import run_cli, write_yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies_blueprint import valid_blueprints

from mixarch.blueprint.resolve import resolve_file
from mixarch.model.hybrid import HybridLM, build_model

FIXTURE_OK = [HealthCheck.function_scoped_fixture]


@settings(max_examples=25, suppress_health_check=FIXTURE_OK)
@given(valid_blueprints(), st.integers(1, 9))
def test_random_valid_blueprints_build_and_run(tmp_path, case, seq_len):
    bp, expected = case
    resolved = resolve_file(write_yaml(tmp_path / "bp.yaml", bp))
    assert [layer.role for layer in resolved.layers] == expected
    with torch.device("meta"):
        meta = HybridLM(resolved)
    model = build_model(resolved, seed=1)
    assert meta.num_parameters() == model.num_parameters()
    ids = torch.randint(0, bp["model"]["vocab_size"], (2, seq_len))
    logits = model(ids)
    assert logits.shape == (2, seq_len, bp["model"]["vocab_size"])
    assert torch.isfinite(logits).all()


def _paths(node, prefix=()):
    """Every key path of a nested dict."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield prefix + (key,)
            yield from _paths(value, prefix + (key,))


CORRUPTIONS = ["unknown_key", "wrong_type", "negative", "delete", "rename_type", "layer_count"]


@st.composite
def corrupted_blueprints(draw):
    bp, _ = draw(valid_blueprints())
    bad = copy.deepcopy(bp)
    kind = draw(st.sampled_from(CORRUPTIONS))
    paths = list(_paths(bad))
    if kind == "unknown_key":
        # every mapping except those whose keys are user-chosen names (pattern symbols, indices roles)
        dict_paths = [p for p in paths if isinstance(_get(bad, p), dict) and p[-1] != "symbols"
                      and p != ("layout", "params", "roles")]
        target = draw(st.sampled_from([()] + dict_paths))
        _get(bad, target)["zz_unknown"] = 1
        return bad, "zz_unknown"
    if kind == "wrong_type":
        target = draw(st.sampled_from([("model", "d_model"), ("model", "n_layers"), ("model", "vocab_size")]))
        _set(bad, target, "many")
        return bad, ".".join(target)
    if kind == "negative":
        role = draw(st.sampled_from(sorted(bad["roles"])))
        _set(bad, ("roles", role, "mixer", "params", "n_heads"), -draw(st.integers(1, 4)))
        return bad, f"roles.{role}.mixer.params"
    if kind == "delete":
        target = draw(st.sampled_from([("name",), ("model",), ("roles",), ("model", "d_model"),
                                       ("model", "vocab_size")]))
        del _get(bad, target[:-1])[target[-1]]
        return bad, ".".join(target)
    if kind == "rename_type":
        role = draw(st.sampled_from(sorted(bad["roles"])))
        _set(bad, ("roles", role, "mixer", "type"), "attentoin")
        return bad, f"roles.{role}.mixer.type"
    bad["model"]["n_layers"] += draw(st.integers(1, 3))
    return bad, "layout"


def _get(node, path):
    for key in path:
        node = node[key]
    return node


def _set(node, path, value):
    _get(node, path[:-1])[path[-1]] = value


@settings(max_examples=40, suppress_health_check=FIXTURE_OK)
@given(corrupted_blueprints())
def test_corrupted_blueprints_fail_cleanly(tmp_path, capsys, case):
    bad, key = case
    path = write_yaml(tmp_path / "bad.yaml", bad)
    rc, _, err = run_cli(capsys, "build", str(path))
    assert rc == 2, err
    assert "Traceback" not in err and str(path) in err
    assert key in err, f"expected the key {key!r} in: {err}"
