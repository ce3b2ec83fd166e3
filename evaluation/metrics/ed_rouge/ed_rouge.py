"""ROUGE-1/2/L F-measure with Porter stemming, averaged over pairs (x100).

Equal to rouge_score.RougeScorer(['rouge1', 'rouge2', 'rougeL'], use_stemmer=True) on the space-joined word tokens, pair by pair, averaged; computed with cached stems and a bit-parallel LCS. Text is lower-cased and split into NLTK word tokens (no downloaded data). Scores are x100, as the papers report them.
"""

import datasets
import evaluate

from empathy_recipes import metrics

_CITATION = """@inproceedings{lin2004rouge, title={ROUGE: A Package for Automatic Evaluation of Summaries}, author={Lin, Chin-Yew}, booktitle={Text Summarization Branches Out}, year={2004}}"""

_DESCRIPTION = """Equal to rouge_score.RougeScorer(['rouge1', 'rouge2', 'rougeL'], use_stemmer=True) on the space-joined word tokens, pair by pair, averaged; computed with cached stems and a bit-parallel LCS. Text is lower-cased and split into NLTK word tokens (no downloaded data). Scores are x100, as the papers report them."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of model replies (str).
    references: list of reference replies (str), one per prediction.
    use_stemmer: Porter stemming (default True).
Returns:
    rouge_1, rouge_2, rouge_l (float, 0-100).
Example:
    >>> m = evaluate.load("evaluation/metrics/ed_rouge")
    >>> m.compute(predictions=["i am sorry"], references=["i am so sorry to hear that"])
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class EdRouge(evaluate.Metric):
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

    def _compute(self, predictions, references, use_stemmer=True):
        hyps = metrics.tokenize_corpus(predictions)
        refs = metrics.tokenize_corpus(references)
        scores = metrics.rouge_f_scores(hyps, refs, use_stemmer=use_stemmer)
        return {
            "rouge_1": 100.0 * scores["rouge1"],
            "rouge_2": 100.0 * scores["rouge2"],
            "rouge_l": 100.0 * scores["rougeL"],
        }
