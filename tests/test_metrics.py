"""Every metric on hand-worked cases (arithmetic in the comments), and the fast path proven equal to the libraries
(NLTK corpus_bleu, rouge_score) on a few hundred real ED pairs."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from empathy_recipes import metrics as M
from empathy_recipes.errors import EmpathyRecipesError


def approx(x):
    return pytest.approx(x, rel=1e-9, abs=1e-12)


def test_tokenize_lowercases_splits_sentences_and_clitics():
    assert M.tokenize("I'm so sorry. Don't worry!") == ["i", "'m", "so", "sorry", ".", "do", "n't", "worry", "!"]
    # ED's references are already space-tokenised: they come out unchanged.
    assert M.tokenize("that is great , congrats !") == ["that", "is", "great", ",", "congrats", "!"]
    assert M.tokenize("   ") == []
    assert M.tokenize_corpus(["Hi .", "Hi ."]) == [["hi", "."], ["hi", "."]]


# Case A, one pair, equal lengths (BP = exp(1 - 6/6) = 1):
#   hyp = the cat sat on the mat   ref = the cat is on the mat
#   1-grams: hyp the x2, cat, sat, on, mat; clipped matches the 2 + cat 1 + on 1 + mat 1 = 5 of 6   -> p1 = 5/6
#   2-grams: the cat, cat sat, sat on, on the, the mat; matches the cat, on the, the mat = 3 of 5  -> p2 = 3/5
#   3-grams: the cat sat, cat sat on, sat on the, on the mat; match on the mat = 1 of 4             -> p3 = 1/4
#   4-grams: the cat sat on, cat sat on the, sat on the mat; no match -> method1: (0 + 1e-12) / 3    -> p4 = 1e-12/3
#   BLEU-1 = 5/6; BLEU-2 = (5/6 * 3/5)^(1/2) = (1/2)^(1/2); BLEU-3 = (5/6 * 3/5 * 1/4)^(1/3) = (1/8)^(1/3) = 1/2;
#   BLEU-4 = (1/8 * 1e-12/3)^(1/4)
CASE_A = (["the cat sat on the mat"], ["the cat is on the mat"])


def test_bleu_case_a():
    hyps, refs = (M.tokenize_corpus(x) for x in CASE_A)
    b1, b2, b3, b4 = M.corpus_bleu_scores(hyps, refs)
    assert b1 == approx(5 / 6)
    assert b2 == approx(math.sqrt(0.5))
    assert b3 == approx(0.5)
    assert b4 == approx((1 / 8 * 1e-12 / 3) ** 0.25)


# Case B, a corpus of two pairs (shows corpus-level sums, not means of sentence scores):
#   h1 = i am sorry (3)                 r1 = i am so sorry to hear that (7)
#   h2 = that is great news ! (5)       r2 = great ! (2)
#   1-gram matches: h1 i, am, sorry = 3; h2 great, ! = 2 -> p1 = (3 + 2) / (3 + 5) = 5/8
#   2-gram matches: h1 "i am" = 1 of 2; h2 0 of 4        -> p2 = 1/6
#   lengths: hyp 8 < ref 9 -> BP = exp(1 - 9/8) = exp(-1/8)
#   BLEU-1 = exp(-1/8) * 5/8 = 0.55156...; BLEU-2 = exp(-1/8) * (5/8 * 1/6)^(1/2) = 0.28482...
#   F1 (corpus): hits 3 + 2 = 5; P = 5/8, R = 5/9; F1 = 2PR / (P + R) = (50/72) / (85/72) = 10/17
#     (the mean of sentence F1s would be (0.6 + 0.5714) / 2 = 0.5857, not 10/17 = 0.5882)
#   ROUGE (stemmed rouge tokens; "sorry" -> "sorri", punctuation dropped so r2 = [great]):
#     pair 1: R1 overlap 3, P 3/3, R 3/7 -> F 0.6; R2 overlap "i am" 1, P 1/2, R 1/6 -> F 0.25; LCS 3 -> F 0.6
#     pair 2: R1 overlap 1, P 1/4, R 1/1 -> F 0.4; R2 r2 has no bigram -> F 0;                 LCS 1 -> F 0.4
#     means: ROUGE-1 (0.6 + 0.4)/2 = 0.5, ROUGE-2 (0.25 + 0)/2 = 0.125, ROUGE-L (0.6 + 0.4)/2 = 0.5
CASE_B = (["i am sorry", "that is great news !"], ["i am so sorry to hear that", "great !"])


def test_bleu_case_b_corpus_level():
    hyps, refs = (M.tokenize_corpus(x) for x in CASE_B)
    b1, b2, _, _ = M.corpus_bleu_scores(hyps, refs)
    assert b1 == approx(math.exp(-1 / 8) * 5 / 8)
    assert b2 == approx(math.exp(-1 / 8) * math.sqrt(5 / 8 * 1 / 6))
    assert round(b1, 5) == 0.55156 and round(b2, 5) == 0.28482


def test_unigram_f1_cases():
    hyps, refs = (M.tokenize_corpus(x) for x in CASE_B)
    assert M.unigram_f1(hyps, refs) == approx(10 / 17)
    a_hyps, a_refs = (M.tokenize_corpus(x) for x in CASE_A)
    assert M.unigram_f1(a_hyps, a_refs) == approx(5 / 6)  # hits 5; P = R = 5/6
    assert M.unigram_f1([[]], [["x"]]) == 0.0


def test_rouge_cases():
    hyps, refs = (M.tokenize_corpus(x) for x in CASE_B)
    assert M.rouge_f_scores(hyps, refs) == {"rouge1": approx(0.5), "rouge2": approx(0.125), "rougeL": approx(0.5)}
    # Case A: no word longer than 3 letters, so no stemming; R1 5/6 both ways, R2 3/5, LCS "the cat on the mat" = 5.
    a_hyps, a_refs = (M.tokenize_corpus(x) for x in CASE_A)
    assert M.rouge_f_scores(a_hyps, a_refs) == {
        "rouge1": approx(5 / 6),
        "rouge2": approx(0.6),
        "rougeL": approx(5 / 6),
    }
    # Stemming: running -> run, runs -> run. hyp [she, is, run], ref [he, run]: P 1/3, R 1/2 -> F = 2/5.
    stem_h, stem_r = M.tokenize_corpus(["she is running"]), M.tokenize_corpus(["he runs"])
    assert M.rouge_f_scores(stem_h, stem_r)["rouge1"] == approx(0.4)
    assert M.rouge_f_scores(stem_h, stem_r, use_stemmer=False)["rouge1"] == 0.0


def test_distinct_n():
    # hyps "i am sad", "i am happy": 1-grams i, am, sad, i, am, happy = 6, distinct 4 -> 4/6;
    # 2-grams (i am), (am sad), (i am), (am happy) = 4, distinct 3 -> 3/4.
    hyps = M.tokenize_corpus(["i am sad", "i am happy"])
    assert M.distinct_n(hyps, 1) == approx(4 / 6)
    assert M.distinct_n(hyps, 2) == approx(3 / 4)
    assert M.distinct_n([[]], 2) == 0.0


def test_compute_all_metrics_is_x100_and_flat():
    out = M.compute_all_metrics(*CASE_B)
    assert list(out) == list(M.METRIC_NAMES)
    assert out["f1"] == approx(100 * 10 / 17)
    assert out["rouge_2"] == approx(12.5)
    assert out["dist_1"] == approx(100.0)  # 8 tokens, all distinct
    assert out["bleu_1"] == approx(100 * math.exp(-1 / 8) * 5 / 8)


def test_bad_input():
    with pytest.raises(EmpathyRecipesError, match="2 predictions but 1 references"):
        M.compute_all_metrics(["a", "b"], ["a"])
    with pytest.raises(EmpathyRecipesError, match="no predictions"):
        M.compute_all_metrics([], [])
    with pytest.raises(EmpathyRecipesError, match="not strings"):
        M.compute_all_metrics(["a", None], ["a", "b"])
    # All-empty predictions score 0, they do not crash.
    assert M.compute_all_metrics(["", ""], ["a b", "c"])["bleu_1"] == 0.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from("abcd"), max_size=30), st.lists(st.sampled_from("abcde"), max_size=30))
def test_bit_parallel_lcs_equals_dynamic_programming(a, b):
    from rouge_score.rouge_scorer import _lcs_table

    expected = _lcs_table(a, b)[-1][-1] if a and b else 0
    assert M.lcs_length(a, b) == expected


def _real_pairs(ed_test_path, n=300):
    refs = [json.loads(line)["reference"] for line in ed_test_path.read_text().splitlines()][:n]
    rng = random.Random(0)
    shuffled = refs[:]
    rng.shuffle(shuffled)
    # Half unrelated replies (low overlap), half the reference with words dropped (high overlap, shorter).
    dropped = [" ".join(w for i, w in enumerate(r.split()) if i % 3 != 1) for r in refs]
    preds = [shuffled[i] if i % 2 else dropped[i] for i in range(len(refs))]
    preds[0] = 'I\'m really SORRY to hear that. Did you "call" them?'
    return preds, refs


def test_fast_path_equals_nltk_corpus_bleu_and_rouge_score_on_real_pairs(ed_test_path):
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu
    from rouge_score import rouge_scorer

    preds, refs = _real_pairs(ed_test_path)
    hyps, golds = M.tokenize_corpus(preds), M.tokenize_corpus(refs)
    ours = M.corpus_bleu_scores(hyps, golds)
    smooth = SmoothingFunction(epsilon=1e-12).method1
    for n in range(1, 5):
        theirs = corpus_bleu([[g] for g in golds], hyps, weights=(1 / n,) * n, smoothing_function=smooth)
        assert ours[n - 1] == pytest.approx(theirs, rel=1e-12)
    assert 0.1 < ours[0] < 0.9

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    per_pair = [scorer.score(" ".join(g), " ".join(h)) for h, g in zip(hyps, golds)]
    fast = M.rouge_f_scores(hyps, golds)
    for key in ("rouge1", "rouge2", "rougeL"):
        assert fast[key] == pytest.approx(sum(s[key].fmeasure for s in per_pair) / len(per_pair), rel=1e-12)
    # And pair by pair, not only on average.
    rouge_tok = M.RougeTokenizer()
    for h, g, s in zip(hyps, golds, per_pair):
        r1, r2, rl = M.rouge_pair(rouge_tok.tokenize(" ".join(g)), rouge_tok.tokenize(" ".join(h)))
        assert (r1, r2, rl) == pytest.approx((s["rouge1"].fmeasure, s["rouge2"].fmeasure, s["rougeL"].fmeasure))


def _plain_sentences(text):
    """The sentence rule written out by hand (no project code): a sentence ends at whitespace that follows
    ``.``, ``!`` or ``?``, or one of those and one closing quote or bracket; the whitespace is dropped."""
    out, cur, i = [], "", 0
    while i < len(text):
        ends = cur[-1:] in (".", "!", "?") or (cur[-1:] in ('"', "'", ")", "]") and cur[-2:-1] in (".", "!", "?"))
        if text[i].isspace() and cur and ends:
            while i < len(text) and text[i].isspace():
                i += 1
            out.append(cur)
            cur = ""
            continue
        cur += text[i]
        i += 1
    return [s for s in [*out, cur] if s]


def test_split_sentences_equals_the_hand_written_rule():
    cases = [
        "hi . how are you ?  fine !",
        'he said "no." then left',
        "(really?) yes",
        "a.b c",
        "  lead . x",
        "?!  ",
        "",
    ]
    assert M.split_sentences("hi . how are you ?  fine !") == ["hi .", "how are you ?", "fine !"]
    assert M.split_sentences('he said "no." then left') == ['he said "no."', "then left"]
    for text in cases:
        assert M.split_sentences(text) == _plain_sentences(text)


def _nltk_tokens(text):
    from nltk.tokenize.destructive import NLTKWordTokenizer

    return [t for s in _plain_sentences(text.lower().strip()) for t in NLTKWordTokenizer().tokenize(s)]


def _library_metrics(preds, refs):
    """Every metric x100 from the libraries, one call per metric and plain counting loops: NLTK tokens and
    ``corpus_bleu``, ``rouge_score`` (the paper script's normalize_answer tokenization, and Porter-stemmed)."""
    import re
    from collections import Counter

    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu
    from rouge_score import rouge_scorer

    cands, golds = [_nltk_tokens(p) for p in preds], [_nltk_tokens(r) for r in refs]
    out = {}
    for n in range(1, 5):
        smooth = SmoothingFunction(epsilon=1e-12).method1
        out[f"bleu_{n}"] = corpus_bleu([[g] for g in golds], cands, weights=(1 / n,) * n, smoothing_function=smooth)
    for n in (1, 2):
        grams = Counter(tuple(c[i : i + n]) for c in cands for i in range(len(c) - n + 1))
        out[f"dist_{n}"] = len(grams) / sum(grams.values())

    class NormalizeAnswer:  # the paper script's tokenization: lower, punctuation to spaces, articles dropped
        def tokenize(self, text):
            text = re.sub(r"[!\"#$%&()*+,\-./:;<=>?@\[\]\\^`{|}~_']", " ", text.lower())
            return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split()).split(" ")

    for suffix, scorer in (
        ("", rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=NormalizeAnswer())),
        ("_stemmed", rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)),
    ):
        scores = [scorer.score(" ".join(g), " ".join(c)) for c, g in zip(cands, golds)]
        for key, name in (("rouge1", "rouge_1"), ("rouge2", "rouge_2"), ("rougeL", "rouge_l")):
            out[name + suffix] = sum(s[key].fmeasure for s in scores) / len(scores)
    hits = sum(sum((Counter(c) & Counter(g)).values()) for c, g in zip(cands, golds))
    p, r = hits / sum(map(len, cands)), hits / sum(map(len, golds))
    out["f1"] = 2 * p * r / (p + r)
    return {k: 100.0 * v for k, v in out.items()}


