"""Corpus-level unigram F1 (CEM's calc_corpus_f1), x100.

Token multiset overlaps and lengths are summed over the corpus, then P = hits / prediction tokens, R = hits / reference tokens, F1 = 2PR / (P + R). Punctuation tokens count. Text is lower-cased and split into NLTK word tokens (no downloaded data). Scores are x100, as the papers report them.
"""

import datasets
import evaluate

from empathy_recipes import metrics

_CITATION = """@inproceedings{sabour2022cem, title={CEM: Commonsense-aware Empathetic Response Generation}, author={Sabour, Sahand and Zheng, Chujie and Huang, Minlie}, booktitle={AAAI}, year={2022}}"""

_DESCRIPTION = """Token multiset overlaps and lengths are summed over the corpus, then P = hits / prediction tokens, R = hits / reference tokens, F1 = 2PR / (P + R). Punctuation tokens count. Text is lower-cased and split into NLTK word tokens (no downloaded data). Scores are x100, as the papers report them."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of model replies (str).
    references: list of reference replies (str), one per prediction.
Returns:
    f1 (float, 0-100).
Example:
    >>> m = evaluate.load("evaluation/metrics/ed_f1")
    >>> m.compute(predictions=["i am sorry"], references=["i am so sorry to hear that"])
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class EdF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=["https://arxiv.org/abs/2407.01937"],
        )

    def _compute(self, predictions, references):
        hyps = metrics.tokenize_corpus(predictions)
        refs = metrics.tokenize_corpus(references)
        return {"f1": 100.0 * metrics.unigram_f1(hyps, refs)}
