"""GPU timing shared by the benchmark scripts: median milliseconds of a call, eager or as a CUDA-graph replay."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from triton.testing import do_bench


def time_ms(fn: Callable[[], object], quick: bool) -> float:
    """Median milliseconds per call (``triton.testing.do_bench``; shorter runs with ``quick``)."""
    return do_bench(fn, warmup=10 if quick else 25, rep=30 if quick else 100, return_mode="median")


def graph_time_ms(fn: Callable[[], object], quick: bool) -> float:
    """Median milliseconds of one CUDA-graph replay of ``fn`` (warmed up eagerly on a side stream first)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return time_ms(graph.replay, quick)


def host_us(fn: Callable[[], object], calls: int = 300, warmup: int = 20) -> float:
    """Wall-clock microseconds per eager call of ``fn`` over ``calls`` calls after ``warmup`` untimed ones,
    synchronized at both ends (host time, when the host is slower than the GPU)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e6
