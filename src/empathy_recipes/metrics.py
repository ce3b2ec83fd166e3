"""Automatic response metrics as the Efficient-Empathy / CEM evaluation reports them, computed fast and offline.

Every function here is pure. Definitions (the papers' ``dialogue_evaluation``, ``empathy/metrics.py``):

- **Tokens**: text lower-cased, then NLTK's word tokenizer. The papers called ``nltk.word_tokenize``, which needs the
  ``punkt_tab`` data for sentence splitting; here sentences are split by a rule (after ``.``, ``!`` or ``?`` followed
  by whitespace) and each is tokenised with ``NLTKWordTokenizer``, the same Treebank-style tokenizer
  ``word_tokenize`` runs on each sentence. ED's references are already space-tokenised, so they come out the same.
- **BLEU-n** (n = 1..4): NLTK ``corpus_bleu`` with one reference per hypothesis, cumulative uniform weights
  (BLEU-2 uses (1/2, 1/2), ...), ``SmoothingFunction(epsilon=1e-12).method1``. Computed here in one pass over the
  corpus for all n (clipped n-gram matches and counts summed over the corpus, then NLTK's exact formula).
- **Dist-n**: distinct n-grams over all predictions divided by all n-grams over all predictions (corpus level).
  The papers add 1e-5 to both counts; that changes nothing at the reported precision and is left out.
- **ROUGE-1/2/L** (``rouge_1``, ``rouge_2``, ``rouge_l``): as the Efficient-Empathy script computes them. Its own
  ``RougeScorer`` runs with ``tokenization_fn=normalize_answer`` on the space-joined tokens above: lower-case,
  the ASCII punctuation ``!"#$%&()*+,-./:;<=>?@[]\\^`{|}~_'`` to spaces, the articles a/an/the removed, split on
  whitespace, **no stemming** (its ``use_stemmer`` is dead on that path; a text with no word left is one empty
  token, as there). F-measure per pair, averaged over pairs. Equal to ``rouge_score.RougeScorer`` with
  :class:`PaperRougeTokenizer` as its tokenizer (tested), computed here with a bit-parallel LCS.
  ``rouge_*_stemmed``: the same with ``rouge_score``'s default tokenizer and Porter stemming (this project's
  earlier ROUGE; typically a few tenths higher).
- **F1**: corpus-level unigram F1, CEM's ``calc_corpus_f1``: the multiset overlap of prediction and reference
  tokens, summed over the corpus, gives precision (over all prediction tokens) and recall (over all reference
  tokens), and F1 = 2PR / (P + R). Tokens include punctuation, as in the papers.
- **BERTScore F1** (optional): ``bert_score`` mean F1; the packaged all-MiniLM-L6-v2 (layer 6) offline by default.

:func:`compute_all_metrics` returns them all x100, as the papers report them.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

from empathy_recipes.errors import EmpathyRecipesError

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+")
_OTHER_SPACE = re.compile(r"[^\S ]")  # any whitespace but a plain space
_ROUGE_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_ROUGE_VALID = re.compile(r"^[a-z0-9]+$")
_PAPER_PUNCTUATION = re.compile(r"[!\"#$%&()*+,\-./:;<=>?@\[\]\\^`{|}~_']")
_PAPER_ARTICLES = re.compile(r"\b(a|an|the)\b")

METRIC_NAMES = (
    "bleu_1",
    "bleu_2",
    "bleu_3",
    "bleu_4",
    "dist_1",
    "dist_2",
    "rouge_1",
    "rouge_2",
    "rouge_l",
    "f1",
    "rouge_1_stemmed",
    "rouge_2_stemmed",
    "rouge_l_stemmed",
)


@lru_cache(maxsize=1)
def _word_tokenizer():
    from nltk.tokenize.destructive import NLTKWordTokenizer

    return NLTKWordTokenizer()


def split_sentences(text: str) -> list[str]:
    """Split after ``.``, ``!`` or ``?`` (optionally followed by a closing quote or bracket) and whitespace."""
    return [s for s in _SENTENCE_END.split(text) if s]


def tokenize(text: str) -> list[str]:
    """Lower-case ``text`` and split it into NLTK word tokens (no downloaded data needed)."""
    tok = _word_tokenizer()
    return [t for sentence in split_sentences(text.lower().strip()) for t in tok.tokenize(sentence)]


class CorpusWordTokenizer:
    """``NLTKWordTokenizer`` run once over a whole corpus instead of once per sentence.

    NLTK applies about 40 regex substitutions per sentence, each through a timed wrapper: for ~10k short texts
    that is ~400k calls and most of the metrics' run time. Here the sentences are joined by newlines and every
    substitution runs once over the joined text, with NLTK's own patterns (read from the installed NLTK) made
    line-anchored (``^``/``$`` match at each sentence's start/end) and its whitespace-collapsing step kept from
    crossing lines. The per-sentence padding NLTK adds becomes padding around each newline. Sentences holding any
    whitespace other than a plain space take the per-sentence path, and the line count is checked, so the tokens
    are NLTK's (also checked in the tests on real data and random strings).
    """

    def __init__(self):
        import regex
        from nltk.tokenize.destructive import NLTKWordTokenizer as Nltk

        def anchored(pattern):
            if isinstance(pattern, re.Pattern):  # NLTK's contraction patterns are stdlib ``re``
                return re.compile(pattern.pattern, pattern.flags | re.MULTILINE)
            source = r"[^\S\n]+" if pattern.pattern == r"\s+" else pattern.pattern
            return regex.compile(source, pattern.flags | regex.MULTILINE)

        def steps(pairs):
            return [(anchored(rx), sub) for rx, sub in pairs]

        self._before = steps(Nltk.STARTING_QUOTES) + steps(Nltk.PUNCTUATION)
        self._before += steps([Nltk.PARENS_BRACKETS, Nltk.DOUBLE_DASHES])
        self._after = steps(Nltk.ENDING_QUOTES)
        self._after += [(anchored(rx), r" \1 \2 ") for rx in Nltk.CONTRACTIONS2 + Nltk.CONTRACTIONS3]

    def tokenize_sentences(self, sentences: Sequence[str]) -> list[list[str]] | None:
        """Tokens of each sentence (no newline inside), or None when the joined run lost track of the lines."""
        if not sentences:
            return []
        text = "\n".join(sentences)
        for rx, sub in self._before:
            text = rx.sub(sub, text)
        text = " " + text.replace("\n", " \n ") + " "
        for rx, sub in self._after:
            text = rx.sub(sub, text)
        lines = text.split("\n")
        if len(lines) != len(sentences):
            return None
        return [line.split() for line in lines]


@lru_cache(maxsize=1)
def _corpus_tokenizer() -> CorpusWordTokenizer:
    return CorpusWordTokenizer()


def _plain_spaces(text: str) -> bool:
    return _OTHER_SPACE.search(text) is None


def tokenize_corpus(texts: Sequence[str]) -> list[list[str]]:
    """:func:`tokenize` for many texts at once: each distinct text once, all sentences in one regex pass."""
    unique = list(dict.fromkeys(texts))
    tokens: dict[str, list[str]] = {}
    batched: list[str] = []
    spans: list[tuple[str, int, int]] = []
    for text in unique:
        lowered = text.lower().strip()
        if not _plain_spaces(lowered):
            tokens[text] = tokenize(text)
            continue
        sentences = split_sentences(lowered)
        spans.append((text, len(batched), len(batched) + len(sentences)))
        batched.extend(sentences)
    per_sentence = _corpus_tokenizer().tokenize_sentences(batched)
    if per_sentence is None:  # never seen; stay correct anyway
        per_sentence = [_word_tokenizer().tokenize(s) for s in batched]
    for text, start, end in spans:
        tokens[text] = [t for sent in per_sentence[start:end] for t in sent]
    return [tokens[t] for t in texts]


def ngram_counts(tokens: Sequence[str], n: int) -> Counter:
    """Counts of the ``n``-grams (tuples) of ``tokens``."""
    return Counter(zip(*(tokens[i:] for i in range(n)))) if len(tokens) >= n else Counter()


def _check_pairs(hypotheses: Sequence, references: Sequence) -> None:
    if len(hypotheses) != len(references):
        raise EmpathyRecipesError(f"{len(hypotheses)} predictions but {len(references)} references")


def corpus_bleu_scores(
    hypotheses: Sequence[Sequence[str]],
    references: Sequence[Sequence[str]],
    max_n: int = 4,
    epsilon: float = 1e-12,
) -> list[float]:
    """Cumulative corpus BLEU-1..``max_n`` (in [0, 1]), equal to NLTK's ``corpus_bleu`` with one reference each,
    weights ``(1/n,) * n`` and ``SmoothingFunction(epsilon).method1``, for every n in one pass."""
    _check_pairs(hypotheses, references)
    numerators = [0] * (max_n + 1)
    denominators = [0] * (max_n + 1)
    hyp_len = ref_len = 0
    for hyp, ref in zip(hypotheses, references):
        hyp_len += len(hyp)
        ref_len += len(ref)
        for n in range(1, max_n + 1):
            hyp_counts = ngram_counts(hyp, n)
            if hyp_counts:
                ref_counts = ngram_counts(ref, n)
                numerators[n] += sum(min(c, ref_counts[g]) for g, c in hyp_counts.items())
            # NLTK: denominator max(1, #hyp n-grams) per sentence, so short hypotheses still count 1.
            denominators[n] += max(1, len(hyp) - n + 1)
    if numerators[1] == 0:
        return [0.0] * max_n
    if hyp_len == 0:
        bp = 0.0
    elif hyp_len > ref_len:
        bp = 1.0
    else:
        bp = math.exp(1 - ref_len / hyp_len)
    # method1: a zero match count becomes epsilon.
    log_p = [0.0] + [
        math.log((numerators[n] if numerators[n] else epsilon) / denominators[n]) for n in range(1, max_n + 1)
    ]
    return [bp * math.exp(math.fsum((1.0 / n) * log_p[i] for i in range(1, n + 1))) for n in range(1, max_n + 1)]


def distinct_n(hypotheses: Sequence[Sequence[str]], n: int) -> float:
    """Corpus-level distinct-n: #distinct n-grams / #n-grams over all hypotheses (0.0 when there are none)."""
    seen: set = set()
    total = 0
    for hyp in hypotheses:
        grams = list(zip(*(hyp[i:] for i in range(n))))
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def unigram_f1(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> float:
    """Corpus-level unigram F1 (CEM's ``calc_corpus_f1``): overlaps and lengths summed over the corpus first."""
    _check_pairs(hypotheses, references)
    hits = pred_total = ref_total = 0
    for hyp, ref in zip(hypotheses, references):
        hits += sum((Counter(hyp) & Counter(ref)).values())
        pred_total += len(hyp)
        ref_total += len(ref)
    if hits == 0:
        return 0.0
    precision, recall = hits / pred_total, hits / ref_total
    return 2 * precision * recall / (precision + recall)


class RougeTokenizer:
    """``rouge_score``'s default tokenizer with Porter stemming, with a stem cache (same tokens, less work)."""

    def __init__(self, use_stemmer: bool = True):
        self._stem = None
        if use_stemmer:
            from nltk.stem import porter

            self._stem = lru_cache(maxsize=None)(porter.PorterStemmer().stem)

    def tokenize(self, text: str) -> list[str]:
        tokens = _ROUGE_NON_ALNUM.sub(" ", text.lower()).split()
        if self._stem is not None:
            tokens = [self._stem(t) if len(t) > 3 else t for t in tokens]
        return [t for t in tokens if _ROUGE_VALID.match(t)]


class PaperRougeTokenizer:
    """The Efficient-Empathy script's ``normalize_answer`` as a ``rouge_score`` tokenizer: lower-case, ASCII
    punctuation to spaces, articles a/an/the removed, split on whitespace; ``[""]`` when no word is left."""

    def tokenize(self, text: str) -> list[str]:
        text = _PAPER_ARTICLES.sub(" ", _PAPER_PUNCTUATION.sub(" ", text.lower()))
        return " ".join(text.split()).split(" ")


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence, bit-parallel (Allison-Dix / Hyyro): O(len(b)) big-int steps."""
    if not a or not b:
        return 0
    masks: dict = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for token in b:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def _f(overlap: int, n_pred: int, n_ref: int) -> float:
    precision = overlap / max(n_pred, 1)
    recall = overlap / max(n_ref, 1)
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def rouge_pair(ref_tokens: Sequence[str], pred_tokens: Sequence[str]) -> tuple[float, float, float]:
    """ROUGE-1, ROUGE-2, ROUGE-L F-measures of one pair of ROUGE tokens, as ``rouge_score`` computes them."""
    scores = []
    for n in (1, 2):
        ref_counts, pred_counts = ngram_counts(ref_tokens, n), ngram_counts(pred_tokens, n)
        overlap = sum((ref_counts & pred_counts).values())
        scores.append(_f(overlap, sum(pred_counts.values()), sum(ref_counts.values())))
    if not ref_tokens or not pred_tokens:
        scores.append(0.0)
    else:
        lcs = lcs_length(ref_tokens, pred_tokens)
        scores.append(_f(lcs, len(pred_tokens), len(ref_tokens)))
    return scores[0], scores[1], scores[2]


def rouge_f_scores(
    hypotheses: Sequence[Sequence[str]],
    references: Sequence[Sequence[str]],
    use_stemmer: bool = True,
    tokenizer: RougeTokenizer | PaperRougeTokenizer | None = None,
) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measures (in [0, 1]) over pairs of word-token lists, scored on their space-joined text
    exactly as ``rouge_score.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=use_stemmer)`` would, or with
    ``tokenizer`` as its tokenizer (``PaperRougeTokenizer()``: the Efficient-Empathy script's ROUGE)."""
    _check_pairs(hypotheses, references)
    if not hypotheses:
        return {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    rouge_tok = tokenizer if tokenizer is not None else RougeTokenizer(use_stemmer)
    cache: dict[str, list[str]] = {}

    def toks(words: Sequence[str]) -> list[str]:
        text = " ".join(words)
        if text not in cache:
            cache[text] = rouge_tok.tokenize(text)
        return cache[text]

    sums = [0.0, 0.0, 0.0]
    for hyp, ref in zip(hypotheses, references):
        for k, value in enumerate(rouge_pair(toks(ref), toks(hyp))):
            sums[k] += value
    return {
        "rouge1": sums[0] / len(hypotheses),
        "rouge2": sums[1] / len(hypotheses),
        "rougeL": sums[2] / len(hypotheses),
    }


def bertscore_f1(
    predictions: Sequence[str],
    references: Sequence[str],
    model: str | None = None,
    num_layers: int | None = None,
    device: str | None = None,
    batch_size: int = 64,
) -> float:
    """Mean BERTScore F1 (in [0, 1]). Default: the packaged all-MiniLM-L6-v2 at layer 6, offline.

    ``model`` may be any ``bert_score`` model type or local folder (e.g. ``roberta-large`` on a GPU); give
    ``num_layers`` for models ``bert_score`` does not know.
    """
    from bert_score import score

    from empathy_recipes.models import default_embedder_path

    _check_pairs(predictions, references)
    if model is None:
        model, num_layers = str(default_embedder_path()), num_layers or 6
    _, _, f1 = score(
        list(predictions),
        list(references),
        model_type=model,
        num_layers=num_layers,
        device=device,
        batch_size=batch_size,
        verbose=False,
    )
    return float(f1.mean())


def compute_all_metrics(
    predictions: Sequence[str],
    references: Sequence[str],
    bertscore: bool = False,
    bertscore_model: str | None = None,
    bertscore_num_layers: int | None = None,
    device: str | None = None,
) -> dict[str, float]:
    """Every metric x100 as one flat dict: bleu_1..4, dist_1, dist_2, rouge_1, rouge_2, rouge_l (the paper's
    script's ROUGE), f1, rouge_1_stemmed, rouge_2_stemmed, rouge_l_stemmed (+ bertscore_f1 when ``bertscore``).
    Text is tokenised once for all of them."""
    _check_pairs(predictions, references)
    if not predictions:
        raise EmpathyRecipesError("no predictions to score")
    bad = [
        i for i, (p, r) in enumerate(zip(predictions, references)) if not isinstance(p, str) or not isinstance(r, str)
    ]
    if bad:
        raise EmpathyRecipesError(f"{len(bad)} prediction/reference value(s) are not strings (first at row {bad[0]})")
    tokens = tokenize_corpus(list(predictions) + list(references))  # one pass; shared texts tokenised once
    hyps, refs = tokens[: len(predictions)], tokens[len(predictions) :]
    bleu = corpus_bleu_scores(hyps, refs, max_n=4)
    rouge = rouge_f_scores(hyps, refs, tokenizer=PaperRougeTokenizer())
    stemmed = rouge_f_scores(hyps, refs, use_stemmer=True)
    result = {f"bleu_{n}": bleu[n - 1] for n in range(1, 5)}
    result.update({"dist_1": distinct_n(hyps, 1), "dist_2": distinct_n(hyps, 2)})
    result.update({"rouge_1": rouge["rouge1"], "rouge_2": rouge["rouge2"], "rouge_l": rouge["rougeL"]})
    result["f1"] = unigram_f1(hyps, refs)
    result.update(
        {f"{k}_stemmed": stemmed[r] for k, r in (("rouge_1", "rouge1"), ("rouge_2", "rouge2"), ("rouge_l", "rougeL"))}
    )
    if bertscore:
        result["bertscore_f1"] = bertscore_f1(
            predictions, references, model=bertscore_model, num_layers=bertscore_num_layers, device=device
        )
    return {k: 100.0 * v for k, v in result.items()}
