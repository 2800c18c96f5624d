"""Wall time of ``mixarch build BLUEPRINT`` as a user runs it (a fresh process each time), median of N runs.

    python bench/build_time.py [blueprints/transformer.yaml ...] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("blueprints", nargs="*", default=["blueprints/transformer.yaml", "blueprints/sala.yaml"])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
          f"python {platform.python_version()}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    print("| blueprint | median s | min s |\n|---|---|---|")
    for bp in args.blueprints:
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "mixarch", "build", bp], check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        print(f"| `{bp}` | {statistics.median(times):.2f} | {min(times):.2f} |")


if __name__ == "__main__":
    main()
