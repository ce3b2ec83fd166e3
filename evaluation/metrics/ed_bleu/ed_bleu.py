"""Corpus BLEU-1..4 as Efficient-Empathy reports it (x100).

NLTK corpus_bleu with one reference per prediction, cumulative uniform weights, SmoothingFunction(epsilon=1e-12).method1, computed for n = 1..4 in one pass. Text is lower-cased and split into NLTK word tokens (no downloaded data). Scores are x100, as the papers report them.
"""

from empathy_recipes import metric_modules, metrics


class EdBleu(metric_modules.EDMetric):
    NAME = "ed_bleu"
    CITATION = "@inproceedings{papineni2002bleu, title={BLEU: a Method for Automatic Evaluation of Machine Translation}, author={Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing}, booktitle={ACL}, year={2002}}"
    RETURNS = "bleu_1, bleu_2, bleu_3, bleu_4 (float, 0-100)."
    EXAMPLE = 'predictions=["the cat sat on the mat"], references=["the cat is on the mat"]'

    def score_tokens(self, hyps, refs):
        scores = metrics.corpus_bleu_scores(hyps, refs, max_n=4)
        return {f"bleu_{n}": 100.0 * s for n, s in enumerate(scores, start=1)}
