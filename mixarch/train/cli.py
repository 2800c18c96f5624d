"""``mixarch fit|validate|test|predict``: a LightningCLI over :class:`HybridLMModule` and a DataModule.

``-c FILE`` may be a blueprint: its ``train:`` section (validated, errors naming file and key) becomes the
LightningCLI configuration, on top of mixarch's defaults; flags (``--trainer.max_steps=100``,
``--model.optimizer.lr=3e-3``, ``--data.batch_size=32``) override it, and ``--set KEY=VALUE`` overrides the
blueprint itself (model and ``train:`` keys alike). ``-c`` may also be an ordinary LightningCLI config that
names a blueprint (``model: {blueprint: ...}``). ``--print_config`` prints the effective configuration.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningCLI
from pydantic import ConfigDict, ValidationError, create_model

from mixarch.blueprint.load import Provenance, load_data, validate, validation_error
from mixarch.blueprint.resolve import resolve
from mixarch.blueprint.schema import Blueprint
from mixarch.data import DATAMODULES
from mixarch.errors import BlueprintError, MixarchError, closest_first
from mixarch.train.export import ExportCheckpoint
from mixarch.train.module import HybridLMModule
from mixarch.train.schema import TrainSection

VERBS = ("fit", "validate", "test", "predict")
DEFAULT_TRAINER = {"default_root_dir": "runs", "max_steps": 500, "val_check_interval": 100, "check_val_every_n_epoch": None,
                   "log_every_n_steps": 10, "num_sanity_val_steps": 0, "gradient_clip_val": 1.0}
DEFAULT_CHECKPOINT = {"every_n_train_steps": 100, "save_last": True}


def loggers(save_dir: str, name: str) -> list[dict[str, Any]]:
    """CSV logs, plus TensorBoard when it is installed."""
    out = [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": save_dir, "name": name}}]
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        out.append({"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                    "init_args": {"save_dir": save_dir, "name": name}})
    return out


def import_class(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def init_params(cls: type) -> dict[str, inspect.Parameter]:
    return {n: p for n, p in inspect.signature(cls.__init__).parameters.items()
            if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def check_keys(cls: type, kwargs: dict[str, Any], loc: tuple[str, ...], provenance: Provenance) -> None:
    """Unknown argument names of ``cls`` -> a BlueprintError at ``loc.<name>``."""
    allowed = init_params(cls)
    for key in kwargs:
        if key not in allowed:
            raise BlueprintError(f"unknown {cls.__name__} argument; expected one of: "
                                 f"{', '.join(closest_first(key, allowed)[:8])}, ...",
                                 source=provenance.source_of((*loc, key)), key=".".join((*loc, key)))


def check_values(cls: type, kwargs: dict[str, Any], loc: tuple[str, ...], provenance: Provenance) -> None:
    """Validate ``kwargs`` against the annotated signature of ``cls.__init__`` (pydantic, file/key errors)."""
    check_keys(cls, kwargs, loc, provenance)
    hints = inspect.get_annotations(cls.__init__, eval_str=True)
    fields = {n: (hints.get(n, Any), ... if p.default is p.empty else p.default)
              for n, p in init_params(cls).items()}
    model = create_model(f"{cls.__name__}Args", __config__=ConfigDict(extra="forbid",
                                                                      arbitrary_types_allowed=True), **fields)
    try:
        model.model_validate(kwargs)
    except ValidationError as err:
        raise validation_error(err, model, provenance, loc) from None


def blueprint_config(path: str, overrides: list[str]) -> dict[str, Any]:
    """The LightningCLI configuration of a blueprint file and its ``train:`` section."""
    data, provenance = load_data(path, overrides)
    bp = validate(Blueprint, data, provenance)
    resolve(bp, provenance)  # unknown plugins and bad layouts fail here, with the file and key
    train = bp.train or TrainSection()
    if train.data.type not in DATAMODULES:
        raise BlueprintError(f"unknown data module {train.data.type!r}; available: "
                             f"{', '.join(closest_first(train.data.type, DATAMODULES))}",
                             source=provenance.source_of(("train", "data", "type")), key="train.data.type")
    data_cls = import_class(DATAMODULES[train.data.type])
    check_values(data_cls, train.data.params, ("train", "data", "params"), provenance)
    check_keys(Trainer, train.trainer, ("train", "trainer"), provenance)
    check_keys(ExportCheckpoint, train.checkpoint, ("train", "checkpoint"), provenance)
    model = {"blueprint": str(path), "overrides": list(overrides), "seed": train.seed,
             "optimizer": train.optimizer.model_dump(mode="json"),
             "schedule": train.schedule.model_dump(mode="json"),
             "param_groups": [g.model_dump(mode="json", exclude_defaults=True) for g in train.param_groups],
             "activation_checkpointing": train.activation_checkpointing, "init_from": train.init_from}
    trainer = {"logger": loggers("runs", bp.name), **train.trainer}
    return {"seed_everything": train.seed, "trainer": trainer, "model": model,
            "data": {"class_path": DATAMODULES[train.data.type], "init_args": train.data.params},
            "checkpoint": train.checkpoint}


def is_blueprint(path: str) -> bool:
    """Whether a ``-c`` file is a blueprint (rather than a LightningCLI config)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and bool({"roles", "layers", "base", "name"} & set(data))


