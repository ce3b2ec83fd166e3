"""Synth-Empathy quality selection: keep a synthetic example when a discriminator model, answering the same
context, says something close to the synthetic response.

For each example (chat schema; last assistant turn = the synthetic response) the discriminator (any chat model; the
paper uses a model fine-tuned on ED, e.g. the full-data SFT expert; default here: the embedded SmolLM2, which is
NOT fine-tuned on ED) writes its own reply to ``messages[:-1]``. A sentence-transformers model (default: the
packaged all-MiniLM-L6-v2) embeds its reply and the synthetic one; ``quality_score = cosine x 100``. A row is kept
when ``quality_score >= --threshold`` (paper: 60).

Decoding: greedy, 64 new tokens, the context as chat turns, no system prompt (the project's defaults: a
deterministic score, so a rerun keeps the same rows). ``--profile paper`` takes Synth-Empathy's
``quality_data_score.py`` instead: sampling at temperature 0.8 / top-p 0.9, 128 new tokens, system "You are a helpful
assistant.", the context flattened into one ``Speaker: ...`` / ``Listener: `` user message, and the embedder's
``query`` prompt on both texts (``--embedder Alibaba-NLP/gte-Qwen2-7B-instruct --trust-remote-code`` for the paper's
embedder). Each of these is also a flag of its own.

Every row is written with its score (``scored.jsonl``) and the run's ``manifest.yaml`` (inputs by content hash,
arguments, counts). Run again with another ``--threshold`` and the scores are reused (no model is loaded) when the
manifest matches: same examples, discriminator, embedder and scoring arguments, ``scored.jsonl`` untouched since
(never judged by file times); ``--recompute`` scores again anyway. An input that already has ``quality_score``
is only re-thresholded.

    python scripts/synth_quality_select.py --dataset outputs/synth/generated/examples.jsonl \\
        --discriminator outputs/sft/full --threshold 60 --output-dir outputs/synth/quality

Outputs in ``--output-dir``: ``scored.jsonl`` (all rows: ``discriminator_reply``, ``quality_score``,
``quality_keep``), ``selected.jsonl`` (kept rows), ``dropped.jsonl`` (the rest), ``summary.json``, ``manifest.yaml``;
each written atomically.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from empathy_recipes import outputs
from empathy_recipes.checks import check_model_ref
from empathy_recipes.data import load_ed
from empathy_recipes.errors import EmpathyRecipesError, exit_on_user_error
from empathy_recipes.generation import DEFAULT_BATCH_SIZE
from empathy_recipes.hub import CardInfo, add_hub_args, input_ref, push_dataset, redacted_command
from empathy_recipes.logs import add_log_args, setup_logging
from empathy_recipes.models import default_embedder_path, default_model_path, resolve_model_ref
from empathy_recipes.profiles import (
    PAPER_QUALITY_SELECT,
    PAPER_SYSTEM_PROMPT,
    add_profile_arg,
    apply_profile,
    transcript_conversation,
)

logger = logging.getLogger(__name__)

SCORE_COLUMN = "quality_score"
STAGE = "synth-quality-select"
# Arguments that change what is kept, not the scores: a run differing only in these reuses the scores.
NOT_SCORING_ARGS = ("threshold", "recompute", "output_dir", "device")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="synthetic examples (chat schema): local path or Hub id")
    p.add_argument("--split", default=None)
    p.add_argument(
        "--discriminator",
        default=str(default_model_path()),
        help="chat model answering each context (paper: a model fine-tuned on ED); default the embedded SmolLM2",
    )
    p.add_argument("--embedder", default=str(default_embedder_path()), help="sentence-transformers model")
    p.add_argument(
        "--embedder-prompt-name",
        default=None,
        help="one of the embedder's named prompts for both texts (paper, gte-Qwen2-7B-instruct: query)",
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the embedder's own code (gte-Qwen2 needs it); off by default",
    )
    p.add_argument("--threshold", type=float, default=60.0, help="keep rows with cosine x100 >= this (paper: 60)")
    p.add_argument("--recompute", action="store_true", help="score again even when the input has quality_score")
    p.add_argument("--backend", choices=("transformers", "vllm"), default="transformers")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="prompts per generate() call")
    p.add_argument("--max-new-tokens", type=int, default=64, help="discriminator reply cap (paper: 128)")
    p.add_argument(
        "--do-sample", action="store_true", help="sample the discriminator's reply (paper) instead of greedy"
    )
    p.add_argument("--temperature", type=float, default=1.0, help="with --do-sample (paper: 0.8)")
    p.add_argument("--top-p", type=float, default=1.0, help="with --do-sample (paper: 0.9)")
    p.add_argument("--seed", type=int, default=42, help="seed of the sampling")
    p.add_argument(
        "--system-prompt", default=None, help=f"system message for the discriminator (paper: {PAPER_SYSTEM_PROMPT!r})"
    )
    p.add_argument(
        "--prompt-format",
        choices=("messages", "transcript"),
        default="messages",
        help="messages: the context as chat turns; transcript: one user message 'Speaker: ...\\nListener: ' (paper)",
    )
    p.add_argument("--device", default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--output-dir", default="outputs/synth/quality")
    add_profile_arg(p)
    add_hub_args(p, "the kept examples (config `selected`) and the dropped ones (`dropped`), with a card")
    add_log_args(p)
    args = apply_profile(p.parse_args(argv), p, PAPER_QUALITY_SELECT, argv)
    if not 0 <= args.threshold <= 100:
        raise EmpathyRecipesError(f"--threshold is a cosine x100: give a value in [0, 100], not {args.threshold}")
    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise EmpathyRecipesError("--batch-size and --max-new-tokens must be >= 1")
    if args.limit is not None and args.limit < 1:
        raise EmpathyRecipesError("--limit must be >= 1")
    if args.do_sample and not (args.temperature > 0 and 0 < args.top_p <= 1):
        raise EmpathyRecipesError("with --do-sample, --temperature must be > 0 and --top-p in (0, 1]")
    return args


def check_synthetic(ds, name: str) -> None:
    """Refuse rows that are not parsed synthetic examples: synth's raw generations (``generation`` column; their
    ``messages`` are the ED seed turns, so scoring them would score ED replies) or rows of another source."""
    cols = set(ds.column_names)
    if "generation" in cols or ("seed_id" in cols and "dialogue_id" not in cols):
        raise EmpathyRecipesError(
            f"{name} holds synth's raw generations: their 'messages' are the ED seed turns, not synthetic examples; "
            "give the parsed examples (<synth output>/examples.jsonl)"
        )
    if "source" in cols:
        other = sorted({str(s) for s in ds["source"]} - {"synthetic"})
        if other:
            raise EmpathyRecipesError(f"{name} has rows whose source is {', '.join(other)}, not synthetic examples")


def check_examples(messages_column: list[list[dict[str, str]]]) -> None:
    for i, msgs in enumerate(messages_column):
        if len(msgs) < 2 or msgs[-1]["role"] != "assistant" or msgs[-2]["role"] != "user":
            raise EmpathyRecipesError(f"row {i}: messages must end with a user turn then the assistant response")


def score_rows(ds, args: argparse.Namespace) -> tuple[list[str], list[float]]:
    from empathy_recipes.embeddings import load_embedder, paired_similarity_x100
    from empathy_recipes.generation import generate_replies, generation_kwargs

    messages = ds["messages"]
    contexts = [m[:-1] for m in messages]
    if args.prompt_format == "transcript":
        contexts = [transcript_conversation(c) for c in contexts]
    synthetic = [m[-1]["content"] for m in messages]
    logger.info(f"discriminator {args.discriminator} answers {len(contexts)} contexts ({args.profile} profile)")
    replies = generate_replies(
        args.discriminator,
        contexts,
        **generation_kwargs(args),
    )
    logger.info(f"embedding with {args.embedder}")
    embedder = load_embedder(
        args.embedder,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        prompt_name=args.embedder_prompt_name,
    )
    scores = paired_similarity_x100(
        embedder, replies, synthetic, batch_size=64, show_progress=True, prompt_name=args.embedder_prompt_name
    )
    return replies, [float(s) for s in scores]


def earlier_scores(ds, out: Path, inputs: dict[str, str], args: argparse.Namespace) -> tuple[list, list] | None:
    """The replies and scores of an earlier run in ``out`` when its manifest matches this run, else ``None``."""
    scored = out / "scored.jsonl"
    ok, why = outputs.manifest_matches(
        out, STAGE, inputs, args, ignore_args=NOT_SCORING_ARGS, path=out / outputs.MANIFEST_NAME
    )
    if not ok:
        if scored.exists():
            logger.info(f"not reusing {scored}: {why}")
        return None
    earlier = load_ed(scored)
    if earlier["id"] != ds["id"]:
        logger.info(f"not reusing {scored}: its ids differ from the input's")
        return None
    logger.info(f"reusing the scores in {scored} (manifest matches; --recompute to redo)")
    return earlier["discriminator_reply"], earlier[SCORE_COLUMN]


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    setup_logging("quality", args, __name__)
    ds = load_ed(args.dataset, split=args.split, limit=args.limit)
    if len(ds) == 0:
        raise EmpathyRecipesError(f"{args.dataset} holds no rows: no synthetic example to score")
    check_synthetic(ds, args.dataset)
    check_examples(ds["messages"])
    out = Path(args.output_dir)
    inputs = {"dataset": args.dataset, "discriminator": args.discriminator, "embedder": args.embedder}
    reuse = SCORE_COLUMN in ds.column_names and not args.recompute
    if reuse:
        logger.info(f"{args.dataset} already has {SCORE_COLUMN}: re-thresholding only (--recompute to redo)")
    else:
        check_model_ref(resolve_model_ref(args.discriminator), "--discriminator")
        check_model_ref(resolve_model_ref(args.embedder), "--embedder")
        earlier = None if args.recompute else earlier_scores(ds, out, inputs, args)
        replies, scores = earlier if earlier is not None else score_rows(ds, args)
        for col in ("discriminator_reply", SCORE_COLUMN, "quality_keep"):
            if col in ds.column_names:
                ds = ds.remove_columns(col)
        ds = ds.add_column("discriminator_reply", replies).add_column(SCORE_COLUMN, scores)
    if "quality_keep" in ds.column_names:
        ds = ds.remove_columns("quality_keep")
    keep = [s >= args.threshold for s in ds[SCORE_COLUMN]]
    ds = ds.add_column("quality_keep", keep)
    kept_idx = [i for i, k in enumerate(keep) if k]
    dropped_idx = [i for i, k in enumerate(keep) if not k]
    counts = outputs.check_rows("quality", len(ds), {"kept": len(kept_idx), "dropped": len(dropped_idx)})
    outputs.save_dataset(ds, out / "scored.jsonl")
    outputs.save_dataset(ds.select(kept_idx), out / "selected.jsonl")
    outputs.save_dataset(ds.select(dropped_idx), out / "dropped.jsonl")
    summary = {
        "rows": len(ds),
        "threshold": args.threshold,
        "kept": len(kept_idx),
        "dropped": len(dropped_idx),
        "mean_score": sum(ds[SCORE_COLUMN]) / max(1, len(ds)),
        "discriminator": None if reuse else args.discriminator,
        "embedder": None if reuse else args.embedder,
    }
    outputs.write_json(out / "summary.json", summary)
    products = {name: out / name for name in ("scored.jsonl", "selected.jsonl", "dropped.jsonl", "summary.json")}
    outputs.write_manifest(out, STAGE, inputs, args, counts=counts, outputs=products, path=out / outputs.MANIFEST_NAME)
    logger.info(
        f"T={args.threshold:g}: kept {summary['kept']} of {summary['rows']} "
        f"(mean score {summary['mean_score']:.1f}); outputs in {out}"
    )
    if args.hub_repo:  # after every local file is written: a failed push loses nothing
        from empathy_recipes.synth import selection_settings, synthetic_card_sections

        settings = {**selection_settings(out / "selected.jsonl"), "discriminator": args.discriminator}
        info = CardInfo(
            title=f"Synthetic empathetic dialogues, quality-selected (T={args.threshold:g})",
            description=(
                "Synth-Empathy quality selection: each synthetic example (chat schema, the synthetic response last) "
                "is kept when a discriminator's own reply to the same context is close to the synthetic response "
                f"(cosine x100 of sentence embeddings >= {args.threshold:g}). `selected`: kept; `dropped`: the rest; "
                "every row carries `quality_score` and `discriminator_reply`."
            ),
            command=redacted_command(argv, __file__),
            inputs=[input_ref(args.dataset)],
            tags=["synthetic"],
            extra_sections=synthetic_card_sections(ds.to_list(), {**settings, "embedder": args.embedder}),
        )
        sets = {"selected": ds.select(kept_idx), "dropped": ds.select(dropped_idx)}
        logger.info(
            f"pushed to {push_dataset(sets, args.hub_repo, info, private=args.private, local_output=str(out))}"
        )
    return summary


if __name__ == "__main__":
    main()
