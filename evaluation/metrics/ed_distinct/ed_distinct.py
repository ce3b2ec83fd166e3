"""Corpus-level Dist-1 and Dist-2 of the predictions (x100).

Distinct n-grams over all predictions divided by all n-grams over all predictions. References are accepted and ignored, so the module takes the same inputs as the others. Text is lower-cased and split into NLTK word tokens (no downloaded data). Scores are x100, as the papers report them.
"""

import datasets
import evaluate

from empathy_recipes import metrics

_CITATION = """@inproceedings{li2016diversity, title={A Diversity-Promoting Objective Function for Neural Conversation Models}, author={Li, Jiwei and Galley, Michel and Brockett, Chris and Gao, Jianfeng and Dolan, Bill}, booktitle={NAACL}, year={2016}}"""

_DESCRIPTION = """Distinct n-grams over all predictions divided by all n-grams over all predictions. References are accepted and ignored, so the module takes the same inputs as the others. Text is lower-cased and split into NLTK word tokens (no downloaded data). Scores are x100, as the papers report them."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of model replies (str).
    references: optional, ignored.
Returns:
    dist_1, dist_2 (float, 0-100).
Example:
    >>> m = evaluate.load("evaluation/metrics/ed_distinct")
    >>> m.compute(predictions=["i am sad", "i am happy"])
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class EdDistinct(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("string")}),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
            reference_urls=["https://arxiv.org/abs/2407.01937"],
        )

    def _compute(self, predictions, references=None):
        hyps = metrics.tokenize_corpus(predictions)
        return {"dist_1": 100.0 * metrics.distinct_n(hyps, 1), "dist_2": 100.0 * metrics.distinct_n(hyps, 2)}
