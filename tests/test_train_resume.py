"""Exact resume: a run killed mid-epoch and resumed from its last checkpoint logs the same losses afterwards
as an uninterrupted run with the same seed."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from mixarch.cli.main import main

TINY = Path(__file__).resolve().parents[1] / "blueprints" / "tiny.yaml"


class CrashAfter(Callback):
    """Raise once training has completed ``step`` optimizer steps (the kill)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            raise RuntimeError(f"killed after step {trainer.global_step}")


def blueprint(tmp_path: Path) -> Path:
    """tiny.yaml (2 layers) on a small MQAR task: 6 batches per epoch, checkpoints every 4 steps."""
    data = {"base": str(TINY), "name": "resume", "model": {"n_layers": 2},
            "layout": {"params": {"pattern": "LA"}}, "train": {
        "seed": 3,
        "schedule": {"warmup_steps": 2},
        "trainer": {"max_steps": 12, "log_every_n_steps": 1, "limit_val_batches": 0, "enable_progress_bar": False,
                    "enable_model_summary": False},
        "checkpoint": {"every_n_train_steps": 4},
        "data": {"type": "mqar", "params": {
            "batch_size": 16,
            "train_splits": [{"seq_len": 32, "num_kv_pairs": 4, "num_examples": 96}],
            "val_splits": [{"seq_len": 32, "num_kv_pairs": 4, "num_examples": 16}]}}}}
    path = tmp_path / "resume.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def fit(bp: Path, root: Path, version: str, *flags: str) -> int:
    return main(["fit", "-c", str(bp), "--trainer.logger=CSVLogger", f"--trainer.logger.save_dir={root}",
                 "--trainer.logger.name=run", f"--trainer.logger.version={version}", *flags])


def losses(root: Path, version: str) -> dict[int, float]:
    with (root / "run" / version / "metrics.csv").open() as f:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}


def test_resume_mid_epoch_logs_the_same_losses(tmp_path):
    bp = blueprint(tmp_path)
    assert fit(bp, tmp_path, "full") == 0
    full = losses(tmp_path, "full")
    assert len(full) == 12

    with pytest.raises(RuntimeError, match="killed after step 9"):
        fit(bp, tmp_path, "killed", "--trainer.callbacks+=test_train_resume.CrashAfter",
            "--trainer.callbacks.step=9")
    last = tmp_path / "run" / "killed" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 8  # 8 % 6 != 0: mid-epoch

    assert fit(bp, tmp_path, "resumed", f"--ckpt_path={last}") == 0
    resumed = losses(tmp_path, "resumed")
    assert sorted(resumed) == sorted(full)[8:]
    assert resumed == {step: full[step] for step in resumed}
    killed = losses(tmp_path, "killed")
    assert len(killed) >= 8 and killed == {step: full[step] for step in killed}
