"""Synth-Empathy generation: for each ED example, a generator model writes a new multi-round empathetic dialogue.

Each generation is asked for at least three rounds of new emotional context, each with an empathetic response of at
most 30 words, the rounds continuing one another, in ``Round / Context / Response`` blocks (prompt:
``empathy_recipes.synth.GENERATION_PROMPT``). Paper settings are the defaults: temperature 0.8, top_p 0.9, up to
300 new tokens, 5 generations per example.

The generations are parsed into rounds; each parsed dialogue becomes chat-schema training examples whose last
assistant turn is always the response written for their own last context. Generations that do not parse are kept
in ``rejected.jsonl`` with the reason; ``generations = dialogues + rejected`` is checked before anything is written.

    python distilabel_pipelines/synthesize_dialogues.py --dataset data/ed_valid_sample.jsonl --limit 20 \\
        --output-dir outputs/synth
    # GPU / cluster: --backend vllm --model meta-llama/Meta-Llama-3-70B-Instruct [--ray] [--hub-repo org/name]

Outputs in ``--output-dir``: ``distiset/`` + ``default.jsonl`` (raw generations, one row each; pushed with
``--hub-repo``), ``dialogues.jsonl`` (parsed rounds), ``rejected.jsonl`` (with ``reason``), ``examples.jsonl``
(``id, emotion, messages, n_rounds, dialogue_id, seed_id, source``: readable by ``load_ed``), ``summary.json``.
A killed run, rerun with the same arguments, resumes from ``--cache-dir`` without redoing finished batches.
"""

from __future__ import annotations

import argparse
import logging
import random
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distilabel.steps.tasks import Task

from empathy_recipes import outputs
from empathy_recipes.errors import EmpathyRecipesError, exit_on_user_error
from empathy_recipes.llm import add_llm_args, build_llm, check_llm_environment, llm_step_resources, validate_llm_args
from empathy_recipes.logs import add_log_args, setup_logging
from empathy_recipes.pipeline_io import load_rows, make_pipeline, save_and_push_distiset
from empathy_recipes.resume import run_pipeline
from empathy_recipes.structured import build_structured_llm, dialogue_schema
from empathy_recipes.synth import (
    MAX_RESPONSE_WORDS,
    MIN_ROUNDS,
    OUTPUT_FORMATS,
    dialogue_to_examples,
    generation_prompt,
)

if TYPE_CHECKING:
    from distilabel.pipeline import Pipeline

logger = logging.getLogger(__name__)

DEFAULT_RESPONSE_PREFIX = "Round 1:\nContext:"


