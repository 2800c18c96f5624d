"""``ExportCheckpoint``: a ModelCheckpoint that writes, beside each Lightning checkpoint ``NAME.ckpt``, a model
directory ``NAME/`` (``resolved.yaml`` + ``model.safetensors``) that :func:`mixarch.load` reads."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

from mixarch.model.hybrid import TORCH_DTYPES, HybridLM
from mixarch.model.io import save

PREFIX = "model."


def export_dir(ckpt_path: str | Path) -> Path:
    """``.../step=100.ckpt`` -> ``.../step=100``."""
    path = Path(ckpt_path)
    return path.with_name(path.stem)


def export_checkpoint(checkpoint: dict[str, Any], resolved, directory: str | Path) -> Path:
    """Write the HybridLM weights of a Lightning ``checkpoint`` dict (full state dict) to ``directory``, in the
    blueprint's dtype."""
    import torch

    state = {k[len(PREFIX):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(PREFIX)}
    with torch.device("meta"):
        model = HybridLM(resolved)
    model.load_state_dict(state, strict=True, assign=True)
    if resolved.model.tie_embeddings:
        model.lm_head.weight = model.embed.weight
    return save(model.to(TORCH_DTYPES[resolved.model.dtype]), directory)


class ExportCheckpoint(ModelCheckpoint):
    """Every save also exports the model (rank zero); removing a checkpoint removes its export."""

    _saving = False
    _pending: dict[str, Any] | None = None

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if self._saving:  # the dict being written by our own _save_checkpoint (full state dict on rank zero)
            self._pending = checkpoint

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        self._saving = True
        try:
            super()._save_checkpoint(trainer, filepath)
            if trainer.is_global_zero and self._pending is not None:
                target = export_dir(filepath)
                if target.exists():
                    shutil.rmtree(target)
                export_checkpoint(self._pending, trainer.lightning_module.model.resolved, target)
        finally:
            self._saving, self._pending = False, None

    def _remove_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        super()._remove_checkpoint(trainer, filepath)
        target = export_dir(filepath)
        if trainer.is_global_zero and target.is_dir():
            shutil.rmtree(target)
