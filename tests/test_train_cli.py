"""`mixarch fit|validate|test|predict`: blueprint -> LightningCLI config, flags, exports, errors (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning.pytorch  # noqa: F401 - imported before capsys, so Lightning's log handler keeps the real stderr
import torch
import yaml
from helpers import run_cli

import mixarch

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "blueprints" / "tiny.yaml"
SMALL_MQAR = {"type": "mqar", "params": {
    "batch_size": 8, "train_splits": [{"seq_len": 32, "num_kv_pairs": 4, "num_examples": 64}],
    "val_splits": [{"seq_len": 32, "num_kv_pairs": n, "num_examples": 8} for n in (2, 4)]}}
QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 1}


def write_blueprint(tmp_path: Path, name: str = "t", **train) -> Path:
    """tiny.yaml (2 layers) with a ``train:`` section on a small MQAR task, merged with ``train``."""
    section = {"data": SMALL_MQAR, "trainer": {"max_steps": 4, "val_check_interval": 2, **QUIET},
               "checkpoint": {"every_n_train_steps": 2}}
    section.update(train)
    data = {"base": str(TINY), "name": name, "model": {"n_layers": 2}, "layout": {"params": {"pattern": "LA"}},
            "train": section}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def logger_flags(root: Path, version: str = "v") -> list[str]:
    return ["--trainer.logger=CSVLogger", f"--trainer.logger.save_dir={root}", "--trainer.logger.name=run",
            f"--trainer.logger.version={version}"]


def test_fit_exports_a_loadable_model(capsys, tmp_path):
    bp = write_blueprint(tmp_path)
    rc, out, err = run_cli(capsys, "fit", "-c", str(bp), *logger_flags(tmp_path))
    assert rc == 0, err
    ckpts = tmp_path / "run" / "v" / "checkpoints"
    assert {p.name for p in ckpts.iterdir()} >= {"last.ckpt", "last", "epoch=0-step=4.ckpt", "epoch=0-step=4"}
    assert not (ckpts / "epoch=0-step=2").exists()  # removed with its checkpoint (save_top_k=1)
    metrics = (tmp_path / "run" / "v" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "val/loss", "val/ppl", "val/acc", "val/acc/num_kv_pairs=2",
            "val/acc/num_kv_pairs=4"} <= set(metrics)

    exported = mixarch.load(ckpts / "last")
    state = torch.load(ckpts / "last.ckpt", weights_only=False)["state_dict"]
    trained = mixarch.build(bp)
    trained.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    initial = mixarch.build(bp)
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(exported(ids), trained(ids))
        assert not torch.allclose(exported(ids), initial(ids))


def test_flags_override_the_train_section(capsys, tmp_path):
    bp = write_blueprint(tmp_path, optimizer={"lr": 0.02})
    rc, out, _ = run_cli(capsys, "fit", "-c", str(bp), "--trainer.max_steps=7", "--set", "train.seed=5",
                         "--print_config")
    assert rc == 0
    cfg = yaml.safe_load(out)
    assert cfg["trainer"]["max_steps"] == 7 and cfg["model"]["optimizer"]["lr"] == 0.02
    assert cfg["model"]["blueprint"] == str(bp) and cfg["seed_everything"] == 5
    assert cfg["data"]["class_path"] == "mixarch.data.mqar.MQARDataModule"
    assert cfg["checkpoint"]["every_n_train_steps"] == 2 and cfg["trainer"]["gradient_clip_val"] == 1.0


def test_blueprint_alone_gets_defaults(capsys):
    rc, out, _ = run_cli(capsys, "fit", "-c", str(TINY), "--print_config")
    cfg = yaml.safe_load(out)
    assert rc == 0 and cfg["trainer"]["max_steps"] == 500 and cfg["model"]["schedule"]["kind"] == "cosine"
    assert cfg["data"]["init_args"]["train_splits"][0]["num_kv_pairs"] == 2


def test_lightning_config_naming_a_blueprint_and_test_verb(capsys, tmp_path):
    cfg = {"model": {"blueprint": str(TINY), "overrides": ["model.n_layers=2", "layout.params.pattern=LA"]},
           "data": {"class_path": "mixarch.data.mqar.MQARDataModule", "init_args": SMALL_MQAR["params"]},
           "trainer": {"limit_test_batches": 1, **QUIET}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    rc, _, err = run_cli(capsys, "test", "-c", str(path), *logger_flags(tmp_path))
    assert rc == 0, err
    assert "test/acc" in (tmp_path / "run" / "v" / "metrics.csv").read_text()


def test_python_m_mixarch_fit(tmp_path):
    bp = write_blueprint(tmp_path, trainer={"max_steps": 2, "limit_val_batches": 0, **QUIET})
    proc = subprocess.run([sys.executable, "-m", "mixarch", "fit", "-c", str(bp), *logger_flags(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "run" / "v" / "checkpoints" / "last" / "model.safetensors").is_file()


def test_build_does_not_import_lightning():
    code = ("import sys; from mixarch.cli.main import main; main(['build', 'blueprints/tiny.yaml', '--json']); "
            "assert not [m for m in sys.modules if m.startswith(('lightning', 'torchmetrics'))]")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]


def expect_error(capsys, *argv: str) -> str:
    rc, _, err = run_cli(capsys, *argv)
    lines = [line for line in err.splitlines() if line.startswith("mixarch: error: ")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_user_errors_exit_2_naming_file_and_key(capsys, tmp_path):
    bp = write_blueprint(tmp_path, optimzer={"lr": 1})
    err = expect_error(capsys, "fit", "-c", str(bp))
    assert f"{bp}: train.optimzer: unknown key" in err and "optimizer" in err

    bp = write_blueprint(tmp_path, trainer={"max_stepz": 3})
    assert "train.trainer.max_stepz: unknown Trainer argument; expected one of: max_steps" in \
        expect_error(capsys, "fit", "-c", str(bp))

    bp = write_blueprint(tmp_path, data={"type": "mqr"})
    assert "train.data.type: unknown data module 'mqr'; available: mqar" in expect_error(capsys, "fit", "-c", str(bp))

    bp = write_blueprint(tmp_path, data={"type": "mqar", "params": {"train_splits": [{"seq_len": 64}]}})
    assert "train.data.params.train_splits.0.num_kv_pairs: required key is missing" in \
        expect_error(capsys, "fit", "-c", str(bp))

    bp = write_blueprint(tmp_path, data={"type": "mqar", "params": {
        "train_splits": [{"seq_len": 32, "num_kv_pairs": 16, "num_examples": 4}]}})
    no_logs = ["--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}"]
    assert "data.train_splits[0]: num_kv_pairs (16) x 4 must be <= seq_len (32)" in \
        expect_error(capsys, "fit", "-c", str(bp), *no_logs)

    bp = write_blueprint(tmp_path, param_groups=[{"family": "lnear"}])
    assert "model.param_groups[0]: matches no parameter (the model has families softmax" in \
        expect_error(capsys, "fit", "-c", str(bp), *no_logs)

    assert "unrecognized arguments: --trainer.max_stepz=3" in \
        expect_error(capsys, "fit", "-c", str(TINY), "--trainer.max_stepz=3")
    assert "nothere.yaml: config file not found" in expect_error(capsys, "fit", "-c", "nothere.yaml")
    assert "model.n_layerz: unknown key" in expect_error(capsys, "fit", "-c", str(TINY), "--set", "model.n_layerz=3")
