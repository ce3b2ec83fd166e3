"""The reported metrics equal the Efficient-Empathy metric script's (``empathy/metrics.py``, ``dialogue_evaluation``).

The paper's formulas are re-derived here from its description, independently of ``empathy_recipes.metrics``:
tokens by NLTK's Treebank-style word tokenizer on the lower-cased text; BLEU-1..4 by NLTK ``corpus_bleu``
(``SmoothingFunction(epsilon=1e-12).method1``, cumulative uniform weights); Dist-n with the script's 1e-5 added
to both counts; corpus F1 with its 1e-8 terms; ROUGE-1/2/L F-measure per pair, averaged, on ``normalize_answer``
tokens (lower-case, ASCII punctuation to spaces, a/an/the dropped, no stemming), with an O(n*m) LCS table.
"""

from __future__ import annotations

import json
import random
import string
from collections import Counter
from pathlib import Path

import pytest

from empathy_recipes import metrics as M

REPO = Path(__file__).resolve().parents[1]
PAPER_PUNCTUATION = set(string.punctuation)  # the script's class: every ASCII punctuation mark
ARTICLES = {"a", "an", "the"}


def _word_tokens(text: str) -> list[str]:
    from nltk.tokenize.destructive import NLTKWordTokenizer

    return NLTKWordTokenizer().tokenize(text.lower())


def _normalize(text: str) -> list[str]:
    spaced = "".join(" " if ch in PAPER_PUNCTUATION else ch for ch in text.lower())
    words = [w for w in spaced.split() if w not in ARTICLES]
    return words or [""]  # the script's " ".join([]).split(" ") is [""]


def _lcs(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a, 1):
        for j, y in enumerate(b, 1):
            table[i][j] = table[i - 1][j - 1] + 1 if x == y else max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


def _f(overlap: float, n_pred: int, n_ref: int) -> float:
    p, r = overlap / max(n_pred, 1), overlap / max(n_ref, 1)
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _grams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def paper_metrics(preds: list[str], refs: list[str]) -> dict[str, float]:
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

    cands = [_word_tokens(p) for p in preds]
    golds = [_word_tokens(r) for r in refs]
    out = {}
    smooth = SmoothingFunction(epsilon=1e-12).method1
    for n in range(1, 5):
        out[f"bleu_{n}"] = corpus_bleu([[g] for g in golds], cands, weights=(1 / n,) * n, smoothing_function=smooth)
    for n in (1, 2):
        grams = Counter()
        for c in cands:
            grams.update(_grams(c, n))
        out[f"dist_{n}"] = (len(grams) + 1e-5) / (sum(grams.values()) + 1e-5)
    sums = {1: 0.0, 2: 0.0, "l": 0.0}
    for c, g in zip(cands, golds):
        pred, ref = _normalize(" ".join(c)), _normalize(" ".join(g))
        for n in (1, 2):
            overlap = sum((_grams(pred, n) & _grams(ref, n)).values())
            sums[n] += _f(overlap, max(len(pred) - n + 1, 0), max(len(ref) - n + 1, 0))
        sums["l"] += _f(_lcs(ref, pred), len(pred), len(ref))
    out.update({f"rouge_{k}": v / len(cands) for k, v in sums.items()})
    hits = sum(sum((Counter(c) & Counter(g)).values()) for c, g in zip(cands, golds)) + 1e-8
    p, r = hits / (sum(map(len, cands)) + 1e-8), hits / (sum(map(len, golds)) + 1e-8)
    out["f1"] = 2 * p * r / (p + r)
    return {k: 100 * v for k, v in out.items()}


def _fixed_sample() -> tuple[list[str], list[str]]:
    """300 real ED pairs: the shipped test references, and the shipped valid replies (seeded shuffle) as predictions."""
    refs = [json.loads(line)["reference"] for line in (REPO / "data" / "ed_test_sample.jsonl").open()]
    preds = [json.loads(line)["response"] for line in (REPO / "data" / "ed_valid_sample.jsonl").open()][: len(refs)]
    random.Random(13).shuffle(preds)
    # a few model-like replies too: capitals, clitics, punctuation-only, articles only, an empty reply
    preds[:5] = [
        "I'm so sorry to hear that! Did you call them?",
        "...",
        "The a an.",
        "",
        "Wow -- that's GREAT news :)",
    ]
    return preds, refs


def test_every_paper_metric_equals_the_papers_formulas_on_a_fixed_sample():
    preds, refs = _fixed_sample()
    ours = M.compute_all_metrics(preds, refs)
    theirs = paper_metrics(preds, refs)
    assert set(theirs) <= set(ours)
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, abs=0.05), key
    # and the stemmed variant really is another number on this sample (it is not what the paper reports)
    assert ours["rouge_1_stemmed"] != pytest.approx(ours["rouge_1"], abs=0.05)


@pytest.mark.parametrize(
    "pred, ref, paper_r1, stemmed_r1",
    [
        ("she is running", "he runs", 0.0, 0.4),  # no stemming: running != runs; stemmed: run = run, F = 2/5
        ("the cat", "a cat", 1.0, 0.5),  # articles dropped: [cat] vs [cat]; stemmed keeps them: F = 1/2
        ("i'm fine", "im fine", 0.4, 0.4),  # tokens i, 'm -> [i, m, fine] vs [im, fine]: P 1/3, R 1/2, F = 2/5
        ("!!!", "ok", 0.0, 0.0),  # no word left: one empty token, which matches nothing
    ],
)
def test_paper_rouge_vs_stemmed_rouge_by_hand(pred, ref, paper_r1, stemmed_r1):
    hyps, refs = M.tokenize_corpus([pred]), M.tokenize_corpus([ref])
    assert M.rouge_f_scores(hyps, refs, tokenizer=M.PaperRougeTokenizer())["rouge1"] == pytest.approx(paper_r1)
    assert M.rouge_f_scores(hyps, refs, use_stemmer=True)["rouge1"] == pytest.approx(stemmed_r1)


def test_paper_tokenizer_through_rouge_score_equals_the_fast_path():
    from rouge_score import rouge_scorer

    preds, refs = _fixed_sample()
    hyps, golds = M.tokenize_corpus(preds), M.tokenize_corpus(refs)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=M.PaperRougeTokenizer())
    sums = Counter()
    for h, g in zip(hyps, golds):
        for key, score in scorer.score(" ".join(g), " ".join(h)).items():
            sums[key] += score.fmeasure
    fast = M.rouge_f_scores(hyps, golds, tokenizer=M.PaperRougeTokenizer())
    assert fast == {k: pytest.approx(sums[k] / len(hyps), rel=1e-12) for k in ("rouge1", "rouge2", "rougeL")}
    assert M.PaperRougeTokenizer().tokenize("The cat's toy, a ball!") == ["cat", "s", "toy", "ball"]