def test_corpus_tokenizer_matches_nltk_word_tokenizer_on_real_text(ed_test_path, ed_valid_path):
    preds, refs = _real_pairs(ed_test_path)
    valid = [json.loads(line) for line in ed_valid_path.read_text().splitlines()]
    texts = preds + refs + [t for r in valid for t in r["context"]] + ["a\ttab . and\na newline"]
    assert M.tokenize_corpus(texts) == [_nltk_tokens(t) for t in texts]
    assert M.tokenize_corpus(texts) == [M.tokenize(t) for t in texts]


TRICKY = list("ab c.'\",:;!?()[]{}<>`-\u2013\u2014\u2026\u00ab\u00bb\u201c\u201d\u2018\u2019$%&*@#0123  \t\n") + [
    "can't", "gonna", "'s ", "n't", "''", "``", "--", "...", "cannot", " '", "' ", "i'm", "don't", "wanna",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(TRICKY), max_size=20).map("".join), min_size=1, max_size=12))
def test_corpus_tokenizer_matches_nltk_on_random_strings(texts):
    assert M.tokenize_corpus(texts) == [_nltk_tokens(t) for t in texts]
    # The one-pass path really ran (no silent per-sentence fallback).
    sentences = [s for t in texts if M._plain_spaces(t.lower().strip()) for s in M.split_sentences(t.lower().strip())]
    assert M._corpus_tokenizer().tokenize_sentences(sentences) is not None


