"""Parsing + splitting a million judge outputs: ours (vectorised, RE2 inside Arrow) vs a plain per-row Python loop.

Data: the 5,734 real judge outputs of ``../shared/data/ed_valid_scored.jsonl`` (or the shipped 400-row sample
when the full file is absent) replicated to ``--n`` rows (default 1,000,000), with 0.1% broken outputs. Both ways
apply the same rules (first integer after the axis name on its line, integers 0-10, the split at T=5) and must put
every row in the same set (checked row by row, not only the counts).

The naive way: for each row, ``re.search`` per axis, ``int()``, range checks, then the split rule with ``if``s.
Ours: ``empathy_recipes.judge_scores.parse_judge_outputs`` + ``set_codes``. Both on the same threads
(``BENCH_THREADS``, default 1), interleaved A B B A for ``--rounds`` rounds after an untimed warm-up (``bench/_timing.py``); the
headline is CPU seconds (the work done, whatever else shares the cores), wall seconds beside.
Goal: ours <= 10 CPU seconds per million rows.

    python -m bench.bench_select            # 1,000,000 rows
    python -m bench.bench_select --n 100000

Last line: ``ratio=<naive CPU seconds / ours, median of paired rounds> seconds=<ours, min-of-N CPU seconds>``.
"""

from __future__ import annotations

from bench import _timing  # first: sets the OpenMP wait policy before numpy loads

# isort: split

import argparse
import json
import re
from pathlib import Path

import numpy as np

from empathy_recipes.judge_scores import SET_NAMES, count_sets, parse_judge_outputs, set_codes

REPO = Path(__file__).resolve().parents[1]
SOURCES = (REPO.parent / "shared" / "data" / "ed_valid_scored.jsonl", REPO / "data" / "ed_valid_sample.jsonl")
_PATTERNS = {
    axis: re.compile(rf"(?i)\b{axis}\b[^0-9\n]{{0,20}}?([-+]?[0-9]+(?:[.,][0-9]+)?)")
    for axis in ("rationality", "sensibility")
}
_CODE = {name: i for i, name in enumerate(SET_NAMES)}


def naive_select(texts: list, threshold: float = 5) -> np.ndarray:
    """The set of every row (as indices into SET_NAMES), one row at a time."""
    out = []
    for text in texts:
        scores = {}
        if isinstance(text, str) and text.strip():
            for axis, pattern in _PATTERNS.items():
                m = pattern.search(text)
                if m:
                    value = float(m.group(1).replace(",", "."))
                    if value.is_integer() and 0 <= value <= 10:
                        scores[axis] = int(value)
        if len(scores) < 2:
            out.append(_CODE["unscored"])
        elif scores["rationality"] < threshold and scores["sensibility"] > threshold:
            out.append(_CODE["sensibility"])
        elif scores["rationality"] > threshold and scores["sensibility"] < threshold:
            out.append(_CODE["discard"])
        else:
            out.append(_CODE["rationality"])
    return np.asarray(out, dtype=np.int8)


def ours_select(texts: list, threshold: float = 5) -> np.ndarray:
    scores = parse_judge_outputs(texts)
    return set_codes(scores, threshold)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="judge outputs to parse and split")
    parser.add_argument("--rounds", type=int, default=3, help="A B B A rounds (after one untimed warm-up)")
    args = parser.parse_args()

    print(f"threads: {_timing.limit_threads()}")
    source = next(p for p in SOURCES if p.exists())
    real = [json.loads(line)["judge_output"] for line in source.read_text().splitlines()]
    reps = -(-args.n // len(real))
    texts = (real * reps)[: args.n]
    # a few broken outputs, as a real judge run has
    rng = np.random.default_rng(0)
    for i in rng.choice(args.n, size=max(1, args.n // 1000), replace=False):
        texts[i] = "I cannot rate this." if i % 2 else "- Rationality: 12\n- Sensibility: 4"
    print(f"{args.n:,} judge outputs replicated from {source.name} ({len(real):,} real ones)")

    runs = _timing.run_abba(
        {"naive": lambda: naive_select(texts), "ours": lambda: ours_select(texts)},
        rounds=args.rounds,
        same=np.array_equal,
    )
    naive, ours = runs.outputs["naive"], runs.outputs["ours"]
    if not np.array_equal(naive, ours):
        rows = np.flatnonzero(naive != ours)
        raise SystemExit(f"MISMATCH in {rows.size} rows, first row {rows[0]}: {texts[rows[0]]!r}")
    print(f"identical sets row by row ({args.n:,} rows): {count_sets(ours)}")
    ratio, seconds = _timing.summary(runs, "naive", "ours", "cpu")
    _timing.goal(f"ours CPU seconds per 1,000,000 rows (at {args.n:,})", seconds * 1e6 / args.n, 10, False)
    print(f"ratio={ratio:.2f} seconds={seconds:.2f}")


if __name__ == "__main__":
    main()
