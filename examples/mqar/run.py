"""Train the three MQAR models of this folder on CPU, test them, and write the accuracy table and plot.

    python examples/mqar/run.py [--models attention linear hybrid hybrid_sparse hybrid_long] [--jobs N] [--runs runs/mqar]
                                [-- FIT FLAGS...]

Each model: ``mixarch fit -c examples/mqar/NAME.yaml`` then ``mixarch test`` on its last checkpoint (the test
split has other seeds than training and validation). Writes ``RUNS/results.json`` and ``RUNS/table.md`` (the
table of docs/mqar.md) and ``docs/mqar.png`` (needs matplotlib: ``pip install 'mixarch[examples]'``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
LABELS = {"attention": "full attention", "linear": "pure Lightning (linear)", "hybrid": "SALA-style hybrid",
          "hybrid_sparse": "SALA-style hybrid, sparse path forced",
          "hybrid_long": "SALA-style hybrid, 3,600 steps"}


def mixarch(*args: str, threads: int | None = None) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
    subprocess.run([sys.executable, "-m", "mixarch", *args], check=True, cwd=ROOT, env=env)


def last_metrics(csv_path: Path, prefix: str) -> dict[str, float]:
    """The last logged value of every column starting with ``prefix``."""
    out: dict[str, float] = {}
    with csv_path.open() as f:
        for row in csv.DictReader(f):
            out.update({k: float(v) for k, v in row.items() if k.startswith(prefix) and v not in ("", None)})
    return out


def run_model(name: str, runs: Path, extra: list[str], threads: int | None = None) -> dict:
    blueprint = str(HERE / f"{name}.yaml")
    logger = ["--trainer.logger=CSVLogger", f"--trainer.logger.save_dir={runs}", f"--trainer.logger.name={name}"]
    start = time.perf_counter()
    mixarch("fit", "-c", blueprint, *logger, "--trainer.logger.version=fit", *extra, threads=threads)
    seconds = time.perf_counter() - start
    ckpt = runs / name / "fit" / "checkpoints" / "last.ckpt"
    mixarch("test", "-c", blueprint, *logger, "--trainer.logger.version=test", f"--ckpt_path={ckpt}",
            threads=threads)
    test = last_metrics(runs / name / "test" / "metrics.csv", "test/")
    train = last_metrics(runs / name / "fit" / "metrics.csv", "train/")
    by_kv = {int(k.split("=")[1]): v for k, v in test.items() if k.startswith("test/acc/num_kv_pairs=")}
    return {"name": name, "fit_seconds": round(seconds, 1), "threads": threads,
            "final_train_loss": train.get("train/loss"),
            "test_acc": test.get("test/acc"), "test_loss": test.get("test/loss"),
            "acc_by_kv": dict(sorted(by_kv.items())), "export": str(ckpt.with_suffix(""))}


def table(results: list[dict]) -> str:
    kvs = sorted({kv for r in results for kv in r["acc_by_kv"]})
    head = "| model | " + " | ".join(f"{kv} KV pairs" for kv in kvs) + " | all | CPU fit time |"
    rule = "|" + "---|" * (len(kvs) + 3)
    rows = [f"| {LABELS.get(r['name'], r['name'])} | " + " | ".join(f"{r['acc_by_kv'].get(kv, float('nan')):.3f}"
                                                                  for kv in kvs)
            + f" | {r['test_acc']:.3f} | {r['fit_seconds'] / 60:.1f} min |" for r in results]
    return "\n".join([head, rule, *rows]) + "\n"


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for r in results:
        kvs = list(r["acc_by_kv"])
        ax.plot(kvs, [r["acc_by_kv"][k] for k in kvs], marker="o", label=LABELS.get(r["name"], r["name"]))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("number of key-value pairs (64 tokens)")
    ax.set_ylabel("MQAR test accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(LABELS)[:4], choices=list(LABELS))
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "mqar")
    parser.add_argument("--jobs", type=int, default=1, help="models trained at once (one thread each if > 1)")
    parser.add_argument("extra", nargs="*", help="flags for `mixarch fit` (after --)")
    args = parser.parse_args()
    results_path = args.runs / "results.json"
    results = {r["name"]: {**r, "acc_by_kv": {int(k): v for k, v in r["acc_by_kv"].items()}}
               for r in json.loads(results_path.read_text())} if results_path.exists() else {}
    threads = 1 if args.jobs > 1 else None
    with ThreadPoolExecutor(args.jobs) as pool:
        for result in pool.map(lambda n: run_model(n, args.runs.resolve(), args.extra, threads), args.models):
            results[result["name"]] = result
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(list(results.values()), indent=2))
    ordered = [results[n] for n in LABELS if n in results]
    (args.runs / "table.md").write_text(table(ordered))
    print(table(ordered))
    try:
        plot(ordered, ROOT / "docs" / "mqar.png")
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'mixarch[examples]')")


if __name__ == "__main__":
    main()
