"""k-center greedy: ours (O(N) memory, pool + blocked BLAS-3) vs the strongest plain ways, same threads, same picks.

Baselines (all follow the same rule as ours: seeded first center kept, farthest row next, lowest index on ties;
all float64 so their picks must equal ours):

- ``paper``: the Synth-Empathy code (``kcentergreedy.py``, class ``KCenterGreedy``): per pick, torch
  ``F.pairwise_distance`` of every row to the new center, ``torch.minimum``, ``torch.argmax``. Two changes, both
  needed for identical picks: ``eps=0`` (the paper's default ``eps=1e-6`` shifts distances by ~1e-6, enough to flip
  near-ties) and its random first row is kept as the first pick (the paper draws it and does not keep it).
- ``nxn``: the full N x N squared-distance matrix by one BLAS-3 product, then per pick one row minimum (O(N^2)
  memory: 3.2 GB in float64 at 20,000 rows, 320 GB at 200,000).
- ``matvec``: O(N) memory, per pick one matrix-vector product ``X @ c`` (``|x|^2 - 2 x.c + |c|^2``).

All on the same threads (``BENCH_THREADS``, default 1), interleaved (A B C D D C B A per round, ``--rounds``
rounds) after an untimed warm-up; the headline is CPU seconds. Each way's peak memory is measured apart, in a fresh
process (peak RSS minus the RSS just before the call, data already in memory). The ratio is against the best baseline (lowest min-of-N), median of the paired rounds.

Data: unit-norm 384-d vectors drawn around 300 random directions (sentence embeddings are clustered and normalised
like this), or your own ``--embeddings file.npy``. Then ours alone on ``--big`` rows (goal: <= 10 min on 2 cores).

    python -m bench.bench_kcenter                            # 8,000 x 384 side by side, then 200,000 x 384 ours alone
    python -m bench.bench_kcenter --n 4000 --big 0           # quick

Last line: ``ratio=<best baseline CPU seconds / ours> seconds=<ours, min-of-N CPU seconds, at --n> baseline=<name>
peak_mb=<ours>/<that baseline's>``.
"""

from __future__ import annotations

from bench import _timing  # first: sets the thread count and OpenMP wait policy before numpy loads

# isort: split

import argparse
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

from empathy_recipes.kcenter import k_center_greedy, n_to_keep


