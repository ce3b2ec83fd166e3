"""Benchmark: all automatic metrics but BERTScore on 5,255 predictions, ours vs the paper's plain way.

The plain way is what Efficient-Empathy's ``empathy/metrics.py`` does: tokenise every text on its own, call NLTK
``corpus_bleu`` once per n (four passes), count distinct n-grams and corpus F1 in Python loops, and run a ROUGE
scorer pair by pair (``rouge_score.RougeScorer`` with the script's ``normalize_answer`` tokenization, and again with
Porter stemming for the ``*_stemmed`` variant). Ours
(``empathy_recipes.metrics.compute_all_metrics``) tokenises each distinct text once, counts n-grams for every BLEU
order in one pass, caches stems and computes ROUGE-L's LCS bit-parallel. Both must give the same numbers.

Data: the 5,255 real ED test references (``../shared/data/ed_test.jsonl``) and, as predictions, real listener replies
from another split (the first 5,255 of ``ed_valid_scored.jsonl``, shuffled with a seed), so predictions and
references are different texts, as with a real model. Without those files: the shipped test sample replicated to
5,255 rows with shuffled references as predictions (many repeated texts, which our per-text cache favours).
Both on the same threads (``BENCH_THREADS``, default 1), interleaved A B B A for ``--rounds`` rounds after an untimed
warm-up (``bench/_timing.py``); headline in CPU seconds, wall seconds beside. Goal: ours <= 5 CPU s per 5,255 pairs.

    python -m bench.bench_metrics            # 5,255 pairs
    python -m bench.bench_metrics --n 2000

Ends with one line: ``ratio=<plain CPU seconds / ours, median of paired rounds> seconds=<ours, min-of-N>``.
"""

from __future__ import annotations

from bench import _timing  # first: sets the OpenMP wait policy before numpy loads

# isort: split

import argparse
import json
import math
import random
import re
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FULL_TEST = REPO.parent / "shared" / "data" / "ed_test.jsonl"
FULL_VALID = REPO.parent / "shared" / "data" / "ed_valid_scored.jsonl"
SAMPLE = REPO / "data" / "ed_test_sample.jsonl"
N = 5255


def _column(path: Path, key: str) -> list[str]:
    return [json.loads(line)[key] for line in path.read_text().splitlines() if line.strip()]


def load_pairs(n: int = N) -> tuple[list[str], list[str], str]:
    if FULL_TEST.exists() and FULL_VALID.exists():
        refs = _column(FULL_TEST, "reference")[:n]
        preds = _column(FULL_VALID, "response")[: len(refs)]
        source = f"{FULL_TEST} (references) and {FULL_VALID} (replies as predictions)"
    else:
        refs = _column(SAMPLE, "reference")
        refs = (refs * (n // len(refs) + 1))[:n]
        preds = refs[:]
        source = f"{SAMPLE} replicated (shuffled references as predictions)"
    random.Random(0).shuffle(preds)
    return preds, refs, source


def plain_way(preds: list[str], refs: list[str]) -> dict[str, float]:
    """The paper's script, one library call per metric (tokens as ``word_tokenize`` makes them, see metrics.py)."""
    from nltk.tokenize.destructive import NLTKWordTokenizer
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu
    from rouge_score import rouge_scorer

    from empathy_recipes.metrics import split_sentences

    def word_tokenize(text):  # what nltk.word_tokenize does, with the rule-based sentence split (no punkt data)
        return [t for s in split_sentences(text) for t in NLTKWordTokenizer().tokenize(s)]

    cands = [word_tokenize(p.lower().strip()) for p in preds]
    golds = [word_tokenize(r.lower().strip()) for r in refs]
    sf = SmoothingFunction(epsilon=1e-12).method1
    out = {}
    for n in range(1, 5):
        out[f"bleu_{n}"] = corpus_bleu([[g] for g in golds], cands, weights=(1.0 / n,) * n, smoothing_function=sf)
    for n in (1, 2):
        grams = Counter()
        for c in cands:
            for i in range(len(c) - n + 1):
                grams[tuple(c[i : i + n])] += 1
        out[f"dist_{n}"] = len(grams) / sum(grams.values())

    class NormalizeAnswer:  # the script's ROUGE tokenization_fn: lower, punctuation to spaces, no articles
        def tokenize(self, text):
            text = re.sub(
                r"\b(a|an|the)\b", " ", re.sub(r"[!\"#$%&()*+,\-./:;<=>?@\[\]\\^`{|}~_']", " ", text.lower())
            )
            return " ".join(text.split()).split(" ")

    for suffix, scorer in (
        ("", rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=NormalizeAnswer())),
        ("_stemmed", rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)),
    ):
        sums = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
        for c, g in zip(cands, golds):
            s = scorer.score(" ".join(g), " ".join(c))
            for k in sums:
                sums[k] += s[k].fmeasure
        out.update({f"rouge_1{suffix}": sums["rouge1"] / len(cands), f"rouge_2{suffix}": sums["rouge2"] / len(cands)})
        out[f"rouge_l{suffix}"] = sums["rougeL"] / len(cands)
    hits = pred_total = gold_total = 0
    for c, g in zip(cands, golds):
        hits += sum((Counter(c) & Counter(g)).values())
        pred_total += len(c)
        gold_total += len(g)
    p, r = hits / pred_total, hits / gold_total
    out["f1"] = 2 * p * r / (p + r)
    return {k: 100.0 * v for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=N, help="prediction/reference pairs")
    parser.add_argument("--rounds", type=int, default=3, help="A B B A rounds (after one untimed warm-up)")
    args = parser.parse_args()

    import nltk.translate.bleu_score  # noqa: F401 - import costs (seconds) are paid before either clock starts
    import rouge_score.rouge_scorer  # noqa: F401

    from empathy_recipes.metrics import compute_all_metrics

    print(f"threads: {_timing.limit_threads()}")
    preds, refs, source = load_pairs(args.n)
    print(f"{len(preds)} prediction/reference pairs from {source}")

    def close(a: dict, b: dict) -> bool:
        return a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=1e-9) for k in a)

    runs = _timing.run_abba(
        {"plain": lambda: plain_way(preds, refs), "ours": lambda: compute_all_metrics(preds, refs)},
        rounds=args.rounds,
        same=close,
    )
    ours, plain = runs.outputs["ours"], runs.outputs["plain"]
    print(f"{'metric':<16} {'ours':>10} {'plain':>10}")
    for key in ours:
        print(f"{key:<16} {ours[key]:>10.4f} {plain[key]:>10.4f}")
        if not math.isclose(ours[key], plain[key], rel_tol=1e-9, abs_tol=1e-9):
            raise SystemExit(f"mismatch on {key}: ours {ours[key]} vs plain {plain[key]}")
    ratio, seconds = _timing.summary(runs, "plain", "ours", "cpu")
    _timing.goal(f"ours CPU seconds per {N:,} pairs (at {len(preds):,})", seconds * N / len(preds), 5, False)
    print(f"ratio={ratio:.2f} seconds={seconds:.2f}")


if __name__ == "__main__":
    main()
