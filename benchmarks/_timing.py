"""Shared helpers for the nnxlib benchmarks: implementation loading, timing, tables.

Not a public module; the scripts in this folder import it by name.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Environment variable that makes the "nnxlib" column run on another package
# (only "flax" is supported: flax.nnx) while nnxlib itself is not usable yet.
STANDIN_ENV = "NNXLIB_BENCH_STANDIN"
REPO_ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- impls


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Adds the flags both benchmark scripts share."""
    parser.add_argument(
        "--impl",
        choices=("nnxlib", "flax"),
        default=os.environ.get(STANDIN_ENV) or "nnxlib",
        help=(
            "package behind the 'nnxlib' column: 'nnxlib' (default) or 'flax' "
            f"(flax.nnx as a stand-in; also selected by {STANDIN_ENV}=flax)"
        ),
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer and shorter repeats (rough numbers)"
    )
    parser.add_argument(
        "--depths",
        type=lambda s: [int(d) for d in s.split(",") if d],
        default=[4, 16, 64],
        help="comma-separated model depths (default: 4,16,64)",
    )
    parser.add_argument(
        "--stat",
        choices=("min", "median"),
        default="min",
        help="statistic over the repeats that the tables report (default: min)",
    )


def load_nnx(impl: str, required: tuple[str, ...] = ()):
    """Returns the module that plays the "nnxlib" column.

    ``impl == "nnxlib"`` imports ``nnxlib`` (adding the repository root to
    ``sys.path`` when nnxlib is not installed); ``impl == "flax"`` returns
    ``flax.nnx`` as a stand-in. Exits with a message if the module lacks any of
    the ``required`` public names.
    """
    module = _import_nnx(impl)
    missing = [name for name in required if not hasattr(module, name)]
    if missing:
        raise SystemExit(
            f"error: {module.__name__} has no {', '.join(missing)} (needed by this "
            f"benchmark); use --impl flax or {STANDIN_ENV}=flax to run the nnxlib "
            "column on flax.nnx instead"
        )
    return module


def _import_nnx(impl: str):
    if impl == "flax":
        return importlib.import_module("flax.nnx")
    if impl != "nnxlib":
        raise ValueError(f"unknown implementation {impl!r}; expected 'nnxlib' or 'flax'")
    try:
        try:
            return importlib.import_module("nnxlib")
        except ModuleNotFoundError as exc:
            if exc.name != "nnxlib" or str(REPO_ROOT) in sys.path:
                raise
        sys.path.insert(0, str(REPO_ROOT))
        return importlib.import_module("nnxlib")
    except Exception:
        print(
            f"error: importing nnxlib failed (traceback below); use --impl flax or "
            f"{STANDIN_ENV}=flax to run the nnxlib column on flax.nnx instead",
            file=sys.stderr,
        )
        raise


def impl_label(impl: str) -> str:
    """Column label of the nnxlib column ("nnxlib*" marks the flax stand-in)."""
    return "nnxlib" if impl == "nnxlib" else "nnxlib*"


def impl_note(impl: str) -> str | None:
    if impl == "nnxlib":
        return None
    return (
        f"NOTE: nnxlib* = flax.nnx stand-in (--impl {impl} / {STANDIN_ENV}); "
        "nnxlib itself was not measured."
    )


# -------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timing:
    """Per-call times in microseconds over ``repeat`` repeats of ``number`` calls."""

    min_us: float
    median_us: float
    number: int
    repeat: int

    def get(self, stat: str) -> float:
        return self.min_us if stat == "min" else self.median_us


@dataclass(frozen=True)
class TimingConfig:
    """How long to measure: each repeat runs for at least ``min_time`` seconds."""

    repeat: int = 11
    min_time: float = 0.1
    warmup: int = 3

    @classmethod
    def for_args(cls, quick: bool) -> TimingConfig:
        return cls(repeat=3, min_time=0.02, warmup=2) if quick else cls()


def time_call(fn: Callable[[], object], config: TimingConfig) -> Timing:
    """Times ``fn()`` alone; see :func:`time_interleaved`."""
    return time_interleaved({"fn": fn}, config)["fn"]


def time_interleaved(
    fns: dict[str, Callable[[], object]], config: TimingConfig
) -> dict[str, Timing]:
    """Times each ``fn()`` with :mod:`timeit` (garbage collection off while timing).

    The number of calls per repeat is chosen per function like ``timeit``'s autorange,
    so that a repeat lasts at least ``config.min_time`` seconds. The repeats of the
    functions take turns (a, b, c, a, b, c, ...): on a shared 2-core machine the speed
    of XLA's CPU runtime drifts over seconds, and interleaving spreads that drift over
    all the functions compared instead of penalising whichever ran in a slow phase.
    """
    timers, numbers = {}, {}
    for name, fn in fns.items():
        for _ in range(config.warmup):
            fn()
        timer = timeit.Timer(fn, timer=time.perf_counter)
        number = 1
        while True:
            elapsed = timer.timeit(number)
            if elapsed >= config.min_time:
                break
            # Grow towards the target in one or two more steps.
            if elapsed <= 0:
                number *= 10
            else:
                number = max(number + 1, int(number * 1.2 * config.min_time / elapsed))
        timers[name], numbers[name] = timer, number
    gc.collect()
    per_call: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(config.repeat):
        for name, timer in timers.items():
            per_call[name].append(timer.timeit(numbers[name]) / numbers[name] * 1e6)
    return {
        name: Timing(
            min_us=min(times),
            median_us=statistics.median(times),
            number=numbers[name],
            repeat=config.repeat,
        )
        for name, times in per_call.items()
    }


# -------------------------------------------------------------------------- tables


def fmt_us(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x" if value < 100 else f"{value:,.0f}x"


def verdict(value: float, target: float, *, at_most: bool) -> str:
    ok = value <= target if at_most else value >= target
    return "PASS" if ok else "MISS"


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """Prints a plain-text table; the first column is left-aligned, the rest right."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=False)]

    def line(cells: list[str]) -> str:
        out = [cells[0].ljust(widths[0])]
        out += [cell.rjust(w) for cell, w in zip(cells[1:], widths[1:], strict=False)]
        return "  ".join(out).rstrip()

    print()
    print(title)
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def print_targets(title: str, checks: list[tuple[str, float, float, bool]]) -> int:
    """Prints ``(name, value, target, at_most)`` checks; returns the number missed."""
    rows = []
    missed = 0
    for name, value, target, at_most in checks:
        result = verdict(value, target, at_most=at_most)
        missed += result == "MISS"
        bound = ("<= " if at_most else ">= ") + fmt_ratio(target)
        rows.append([name, fmt_ratio(value), bound, result])
    print_table(title, ["ratio", "value", "target", "result"], rows)
    return missed


def print_environment(config: TimingConfig, stat: str, impl: str) -> None:
    import jax

    devices = ", ".join(sorted({d.platform for d in jax.devices()}))
    print(
        f"python {sys.version.split()[0]}, jax {jax.__version__} ({devices}), "
        f"{os.cpu_count()} CPUs; {stat} of {config.repeat} repeats, "
        f">= {config.min_time}s each; times in microseconds per call"
    )
    note = impl_note(impl)
    if note:
        print(note)
