"""Win rate of model A vs model B on the same test examples, judged by an LLM in both orders.

    predictions A + B (make generate)  >>  every pair in both orders  >>  PairwiseJudge (LLM from --backend)
        >>  per pair and criterion: A wins / B wins only if both orders agree, else tie  >>  summary.json

    python distilabel_pipelines/pairwise_win_rate.py --predictions-a a.jsonl --predictions-b b.jsonl \\
        --output-dir outputs/eval/winrate --limit 40                         # embedded SmolLM2 on CPU
    ... --backend vllm --model meta-llama/Meta-Llama-3-70B-Instruct              # GPU
    ... --backend openai --base-url http://localhost:8000/v1 --model <served name>

Position swapping: each pair is judged as (Response 1 = A, Response 2 = B) and as (B, A). A win is counted only
when both orders name the same model; a disagreement (the judge followed the position) or a tie in either order is
a tie. ``summary.json`` gives per criterion A's win / tie / loss rates, the judge's position consistency (share of
pairs where both orders agreed) and unreadable pairs; ``pairs.jsonl`` has every pair's two verdicts and outcome;
``default.jsonl`` / ``distiset/`` every judged row. Reruns resume from distilabel's cache.

Pairing is by ``id``: an id only one file has, or one a file repeats, stops the run with one error line naming
them (nothing is dropped or collapsed silently); ``--on-mismatch keep-aside`` judges the clean pairs and writes the
other rows to ``aside.jsonl`` with their reason. ``summary.json`` ``rows`` checks rows in = 2 x pairs + aside.
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
from empathy_recipes.llm import check_llm_environment
from empathy_recipes.logs import setup_logging
from empathy_recipes.pairing import Pairing, add_mismatch_arg, pair_by_id
from empathy_recipes.pipeline_io import default_cache_dir, make_pipeline, save_and_push_distiset
from empathy_recipes.prob_scoring import add_judge_args, judge_step, parse_judge_args
from empathy_recipes.resume import run_pipeline
from empathy_recipes.tasks.pairwise import (
    CRITERIA_TEXT,
    PAIRWISE_CRITERIA,
    PairwiseJudge,
    combine_orders,
    verdict_winner,
    win_rates,
)

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predictions-a", required=True, help="model A's predictions (output of make generate)")
    parser.add_argument("--predictions-b", required=True, help="model B's predictions, same test examples (by id)")
    parser.add_argument("--prediction-column", default="prediction")
    parser.add_argument("--criteria", nargs="+", default=PAIRWISE_CRITERIA, help=f"from {sorted(CRITERIA_TEXT)}")
    add_mismatch_arg(parser)
    add_judge_args(parser, prompt=False)
    args = parse_judge_args(parser, argv, "verdicts")
    unknown = [c for c in args.criteria if not c.isidentifier()]
    if unknown:
        raise EmpathyRecipesError(f"criteria must be single words, got {unknown}")
    check_llm_environment(args)
    return args


def _by_id(source: str, column: str) -> tuple[list[dict], str]:
    """The rows of a predictions file (every row, repeated ids included) and its model name."""
    ds = load_dataset_any(source)
    for col in ("id", "context", column):
        if col not in ds.column_names:
            raise EmpathyRecipesError(f"{source} has no column {col!r}; it has {ds.column_names}")
    rows = ds.to_list()
    first = rows[0] if rows else {}
    return rows, str(first.get("model") or Path(source).stem)


def both_orders(pairing: Pairing, column: str, limit: int | None = None) -> Dataset:
    """One row per (pair, order): ``id``, ``order`` (AB or BA), ``messages`` (the context), ``response_1``,
    ``response_2``, ``emotion``; the pairs of :func:`pair_by_id`, in A's order."""
    rows: dict[str, list] = {k: [] for k in ("id", "order", "messages", "response_1", "response_2", "emotion")}
    for row_a, row_b in pairing.pairs[:limit]:
        i = str(row_a["id"])
        context = turns_to_messages(split_turns(row_a["context"] or []), None)
        if not context:
            raise EmpathyRecipesError(f"example {i} has an empty context")
        ra, rb = str(row_a[column] or ""), str(row_b[column] or "")
        for order, (r1, r2) in (("AB", (ra, rb)), ("BA", (rb, ra))):
            rows["id"].append(i)
            rows["order"].append(order)
            rows["messages"].append(context)
            rows["response_1"].append(r1)
            rows["response_2"].append(r2)
            rows["emotion"].append(str(row_a.get("emotion") or ""))
    return Dataset.from_dict(rows)


