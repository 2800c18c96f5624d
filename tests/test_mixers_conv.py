"""The short_conv mixer (zoology's BaseConv): conformance, precision, and a conv + attention model."""

from __future__ import annotations

import pytest
import torch

from mixarch.model.hybrid import build_model
from mixarch.testing.compare import assert_close
from mixarch.testing.mixers import (
    build_mixer,
    check_mixer,
    check_mixer_precision,
    check_model_decode,
    tiny_resolved,
)
from mixarch.testing.strategies import seeded_randn


@pytest.mark.parametrize("params", [{"kernel_size": 4}, {"kernel_size": 1, "gate": False}, {"kernel_size": 7}])
def test_short_conv_conformance(params):
    check_mixer("short_conv", params, seq_lens=(1, 3, 15, 40), chunk=2)


def test_short_conv_precision():
    check_mixer_precision("short_conv", {"kernel_size": 3})


def test_short_conv_is_the_causal_depthwise_convolution():
    conv, _, _ = build_mixer("short_conv", {"kernel_size": 3, "gate": False}, d_model=8)
    x = seeded_randn((1, 6, 8), 0, dtype=torch.float64)
    y = conv(x, positions=torch.arange(6)[None])
    w, b = conv.weight, conv.bias  # [D, k]: column k-1 weighs the current token
    by_hand = torch.stack([sum(w[:, 2 - i] * x[0, t - i] for i in range(3) if t - i >= 0) + b for t in range(6)])
    assert_close("conv", conv.o_proj(by_hand)[None], y)


def test_conv_attention_model_decodes_like_its_forward():
    resolved = tiny_resolved([("short_conv", {}), ("attention", {"n_heads": 2}), ("short_conv", {"kernel_size": 2}),
                              ("lightning", {"n_heads": 2})])
    check_model_decode(resolved, seq_len=20, prefill=7)
    assert torch.isfinite(build_model(resolved)(torch.randint(0, 61, (2, 9)))).all()
