"""Generate one reply per ED test example with a chat model; write JSONL rows for the evaluation stages.

    python evaluation/generate.py --model <Hub id or path> [--dataset data/ed_test_sample.jsonl] --output preds.jsonl

Each output row: ``id``, ``context`` (list of context turns), ``reference`` (the dataset's listener reply),
``prediction`` (the model's reply), ``model``, plus ``emotion``. Greedy decoding by default, batched, with the
model's chat template. ``--hub-repo org/name`` then pushes the predictions as a Hub dataset (split ``train``, with a
card); ``make eval-metrics PREDICTIONS=<that id or a local copy>`` reads it back. Backends:

- ``--backend transformers`` (default; CPU or GPU, ``--device``, ``--dtype``),
- ``--backend vllm`` on a GPU box with vllm installed (``--tensor-parallel-size``, ``--gpu-memory-utilization``,
  ``--max-model-len``, ``--dtype``); prompts go in as token ids, so a Llama-3 prompt gets one BOS,
- ``--backend openai --base-url http://HOST:PORT/v1 --model <served name>``: chat completions against any
  OpenAI-compatible server (``vllm serve``, ``transformers serve``), ``--batch-size`` requests in flight; the key
  is read from ``$OPENAI_API_KEY`` (``--api-key-env``; any value for a server without auth).

Project defaults: up to 64 new tokens (ED replies are short), the whole reply scored. ``--profile paper`` is
Efficient-Empathy's ``test_response_llama3.py`` + ``response_eval.py``: up to 512 new tokens, greedy, and only the
first line of each reply in ``prediction`` (``--first-line``; the whole reply in ``prediction_full``).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from empathy_recipes import outputs
from empathy_recipes.checks import check_model_ref
from empathy_recipes.data import load_ed
from empathy_recipes.errors import EmpathyRecipesError, exit_on_user_error
from empathy_recipes.generation import DEFAULT_BATCH_SIZE, generate_replies, generation_kwargs
from empathy_recipes.hub import CardInfo, add_hub_args, input_ref, push_dataset, redacted_command
from empathy_recipes.llm import (
    BACKENDS,
    add_scale_args,
    check_llm_environment,
    validate_openai_args,
    validate_scale_args,
    vllm_engine_kwargs,
)
from empathy_recipes.logs import add_log_args, setup_logging
from empathy_recipes.models import default_model_path, resolve_model_ref
from empathy_recipes.profiles import PAPER_GENERATE, add_profile_arg, apply_profile, first_line

logger = logging.getLogger(__name__)

DEFAULT_DATASET = "data/ed_test_sample.jsonl"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model",
        default=str(default_model_path()),
        help="Hub id or local folder (default: SmolLM2); the served model name with --backend openai",
    )
    p.add_argument("--dataset", default=DEFAULT_DATASET, help="ED test set: Hub id or local file/dir")
    p.add_argument("--split", default=None, help="dataset split (default: the only one, else train)")
    p.add_argument("--config", default=None, help="dataset config (a Hub dataset or a local folder in its layout)")
    p.add_argument("--output", required=True, help="JSONL file to write")
    p.add_argument("--limit", type=int, default=None, help="only the first N examples")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="prompts per generate() call")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=0.7, help="only with --do-sample")
    p.add_argument("--top-p", type=float, default=0.9, help="only with --do-sample")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--backend", choices=BACKENDS, default="transformers")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible server, e.g. http://localhost:8000/v1 (openai)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key (openai)")
    add_scale_args(p, replicas=False)
    p.add_argument("--system-prompt", default=None, help="optional system message before every conversation")
    p.add_argument(
        "--first-line",
        action="store_true",
        help="score only the first line of each reply (paper); the whole reply stays in prediction_full",
    )
    add_profile_arg(p)
    add_hub_args(p, "the predictions (a dataset, split train)")
    add_log_args(p)
    return check_args(apply_profile(p.parse_args(argv), p, PAPER_GENERATE, argv))


def check_args(args: argparse.Namespace) -> argparse.Namespace:
    """Every check that needs no model: one error line before anything is loaded."""
    if args.limit is not None and args.limit < 1:
        raise EmpathyRecipesError(f"--limit must be >= 1, got {args.limit}")
    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise EmpathyRecipesError("--batch-size and --max-new-tokens must be >= 1")
    validate_scale_args(args)
    if args.backend == "openai":
        validate_openai_args(args)
    elif args.base_url:
        raise EmpathyRecipesError(f"--base-url only applies to --backend openai, not {args.backend}")
    if Path(args.output).suffix.lower() != ".jsonl":
        raise EmpathyRecipesError(f"--output must be a .jsonl file, got {Path(args.output)}")
    return args


def prediction_records(ds, conversations: list, predictions: list[str], args: argparse.Namespace) -> list[dict]:
    """One output row per example: its id, emotion, context, reference and the model's reply (first line only
    with ``--first-line``, the full reply kept beside it)."""
    records = []
    for row, conv, pred in zip(ds, conversations, predictions):
        record = {
            "id": row["id"],
            "emotion": row["emotion"],
            "context": [m["content"] for m in conv],
            "reference": row["messages"][-1]["content"],
            "prediction": first_line(pred) if args.first_line else pred,
            "model": str(args.model),
        }
        if args.first_line:
            record["prediction_full"] = pred
        records.append(record)
    return records


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging("generate", args, __name__)
    output = Path(args.output)
    check_llm_environment(args)  # vllm installed, enough GPUs, the server reachable: before any work
    model_ref = args.model if args.backend == "openai" else resolve_model_ref(args.model)
    if args.backend == "transformers":
        check_model_ref(model_ref)  # offline, a Hub id must be cached: one line now, not a traceback later
    ds = load_ed(args.dataset, split=args.split, limit=args.limit, config=args.config)

    conversations = [msgs[:-1] for msgs in ds["messages"]]
    if any(not conv for conv in conversations):
        raise EmpathyRecipesError("an example has no context before its reference reply")
    logger.info(f"{len(ds)} examples from {args.dataset} with {model_ref} ({args.backend})")
    predictions = generate_replies(
        model_ref,
        conversations,
        **generation_kwargs(args),
        dtype=args.dtype,
        base_url=args.base_url,
        api_key=os.environ.get(args.api_key_env),
        engine_kwargs=vllm_engine_kwargs(args),
    )

    records = prediction_records(ds, conversations, predictions, args)
    counts = outputs.check_rows("generate", len(ds), {"predictions": len(records)})
    outputs.write_jsonl(output, records)  # atomic: a killed run never leaves a half file behind
    outputs.write_manifest(
        output, "generate", {"dataset": args.dataset, "model": args.model}, args, counts, {"predictions": output}
    )
    empty = sum(1 for p in predictions if not p)
    logger.info(f"wrote {len(predictions)} rows to {output} ({empty} empty predictions)")
    if args.hub_repo:  # after the local file is written: a failed push loses nothing
        from datasets import Dataset

        info = CardInfo(
            title=f"Replies of {Path(str(args.model)).name} to EmpatheticDialogues contexts",
            description=(
                f"One reply per example of `{args.dataset}` by `{args.model}` ({args.backend}, "
                f"{'sampled' if args.do_sample else 'greedy'}, at most {args.max_new_tokens} new tokens). Columns: "
                "`id`, `emotion`, `context` (the turns before the reply), `reference` (the dataset's listener "
                "reply), `prediction`, `model`. Score with `make eval-metrics PREDICTIONS=<this repo>`."
            ),
            command=redacted_command(argv, __file__),
            inputs=[input_ref(args.dataset), input_ref(args.model, repo_type="model")],
            tags=["predictions"],
        )
        predictions_ds = Dataset.from_list(records)
        url = push_dataset(
            {"default": predictions_ds}, args.hub_repo, info, private=args.private, local_output=str(output)
        )
        logger.info(f"pushed to {url}")


if __name__ == "__main__":
    main()