@pytest.mark.integration
def test_bertscore_with_packaged_minilm(ed_test_path):
    preds, refs = _real_pairs(ed_test_path, n=8)
    same = M.bertscore_f1(refs, refs, device="cpu")
    different = M.bertscore_f1(preds, refs, device="cpu")
    assert same == pytest.approx(1.0, abs=1e-4)
    assert 0.3 < different < same


def test_evaluate_modules_load_offline_by_path_and_agree(repo_root, ed_test_path):
    import evaluate

    preds, refs = _real_pairs(ed_test_path, n=60)
    expected = _library_metrics(preds, refs)
    got = {}
    for name in ("ed_bleu", "ed_distinct", "ed_rouge", "ed_f1"):
        module = evaluate.load(str(repo_root / "evaluation" / "metrics" / name))
        got.update(module.compute(predictions=preds, references=refs))
    assert got == {k: pytest.approx(v, rel=1e-12) for k, v in expected.items()}
    distinct = evaluate.load(str(repo_root / "evaluation" / "metrics" / "ed_distinct"))
    assert distinct.compute(predictions=["i am sad", "i am happy"]) == {
        "dist_1": approx(400 / 6),
        "dist_2": approx(75.0),
    }


@pytest.mark.slow
def test_compute_metrics_script(repo_root, ed_test_path, tmp_path):
    import subprocess
    import sys

    preds_file = tmp_path / "preds.jsonl"
    preds, refs = _real_pairs(ed_test_path, n=40)
    preds_file.write_text(
        "".join(json.dumps({"prediction": p, "reference": r, "model": "m"}) + "\n" for p, r in zip(preds, refs))
    )
    out = tmp_path / "metrics.json"
    script = str(repo_root / "evaluation" / "compute_metrics.py")
    done = subprocess.run(
        [sys.executable, script, "--predictions", str(preds_file), "--output", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["model"] == "m" and result["n"] == 40
    expected = _library_metrics(preds, refs)
    assert {k: result[k] for k in expected} == {
        k: pytest.approx(v, abs=1e-4) for k, v in expected.items()
    }  # 4 decimals
    bad = subprocess.run(
        [sys.executable, script, "--predictions", str(preds_file), "--output", str(out), "--reference-column", "gold"],
        capture_output=True,
        text=True,
    )
    assert (
        bad.returncode == 2
        and bad.stderr.strip().splitlines() == [bad.stderr.strip()]
        and "no column 'gold'" in bad.stderr
    )


def test_report_table_and_chart(repo_root, tmp_path):
    import subprocess
    import sys

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "a.json").write_text(json.dumps({"model": "a", "n": 10, "bleu_1": 12.5, "f1": 30.0}))
    (tmp_path / "m" / "b.json").write_text(json.dumps({"model": "b", "n": 10, "bleu_1": 10.0, "f1": 31.25}))
    out = tmp_path / "report"
    script = str(repo_root / "evaluation" / "report.py")
    done = subprocess.run(
        [sys.executable, script, "--metrics", str(tmp_path / "m"), "--output-dir", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    table = (out / "metrics.md").read_text().splitlines()
    assert table[0] == "| Model | n | BLEU-1 | F1 |"
    assert table[2] == "| a | 10 | **12.50** | 30.00 |" and table[3] == "| b | 10 | 10.00 | **31.25** |"
    assert (out / "metrics.png").stat().st_size > 1000
    (tmp_path / "bad.json").write_text("{}")
    bad = subprocess.run(
        [sys.executable, script, "--metrics", str(tmp_path / "bad.json")], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "holds no metrics" in bad.stderr
