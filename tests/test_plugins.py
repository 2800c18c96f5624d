"""The plugin system: every hook, duplicates, typos, the allow-list, `mixarch plugins`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import run_cli, tiny_blueprint, write_yaml
from pydantic import BaseModel, ConfigDict
from torch import nn

from mixarch import hookspecs
from mixarch.blueprint.resolve import resolve_file
from mixarch.errors import DuplicateRegistrationError, PluginError
from mixarch.hookspecs import hookimpl
from mixarch.model.hybrid import build_model
from mixarch.plugins import PluginHost, get_host, plugins_added
from mixarch.positional.base import PositionalEncoding
from mixarch.registry import CacheSpec
from mixarch.selectors.base import Selection

HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("mixarch_"))


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_spec_has_its_own_test(hook):
    assert f"test_hook_{hook}" in globals(), f"hook {hook} has no test named test_hook_{hook} in {__file__}"


class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScaleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    factor: float = 2.0


class Doubling(nn.Module):
    """A mixer that returns factor * x (stateless, so decode trivially equals the full forward)."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x, *, positions, cache=None, cu_seqlens=None):
        return self.factor * x


def test_hook_mixarch_register_mixers(tmp_path):
    class Plugin:
        @hookimpl
        def mixarch_register_mixers(self, register):
            register("doubling", lambda p, ctx, pos: Doubling(p.factor), ScaleParams, family="none",
                     cache=CacheSpec(), description="test mixer")

    with plugins_added((Plugin(), "test-mixers")) as host:
        spec = host.mixers.get("doubling")
        assert spec.plugin == "test-mixers" and spec.family == "none"
        assert host.info["test-mixers"].registered == {"mixer": ["doubling"]}
        bp = tiny_blueprint()
        bp["roles"]["local"]["mixer"] = {"type": "doubling", "params": {"factor": 3.0}}
        resolved = resolve_file(write_yaml(tmp_path / "b.yaml", bp))
        model = build_model(resolved)
        assert isinstance(model.blocks[0].mixer, Doubling) and model.blocks[0].mixer.factor == 3.0
        assert torch.isfinite(model(torch.randint(0, 50, (1, 5)))).all()


def test_hook_mixarch_register_positionals(tmp_path):
    seen = {}

    class Shift(PositionalEncoding):
        label = "shift"

        def forward(self, q, k, positions):
            return q + 1, k

    class Plugin:
        @hookimpl
        def mixarch_register_positionals(self, register):
            def factory(params, ctx):
                seen[ctx.index] = ctx.family
                return Shift()

            register("shift", factory, Empty)

    with plugins_added((Plugin(), "test-pos")):
        bp = tiny_blueprint()
        bp["positional"] = {"type": "shift"}
        model = build_model(resolve_file(write_yaml(tmp_path / "b.yaml", bp)))
        assert model.blocks[1].mixer.positional.label == "shift"
        assert seen == {1: "softmax", 3: "softmax"}  # layers 0 and 2 use their role's own positional


def test_hook_mixarch_register_ffns(tmp_path):
    class Plugin:
        @hookimpl
        def mixarch_register_ffns(self, register):
            register("gelu_mlp", lambda p, ctx: nn.Sequential(nn.Linear(ctx.d_model, 8), nn.GELU(),
                                                              nn.Linear(8, ctx.d_model)), Empty)

    with plugins_added((Plugin(), "test-ffn")):
        bp = tiny_blueprint()
        bp["ffn"] = {"type": "gelu_mlp"}
        model = build_model(resolve_file(write_yaml(tmp_path / "b.yaml", bp)))
        assert isinstance(model.blocks[0].ffn, nn.Sequential)


def test_hook_mixarch_register_selectors(tmp_path):
    class EveryOther(BaseModel):
        model_config = ConfigDict(extra="forbid")
        first: str
        second: str

    class Plugin:
        @hookimpl
        def mixarch_register_selectors(self, register):
            register("alternate", lambda p, n, roles: Selection([(p.first, p.second)[i % 2] for i in range(n)],
                                                                [{"parity": i % 2} for i in range(n)]), EveryOther)

    with plugins_added((Plugin(), "test-sel")):
        bp = tiny_blueprint()
        bp["layout"] = {"selector": "alternate", "params": {"first": "full", "second": "local"}}
        resolved = resolve_file(write_yaml(tmp_path / "b.yaml", bp))
        assert [la.role for la in resolved.layers] == ["full", "local", "full", "local"]
        assert resolved.layers[3].info == {"parity": 1}


def test_builtins_register_through_the_hooks():
    host = get_host()
    for name in ("mixarch.mixers.attention", "mixarch.positional.rope", "mixarch.ffn.builtin",
                 "mixarch.selectors.builtin"):
        assert host.info[name].builtin and host.info[name].hooks
    assert host.mixers.get("attention").plugin == "mixarch.mixers.attention"


def test_duplicate_name_names_both_plugins():
    class Again:
        @hookimpl
        def mixarch_register_mixers(self, register):
            register("attention", lambda p, c, pos: None, Empty, family="softmax")

    with pytest.raises(DuplicateRegistrationError) as err:
        PluginHost(extra=[(Again(), "second-attention")])
    assert "mixarch.mixers.attention" in str(err.value) and "second-attention" in str(err.value)