class WriteEmpatheticRounds(Task):
    """Asks for ``min_rounds``+ new rounds of context and empathetic response inspired by one ED example."""

    min_rounds: int = MIN_ROUNDS
    max_words: int = MAX_RESPONSE_WORDS
    output_format: str = "json"
    response_prefix: str = ""  # what the LLM was prefilled with: put back in front of each generation

    @property
    def inputs(self) -> dict[str, bool]:
        return {"messages": True, "emotion": False}

    @property
    def outputs(self) -> list[str]:
        return ["generation", "model_name"]

    def format_input(self, input: dict[str, Any]) -> list[dict[str, str]]:
        prompt = generation_prompt(
            input["messages"], input.get("emotion"), self.min_rounds, self.max_words, self.output_format
        )
        return [{"role": "user", "content": prompt}]

    def format_output(self, output: str | None, input: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"generation": None if output is None else self.response_prefix + output}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="data/ed_valid_sample.jsonl", help="ED source (Hub id or local path)")
    parser.add_argument("--split", default=None, help="split of --dataset (default: the only one, else train)")
    parser.add_argument("--min-rounds", type=int, default=MIN_ROUNDS, help="rounds asked for and required")
    parser.add_argument("--max-words", type=int, default=MAX_RESPONSE_WORDS, help="response length asked for")
    parser.add_argument(
        "--output-format",
        choices=OUTPUT_FORMATS,
        default="json",
        help="json (default): the dialogue is a JSON object whose format (rounds, word limits) the decoder enforces "
        "(transformers: llguidance; vllm: structured outputs; openai: response_format, where the server honours "
        "it); text: the 'Round n: / Context: / Response:' prompt, prefilled, parsed afterwards",
    )
    parser.add_argument(
        "--max-context-words", type=int, default=30, help="json format: a context has at most this many words"
    )
    parser.add_argument("--max-rounds", type=int, default=None, help="json format: at most this many rounds")
    parser.add_argument(
        "--max-response-words",
        type=int,
        default=None,
        help="reject a dialogue whose response exceeds this many words (default: --max-words with the json format, "
        "where the decoder enforces it; off with text, where the limit is only asked)",
    )
    parser.add_argument(
        "--examples-per-dialogue",
        choices=("sample", "all"),
        default="sample",
        help="sample: one example of 2-4 rounds per dialogue, as in the paper; all: one per prefix of rounds",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds the round-count sampling and the generator's (transformers, vLLM)"
    )
    parser.add_argument(
        "--repetition-penalty",
        type=float,
        default=1.0,
        help="transformers/vLLM: penalise tokens already in the prompt or the answer (paper: 1.0, none; make demo: "
        "1.1, because SmolLM2-135M without it mostly writes one round again and again)",
    )
    parser.add_argument(
        "--response-prefix",
        default=None,
        help=f"prefill every answer with this (transformers/vLLM: keeps small models in the Round/Context/Response "
        f"format; default {DEFAULT_RESPONSE_PREFIX!r}, none with --backend openai); '' turns it off",
    )
    add_llm_args(parser)
    parser.set_defaults(
        temperature=0.8, top_p=0.9, max_new_tokens=300, num_generations=5, output_dir="outputs/synth/generated"
    )
    add_log_args(parser)
    args = parser.parse_args(argv)
    validate_llm_args(args)
    if args.min_rounds < 1 or args.max_words < 1:
        raise EmpathyRecipesError("--min-rounds and --max-words must be >= 1")
    if args.max_response_words is not None and args.max_response_words < 1:
        raise EmpathyRecipesError("--max-response-words must be >= 1")
    if args.max_context_words < 1:
        raise EmpathyRecipesError("--max-context-words must be >= 1")
    if args.repetition_penalty <= 0:
        raise EmpathyRecipesError("--repetition-penalty must be > 0 (1.0: none)")
    if args.max_rounds is not None and args.max_rounds < args.min_rounds:
        raise EmpathyRecipesError(f"--max-rounds ({args.max_rounds}) must be >= --min-rounds ({args.min_rounds})")
    if args.output_format == "json":
        if args.response_prefix:
            raise EmpathyRecipesError("--response-prefix only applies to --output-format text")
        if args.max_response_words is None:
            args.max_response_words = args.max_words
    return args


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> Path:
    outputs.write_jsonl(path, rows)  # atomic: a killed run never leaves a half file
    return path