def translate(argv: list[str]) -> list[str]:
    """``VERB [-c BLUEPRINT] [--set K=V]... REST`` -> LightningCLI arguments (blueprint as inline config)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-c", "--config", action="append", default=[])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    known, rest = parser.parse_known_args(argv[1:])
    blueprints = [c for c in known.config if is_blueprint(c)]
    if len(blueprints) > 1:
        raise MixarchError(f"at most one blueprint per run, got {', '.join(blueprints)}", source="-c")
    if known.overrides and not blueprints:
        raise MixarchError("--set overrides a blueprint given with -c", source="--set")
    for c in known.config:
        if not Path(c).is_file():
            raise MixarchError("config file not found", source=c)
    out = [argv[0]]
    for c in known.config:
        cfg = blueprint_config(c, known.overrides) if c in blueprints else None
        out += ["--config", yaml.safe_dump(cfg, sort_keys=False) if cfg is not None else c]
    return out + rest


class MixarchCLI(LightningCLI):
    """LightningCLI with mixarch's defaults: the exporting checkpoint (``checkpoint.*``; none with
    ``--trainer.enable_checkpointing=false``), step-based training with periodic validation and gradient
    clipping, CSV (+ TensorBoard) logs, a rich progress bar, seed 0, and bf16-mixed on GPUs."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(ExportCheckpoint, "checkpoint")
        parser.set_defaults({f"trainer.{k}": v for k, v in DEFAULT_TRAINER.items()})
        parser.set_defaults({"trainer.logger": loggers("runs", "mixarch")})
        parser.set_defaults({f"checkpoint.{k}": v for k, v in DEFAULT_CHECKPOINT.items()})
        parser.set_defaults({"data": {"class_path": DATAMODULES["mqar"]}})

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Trainer:
        if config.get("enable_checkpointing") is False:  # then the forced checkpoint callback must go
            callbacks = [c for c in callbacks if not isinstance(c, ExportCheckpoint)]
        given = [*callbacks, *(config.get("callbacks") or [])]
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in given):
            callbacks = [*callbacks, RichProgressBar()]  # rich instead of Lightning's default tqdm bar
        return super()._instantiate_trainer(config, callbacks)

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        accelerator = str(cfg.trainer.accelerator)
        if cfg.trainer.precision is None and accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
            cfg.trainer.precision = "bf16-mixed"


def run(argv: list[str]) -> int:
    """Run ``mixarch VERB ...``; returns the exit status (user errors raise :class:`MixarchError`)."""
    args = translate(argv) if len(argv) > 1 and argv[1] not in ("-h", "--help") else argv
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    try:
        MixarchCLI(HybridLMModule, LightningDataModule, subclass_mode_data=True, args=args,
                   seed_everything_default=0, save_config_kwargs={"overwrite": True},
                   parser_kwargs={"exit_on_error": False, "prog": "mixarch"})
    except argparse.ArgumentError as err:
        raise MixarchError(" ".join(str(err).split()), source=f"mixarch {argv[0]}") from None
    except SystemExit as done:  # --help, --print_config
        return done.code if isinstance(done.code, int) else 0
    return 0

