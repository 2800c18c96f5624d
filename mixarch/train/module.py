"""``HybridLMModule``: the LightningModule that trains any blueprint's :class:`~mixarch.model.hybrid.HybridLM`.

Batches are ``{"input_ids": [B, T], "labels": [B, T] (-100: not scored), "slices": [B, K]}``. The loss is
the mean cross-entropy over labeled positions (logits of the others are never normalized). AdamW over
parameter groups (freezing included), linear warmup + cosine decay per step.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import lightning.pytorch as pl
import torch
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

import mixarch
from mixarch.data.segment import IGNORE_INDEX
from mixarch.train.metrics import EvalMetrics
from mixarch.train.params import optimizer_groups
from mixarch.train.schedule import warmup_cosine
from mixarch.train.schema import OptimizerConfig, ParamGroup, ScheduleConfig


def checkpoint_blocks(model: torch.nn.Module) -> None:
    """Recompute each block's activations in the backward pass (non-reentrant activation checkpointing);
    the module tree and state-dict keys are unchanged."""
    for block in model.blocks:
        forward = block.forward

        @functools.wraps(forward)
        def run(x, *, _forward=forward, _block=block, **kwargs):
            if _block.training and torch.is_grad_enabled():
                return checkpoint(_forward, x, use_reentrant=False, **kwargs)
            return _forward(x, **kwargs)

        block.forward = run


class HybridLMModule(pl.LightningModule):
    """Train the model of ``blueprint`` (a blueprint file or a ``resolved.yaml``; ``overrides`` as
    ``--set``), initialized with ``seed`` or from the weights of the model directory ``init_from``. Weights
    are kept in fp32 whatever the blueprint's dtype (the Trainer's ``precision`` sets the compute dtype);
    exports are written in the blueprint's dtype."""

    def __init__(self, blueprint: str, overrides: list[str] | None = None,
                 optimizer: OptimizerConfig | None = None, schedule: ScheduleConfig | None = None,
                 param_groups: list[ParamGroup] | None = None, activation_checkpointing: bool = False,
                 init_from: str | None = None, seed: int = 0):
        super().__init__()
        self.optimizer_config = optimizer or OptimizerConfig()
        self.schedule_config = schedule or ScheduleConfig()
        self.param_groups = list(param_groups or [])
        self.save_hyperparameters({
            "blueprint": blueprint, "overrides": list(overrides or []), "seed": seed, "init_from": init_from,
            "optimizer": self.optimizer_config.model_dump(mode="json"),
            "schedule": self.schedule_config.model_dump(mode="json"),
            "param_groups": [g.model_dump(mode="json", exclude_defaults=True) for g in self.param_groups],
            "activation_checkpointing": activation_checkpointing})
        self.model = mixarch.build(blueprint, overrides or (), seed=seed, dtype=torch.float32)  # fp32 master weights
        if init_from is not None:
            self.model.load_state_dict(mixarch.load(init_from).state_dict())
        if activation_checkpointing:
            checkpoint_blocks(self.model)
        self.val_metrics, self.test_metrics = EvalMetrics(IGNORE_INDEX), EvalMetrics(IGNORE_INDEX)
        self._last_batch_end: float | None = None

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids)

    def _loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean NLL over labeled positions, their logits [N, V], their labels [N])."""
        logits = self.model(batch["input_ids"])
        mask = batch["labels"] != IGNORE_INDEX
        picked, target = logits[mask].float(), batch["labels"][mask]
        return F.cross_entropy(picked, target), picked, target

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, picked, target = self._loss(batch)
        acc = (picked.argmax(-1) == target).float().mean()
        self.log("train/loss", loss, on_step=True, prog_bar=True)
        self.log("train/acc", acc, on_step=True)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Log tokens per second (all ranks) over the interval since the previous batch ended."""
        now = time.perf_counter()
        if self._last_batch_end is not None:
            tokens = batch["input_ids"].numel() * self.trainer.world_size
            self.log("train/tokens_per_s", tokens / (now - self._last_batch_end), on_step=True)
        self._last_batch_end = now

    def _eval_step(self, batch: dict[str, torch.Tensor], metrics: EvalMetrics) -> None:
        metrics.update(self.model(batch["input_ids"]), batch["labels"], batch["slices"])

    def _eval_log(self, prefix: str, metrics: EvalMetrics) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        values = metrics.compute(tuple(getattr(datamodule, "slice_keys", ())))
        metrics.reset()
        for name, value in values.items():
            self.log(f"{prefix}/{name}", value, prog_bar=name in ("loss", "acc"), rank_zero_only=True)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        self._eval_log("val", self.val_metrics)
        self._last_batch_end = None  # the next throughput interval would include validation

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics)

    def on_test_epoch_end(self) -> None:
        self._eval_log("test", self.test_metrics)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Greedy next-token predictions ``[B, T]`` beside the labels."""
        return {"predictions": self.model(batch["input_ids"]).argmax(-1), "labels": batch["labels"]}

    def configure_optimizers(self):
        groups = optimizer_groups(self.model, self.param_groups, self.optimizer_config)
        opt = self.optimizer_config
        optimizer = torch.optim.AdamW(groups, lr=opt.lr, betas=opt.betas, eps=opt.eps)
        schedule = self.schedule_config
        total = schedule.total_steps or (self.trainer.max_steps if self.trainer.max_steps > 0 else
                                         (lambda: self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(schedule, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """As Lightning's, but norm clipping under FSDP (which Lightning's FSDP precision refuses) goes through
        the sharded root module's ``clip_grad_norm_``."""
        root = self.trainer.strategy.model
        if gradient_clip_val and gradient_clip_algorithm in (None, "norm") and hasattr(root, "clip_grad_norm_"):
            root.clip_grad_norm_(gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["mixarch_resolved"] = self.model.resolved.model_dump(mode="json")
