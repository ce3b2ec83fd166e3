"""ROUGE-1/2/L F-measure as the Efficient-Empathy script computes it (+ the stemmed variant), averaged over pairs (x100).

rouge_1/2/l as the Efficient-Empathy metric script computes them: its RougeScorer with tokenization_fn=normalize_answer (lower-case, ASCII punctuation to spaces, articles a/an/the removed, no stemming) on the space-joined word tokens, F-measure per pair, averaged. rouge_*_stemmed: rouge_score's default tokenizer with Porter stemming. Text is lower-cased and split into NLTK word tokens (no downloaded data). Scores are x100, as the papers report them.
"""

from empathy_recipes import metric_modules, metrics


class EdRouge(metric_modules.EDMetric):
    NAME = "ed_rouge"
    CITATION = "@inproceedings{lin2004rouge, title={ROUGE: A Package for Automatic Evaluation of Summaries}, author={Lin, Chin-Yew}, booktitle={Text Summarization Branches Out}, year={2004}}"
    RETURNS = "rouge_1, rouge_2, rouge_l (the paper's script's ROUGE), rouge_1_stemmed, rouge_2_stemmed, rouge_l_stemmed\n    (Porter-stemmed; float, 0-100)."
    EXAMPLE = 'predictions=["i am sorry"], references=["i am so sorry to hear that"]'

    def score_tokens(self, hyps, refs):
        paper = metrics.rouge_f_scores(hyps, refs, tokenizer=metrics.PaperRougeTokenizer())
        stemmed = metrics.rouge_f_scores(hyps, refs, use_stemmer=True)
        return {
            "rouge_1": 100.0 * paper["rouge1"],
            "rouge_2": 100.0 * paper["rouge2"],
            "rouge_l": 100.0 * paper["rougeL"],
            "rouge_1_stemmed": 100.0 * stemmed["rouge1"],
            "rouge_2_stemmed": 100.0 * stemmed["rouge2"],
            "rouge_l_stemmed": 100.0 * stemmed["rougeL"],
        }
