"""bench/e2e.py on the CPU with tiny blueprints: the script runs end to end and its report has every section."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def e2e():
    """The script as a module; the kernel registry (whose entries its KernelLog wraps) is restored after."""
    from mixarch.plugins import get_host

    registry = get_host().kernels
    saved = list(registry)
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import e2e

        yield e2e
    finally:
        sys.path.remove(str(ROOT / "bench"))
        for spec in saved:
            registry.add(spec, override=True)


def test_e2e_smoke_run_on_cpu(e2e, tmp_path, capsys):
    out = tmp_path / "e2e.md"
    code = e2e.main(["--device", "cpu", "--hybrid", str(ROOT / "blueprints/sala-tiny.yaml"), "--twin",
                     str(ROOT / "blueprints/tiny.yaml"), "--contexts", "64,256", "--max-context", "512",
                     "--decode-steps", "2", "--budget", "120", "--breakdown", "--out", str(out)])
    assert code == 0
    text = out.read_text()
    for row in ("| 64 | sala-tiny | whole |", "| 256 | tiny | whole |", "| 256 | ", "- `sala-tiny`: 512",
                "| sala-tiny | 256 | mixer infllm_v2 |", "| sala-tiny | 256 | mixer lightning |", "| tiny | 256 | rest |"):
        assert row in text, f"{row!r} missing from the report:\n{text}"
    assert "lightning_attention:reference" in text  # the kernel log names the backend that ran
    assert "| slowest step (ms) |" in text and "each after an untimed generation at the same context" in text


def test_warmup_covers_the_sparse_path(e2e):
    import mixarch
    from mixarch.model.hybrid import build_model

    model = build_model(mixarch.resolve(ROOT / "blueprints/sala-tiny.yaml"))
    dense = max(layer.mixer.params["dense_len"] for layer in model.resolved.layers
                if "dense_len" in layer.mixer.params)
    assert e2e.warmup_contexts(model, [dense, 4 * dense, 2 * dense]) == [dense, 2 * dense]
    assert e2e.warmup_contexts(model, [dense // 2]) == [dense // 2]
