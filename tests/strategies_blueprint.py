"""Hypothesis strategies producing valid blueprints (as dicts) for the core tests."""

from __future__ import annotations

from hypothesis import strategies as st


@st.composite
def attention_params(draw, d_model: int) -> dict:
    n_heads = draw(st.sampled_from([h for h in (1, 2, 3, 4, 6) if d_model % h == 0]))
    n_kv = draw(st.sampled_from([k for k in range(1, n_heads + 1) if n_heads % k == 0]))
    params = {"n_heads": n_heads, "n_kv_heads": n_kv}
    if draw(st.booleans()):
        params["qk_norm"] = True
    if draw(st.booleans()):
        params["output_gate"] = True
    if draw(st.booleans()):
        params["window"] = draw(st.integers(1, 9))
    if draw(st.booleans()):
        params["head_dim"] = draw(st.sampled_from([4, 8]))
    return params


@st.composite
def positional(draw) -> dict:
    if draw(st.booleans()):
        return {"type": "rope", "params": {"theta": draw(st.sampled_from([100.0, 10000.0, 1e6]))}}
    return {"type": "nope"}


@st.composite
def valid_blueprints(draw) -> tuple[dict, list[str]]:
    """A valid blueprint dict and the role each layer must get."""
    d_model = draw(st.sampled_from([12, 16, 24]))
    n_layers = draw(st.integers(1, 5))
    role_names = draw(st.lists(st.sampled_from(["attn", "local", "global", "mid"]), min_size=1, max_size=3,
                               unique=True))
    roles = {}
    for name in role_names:
        role = {"mixer": {"type": "attention", "params": draw(attention_params(d_model))}}
        if draw(st.booleans()):
            role["positional"] = draw(positional())
        if draw(st.booleans()):
            role["ffn"] = {"type": draw(st.sampled_from(["swiglu", "none"]))}
        roles[name] = role
    expected = draw(st.lists(st.sampled_from(role_names), min_size=n_layers, max_size=n_layers))
    selector = draw(st.sampled_from(["explicit", "pattern", "indices"]))
    if selector == "explicit":
        layout = {"selector": "explicit", "params": {"layers": expected}}
    elif selector == "pattern":
        symbols = {name: "XYZW"[i] for i, name in enumerate(role_names)}
        layout = {"selector": "pattern", "params": {"pattern": "".join(symbols[r] for r in expected),
                                                     "symbols": {s: r for r, s in symbols.items()}}}
    else:
        by_role: dict[str, list[int]] = {}
        for i, r in enumerate(expected):
            by_role.setdefault(r, []).append(i)
        layout = {"selector": "indices", "params": {"roles": by_role}}
    bp = {
        "name": "random",
        "model": {"d_model": d_model, "n_layers": n_layers, "vocab_size": draw(st.integers(5, 40)),
                  "tie_embeddings": draw(st.booleans()), "dtype": "float32"},
        "positional": draw(positional()),
        "ffn": {"type": "swiglu", "params": {"hidden_size": draw(st.sampled_from([8, 20]))}},
        "roles": roles,
        "layout": layout,
    }
    if draw(st.booleans()):
        bp["model"]["mup"] = {"scale_emb": 4.0, "scale_depth": 1.4, "dim_model_base": 4}
    return bp, expected