def build_distilabel_pipeline(args: argparse.Namespace, cache_dir: Path) -> Pipeline:
    """The verdict pipeline, built and not run: one PairwiseJudge step over ``--criteria`` with the LLM of
    ``--backend`` (its (pair, order) rows come from :func:`empathy_recipes.resume.run_pipeline`)."""
    with make_pipeline("pairwise-win-rate", args, cache_dir) as pipeline:
        judge_step(PairwiseJudge, args, name="pairwise_judge", score_axes=list(args.criteria))
    return pipeline


def combine(judged: Dataset, criteria: list[str]) -> tuple[list[dict], dict]:
    """Per pair: both orders' winners and the outcome per criterion; per criterion: the rates."""
    verdicts: dict[str, dict[str, dict]] = {}
    for r in judged:
        verdicts.setdefault(r["id"], {})[r["order"]] = r
    pairs, summary = [], {}
    for c in criteria:
        outcomes, consistent = [], []
        for i, by_order in verdicts.items():
            ab = verdict_winner(by_order.get("AB", {}).get(c), "AB")
            ba = verdict_winner(by_order.get("BA", {}).get(c), "BA")
            outcome = combine_orders(ab, ba)
            outcomes.append(outcome)
            consistent.append(ab is not None and ab == ba)
            pairs.append({"id": i, "criterion": c, "winner_AB_order": ab, "winner_BA_order": ba, "outcome": outcome})
        summary[c] = win_rates(outcomes, consistent)
    return pairs, summary


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup_logging("win-rate", args, __name__)
    a, model_a = _by_id(args.predictions_a, args.prediction_column)
    b, model_b = _by_id(args.predictions_b, args.prediction_column)
    pairing = pair_by_id(a, b, args.on_mismatch, names=(f"A ({args.predictions_a})", f"B ({args.predictions_b})"))
    row_counts = outputs.check_rows("winrate", pairing.rows_in, pairing.counts())
    dataset = both_orders(pairing, args.prediction_column, args.limit)
    cache_dir = default_cache_dir(args)
    # Resume: a killed run's finished batches are kept; only the other (pair, order) rows go through the judge.
    run = run_pipeline(build_distilabel_pipeline(args, cache_dir), dataset, cache_dir, args.batch_size)
    distiset = run.distiset

    written = save_and_push_distiset(distiset, args)
    pairs, per_criterion = combine(distiset["default"]["train"], list(args.criteria))
    summary = {"model_a": model_a, "model_b": model_b, "judge": args.model, "criteria": per_criterion}
    summary["rows"] = {**row_counts, "aside": [{k: r[k] for k in ("side", "id", "reason")} for r in pairing.aside]}
    if args.output_dir:
        out = Path(args.output_dir)
        outputs.write_jsonl(out / "pairs.jsonl", pairs)
        products = {**{k: str(v) for k, v in written.items()}, "pairs": str(out / "pairs.jsonl")}
        if pairing.aside:
            outputs.write_jsonl(out / "aside.jsonl", pairing.aside)
            products["aside"] = str(out / "aside.jsonl")
        summary["outputs"] = products
        outputs.write_json(out / "summary.json", summary)
        inputs = {"predictions_a": args.predictions_a, "predictions_b": args.predictions_b, "model": args.model}
        outputs.write_manifest(out, "winrate", inputs, args, row_counts, products, path=out / outputs.MANIFEST_NAME)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
