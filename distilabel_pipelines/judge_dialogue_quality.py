"""Synth-Empathy data-quality judge: rate every dialogue of a dataset (synthetic or ED) for naturalness, coherence
and empathy (1-3 each), so selected data can be compared with what was dropped and with ED itself.

    dataset (chat schema)  >>  DialogueQualityJudge (LLM from --backend)  >>  Distiset on disk / the Hub + summary

    python distilabel_pipelines/judge_dialogue_quality.py --dataset outputs/synth/quality/scored.jsonl \\
        --group-by quality_keep --output-dir outputs/synth/judged --limit 50          # embedded SmolLM2, CPU
    ... --backend vllm --model meta-llama/Meta-Llama-3-70B-Instruct [--ray] [--hub-repo org/name]     # GPU

The judge rates the last listener reply of each conversation, given the turns before it
(:class:`~empathy_recipes.tasks.dialogue_quality.DialogueQualityJudge`). With ``--scoring probs`` (default) the
integers are read from the judge's token probabilities, so every row is scored even by a 135M model, and
``<axis>_weighted`` holds the expected score. Every input column is kept, so selection flags (``quality_keep``,
``diversity_keep``, ``source``) can be compared with ``--group-by``.

Output (``--output-dir``): ``default.jsonl`` (input rows + ``naturalness``, ``coherence``, ``empathy``, their
``_weighted`` and ``_probs``, ``quality_judge_output``), ``distiset/``, ``summary.json`` (means per axis, overall
and per group). Reruns resume from the distilabel cache.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from empathy_recipes import outputs
from empathy_recipes.errors import EmpathyRecipesError, exit_on_user_error
from empathy_recipes.judge_scores import axis_summary
from empathy_recipes.llm import check_llm_environment
from empathy_recipes.logs import setup_logging
from empathy_recipes.pipeline_io import load_rows, make_pipeline, save_and_push_distiset
from empathy_recipes.prob_scoring import add_judge_args, judge_step, parse_judge_args
from empathy_recipes.resume import run_pipeline
from empathy_recipes.tasks.dialogue_quality import DialogueQualityJudge

if TYPE_CHECKING:
    from distilabel.pipeline import Pipeline

logger = logging.getLogger(__name__)
PIPELINE_NAME = "synth-empathy-judge-quality"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="dialogues in any ED layout or the chat schema")
    parser.add_argument("--split", default=None)
    parser.add_argument("--group-by", default=None, help="also summarise per value of this column")
    add_judge_args(parser, max_new_tokens=48)
    parser.set_defaults(output_dir="outputs/synth/judged")
    return parse_judge_args(parser, argv, results=None)


def build_distilabel_pipeline(args: argparse.Namespace, cache_dir: Path) -> Pipeline:
    """The judge pipeline, built and not run: one DialogueQualityJudge step with the LLM of ``--backend`` (its
    rows come from :func:`empathy_recipes.resume.run_pipeline`)."""
    with make_pipeline(PIPELINE_NAME, args, cache_dir) as pipeline:
        judge_step(DialogueQualityJudge, args, name="quality_judge", prompt=args.prompt)
    return pipeline


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per axis of the judge: mean integer score, mean weighted score, rows scored; ``overall`` = mean of the axis
    means (:func:`empathy_recipes.judge_scores.axis_summary`)."""
    return axis_summary(rows, DialogueQualityJudge.axes_spec())


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    setup_logging("synth-judge", args, __name__)
    check_llm_environment(args)
    dataset = load_rows(args.dataset, split=args.split, limit=args.limit)  # bad data: one line, before the LLM
    if args.group_by and args.group_by not in dataset.column_names:
        raise EmpathyRecipesError(f"--group-by {args.group_by!r}: no such column in {dataset.column_names}")
    cache_dir = args.cache_dir or Path(args.output_dir) / "cache"
    run = run_pipeline(build_distilabel_pipeline(args, cache_dir), dataset, cache_dir, args.batch_size)
    distiset = run.distiset
    save_and_push_distiset(distiset, args)
    rows = distiset["default"]["train"].to_list()
    if len(rows) != len(dataset):
        raise RuntimeError(f"{len(dataset)} rows in but {len(rows)} judged rows out")
    summary: dict[str, Any] = {"dataset": args.dataset, "judge": args.model, **summarize(rows)}
    if args.group_by:
        groups = sorted({str(r.get(args.group_by)) for r in rows})
        summary["groups"] = {g: summarize([r for r in rows if str(r.get(args.group_by)) == g]) for g in groups}
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    outputs.write_json(out / "summary.json", summary)
    overall = summary["overall"]
    logger.info(f"{len(rows)} rows rated; overall {overall if overall is None else round(overall, 3)}; in {out}")
    return summary


if __name__ == "__main__":
    main()
