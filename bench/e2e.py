"""End-to-end long-context benchmark: a SALA-layout hybrid against its all-softmax twin on one GPU.

For each context length: time to first token (chunked prefill of a random prompt through the hybrid cache, plus
the first greedy token) and decode tokens/s (``--decode-steps`` greedy steps after it: one over the median step,
with the slowest step shown too), with ``mixarch.generate.stream`` at batch 1 and random bf16 weights; peak memory
(``torch.cuda.max_memory_allocated``); which kernel backend ran each op. Each timed generation follows an untimed
one at the same context (``--no-warm`` skips it): Triton compiles a kernel once per combination of its ``constexpr``
tile sizes, and some of those follow the context (the sparse top-k's block count rounded to a power of two, which a
context of exactly 128K crosses at its first decoded token; Triton also specializes integer arguments on
divisibility by 16, which a growing length changes every 16 tokens), so a first run at a new length times the
compiler. Then the longest context each model fits, doubling up to ``--max-context``.

Every configuration survives out-of-memory: a prefill that runs out of memory is retried with the next smaller
chunk of the ladder (whole prompt, 32K, 8K, 2K, 512 tokens), then reported as OOM. Configurations predicted
(from the model's previous timings) to exceed the remaining ``--budget`` are skipped and reported so.

    python bench/e2e.py --quick                    # small contexts, a smoke run (~2 min on an H100)
    python bench/e2e.py --out e2e.md               # 8K/32K/128K/256K, fit search to 1M (~8 min on an H100)

Prints a markdown report (and writes it to ``--out``). Needs mixarch importable (pydantic, omegaconf, pluggy,
rich, safetensors, pyyaml); never imports litserve.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mixarch  # noqa: E402
from mixarch.cli.format import human_count, length_label, parse_length  # noqa: E402
from mixarch.generate import stream  # noqa: E402
from mixarch.model.hybrid import build_model  # noqa: E402
from mixarch.plugins import get_host  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from layer_times import breakdown, breakdown_table  # noqa: E402

CHUNK_LADDER = (None, 32768, 8192, 2048, 512)  # None: the whole prompt in one forward
TARGETS = {"prefill": 3.5, "decode": 4.0}  # the targets at 128K (twin time / hybrid time)
TARGET_CONTEXT = 131072


@dataclasses.dataclass
class Result:
    model: str
    context: int
    status: str  # ok, OOM, skipped, error
    chunk: int | None = None
    ttft_s: float = math.nan
    decode_tps: float = math.nan
    slowest_ms: float = math.nan
    peak_gib: float = math.nan
    kernels: str = ""
    note: str = ""


class KernelLog:
    """Wraps every registered kernel backend so the backends that actually run are recorded."""

    def __init__(self):
        self.used: set[str] = set()
        registry = get_host().kernels
        for spec in list(registry):
            registry.add(dataclasses.replace(spec, impl=self._wrap(spec)), override=True)

    def _wrap(self, spec):
        impl, label = spec.impl, f"{spec.op}:{spec.backend}"

        def recorded(*args, **kwargs):
            self.used.add(label)
            return impl(*args, **kwargs)

        return recorded

    def take(self) -> str:
        out, self.used = ", ".join(sorted(self.used)), set()
        return out


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err) \
        or "CUBLAS_STATUS_ALLOC_FAILED" in str(err)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resident_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def measure(model, context: int, chunk: int | None, steps: int, device: torch.device, cuda_graphs: bool = False
            ) -> tuple[float, list[float], float]:
    """(TTFT s, each decode step's seconds, peak GiB) of one greedy generation from a random prompt of ``context``
    tokens; the peak counts this model's weights, cache and activations (not other models on the card)."""
    prompt = torch.randint(model.resolved.model.vocab_size, (context,)).tolist()
    free_memory(device)
    others = torch.cuda.memory_allocated(device) - resident_bytes(model) if device.type == "cuda" else 0
    sync(device)
    it = stream(model, [prompt], max_new_tokens=steps + 1, prefill_chunk=chunk, cuda_graphs=cuda_graphs)
    try:
        start = time.perf_counter()
        next(it)  # prefill + first token (stream syncs: it reads the token on the host)
        ttft = time.perf_counter() - start
        step_s = []
        for _ in range(steps):
            start = time.perf_counter()
            next(it)
            step_s.append(time.perf_counter() - start)
    finally:
        it.close()
    peak = (torch.cuda.max_memory_allocated(device) - others) / 2**30 if device.type == "cuda" else math.nan
    return ttft, step_s, peak


class Runner:
    """Runs configurations within a time budget, remembering per model the chunk ladder position and timings."""

    def __init__(self, device: torch.device, steps: int, budget_s: float, chunk: int | None, kernels: KernelLog):
        self.device, self.steps, self.kernels = device, steps, kernels
        self.warm = False  # run an untimed generation (same decode steps) before each timed one
        self.cuda_graphs = False  # decode with the fixed-shape parts of each step replayed as CUDA graphs
        self.deadline = time.monotonic() + budget_s
        self.ladder = (chunk,) if chunk else CHUNK_LADDER
        self.rung: dict[str, int] = {}
        self.timings: dict[str, list[tuple[int, float, float]]] = {}  # (context, TTFT s, decode s)

    def predicted_s(self, name: str, context: int) -> float:
        """Time of a run at ``context``: TTFT extrapolated with an exponent (between 1 and 2; 2 from a single run)
        fitted to the model's last two runs, plus its last decode time scaled linearly; 20% margin."""
        seen = self.timings.get(name, [])
        if not seen:
            return 0.0
        c2, t2, d2 = seen[-1]
        c1, t1, _ = seen[-2] if len(seen) > 1 else (c2 / 2, t2 / 4, 0.0)
        exponent = min(2.0, max(1.0, math.log(max(t2, 1e-6) / max(t1, 1e-6)) / math.log(c2 / c1)))
        once = t2 * (context / c2) ** exponent + d2 * context / c2
        return 1.2 * once * (2 if self.warm else 1)

    def run(self, name: str, model, context: int) -> Result:
        remaining = self.deadline - time.monotonic()
        predicted = self.predicted_s(name, context)
        if predicted > remaining:
            return Result(name, context, "skipped", note=f"predicted {predicted:.1f} s > {max(remaining, 0):.1f} s "
                                                         f"left of the budget")
        for rung in range(self.rung.get(name, 0), len(self.ladder)):
            chunk = self.ladder[rung]
            if chunk is not None and chunk >= context and rung + 1 < len(self.ladder):
                continue  # no smaller than the whole prompt, which failed or is skipped by the ladder
            try:
                if self.warm:  # as many steps: kernels specialize on divisibility of lengths that grow
                    measure(model, context, chunk, self.steps, self.device, self.cuda_graphs)
                    free_memory(self.device)
                ttft, step_s, peak = measure(model, context, chunk, self.steps, self.device, self.cuda_graphs)
            except Exception as err:  # one configuration failing must not end the benchmark
                oom, message = is_oom(err), f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
            else:
                self.rung[name] = rung
                self.timings.setdefault(name, []).append((context, ttft, sum(step_s)))
                median = statistics.median(step_s) if step_s else math.nan
                return Result(name, context, "ok", chunk, ttft, 1 / median, max(step_s, default=math.nan) * 1e3,
                              peak, self.kernels.take())
            free_memory(self.device)
            if not oom:
                return Result(name, context, "error", chunk, kernels=self.kernels.take(), note=message)
        self.rung[name] = len(self.ladder) - 1
        return Result(name, context, "OOM", self.ladder[-1], kernels=self.kernels.take(),
                      note=f"out of memory with every prefill chunk down to {self.ladder[-1] or 'the whole prompt'}")


def progress(r: Result) -> None:
    print(f"{r.model} {length_label(r.context)}: {r.status} chunk={chunk_label(r.chunk)} ttft={fmt(r.ttft_s)} s "
          f"decode={fmt(r.decode_tps, 1)} tok/s (slowest step {fmt(r.slowest_ms, 1)} ms) peak={fmt(r.peak_gib)} GiB {r.note}", file=sys.stderr, flush=True)


def versions(device: torch.device) -> str:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "absent"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
        commit += " + uncommitted changes" if dirty.strip() else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    card = "CPU"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        card = f"{props.name} ({props.total_memory / 2**30:.1f} GiB)"
    return (f"{datetime.date.today().isoformat()}; card {card}; torch {torch.__version__} (CUDA {torch.version.cuda}); "
            f"triton {triton_version}; mixarch {mixarch.__version__} (git {commit})")


def fmt(x: float, digits: int = 2) -> str:
    return "-" if math.isnan(x) else f"{x:.{digits}f}"


def chunk_label(chunk: int | None) -> str:
    return "whole" if chunk is None else length_label(chunk)


def report(header: str, names: tuple[str, str], params: dict[str, int], dtype: torch.dtype, results: list[Result],
           fits: dict[str, list[Result]], args) -> str:
    hybrid, twin = names
    lines = [f"Run: {header}.", "",
             f"Models: `{hybrid}` ({human_count(params[hybrid])} parameters) and its all-softmax twin `{twin}` "
             f"({human_count(params[twin])}), random weights, {str(dtype).removeprefix('torch.')}, batch 1, greedy; "
             f"TTFT = prefill (chunk shown) + first token; decode = {args.decode_steps} steps after it (tok/s: one "
             f"over the median step); "
             + ("each after an untimed generation at the same context." if args.warm else "no untimed run first.")
             + (" Decode steps replay their fixed-shape parts as CUDA graphs (mixarch.generate.graphs)."
                if args.cuda_graphs and args.device != "cpu" else " Decode steps run eagerly.")
             + " The fit search below times first runs.", "",
             "| context | model | prefill chunk | TTFT (s) | prefill tok/s | decode tok/s | slowest step (ms) | "
             "peak memory (GiB) | kernels |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r.status == "ok":
            lines.append(f"| {length_label(r.context)} | {r.model} | {chunk_label(r.chunk)} | {fmt(r.ttft_s)} | "
                         f"{r.context / r.ttft_s:,.0f} | {fmt(r.decode_tps, 1)} | {fmt(r.slowest_ms, 1)} | "
                         f"{fmt(r.peak_gib)} | {r.kernels} |")
        else:
            lines.append(f"| {length_label(r.context)} | {r.model} | - | {r.status} | - | - | - | - | {r.note} |")
    lines += ["", "| context | prefill speedup (twin TTFT / hybrid TTFT) | decode speedup (hybrid / twin tok/s) |",
              "|---|---|---|"]
    by_key = {(r.model, r.context): r for r in results}
    for context in args.contexts:
        h, t = by_key.get((hybrid, context)), by_key.get((twin, context))
        if h and t and h.status == t.status == "ok":
            lines.append(f"| {length_label(context)} | {t.ttft_s / h.ttft_s:.2f}x | {h.decode_tps / t.decode_tps:.2f}x |")
        else:
            lines.append(f"| {length_label(context)} | {h.status if h else '-'} / {t.status if t else '-'} | |")
    lines += ["", "Longest context that fits (prefill + decode):", ""]
    for name in names:
        ok = [r.context for r in fits[name] if r.status == "ok"]
        stop = next((r for r in fits[name] if r.status != "ok"), None)
        tail = f"; {length_label(stop.context)}: {stop.status} ({stop.note})" if stop else ""
        lines.append(f"- `{name}`: {length_label(max(ok)) if ok else 'none'}{tail}")
    return "\n".join(lines) + "\n"


def breakdowns(models: dict, results: list[Result], args, device: torch.device) -> list[str]:
    """Markdown table of where each model's time goes (``bench/layer_times.py``) at its longest measured context
    up to 128K, with the prefill chunk it used there."""
    lines = ["Time by part (hooks on every mixer and FFN; `rest` = embedding, norms, head, sampling and Python):", "",
             "| model | context | part | prefill (ms) | share | decode (ms/step) | share |", "|---|---|---|---|---|---|---|"]
    for name, model in models.items():
        ok = [r for r in results if r.model == name and r.status == "ok" and r.context <= TARGET_CONTEXT]
        if not ok:
            continue
        last = max(ok, key=lambda r: r.context)
        try:
            rows = breakdown(model, last.context, last.chunk, min(8, args.decode_steps), device)
        except Exception as err:  # a diagnostic must not end the benchmark
            lines.append(f"| {name} | {length_label(last.context)} | failed: {type(err).__name__} | | | | |")
            continue
        finally:
            free_memory(device)
        lines += breakdown_table(name, length_label(last.context), rows)
    return lines


def warmup_contexts(model, contexts: list[int]) -> list[int]:
    """Contexts that compile every code path a model takes before anything is timed: the shortest, and for
    models with a dense/sparse switch (``dense_len``) the shortest beyond it (the sparse kernels, prefill and
    decode, compile there)."""
    dense = [layer.mixer.params["dense_len"] for layer in model.resolved.layers if "dense_len" in layer.mixer.params]
    out = [min(contexts)]
    beyond = [c for c in contexts if dense and c > max(dense)]
    if beyond and min(beyond) not in out:
        out.append(min(beyond))
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small contexts (1K, 4K, 16K; fit search to 64K)")
    p.add_argument("--out", type=Path, help="also write the markdown report here")
    p.add_argument("--hybrid", default=str(ROOT / "blueprints/sala-1b.yaml"), help="hybrid blueprint")
    p.add_argument("--twin", default=str(ROOT / "blueprints/sala-1b-softmax.yaml"), help="all-softmax blueprint")
    p.add_argument("--contexts", help="comma-separated context lengths (default 8K,32K,128K,256K)")
    p.add_argument("--max-context", help="largest context of the fit search (default 1M)")
    p.add_argument("--decode-steps", type=int, help="decode steps timed per context (default 32)")
    p.add_argument("--prefill-chunk", type=int, help="fixed prefill chunk (default: the ladder)")
    p.add_argument("--budget", type=float, default=400, help="seconds for all measurements (default 400)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu for a smoke run of the script")
    p.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=True,
                   help="decode with the fixed-shape parts of each step replayed as CUDA graphs, as generate() does "
                        "by default on CUDA (both models; default); --no-cuda-graphs decodes eagerly")
    p.add_argument("--no-warm", dest="warm", action="store_false",
                   help="time first runs (no untimed generation before each timed one)")
    p.add_argument("--breakdown", action="store_true",
                   help="also time each mixer kind and the FFNs at each model's longest context up to 128K")
    args = p.parse_args(argv)
    quick = args.quick
    args.contexts = [parse_length(c) for c in (args.contexts or ("1K,4K,16K" if quick else "8K,32K,128K,256K")).split(",")]
    args.max_context = parse_length(args.max_context or ("64K" if quick else "1M"))
    args.decode_steps = args.decode_steps or (8 if quick else 32)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench/e2e.py: no CUDA device (use --device cpu only for a smoke run)", file=sys.stderr)
        return 2
    kernels = KernelLog()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    models = {}
    for path in (args.hybrid, args.twin):
        resolved = mixarch.resolve(path)
        models[resolved.name] = build_model(resolved, device=device, dtype=dtype).eval()
    names = tuple(models)
    params = {n: m.num_parameters() for n, m in models.items()}
    runner = Runner(device, args.decode_steps, args.budget, args.prefill_chunk, kernels)
    runner.cuda_graphs = args.cuda_graphs
    for name, model in models.items():  # warm-up (CUDA context, cuBLAS, Triton compilation), not reported
        for context in warmup_contexts(model, args.contexts):
            runner.run(name, model, context)
        runner.timings.clear()
        runner.rung.clear()
    results = []
    runner.warm = args.warm
    for context in args.contexts:
        for name, model in models.items():
            results.append(runner.run(name, model, context))
            progress(results[-1])
    parts = breakdowns(models, results, args, device) if args.breakdown else []
    fits = {}
    runner.warm = False  # the fit search is about memory: first runs
    for name, model in models.items():
        for other, m in models.items():  # the card to itself: the other model waits on the CPU
            m.to(device if other == name else "cpu")
        tried = [r for r in results if r.model == name]
        fits[name] = list(tried)
        context = max(args.contexts) * 2
        if any(r.status != "ok" for r in tried):
            continue
        while context <= args.max_context:
            result = runner.run(name, model, context)
            fits[name].append(result)
            progress(result)
            if result.status != "ok":
                break
            context *= 2
    text = report(versions(device), names, params, dtype, results, fits, args)
    if parts:
        text += "\n" + "\n".join(parts) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
