"""Rate every prediction of a model with an LLM judge: 1-3 naturalness/coherence/empathy, or 0-10
sensibility/rationality.

    predictions (make generate)  >>  judge Task (LLM from --backend)  >>  Distiset on disk / the Hub + summary.json

    python distilabel_pipelines/judge_predictions.py --predictions outputs/eval/predictions.jsonl \\
        --rubric quality --output-dir outputs/eval/judge/smollm2 --limit 40        # embedded SmolLM2 on CPU
    ... --rubric sensibility_rationality --backend vllm --model meta-llama/Meta-Llama-3-70B-Instruct   # GPU
    ... --backend openai --base-url http://localhost:8000/v1 --model <served name>                   # any server

Rubrics reuse the data-stage judges: ``quality`` is Synth-Empathy's 1-3 naturalness / coherence / empathy
(:class:`~empathy_recipes.tasks.dialogue_quality.DialogueQualityJudge`), ``sensibility_rationality`` is
Efficient-Empathy's 0-10 judge (:class:`~empathy_recipes.tasks.sensibility_rationality.SensibilityRationalityJudge`).
The conversation shown to the judge is the example's context with the prediction as the listener's last reply.
``--prediction-column reference`` rates the human references instead (a ceiling to compare with).

Output (``--output-dir``): ``default.jsonl`` (one row per prediction with its scores), ``distiset/``, and
``summary.json``: per axis the mean integer score, the mean probability-weighted score, how many rows were scored,
and the ids of rows the judge left unscored (kept in ``default.jsonl`` with their raw text). Reruns resume from
distilabel's cache.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from datasets import Dataset
from distilabel.pipeline import Pipeline

from empathy_recipes import outputs
from empathy_recipes.data import load_dataset_any, split_turns, turns_to_messages
from empathy_recipes.errors import EmpathyRecipesError, exit_on_user_error
from empathy_recipes.judge_scores import axis_summary
from empathy_recipes.llm import check_llm_environment
from empathy_recipes.logs import setup_logging
from empathy_recipes.pipeline_io import default_cache_dir, make_pipeline, save_and_push_distiset
from empathy_recipes.prob_scoring import add_judge_args, judge_step, parse_judge_args
from empathy_recipes.resume import run_pipeline
from empathy_recipes.tasks.dialogue_quality import DialogueQualityJudge
from empathy_recipes.tasks.sensibility_rationality import SensibilityRationalityJudge

logger = logging.getLogger(__name__)

RUBRICS = {"quality": DialogueQualityJudge, "sensibility_rationality": SensibilityRationalityJudge}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predictions", required=True, help="output of make generate (JSONL/any dataset source)")
    parser.add_argument("--prediction-column", default="prediction", help="the reply to rate (or 'reference')")
    parser.add_argument("--rubric", choices=sorted(RUBRICS), default="sensibility_rationality")
    add_judge_args(parser)
    args = parse_judge_args(parser, argv, "ratings")
    check_llm_environment(args)
    return args


def predictions_to_rows(source: str, column: str, limit: int | None = None) -> Dataset:
    """Prediction rows -> ``id``, ``emotion``, ``messages`` (context + the reply to rate), ``rated_model``."""
    ds = load_dataset_any(source)
    for col in ("context", column):
        if col not in ds.column_names:
            raise EmpathyRecipesError(f"{source} has no column {col!r}; it has {ds.column_names}")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    if len(ds) == 0:
        raise EmpathyRecipesError(f"{source} holds no rows")
    rows = {"id": [], "emotion": [], "messages": [], "rated_model": []}
    for i, r in enumerate(ds):
        turns = split_turns(r["context"] or [])
        if not turns or r[column] is None:
            raise EmpathyRecipesError(f"row {i} of {source} has no context or no {column!r}")
        rows["id"].append(str(r.get("id", i)))
        rows["emotion"].append(str(r.get("emotion") or ""))
        rows["messages"].append(turns_to_messages(turns, str(r[column])))
        rows["rated_model"].append(str(r.get("model") or column))
    return Dataset.from_dict(rows)


def build_distilabel_pipeline(args: argparse.Namespace, cache_dir: Path) -> Pipeline:
    """The rating pipeline, built and not run: one step of the ``--rubric``'s judge Task with the LLM of
    ``--backend`` (its rows come from :func:`empathy_recipes.resume.run_pipeline`)."""
    with make_pipeline(f"judge-predictions-{args.rubric.replace('_', '-')}", args, cache_dir) as pipeline:
        judge_step(RUBRICS[args.rubric], args, num_generations=args.num_generations, prompt=args.prompt)
    return pipeline


def summarize(rows: Dataset, axes: list[str]) -> dict:
    """Per axis (:func:`empathy_recipes.judge_scores.axis_summary`) and the ids of the rows left unscored."""
    frame = rows.to_pandas()
    summary = axis_summary(frame, axes)
    unscored = frame[~frame[axes].notna().all(axis=1)]
    return {
        "rows": summary["rows"],
        "axes": {a: {k: summary[a][k] for k in ("mean", "mean_weighted", "scored")} for a in axes},
        "unscored_ids": unscored["id"].tolist(),
    }


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup_logging("eval-judge", args, __name__)
    dataset = predictions_to_rows(args.predictions, args.prediction_column, args.limit)
    cache_dir = default_cache_dir(args)
    # Resume: a killed run's finished batches are kept; only the other rows go through the judge.
    run = run_pipeline(build_distilabel_pipeline(args, cache_dir), dataset, cache_dir, args.batch_size)
    distiset = run.distiset

    written = save_and_push_distiset(distiset, args)
    summary = {
        "predictions": args.predictions,
        "rated_model": dataset[0]["rated_model"],
        "rubric": args.rubric,
        "judge": args.model,
        **summarize(distiset["default"]["train"], list(RUBRICS[args.rubric].axes_spec().names)),
        "outputs": {k: str(v) for k, v in written.items()},
    }
    if args.output_dir:
        outputs.write_json(Path(args.output_dir) / "summary.json", summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "unscored_ids"}, indent=2))
    return summary


if __name__ == "__main__":
    main()
