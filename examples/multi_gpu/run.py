"""Single GPU vs DDP vs FSDP on one host: same model, data, seed and global batch; prints loss and tokens/s.

    python examples/multi_gpu/run.py [--gpus 2] [--steps 300] [--out DIR]

Each configuration runs in its own process (Lightning's DDP launcher re-runs this script per rank). The
global batch is split across ranks; EpochSampler hands rank r the r-th of every ``world_size`` indices of
the same seeded permutation, so the union of the ranks' batches at a step is the single-GPU batch. Logged
loss: the mean over ranks of each rank's loss. Throughput: tokens of all ranks / wall time, after warmup.
At the end each run saves one exporting checkpoint and the export is loaded back with ``mixarch.load``.
Needs only torch, lightning, torchmetrics and mixarch's core dependencies (no jsonargparse).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# a ~60M-parameter softmax model: wide enough that a step is not dominated by launch overhead
DEFAULT_OVERRIDES = ["model.d_model=1024", "model.n_layers=8", "model.vocab_size=8192",
                     "layout.params.pattern=(LA)*4", "ffn.params.hidden_size=2816",
                     "roles.attention.mixer.params.n_heads=8", "roles.attention.mixer.params.n_kv_heads=4",
                     "roles.local.mixer.params.n_heads=8", "roles.local.mixer.params.n_kv_heads=4",
                     "roles.local.mixer.params.window=128"]


def run_one(args) -> None:
    """One configuration (called once per rank by Lightning's launcher); rank zero writes the JSON result."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.strategies import FSDPStrategy

    import mixarch
    from mixarch.data.mqar import MQARDataModule
    from mixarch.model.hybrid import Block
    from mixarch.train.export import ExportCheckpoint
    from mixarch.train.module import HybridLMModule
    from mixarch.train.schema import OptimizerConfig, ScheduleConfig

    devices = 1 if args.one == "single" else args.gpus
    strategy = {"single": "auto", "ddp": "ddp",
                "fsdp": FSDPStrategy(auto_wrap_policy={Block}, state_dict_type="full")}[args.one]
    pl.seed_everything(0, workers=True)
    module = HybridLMModule(args.blueprint, args.set, optimizer=OptimizerConfig(lr=args.lr),
                            schedule=ScheduleConfig(warmup_steps=args.steps // 10))
    kvs = [args.seq_len // d for d in (32, 16, 8, 4)]
    per_split = args.steps * args.batch // len(kvs) + args.batch  # one epoch in all
    data = MQARDataModule([{"seq_len": args.seq_len, "num_kv_pairs": n, "num_examples": per_split}
                           for n in kvs], [{"seq_len": args.seq_len, "num_kv_pairs": n, "num_examples": 64}
                                            for n in kvs], batch_size=args.batch // devices)

    class Measure(pl.Callback):
        def __init__(self):
            self.losses, self.start = [], None

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            loss = trainer.strategy.reduce(outputs["loss"].detach(), reduce_op="mean")
            self.losses.append(float(loss))
            if trainer.global_step in (args.warmup, args.steps) and torch.cuda.is_available():
                torch.cuda.synchronize()
            if trainer.global_step == args.warmup:
                self.start = time.perf_counter()
            if trainer.global_step == args.steps:
                self.seconds = time.perf_counter() - self.start

    measure = Measure()
    ckpt_dir = Path(args.out) / f"ckpt-{args.one}"
    checkpoint = ExportCheckpoint(dirpath=ckpt_dir, every_n_train_steps=args.steps, save_last=False)
    gpu = args.accelerator == "gpu"
    trainer = pl.Trainer(accelerator=args.accelerator, devices=devices, strategy=strategy,
                         precision="bf16-mixed" if gpu else "32-true",
                         max_steps=args.steps, limit_val_batches=0, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, gradient_clip_val=1.0, callbacks=[measure, checkpoint])
    trainer.fit(module, data)
    if trainer.is_global_zero:
        export = next(p for p in ckpt_dir.iterdir() if p.is_dir())
        loaded = mixarch.load(export)  # the export of a (possibly sharded) run loads as a plain HybridLM
        tokens = args.batch * args.seq_len * (args.steps - args.warmup)
        result = {"config": args.one, "devices": devices, "params": loaded.num_parameters(),
                  "losses": measure.losses, "tokens_per_s": tokens / measure.seconds,
                  "peak_mem_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if gpu else 0.0}
        (Path(args.out) / f"{args.one}.json").write_text(json.dumps(result))


def table(results: list[dict], window: int) -> str:
    base = results[0]
    lines = [f"| run | devices | loss (mean of last {window} steps) | max abs loss diff vs single | tokens/s | "
             "speedup | peak mem GiB |", "|---|---|---|---|---|---|---|"]
    for r in results:
        tail = sum(r["losses"][-window:]) / window
        diff = max(abs(a - b) for a, b in zip(r["losses"], base["losses"]))
        lines.append(f"| {r['config']} | {r['devices']} | {tail:.4f} | {diff:.4f} | {r['tokens_per_s']:,.0f} | "
                     f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x | {r['peak_mem_gib']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=2, help="devices for ddp and fsdp")
    parser.add_argument("--accelerator", default="gpu", help="gpu; or cpu for a dry run of single and ddp")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50, help="steps excluded from the throughput")
    parser.add_argument("--batch", type=int, default=64, help="global batch (sequences)")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--blueprint", default=str(ROOT / "blueprints" / "tiny.yaml"))
    parser.add_argument("--set", action="append", default=None, help="blueprint override (repeatable)")
    parser.add_argument("--configs", nargs="+", default=["single", "ddp", "fsdp"])
    parser.add_argument("--out", default=os.environ.get("OUT") or tempfile.mkdtemp(prefix="mixarch-multigpu-"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.set = DEFAULT_OVERRIDES if args.set is None else args.set
    if args.one:
        return run_one(args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    results = []
    for config in args.configs:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--one", config, "--out", args.out]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT)
        path = Path(args.out) / f"{config}.json"
        if proc.returncode != 0 or not path.exists():
            print(f"{config}: failed (exit {proc.returncode})", flush=True)
            continue
        results.append(json.loads(path.read_text()))
        print(f"{config}: done in {time.perf_counter() - start:.0f} s", flush=True)
    if results:
        report = (f"{results[0]['params'] / 1e6:.1f}M parameters, global batch {args.batch} x {args.seq_len} tokens, "
                  f"{args.steps} steps, {'bf16-mixed' if args.accelerator == 'gpu' else '32-true'}\n\n" + table(results, window=20))
        print(report)
        (Path(args.out) / "table.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
