"""Built-in layout selectors."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mixarch.selectors.builtin import (
    ExplicitParams,
    IndicesParams,
    PatternParams,
    RatioParams,
    expand_pattern,
    select_explicit,
    select_indices,
    select_pattern,
    select_ratio,
)

SYMBOLS = {"L": "linear", "S": "sparse", "A": "attn"}


@pytest.mark.parametrize("pattern, expected", [
    ("LLLS", "LLLS"),
    ("(LLLS)*2", "LLLSLLLS"),
    ("S (L)*3 S", "SLLLS"),
    ("A*3L", "AAAL"),
    ("((LS)*2 A)*2", "LSLSALSLSA"),
    ("  L  ", "L"),
])
def test_pattern_expansion(pattern, expected):
    assert expand_pattern(pattern, SYMBOLS) == [SYMBOLS[c] for c in expected]


@given(st.lists(st.tuples(st.sampled_from("LSA"), st.integers(1, 4)), min_size=1, max_size=5),
       st.integers(1, 3))
def test_pattern_repetition_property(items, outer):
    pattern = "(" + "".join(f"{s}*{n}" for s, n in items) + f")*{outer}"
    once = [SYMBOLS[s] for s, n in items for _ in range(n)]
    assert expand_pattern(pattern, SYMBOLS) == once * outer


@pytest.mark.parametrize("pattern, message", [
    ("(LS", "unmatched '('"),
    ("LS)", "unmatched ')'"),
    ("*3", "repeats nothing"),
    ("LX", "symbol 'X'"),
])
def test_pattern_errors(pattern, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        expand_pattern(pattern, SYMBOLS)


def test_pattern_length_mismatch_names_both_counts():
    with pytest.raises(ValueError, match="expands to 4 layers but model.n_layers is 5"):
        select_pattern(PatternParams(pattern="LLLS", symbols=SYMBOLS), 5, list(SYMBOLS.values()))


def test_explicit():
    assert select_explicit(ExplicitParams(layers=["a", "b"]), 2, ["a", "b"]).roles == ["a", "b"]
    with pytest.raises(ValueError, match="lists 2 layers but model.n_layers is 3"):
        select_explicit(ExplicitParams(layers=["a", "b"]), 3, ["a", "b"])


@given(st.integers(1, 64), st.data())
def test_ratio_count_and_forcing(n_layers, data):
    force_first, force_last = data.draw(st.booleans()), data.draw(st.booleans())
    forced = len({i for i, on in ((0, force_first), (n_layers - 1, force_last)) if on})
    count = data.draw(st.integers(max(forced, 1), n_layers))
    roles = select_ratio(RatioParams(role="s", other="l", count=count, force_first=force_first,
                                     force_last=force_last), n_layers, ["s", "l"]).roles
    assert len(roles) == n_layers and roles.count("s") == count
    if force_first:
        assert roles[0] == "s"
    if force_last:
        assert roles[-1] == "s"


def test_ratio_is_evenly_spaced():
    roles = select_ratio(RatioParams(role="s", other="l", fraction=0.25), 32, ["s", "l"]).roles
    chosen = [i for i, r in enumerate(roles) if r == "s"]
    assert len(chosen) == 8 and {b - a for a, b in zip(chosen, chosen[1:])} == {4}


def test_ratio_needs_exactly_one_amount():
    with pytest.raises(ValueError, match="exactly one of fraction and count"):
        RatioParams(role="s", other="l")


def test_indices():
    roles = select_indices(IndicesParams(roles={"s": [0, 2, -1]}, default="l"), 5, ["s", "l"]).roles
    assert roles == ["s", "l", "s", "l", "s"]
    with pytest.raises(ValueError, match="layer 2 is already assigned to role 's'"):
        select_indices(IndicesParams(roles={"s": [2], "a": [2]}, default="l"), 5, ["s", "a", "l"])
    with pytest.raises(ValueError, match="layer index 7 is out of range for 5 layers"):
        select_indices(IndicesParams(roles={"s": [7]}, default="l"), 5, ["s", "l"])
    with pytest.raises(ValueError, match=r"layers \[1, 3\] have no role"):
        select_indices(IndicesParams(roles={"s": [0, 2, 4]}), 5, ["s"])
