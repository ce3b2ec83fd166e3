"""``make bench-check``: every benchmark once, at small sizes, with a bounded CPU hog beside it; fails on a goal
missed.

The benchmarks' own regression test: their ratios must hold on a shared machine, so each runs here while a
busy-loop process keeps one core loaded (it stops itself after ``--hog-seconds``, and is stopped when the check
ends). Each bench prints ``goal: ... met`` or ``goal: ... MISSED`` lines; a bench that fails, prints no goal line
or misses a goal fails the check. The summary at the end shows each bench's ``ratio=... seconds=...`` line.
``bench_sft_gpu.py`` is not run here: it measures a GPU (``make bench-sft-gpu``).

    python -m bench.check                 # about 22 minutes on 2 cores (generate: 15)
    python -m bench.check --no-hog        # quiet-machine figures
    python -m bench.check --only select,metrics
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

# name -> module arguments (small sizes: the whole check stays near 22 minutes on 2 cores, generate 15 of them)
BENCHES = {
    "select": ["bench.bench_select", "--n", "200000"],
    "metrics": ["bench.bench_metrics", "--n", "2000"],
    "kcenter": ["bench.bench_kcenter", "--n", "8000", "--big", "0", "--baselines", "nxn,matvec"],
    "kcenter-paper": ["bench.bench_kcenter", "--n", "2000", "--big", "0", "--baselines", "paper", "--goal", "10"],
    "generate": ["bench.bench_generate", "--n", "32"],  # one batch at the stage's defaults: 32 rows, 64 new tokens
    "sft": ["bench.bench_sft_packing", "--steps", "1", "--batch-size", "4"],
}
HOG = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"
# found anywhere in a line: a bench may print them or log them (a logger prefixes "[stage] INFO ")
GOAL = re.compile(r"goal: .*: (met|MISSED)$")
RATIO = re.compile(r"ratio=\S+ seconds=\S+.*$")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated, from {list(BENCHES)}")
    p.add_argument("--hog-seconds", type=int, default=1800, help="the hog stops itself after this long")
    p.add_argument("--no-hog", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="BENCH_THREADS for every bench (both sides alike)")
    args = p.parse_args()

    hog = None
    if not args.no_hog:
        hog = subprocess.Popen([sys.executable, "-c", HOG.format(seconds=args.hog_seconds)])
        print(f"CPU hog pid {hog.pid} (stops itself after {args.hog_seconds} s)", flush=True)
    results: list[tuple[str, str, str]] = []
    try:
        for name in args.only.split(","):
            cmd = [sys.executable, "-m", *BENCHES[name]]
            print(f"== {name}: {' '.join(cmd[1:])}  (load average {os.getloadavg()[0]:.2f})", flush=True)
            start = time.perf_counter()
            env = {**os.environ, "BENCH_THREADS": str(args.threads)}
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            goals, ratio = [], "no ratio line"
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                line = line.strip()
                if found := GOAL.search(line):
                    goals.append(found.group(0))
                elif found := RATIO.search(line):
                    ratio = found.group(0)
            rc = proc.wait()
            status = "FAILED" if rc != 0 or not goals or any(g.endswith("MISSED") for g in goals) else "ok"
            shown = "; ".join(goals) or "no goal line"
            results.append((name, status, f"{ratio}  [{shown}] ({time.perf_counter() - start:.0f} s, exit {rc})"))
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    hogged = "" if args.no_hog else ", a CPU hog beside each bench"
    print(f"== bench-check summary (BENCH_THREADS={args.threads}{hogged})")
    for name, status, line in results:
        print(f"{status:>6} {name:<14} {line}")
    if any(status != "ok" for _, status, _ in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
