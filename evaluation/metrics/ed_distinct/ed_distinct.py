"""Corpus-level Dist-1 and Dist-2 of the predictions (x100).

Distinct n-grams over all predictions divided by all n-grams over all predictions. References are accepted and ignored, so the module takes the same inputs as the others. Text is lower-cased and split into NLTK word tokens (no downloaded data). Scores are x100, as the papers report them.
"""

from empathy_recipes import metric_modules, metrics


class EdDistinct(metric_modules.EDMetric):
    NAME = "ed_distinct"
    CITATION = "@inproceedings{li2016diversity, title={A Diversity-Promoting Objective Function for Neural Conversation Models}, author={Li, Jiwei and Galley, Michel and Brockett, Chris and Gao, Jianfeng and Dolan, Bill}, booktitle={NAACL}, year={2016}}"
    ARGS = ("references: optional, ignored.",)
    REFERENCES_OPTIONAL = True
    RETURNS = "dist_1, dist_2 (float, 0-100)."
    EXAMPLE = 'predictions=["i am sad", "i am happy"]'

    def score_tokens(self, hyps, refs):
        return {"dist_1": 100.0 * metrics.distinct_n(hyps, 1), "dist_2": 100.0 * metrics.distinct_n(hyps, 2)}
