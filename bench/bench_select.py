"""Parsing + splitting a million judge outputs: ours (vectorised, RE2 inside Arrow) vs a plain per-row Python loop.

Data: the 5,734 real judge outputs of ``../shared/data/ed_valid_scored.jsonl`` (or the shipped 400-row sample
when the full file is absent) replicated to ``--n`` rows (default 1,000,000). Both ways apply the same rules
(first integer after the axis name on its line, integers 0-10, the split at T=5) and must give identical sets.

The naive way: for each row, ``re.search`` per axis, ``int()``, range checks, then the split rule with ``if``s.
Ours: ``empathy_recipes.judge_scores.parse_judge_outputs`` + ``set_codes`` + ``count_sets``. Goal: <= 10 s for
the million on 2 cores.

    python bench/bench_select.py            # 1,000,000 rows
    python bench/bench_select.py --n 100000

Last line: ``ratio=<naive seconds / ours seconds> seconds=<ours>``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from empathy_recipes.judge_scores import count_sets, parse_judge_outputs, set_codes  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SOURCES = (REPO.parent / "shared" / "data" / "ed_valid_scored.jsonl", REPO / "data" / "ed_valid_sample.jsonl")
_PATTERNS = {
    axis: re.compile(rf"(?i)\b{axis}\b[^0-9\n]{{0,20}}?([-+]?[0-9]+(?:[.,][0-9]+)?)")
    for axis in ("rationality", "sensibility")
}


def naive_select(texts: list, threshold: float = 5) -> dict[str, int]:
    counts = {"sensibility": 0, "rationality": 0, "discard": 0, "unscored": 0}
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
            counts["unscored"] += 1
        elif scores["rationality"] < threshold and scores["sensibility"] > threshold:
            counts["sensibility"] += 1
        elif scores["rationality"] > threshold and scores["sensibility"] < threshold:
            counts["discard"] += 1
        else:
            counts["rationality"] += 1
    return counts


def ours_select(texts: list, threshold: float = 5) -> dict[str, int]:
    scores = parse_judge_outputs(texts)
    return count_sets(set_codes(scores["rationality"], scores["sensibility"], threshold))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="judge outputs to parse and split")
    args = parser.parse_args()

    source = next(p for p in SOURCES if p.exists())
    real = [json.loads(line)["judge_output"] for line in source.read_text().splitlines()]
    reps = -(-args.n // len(real))
    texts = (real * reps)[: args.n]
    # a few broken outputs, as a real judge run has
    rng = np.random.default_rng(0)
    for i in rng.choice(args.n, size=max(1, args.n // 1000), replace=False):
        texts[i] = "I cannot rate this." if i % 2 else "- Rationality: 12\n- Sensibility: 4"
    print(f"{args.n:,} judge outputs replicated from {source.name} ({len(real):,} real ones)")

    t0 = time.perf_counter()
    ours = ours_select(texts)
    t_ours = time.perf_counter() - t0
    print(f"ours : {t_ours:7.2f} s  {ours}")

    t0 = time.perf_counter()
    naive = naive_select(texts)
    t_naive = time.perf_counter() - t0
    print(f"naive: {t_naive:7.2f} s  {naive}")

    if ours != naive:
        raise SystemExit(f"MISMATCH: ours {ours} vs naive {naive}")
    print(f"identical sets; goal <= 10 s for 1,000,000: {'met' if t_ours <= 10 * args.n / 1e6 else 'NOT met'}")
    print(f"ratio={t_naive / t_ours:.2f} seconds={t_ours:.2f}")


if __name__ == "__main__":
    main()