def test_override_is_explicit():
    class Replace:
        @hookimpl
        def mixarch_register_mixers(self, register):
            register("attention", lambda p, c, pos: Doubling(1.0), ScaleParams, family="softmax", override=True)

    host = PluginHost(extra=[(Replace(), "replacer")])
    assert host.mixers.get("attention").plugin == "replacer"
    assert host.mixers.overridden[0][0].plugin == "mixarch.mixers.attention"


def test_hook_typo_fails():
    class Typo:
        @hookimpl
        def mixarch_register_mixer(self, register):  # missing "s"
            pass

    with pytest.raises(PluginError, match="mixarch_register_mixer"):
        PluginHost(extra=[(Typo(), "typo")])


def test_bad_registration_is_a_clear_error():
    class BadFamily:
        @hookimpl
        def mixarch_register_mixers(self, register):
            register("odd", lambda p, c, pos: None, Empty, family="quantum")

    with pytest.raises(PluginError, match="family 'quantum'"):
        PluginHost(extra=[(BadFamily(), "bad")])

    class NoModel:
        @hookimpl
        def mixarch_register_ffns(self, register):
            register("odd", lambda p, c: None, dict)

    with pytest.raises(PluginError, match="pydantic model"):
        PluginHost(extra=[(NoModel(), "bad2")])


def test_unknown_name_lists_closest_first():
    with pytest.raises(Exception) as err:
        get_host().mixers.get("atention")
    assert "available: attention" in str(err.value)


def _plugins_json(env_value):
    env = dict(os.environ)
    if env_value is None:
        env.pop("MIXARCH_LOAD_PLUGINS", None)
    else:
        env["MIXARCH_LOAD_PLUGINS"] = env_value
    out = subprocess.run([sys.executable, "-m", "mixarch", "plugins", "--json"], env=env, capture_output=True,
                         text=True, check=True)
    return {p["name"]: p for p in json.loads(out.stdout)}


def test_load_plugins_env_limits_installed_plugins():
    everything = _plugins_json(None)
    third_party = [n for n, p in everything.items() if not p["builtin"]]
    assert third_party, "the test suite installs at least one third-party plugin (plugins/mixarch-gla)"
    none = _plugins_json("")
    assert all(p["builtin"] for p in none.values())
    assert set(none) == {n for n, p in everything.items() if p["builtin"]}
    only = _plugins_json(third_party[0])
    assert set(only) - set(none) == {third_party[0]}


def test_plugins_command_lists_versions_and_registrations(capsys):
    rc, out, _ = run_cli(capsys, "plugins", "--json")
    assert rc == 0
    plugins = {p["name"]: p for p in json.loads(out)}
    attention = plugins["mixarch.mixers.attention"]
    assert attention["version"] and attention["registered"]["mixer"] == ["attention"]
    rc, out, _ = run_cli(capsys, "plugins")
    assert rc == 0 and "mixarch.selectors.builtin" in out and "pattern" in out


def test_hook_mixarch_register_kernels(monkeypatch):
    from mixarch.errors import MixarchError
    from mixarch.kernels import choose
    from mixarch.ops import lightning_attention

    calls = []

    def fast(q, k, v, decay, **kwargs):
        calls.append(q.shape)
        return get_host().kernels.get("lightning_attention", "reference").impl(q, k, v, decay, **kwargs)

    class Plugin:
        @hookimpl
        def mixarch_register_kernels(self, register):
            register("lightning_attention", "fast", fast, priority=100, supports=lambda q, *a, **k: q.shape[1] > 2)
            register("lightning_attention", "broken", fast, priority=50, is_available=lambda: "needs a TPU")

    q = torch.randn(1, 4, 2, 8)
    with plugins_added((Plugin(), "test-kernels")) as host:
        order = [s.backend for s in host.kernels.backends("lightning_attention")]
        assert [b for b in order if b in ("fast", "broken", "reference")] == ["fast", "broken", "reference"]
        assert choose("lightning_attention", q).backend == "fast"
        assert choose("lightning_attention", q[:, :2]).backend not in ("fast", "broken")  # -> next available
        lightning_attention(q, q, q, torch.ones(2))
        assert calls == [q.shape]
        monkeypatch.setenv("MIXARCH_KERNELS", "reference")
        assert choose("lightning_attention", q).backend == "reference"
        monkeypatch.setenv("MIXARCH_KERNELS", "infllm_v2_select=reference,lightning_attention=fast")
        assert choose("lightning_attention", q).backend == "fast"
        with pytest.raises(MixarchError, match="backend 'fast' of 'lightning_attention' does not support these inputs"):
            choose("lightning_attention", q[:, :2])  # forced, but unsupported: an error, not a silent fallback
        monkeypatch.setenv("MIXARCH_KERNELS", "broken")
        with pytest.raises(MixarchError, match="backend 'broken' of 'lightning_attention' cannot run here: needs a TPU"):
            choose("lightning_attention", q)
        monkeypatch.setenv("MIXARCH_KERNELS", "cuda-magic")
        with pytest.raises(MixarchError, match="MIXARCH_KERNELS=cuda-magic"):
            choose("lightning_attention", q)
