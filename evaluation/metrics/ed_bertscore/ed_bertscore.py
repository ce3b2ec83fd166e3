"""Mean BERTScore F1 (x100); the packaged all-MiniLM-L6-v2 offline by default.

bert_score.score F1 averaged over pairs, without baseline rescaling. Default model: the packaged all-MiniLM-L6-v2 at layer 6 (offline, CPU-friendly); any bert_score model type (e.g. roberta-large) or local folder with model=..., best on a GPU.
"""

from empathy_recipes import metric_modules, metrics


class EdBertScore(metric_modules.EDMetric):
    NAME = "ed_bertscore"
    CITATION = "@inproceedings{zhang2020bertscore, title={BERTScore: Evaluating Text Generation with BERT}, author={Zhang, Tianyi and Kishore, Varsha and Wu, Felix and Weinberger, Kilian Q. and Artzi, Yoav}, booktitle={ICLR}, year={2020}}"
    ARGS = (
        metric_modules.REFERENCES_ARG,
        "model: bert_score model type or local folder (default: packaged MiniLM).",
        "num_layers: layer to use (required for models bert_score does not know).",
        "device: cuda / cpu (default: bert_score's choice).",
        "batch_size: pairs per forward pass (default 64).",
    )
    RETURNS = "bertscore_f1 (float, 0-100)."
    EXAMPLE = 'predictions=["i am sorry"], references=["i am so sorry to hear that"]'

    def _compute(self, predictions, references, model=None, num_layers=None, device=None, batch_size=64):
        f1 = metrics.bertscore_f1(
            predictions, references, model=model, num_layers=num_layers, device=device, batch_size=batch_size
        )
        return {"bertscore_f1": 100.0 * f1}