def number_generations(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each generation ``generation_index`` (0.. per seed example) and ``dialogue_id`` (``<seed>_g<index>``)."""
    seen: Counter[str] = Counter()
    out = []
    for row in rows:
        seed_id = str(row["seed_id"])
        out.append({**row, "generation_index": seen[seed_id], "dialogue_id": f"{seed_id}_g{seen[seed_id]}"})
        seen[seed_id] += 1
    return out


def postprocess(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Parse, split into dialogues / rejected, build examples, write them; return the summary."""
    from empathy_recipes.synth import split_generations

    rows = number_generations(rows)
    dialogues, rejected = split_generations(
        rows, min_rounds=args.min_rounds, max_response_words=args.max_response_words
    )
    counts = outputs.check_rows("synth", len(rows), {"dialogues": len(dialogues), "rejected": len(rejected)})
    rng = random.Random(args.seed)
    examples = []
    for d in dialogues:
        for ex in dialogue_to_examples(
            d["rounds"], d["dialogue_id"], d.get("emotion") or "", args.examples_per_dialogue, rng
        ):
            examples.append(
                {
                    **ex,
                    "dialogue_id": d["dialogue_id"],
                    "seed_id": d["seed_id"],
                    "source": "synthetic",
                    "generator": d.get("model_name"),
                }
            )
    out = Path(args.output_dir)
    keep = ("dialogue_id", "seed_id", "generation_index", "emotion", "generation", "model_name")
    write_jsonl([{**{k: d.get(k) for k in keep}, "rounds": d["rounds"]} for d in dialogues], out / "dialogues.jsonl")
    write_jsonl([{**{k: r.get(k) for k in keep}, "reason": r["reason"]} for r in rejected], out / "rejected.jsonl")
    if examples:
        from datasets import Dataset

        outputs.save_dataset(Dataset.from_list(examples), out / "examples.jsonl")
    else:
        write_jsonl([], out / "examples.jsonl")
    reasons = Counter(r["reason"].split(" (")[0] for r in rejected)
    summary = {
        "generations": len(rows),
        "dialogues": len(dialogues),
        "rejected": len(rejected),
        "examples": len(examples),
        "rejected_reasons": dict(reasons.most_common()),
    }
    outputs.write_json(out / "summary.json", summary)
    products = {n: out / n for n in ("dialogues.jsonl", "rejected.jsonl", "examples.jsonl", "summary.json")}
    outputs.write_manifest(
        out / "summary.json", "synth", {"dataset": args.dataset, "model": args.model}, args, counts, products,
        path=out / "synth.manifest.yaml",
    )  # fmt: skip
    return summary


PIPELINE_NAME = "synth-empathy-generate"


def build_distilabel_pipeline(args: argparse.Namespace, cache_dir: Path) -> Pipeline:
    """The synthesis pipeline, built and not run: one WriteEmpatheticRounds step whose LLM (``--backend``) writes
    the dialogues in the decoder-enforced JSON format (``--output-format json``) or as prompted text with a prefill
    (``text``); its rows come from :func:`empathy_recipes.resume.run_pipeline`."""
    # The paper samples with vLLM's defaults: no repetition penalty (distilabel's TransformersLLM would use 1.1).
    penalty = {} if args.backend == "openai" else {"repetition_penalty": args.repetition_penalty}
    if args.output_format == "json":  # the decoder enforces the format
        prefix = ""
        schema = dialogue_schema(args.min_rounds, args.max_words, args.max_context_words, args.max_rounds)
        llm = build_structured_llm(args, json_schema=schema, **penalty)  # validated, not loaded yet
    else:  # the prompt + prefill + parser
        prefix = args.response_prefix
        if prefix is None:
            prefix = "" if args.backend == "openai" else DEFAULT_RESPONSE_PREFIX
        prefix = prefix.replace("\\n", "\n")
        llm = build_llm(args, response_prefix=prefix, **penalty)  # validated, not loaded yet
    with make_pipeline(PIPELINE_NAME, args, cache_dir) as pipeline:
        WriteEmpatheticRounds(
            name="write_rounds",
            llm=llm,
            num_generations=args.num_generations,
            min_rounds=args.min_rounds,
            max_words=args.max_words,
            output_format=args.output_format,
            response_prefix=prefix,
            input_batch_size=args.batch_size,
            resources=llm_step_resources(args),
        )
    return pipeline


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    setup_logging("synth", args, __name__)
    check_llm_environment(args)
    seeds = load_rows(
        args.dataset, split=args.split, limit=args.limit, rename_columns={"id": "seed_id"}
    )  # bad data: one line, before the LLM
    cache_dir = args.cache_dir or Path(args.output_dir) / "cache"
    # Resume: a killed run's finished batches are kept; only the other seed rows go through the LLM.
    run = run_pipeline(build_distilabel_pipeline(args, cache_dir), seeds, cache_dir, args.batch_size)
    distiset = run.distiset
    save_and_push_distiset(distiset, args)
    split = distiset["default"]["train"]
    summary = postprocess(split.to_list(), args)
    logger.info(
        f"{summary['generations']} generations -> {summary['dialogues']} dialogues "
        f"({summary['examples']} examples) + {summary['rejected']} rejected; outputs in {args.output_dir}"
    )
    for reason, count in summary["rejected_reasons"].items():
        logger.info(f"rejected {count}: {reason}")
    return summary


if __name__ == "__main__":
    main()
