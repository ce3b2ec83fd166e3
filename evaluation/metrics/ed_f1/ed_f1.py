"""Corpus-level unigram F1 (CEM's calc_corpus_f1), x100.

Token multiset overlaps and lengths are summed over the corpus, then P = hits / prediction tokens, R = hits / reference tokens, F1 = 2PR / (P + R). Punctuation tokens count. Text is lower-cased and split into NLTK word tokens (no downloaded data). Scores are x100, as the papers report them.
"""

from empathy_recipes import metric_modules, metrics


class EdF1(metric_modules.EDMetric):
    NAME = "ed_f1"
    CITATION = "@inproceedings{sabour2022cem, title={CEM: Commonsense-aware Empathetic Response Generation}, author={Sabour, Sahand and Zheng, Chujie and Huang, Minlie}, booktitle={AAAI}, year={2022}}"
    RETURNS = "f1 (float, 0-100)."
    EXAMPLE = 'predictions=["i am sorry"], references=["i am so sorry to hear that"]'

    def score_tokens(self, hyps, refs):
        return {"f1": 100.0 * metrics.unigram_f1(hyps, refs)}
