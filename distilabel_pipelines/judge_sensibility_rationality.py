"""Score every example of an EmpatheticDialogues dataset for rationality and sensibility (integers 0-10).

The Efficient-Empathy data stage, step 1 (step 2 is ``scripts/select_sets.py``). A distilabel pipeline:

    load_ed(--dataset)  >>  SensibilityRationalityJudge(LLM from --backend)  >>  Distiset on disk / the Hub

    python distilabel_pipelines/judge_sensibility_rationality.py --dataset data/ed_valid_sample.jsonl \\
        --output-dir outputs/judged --limit 40                      # embedded SmolLM2 on CPU
    ... --backend vllm --model meta-llama/Meta-Llama-3-70B-Instruct --batch-size 256      # GPU
    ... --backend openai --base-url http://localhost:8000/v1 --model <served name>        # any server
    ... --ray                                                                              # many nodes

Scoring (``--scoring``): ``probs`` (default) reads each score from the judge's next-token probabilities
(G-Eval): every row gets both scores, plus ``rationality_weighted`` / ``sensibility_weighted``; ``generate``
parses the judge's free text (like the paper).

Output (``--output-dir``): ``default.jsonl`` (input rows + ``judge_output`` + parsed scores),
``distiset/`` (``Distiset.load_from_disk``, with ``pipeline.yaml``) and ``summary.json``. ``--hub-repo`` pushes
the Distiset with its ``pipeline.yaml`` and this script. A killed run, rerun with the same arguments, resumes
from distilabel's cache (``--cache-dir``) without redoing finished batches.

If the input already holds judge outputs (``--reference-column``, default ``judge_output``, e.g. the paper's),
they are kept as ``reference_judge_output`` and the run ends with the agreement between this judge and them
(Spearman and exact agreement per axis): score a few hundred rows first to calibrate a judge.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from empathy_recipes import outputs
from empathy_recipes.data import load_ed
from empathy_recipes.errors import exit_on_user_error
from empathy_recipes.judge_scores import axis_summary, judge_agreement
from empathy_recipes.llm import check_llm_environment
from empathy_recipes.logs import setup_logging
from empathy_recipes.pipeline_io import default_cache_dir, make_pipeline, save_and_push_distiset
from empathy_recipes.prob_scoring import add_judge_args, judge_step, parse_judge_args
from empathy_recipes.resume import run_pipeline
from empathy_recipes.tasks.sensibility_rationality import SensibilityRationalityJudge

if TYPE_CHECKING:
    from distilabel.pipeline import Pipeline

logger = logging.getLogger(__name__)

PIPELINE_NAME = "judge-sensibility-rationality"
REFERENCE_COLUMN = "reference_judge_output"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="ED dataset: Hub id, local dir or JSON/JSONL/CSV/parquet")
    parser.add_argument("--split", default=None, help="split of a Hub/dir dataset (default: the only or 'train')")
    parser.add_argument(
        "--reference-column",
        default="judge_output",
        help=f"input column of reference judge outputs, kept as {REFERENCE_COLUMN} and compared at the end",
    )
    add_judge_args(parser)
    args = parse_judge_args(parser, argv, "scores")
    check_llm_environment(args)
    return args


def build_distilabel_pipeline(args: argparse.Namespace, cache_dir: Path) -> Pipeline:
    """The judge pipeline, built and not run: one SensibilityRationalityJudge step with the LLM of ``--backend``
    (its rows come from :func:`empathy_recipes.resume.run_pipeline`)."""
    with make_pipeline(PIPELINE_NAME, args, cache_dir) as pipeline:
        judge_step(SensibilityRationalityJudge, args, num_generations=args.num_generations, prompt=args.prompt)
    return pipeline


def summarize(rows, has_reference: bool) -> dict:
    """Share of rows with every score, per-axis means, and the agreement with the reference judge when there is
    one."""
    judge = SensibilityRationalityJudge.axes_spec()
    wanted = [*judge.names, *(f"{a}_weighted" for a in judge.names), REFERENCE_COLUMN]
    frame = rows.select_columns([c for c in wanted if c in rows.column_names]).to_pandas()
    axes = axis_summary(frame, judge)
    n = axes["rows"]
    summary = {"rows": n, "scored_both": axes["scored_all"], "scored_share": axes["scored_all"] / n if n else 0.0}
    summary["axes"] = {a: axes[a] for a in judge.names}
    if has_reference:
        summary["agreement_with_reference"] = judge_agreement(frame, judge.parse(frame[REFERENCE_COLUMN]), judge)
    return summary


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup_logging("judge", args, __name__)
    # The input rows (the reference judge text moved aside, since the judge writes `judge_output`).
    dataset = load_ed(args.dataset, split=args.split, limit=args.limit)  # bad data fails before the LLM is built
    if args.reference_column in dataset.column_names:
        dataset = dataset.rename_column(args.reference_column, REFERENCE_COLUMN)
    cache_dir = default_cache_dir(args)
    # Resume: batches a killed run finished are kept; only the other rows go through the judge.
    run = run_pipeline(build_distilabel_pipeline(args, cache_dir), dataset, cache_dir, args.batch_size)
    distiset = run.distiset

    counts = outputs.check_rows(
        "judge", len(dataset) * args.num_generations, {"judged": len(distiset["default"]["train"])}
    )
    written = save_and_push_distiset(distiset, args, counts)
    summary = summarize(distiset["default"]["train"], REFERENCE_COLUMN in dataset.column_names)
    summary["resumed_rows"] = run.resumed_rows
    summary["outputs"] = {k: str(v) for k, v in written.items()}
    if args.output_dir:
        outputs.write_json(Path(args.output_dir) / "summary.json", summary)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
