"""Human-readable sizes and lengths for CLI output and arguments."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable

from mixarch.errors import MixarchError

_SUFFIX = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def parse_length(text: str) -> int:
    """``"4096"``, ``"4K"``, ``"128k"``, ``"1M"`` -> tokens (K = 1024)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)\s*", text)
    if not m or int(m.group(1)) < 1:
        raise MixarchError(f"expected a positive length such as 4096, 4K, 128K or 1M, got {text!r}",
                           key="--seq-len")
    return int(m.group(1)) * _SUFFIX[m.group(2).upper()]


def length_label(n: int) -> str:
    for suffix, size in (("M", 1024**2), ("K", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size}{suffix}"
    return str(n)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"  # pragma: no cover


def human_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def console():
    """A rich console; 140 columns when output is not a terminal (pipes, tests, CI logs)."""
    import sys

    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 140)


def checked(convert: Callable[[str], float], ok: Callable[[float], bool], expected: str) -> Callable[[str], float]:
    """An argparse ``type``: ``convert`` the text, then require ``ok`` (error: "expected {expected}, got ...")."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


positive_int = checked(int, lambda v: v >= 1, "a positive integer")
non_negative_float = checked(float, lambda v: v >= 0, "a number >= 0")
probability = checked(float, lambda v: 0 < v <= 1, "a number in (0, 1]")
port_number = checked(int, lambda v: 1024 <= v <= 65535, "a port from 1024 to 65535")
non_negative_seconds = checked(float, lambda v: 0 <= v < 60, "seconds in [0, 60)")
