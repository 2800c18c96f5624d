"""HybridLMModule: parameter groups and freezing, schedule, activation checkpointing, metrics, learning."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.nn import functional as F

from mixarch.data.mqar import MQARDataModule
from mixarch.errors import MixarchError
from mixarch.train.metrics import EvalMetrics
from mixarch.train.module import HybridLMModule
from mixarch.train.schedule import warmup_cosine
from mixarch.train.schema import OptimizerConfig, ParamGroup, ScheduleConfig

ROOT = Path(__file__).resolve().parents[1]
SALA = str(ROOT / "blueprints" / "sala-tiny.yaml")
SALA_2 = ["model.n_layers=2", "layout.params.roles.sparse=[0]"]  # sparse, linear
TINY = str(ROOT / "blueprints" / "tiny.yaml")
TINY_2 = ["model.n_layers=2", "layout.params.pattern=LA"]


def small_mqar(**kw) -> MQARDataModule:
    return MQARDataModule([{"seq_len": 32, "num_kv_pairs": 2, "num_examples": 64}],
                          [{"seq_len": 32, "num_kv_pairs": 2, "num_examples": 8}], batch_size=8, **kw)


def trainer(steps: int, **kw) -> pl.Trainer:
    return pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0, **kw)


def test_halo_stage_1_trains_only_the_linear_layers():
    groups = [ParamGroup(family="linear"), ParamGroup(freeze=True)]
    module = HybridLMModule(SALA, SALA_2, param_groups=groups, schedule=ScheduleConfig(warmup_steps=0))
    before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    trainer(3).fit(module, small_mqar())
    for name, param in module.model.named_parameters():
        linear = name.startswith("blocks.1.")
        assert param.requires_grad == linear, name
        assert torch.equal(param, before[name]) != linear, name  # frozen: unchanged; linear: trained


def test_optimizer_groups_lr_scale_and_weight_decay():
    groups = [ParamGroup(role="sparse", lr_scale=0.1), ParamGroup(name="embed.*", weight_decay=0.0)]
    module = HybridLMModule(SALA, SALA_2, optimizer=OptimizerConfig(lr=1e-3, weight_decay=0.1),
                            param_groups=groups)
    module.trainer = trainer(10)
    opt = module.configure_optimizers()["optimizer"]
    by_name = {g["name"]: g for g in opt.param_groups}
    assert set(by_name) == {"group0/decay", "group0/no_decay", "group1/decay", "default/decay", "default/no_decay"}
    assert by_name["group0/decay"]["initial_lr"] == pytest.approx(1e-4)
    assert by_name["group0/no_decay"]["weight_decay"] == 0.0 and by_name["group1/decay"]["weight_decay"] == 0.0
    assert by_name["default/decay"]["weight_decay"] == 0.1
    assert by_name["group1/decay"]["params"][0] is module.model.embed.weight
    n_params = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n_params == module.model.num_parameters()


def test_group_matching_nothing_names_what_exists():
    module = HybridLMModule(SALA, SALA_2, param_groups=[ParamGroup(family="lnear")])
    with pytest.raises(MixarchError, match="matches no parameter .*families linear, sparse; roles linear, sparse"):
        module.configure_optimizers()
    module = HybridLMModule(SALA, SALA_2, param_groups=[ParamGroup(freeze=True)])
    with pytest.raises(MixarchError, match="every parameter is frozen"):
        module.configure_optimizers()


def test_warmup_cosine():
    f = warmup_cosine(ScheduleConfig(warmup_steps=10, min_lr_ratio=0.1), lambda: 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0) and f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.55) and f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    assert warmup_cosine(ScheduleConfig(warmup_steps=0, kind="constant"), 5)(3) == 1.0


def test_activation_checkpointing_gives_the_same_gradients():
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
    grads = []
    for ckpt in (False, True):
        module = HybridLMModule(SALA, SALA_2, activation_checkpointing=ckpt)
        module.model(ids).float().logsumexp(-1).mean().backward()
        grads.append({n: p.grad for n, p in module.model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6)


def test_perplexity_is_exp_of_mean_nll_over_labeled_tokens():
    g = torch.Generator().manual_seed(0)
    metrics = EvalMetrics()
    all_logits, all_labels = [], []
    for _ in range(3):
        logits = torch.randn(4, 10, 50, generator=g)
        labels = torch.randint(0, 50, (4, 10), generator=g)
        labels[torch.rand(4, 10, generator=g) < 0.6] = -100
        slices = torch.tensor([[2], [2], [4], [4]])
        metrics.update(logits, labels, slices)
        all_logits.append(logits)
        all_labels.append(labels)
    logits, labels = torch.cat(all_logits), torch.cat(all_labels)
    out = metrics.compute(("num_kv_pairs",))
    nll = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    assert out["loss"] == pytest.approx(float(nll), rel=1e-5)
    assert out["ppl"] == pytest.approx(math.exp(float(nll)), rel=1e-5)
    mask = labels != -100
    hits = logits.argmax(-1) == labels
    assert out["acc"] == pytest.approx(float(hits[mask].float().mean()))
    rows = torch.tensor([2, 2, 4, 4]).repeat(3)
    for kv in (2, 4):
        m = mask & (rows == kv)[:, None]
        assert out[f"acc/num_kv_pairs={kv}"] == pytest.approx(float(hits[m].float().mean()))


def test_loss_falls_on_a_learnable_task():
    """Two pairs over a small vocabulary: recall is learned within a few dozen steps."""
    module = HybridLMModule(TINY, TINY_2 + ["model.vocab_size=64"], optimizer=OptimizerConfig(lr=1e-2),
                            schedule=ScheduleConfig(warmup_steps=5, kind="constant"))
    losses = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer(60, callbacks=[Record()]).fit(module, small_mqar(seed=1))
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10
