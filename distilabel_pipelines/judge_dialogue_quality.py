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
from typing import Any

from empathy_recipes import outputs
from empathy_recipes.errors import EmpathyRecipesError, exit_on_user_error
from empathy_recipes.judge_scores import axis_summary
from empathy_recipes.llm import add_llm_args, check_llm_environment, llm_step_resources, validate_llm_args
from empathy_recipes.logs import add_log_args, setup_logging
from empathy_recipes.pipeline_io import load_rows, save_and_push_distiset
from empathy_recipes.prob_scoring import SCORING_MODES, build_scoring_llm
from empathy_recipes.profiles import PAPER_JUDGE, add_judge_prompt_arg, add_profile_arg, apply_profile
from empathy_recipes.resume import run_with_resume
from empathy_recipes.tasks.dialogue_quality import DialogueQualityJudge

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="dialogues in any ED layout or the chat schema")
    parser.add_argument("--split", default=None)
    parser.add_argument("--scoring", choices=SCORING_MODES, default="probs", help="probs (G-Eval) or generate")
    parser.add_argument("--group-by", default=None, help="also summarise per value of this column")
    add_llm_args(parser)
    parser.set_defaults(temperature=0.0, max_new_tokens=48, output_dir="outputs/synth/judged")
    add_judge_prompt_arg(parser)
    add_profile_arg(parser)
    add_log_args(parser)
    args = apply_profile(parser.parse_args(argv), parser, PAPER_JUDGE, argv)
    validate_llm_args(args)
    return args


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
    llm = build_scoring_llm(args, DialogueQualityJudge.axes_spec(), args.scoring)  # validated, not loaded yet
    cache_dir = args.cache_dir or Path(args.output_dir) / "cache"
    if args.group_by and args.group_by not in dataset.column_names:
        raise EmpathyRecipesError(f"--group-by {args.group_by!r}: no such column in {dataset.column_names}")
    run = run_with_resume(
        "synth-empathy-judge-quality",
        args,
        cache_dir,
        dataset,
        lambda: DialogueQualityJudge(
            prompt=args.prompt,
            name="quality_judge",
            llm=llm,
            input_batch_size=args.batch_size,
            resources=llm_step_resources(args),
            add_raw_output=False,
            add_raw_input=False,
        ),
    )
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
