"""Shared timing for the benchmarks: interleaved (ABBA) windows, paired ratios, thread limits, load average.

A ratio measured once per mode on a shared machine follows the other jobs' load more than the code. Here:

- threads are limited the same way for every mode: ``BENCH_THREADS`` (default 1) becomes ``OMP_NUM_THREADS`` /
  ``OPENBLAS_NUM_THREADS`` / ``MKL_NUM_THREADS`` when this module is imported (before numpy/torch load), then
  ``torch.set_num_threads`` and Arrow's pool; OpenMP waits passively (``OMP_WAIT_POLICY=PASSIVE``), so a thread
  waiting for a core does not burn CPU seconds;
- every mode runs once untimed first (warm-up: imports, allocations, caches);
- then ``rounds`` rounds of ``A B .. B A`` (each mode twice per round, in mirrored order, so a drift in the load
  hits both sides alike), each window a fixed amount of work;
- each window records wall seconds, the process's CPU seconds and the 1-minute load average at its end;
- the headline is the median over rounds of the paired ratio (baseline over ours, per unit of work), shown with
  its spread (min..max over rounds) and with the min-of-N of each side beside it.

Benches import this as ``from bench import _timing`` and run as ``python -m bench.bench_x`` from the repository
root. A bench ends with a ``goal: ... met`` / ``goal: ... MISSED`` line (``make bench-check`` reads it) and then
``ratio=<baseline over ours> seconds=<ours>``.
"""

from __future__ import annotations

import os

THREADS = int(os.environ.get("BENCH_THREADS", "1"))
# before numpy / torch load their BLAS and OpenMP runtimes (child processes inherit these)
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(THREADS)

import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402


def limit_threads() -> str:
    """Apply ``BENCH_THREADS`` to torch (if imported) and Arrow too; returns a description for the log."""
    import pyarrow

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(THREADS)
    pyarrow.set_cpu_count(THREADS)
    pyarrow.set_io_thread_count(THREADS)
    return f"{THREADS} (BENCH_THREADS; BLAS, OpenMP, torch, Arrow), OMP_WAIT_POLICY=PASSIVE"


def load_average() -> float:
    return os.getloadavg()[0]


@dataclass
class Window:
    mode: str
    round: int
    wall: float
    cpu: float
    load: float
    work: float = 1.0


@dataclass
class Runs:
    """Every timed window, plus the output of the last call of each mode."""

    windows: list[Window] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

    def of(self, mode: str) -> list[Window]:
        return [w for w in self.windows if w.mode == mode]

    def best(self, mode: str, measure: str = "cpu") -> float:
        """Min-of-N seconds per unit of work."""
        return min(getattr(w, measure) / w.work for w in self.of(mode))

    def paired_ratios(self, base: str, ours: str, measure: str = "cpu") -> list[float]:
        """Per round: (base seconds per unit of work) / (ours seconds per unit of work), both windows summed."""
        out = []
        for r in sorted({w.round for w in self.windows}):
            b = [w for w in self.of(base) if w.round == r]
            o = [w for w in self.of(ours) if w.round == r]
            b_rate = sum(getattr(w, measure) for w in b) / sum(w.work for w in b)
            o_rate = sum(getattr(w, measure) for w in o) / sum(w.work for w in o)
            out.append(b_rate / o_rate)
        return out

    def loads(self) -> tuple[float, float]:
        values = [w.load for w in self.windows]
        return min(values), max(values)


def run_abba(
    modes: dict[str, Callable[[], Any]],
    rounds: int = 3,
    work: Callable[[str, Any], float] | None = None,
    same: Callable[[Any, Any], bool] | None = None,
    log: Callable[[str], None] = print,
) -> Runs:
    """Warm up each mode once (untimed), then ``rounds`` rounds of ``A B .. B A``.

    ``modes`` maps a name to a callable doing one window of fixed work and returning its output. ``work(mode,
    output)`` gives the window's amount of work (default 1); ``same(a, b)`` checks a mode's repeated outputs agree
    (default ``==``): a mode whose output changes between windows is an error.
    """
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    same = same or (lambda a, b: a == b)
    runs = Runs()
    names = list(modes)
    for name in names:
        t0, c0 = time.perf_counter(), time.process_time()
        runs.outputs[name] = modes[name]()
        log(f"  warm-up {name:<14} {time.perf_counter() - t0:8.2f} s wall {time.process_time() - c0:8.2f} s CPU")
    for r in range(rounds):
        for name in names + names[::-1]:
            t0, c0 = time.perf_counter(), time.process_time()
            out = modes[name]()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            if not same(out, runs.outputs[name]):
                raise SystemExit(f"error: {name} gave a different output in round {r + 1} than in its warm-up")
            runs.outputs[name] = out
            w = Window(name, r, wall, cpu, load_average(), work(name, out) if work else 1.0)
            runs.windows.append(w)
            log(f"  round {r + 1} {name:<14} {wall:8.2f} s wall {cpu:8.2f} s CPU  load {w.load:5.2f}")
    return runs


def spread(values: Sequence[float]) -> str:
    return f"{min(values):.2f}..{max(values):.2f}"


def summary(runs: Runs, base: str, ours: str, measure: str = "cpu", unit: str = "run") -> tuple[float, float]:
    """Print min-of-N of both sides and the paired ratios; return (median paired ratio, ours min seconds)."""
    ratios = runs.paired_ratios(base, ours, measure)
    other = "wall" if measure == "cpu" else "cpu"
    other_ratios = runs.paired_ratios(base, ours, other)
    lo, hi = runs.loads()
    print(
        f"{ours} vs {base} ({measure} seconds per {unit}, {len(ratios)} rounds, load average {lo:.2f}..{hi:.2f}): "
        f"min-of-N {base} {runs.best(base, measure):.4g}, {ours} {runs.best(ours, measure):.4g}; paired ratio median "
        f"{statistics.median(ratios):.2f} (spread {spread(ratios)}); by {other} seconds: median "
        f"{statistics.median(other_ratios):.2f} (spread {spread(other_ratios)})"
    )
    return statistics.median(ratios), runs.best(ours, measure)


def goal(description: str, value: float, target: float, higher_is_better: bool = True) -> bool:
    """Print the goal line ``make bench-check`` reads; return whether it is met."""
    met = value >= target if higher_is_better else value <= target
    op = ">=" if higher_is_better else "<="
    print(f"goal: {description} {value:.2f} {op} {target:g}: {'met' if met else 'MISSED'}")
    return met
