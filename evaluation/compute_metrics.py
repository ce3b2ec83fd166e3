"""Score predictions against references with the papers' automatic metrics; write one flat JSON object.

    python evaluation/compute_metrics.py --predictions preds.jsonl --output metrics.json [--bertscore]

Keys (all x100, as the papers report them): bleu_1..bleu_4, dist_1, dist_2, rouge_1, rouge_2, rouge_l (the
Efficient-Empathy script's ROUGE: normalize_answer tokens, no stemming), f1, rouge_1_stemmed .. rouge_l_stemmed
(Porter-stemmed), and bertscore_f1 with --bertscore; plus ``model`` (the predictions' ``model`` column, else the
file name) and ``n``.
Definitions: ``src/empathy_recipes/metrics.py`` and docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from empathy_recipes import outputs
from empathy_recipes.data import load_dataset_any
from empathy_recipes.errors import EmpathyRecipesError, exit_on_user_error
from empathy_recipes.logs import add_log_args, setup_logging
from empathy_recipes.metrics import compute_all_metrics

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--predictions", required=True, help="JSONL/JSON/CSV/parquet file, dataset dir or Hub id")
    p.add_argument("--split", default=None)
    p.add_argument("--prediction-column", default="prediction")
    p.add_argument("--reference-column", default="reference")
    p.add_argument("--output", required=True, help="JSON file to write")
    p.add_argument("--model-name", default=None, help="name for the report (default: the 'model' column or file)")
    p.add_argument("--bertscore", action="store_true", help="also compute BERTScore F1")
    p.add_argument("--bertscore-model", default=None, help="bert_score model type or folder (default: MiniLM)")
    p.add_argument("--bertscore-num-layers", type=int, default=None)
    p.add_argument("--device", default=None, help="device for BERTScore (default: bert_score's choice)")
    add_log_args(p)
    return p.parse_args(argv)


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup_logging("eval-metrics", args, __name__)
    output = Path(args.output)
    if output.suffix.lower() != ".json":
        raise EmpathyRecipesError(f"--output must be a .json file, got {output}")
    ds = load_dataset_any(args.predictions, split=args.split)
    for col in (args.prediction_column, args.reference_column):
        if col not in ds.column_names:
            raise EmpathyRecipesError(f"{args.predictions} has no column {col!r}; it has {ds.column_names}")
    predictions, references = ds[args.prediction_column], ds[args.reference_column]
    missing = [i for i, (p, r) in enumerate(zip(predictions, references)) if p is None or r is None]
    if missing:
        raise EmpathyRecipesError(f"{len(missing)} row(s) lack a prediction or reference (first at row {missing[0]})")
    if args.model_name:
        name = args.model_name
    elif "model" in ds.column_names and ds[0]["model"]:
        name = str(ds[0]["model"])
    else:
        name = Path(args.predictions).stem

    start = time.perf_counter()
    scores = compute_all_metrics(
        predictions,
        references,
        bertscore=args.bertscore,
        bertscore_model=args.bertscore_model,
        bertscore_num_layers=args.bertscore_num_layers,
        device=args.device,
    )
    result = {"model": name, "n": len(predictions), **{k: round(v, 4) for k, v in scores.items()}}
    counts = outputs.check_rows("metrics", len(ds), {"scored": result["n"]})
    outputs.write_json(output, result)
    outputs.write_manifest(output, "metrics", {"predictions": args.predictions}, args, counts, {"metrics": output})
    print(json.dumps(result))
    logger.info(f"{len(predictions)} pairs in {time.perf_counter() - start:.2f} s -> {output}")
    return result


if __name__ == "__main__":
    main()