def clustered_unit_vectors(n: int, dim: int, n_clusters: int = 300, spread: float = 0.7, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, dim)).astype(np.float32)
    x = centers[rng.integers(n_clusters, size=n)]
    x += rng.normal(scale=spread, size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def paper_k_center(x: np.ndarray, n_select: int, seed: int) -> np.ndarray:
    """Synth-Empathy's KCenterGreedy.select_coreset_idxs (torch, per-pick pairwise distances), float64, eps=0."""
    import torch
    import torch.nn.functional as F

    features = torch.from_numpy(np.asarray(x, dtype=np.float64))
    idx = int(np.random.default_rng(seed).integers(len(x)))
    picks = [idx]
    min_distances = None
    for _ in range(n_select - 1):
        distance = F.pairwise_distance(features, features[[idx]], p=2, eps=0.0).reshape(-1, 1)
        min_distances = distance if min_distances is None else torch.minimum(min_distances, distance)
        min_distances[idx] = 0  # the paper zeroes a pick's distance (here after the update that includes it)
        idx = int(torch.argmax(min_distances).item())
        min_distances[idx] = 0
        picks.append(idx)
    return np.asarray(picks, dtype=np.int64)


def nxn_k_center(x: np.ndarray, n_select: int, seed: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    sq = np.einsum("ij,ij->i", x, x)
    d = x @ x.T
    d *= -2.0
    d += sq[:, None]
    d += sq[None, :]
    first = int(np.random.default_rng(seed).integers(len(x)))
    order = [first]
    min_sq = d[first].copy()
    min_sq[first] = -1.0
    for _ in range(n_select - 1):
        i = int(np.argmax(min_sq))
        order.append(i)
        np.minimum(min_sq, d[i], out=min_sq)
        min_sq[i] = -1.0  # picked rows stay at -1: the minimum with a distance keeps them there
    return np.asarray(order, dtype=np.int64)


def matvec_k_center(x: np.ndarray, n_select: int, seed: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    sq = np.einsum("ij,ij->i", x, x)
    first = int(np.random.default_rng(seed).integers(len(x)))
    order = [first]
    min_sq = sq - 2.0 * (x @ x[first]) + sq[first]
    min_sq[first] = -1.0
    for _ in range(n_select - 1):
        i = int(np.argmax(min_sq))
        order.append(i)
        d = x @ x[i]
        d *= -2.0
        d += sq
        d += sq[i]
        np.minimum(min_sq, d, out=min_sq)
        min_sq[i] = -1.0
    return np.asarray(order, dtype=np.int64)


def _rss_mb() -> float:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb_in_child(name: str) -> float:
    """Peak memory of one way, measured in a fresh process with the same arguments."""
    argv = [a for a in sys.argv[1:]] + ["--memory-of", name, "--big", "0"]
    out = subprocess.run([sys.executable, "-m", "bench.bench_kcenter", *argv], capture_output=True, text=True)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("PEAK_MB ")), None)
    if out.returncode != 0 or line is None:
        raise SystemExit(f"error: measuring the memory of {name} failed: {out.stderr[-2000:]}")
    return float(line.split()[1])


BASELINES = {"paper": paper_k_center, "nxn": nxn_k_center, "matvec": matvec_k_center}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=8_000, help="rows for the side-by-side run (N x N: 0.5 GB at 8,000)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--ratio", type=float, default=0.9, help="share of rows to keep (paper: 0.9)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (after one untimed warm-up)")
    parser.add_argument("--baselines", default=",".join(BASELINES), help=f"comma-separated, from {list(BASELINES)}")
    parser.add_argument("--big", type=int, default=200_000, help="rows for ours alone (0: skip)")
    parser.add_argument("--embeddings", help="a .npy (N, d) array to use instead of the synthetic vectors")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--goal", type=float, default=1.5, help="ratio goal against the best baseline")
    parser.add_argument(
        "--dtype", choices=("float64", "float32"), default="float64", help="ours (float32: faster, picks may differ)"
    )
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)  # child process: peak memory of one way
    args = parser.parse_args()

    import torch  # noqa: F401 - loaded before the clocks start (the paper's way uses it)

    print(f"threads: {_timing.limit_threads()}")
    x = np.load(args.embeddings).astype(np.float32) if args.embeddings else clustered_unit_vectors(args.n, args.dim)
    k = n_to_keep(len(x), args.ratio)
    print(f"side by side: {x.shape[0]} x {x.shape[1]}, keep {k} (ratio {args.ratio}), float64", flush=True)

    dtype = np.dtype(args.dtype).type
    modes = {"ours": lambda: k_center_greedy(x, k, seed=args.seed, dtype=dtype)}
    for name in args.baselines.split(","):
        modes[name] = (lambda f: lambda: f(x, k, args.seed))(BASELINES[name])
    if args.memory_of:
        before = _rss_mb()
        modes[args.memory_of]()
        print(f"PEAK_MB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before:.1f}")
        return
    memory = {name: _peak_mb_in_child(name) for name in modes}
    runs = _timing.run_abba(modes, rounds=args.rounds, same=np.array_equal)

    ours = runs.outputs["ours"]
    identical = True
    for name in modes:
        picks = runs.outputs[name]
        if np.array_equal(picks, ours):
            verdict = f"identical ({k} of {k})"
        else:
            identical = False
            first = int(np.argmax(picks != ours)) if len(picks) == len(ours) else 0
            verdict = f"DIFFER from pick {first} (same set: {set(picks.tolist()) == set(ours.tolist())})"
        print(
            f"{name:>7}: min-of-N {runs.best(name, 'cpu'):8.2f} CPU s {runs.best(name, 'wall'):8.2f} wall s, "
            f"peak memory +{memory[name]:8.1f} MB; picks {verdict}"
        )
    best = min((m for m in modes if m != "ours"), key=lambda m: runs.best(m, "cpu"))
    ratio, seconds = _timing.summary(runs, best, "ours", "cpu")
    for name in modes:
        if name not in ("ours", best):
            r = runs.paired_ratios(name, "ours", "cpu")
            print(f"ours vs {name}: paired ratio median {statistics.median(r):.2f} (spread {_timing.spread(r)})")

    if args.big > 0:
        xb = clustered_unit_vectors(args.big, x.shape[1], seed=args.seed + 1)
        kb = n_to_keep(args.big, args.ratio)
        t0, c0 = time.perf_counter(), time.process_time()
        k_center_greedy(xb, kb, seed=args.seed, dtype=dtype, show_progress=True)
        t_big, c_big = time.perf_counter() - t0, time.process_time() - c0
        print(
            f"ours alone ({args.dtype}): {args.big} x {x.shape[1]}, keep {kb}: {t_big:.1f} s wall ({t_big / 60:.2f} min), "
            f"{c_big:.1f} CPU s, load average {_timing.load_average():.2f}",
            flush=True,
        )

    _timing.goal(f"ours vs the best baseline ({best}), median paired CPU ratio", ratio, args.goal)
    print(f"ratio={ratio:.2f} seconds={seconds:.2f} baseline={best} peak_mb={memory['ours']:.0f}/{memory[best]:.0f}")
    if not identical:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
