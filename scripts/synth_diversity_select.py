"""Synth-Empathy diversity selection: k-center greedy over embeddings of each example's context + response keeps
a ratio of the rows (paper: 0.9) that covers the embedding space best.

The greedy order is computed once over *all* rows (``kcenter_rank``: 0 = first center, seeded); keeping a ratio
``r`` keeps the rows with ``kcenter_rank < floor(N * r)``, which is exactly what k-center greedy with that ratio
picks. Both the rank and the embeddings are written out, so another ``--ratio`` needs no recompute (the input
already carrying ``kcenter_rank`` is re-cut unless ``--recompute``). Memory is O(N): no N x N matrix
(``empathy_recipes.kcenter``).

    python scripts/synth_diversity_select.py --dataset outputs/synth/quality/selected.jsonl --ratio 0.9 \\
        --output-dir outputs/synth/diversity

Outputs in ``--output-dir``: ``ranked.jsonl`` (all rows with ``kcenter_rank`` and ``diversity_keep``),
``selected.jsonl`` (kept rows, input order), ``dropped.jsonl``, ``embeddings.npy`` (row order of the input),
``summary.json``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np

from empathy_recipes import outputs
from empathy_recipes.checks import check_model_ref
from empathy_recipes.data import load_ed
from empathy_recipes.errors import EmpathyRecipesError, exit_on_user_error
from empathy_recipes.hub import CardInfo, add_hub_args, input_ref, push_dataset, redacted_command
from empathy_recipes.kcenter import k_center_greedy, n_to_keep
from empathy_recipes.logs import add_log_args, setup_logging
from empathy_recipes.models import default_embedder_path, resolve_model_ref
from empathy_recipes.profiles import add_profile_arg, apply_profile

logger = logging.getLogger(__name__)

RANK_COLUMN = "kcenter_rank"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="examples in the chat schema (e.g. quality-selected rows)")
    p.add_argument("--split", default=None)
    p.add_argument("--ratio", type=float, default=0.9, help="share of rows to keep, in (0, 1] (paper: 0.9)")
    p.add_argument("--seed", type=int, default=0, help="seeds the first center")
    p.add_argument("--embedder", default=str(default_embedder_path()), help="sentence-transformers model")
    p.add_argument(
        "--embedder-prompt-name", default=None, help="one of the embedder's named prompts (paper, gte-Qwen2: query)"
    )
    p.add_argument("--trust-remote-code", action="store_true", help="run the embedder's own code; off by default")
    p.add_argument("--batch-size", type=int, default=64, help="embedding batch size")
    p.add_argument("--device", default=None)
    p.add_argument("--recompute", action="store_true", help="rank again even when the input has kcenter_rank")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--output-dir", default="outputs/synth/diversity")
    p.add_argument("--check-args", action="store_true", help="only check the arguments and the embedder, then exit")
    add_profile_arg(p)  # paper: SE kcentergreedy.py encodes with prompt_name="query"
    add_hub_args(p, "the kept examples (config `selected`) and the dropped ones (`dropped`), with a card")
    add_log_args(p)
    args = apply_profile(p.parse_args(argv), p, {"embedder_prompt_name": "query"}, argv)
    if not 0 < args.ratio <= 1:
        raise EmpathyRecipesError(f"--ratio must be in (0, 1], not {args.ratio}")
    if args.batch_size < 1:
        raise EmpathyRecipesError("--batch-size must be >= 1")
    if args.limit is not None and args.limit < 1:
        raise EmpathyRecipesError("--limit must be >= 1")
    return args


def embed_examples(messages_column: list[list[dict[str, str]]], args: argparse.Namespace) -> np.ndarray:
    from empathy_recipes.embeddings import encode, load_embedder
    from empathy_recipes.synth import conversation_text

    embedder = load_embedder(
        args.embedder,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        prompt_name=args.embedder_prompt_name,
    )
    texts = [conversation_text(m) for m in messages_column]
    return encode(
        embedder, texts, batch_size=args.batch_size, show_progress=True, prompt_name=args.embedder_prompt_name
    )


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    setup_logging("diversity", args, __name__)
    if args.check_args:  # make synth-select checks RATIO and the embedder before its quality step runs
        check_model_ref(resolve_model_ref(args.embedder), "--embedder")
        return {}
    ds = load_ed(args.dataset, split=args.split, limit=args.limit)
    if len(ds) == 0:
        raise EmpathyRecipesError(f"{args.dataset} holds no rows: nothing to select")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if RANK_COLUMN in ds.column_names and not args.recompute:
        logger.info(f"{args.dataset} already has {RANK_COLUMN}: re-cutting only (--recompute to redo)")
        rank = np.asarray(ds[RANK_COLUMN], dtype=np.int64)
        if not np.array_equal(np.sort(rank), np.arange(len(ds))):
            raise EmpathyRecipesError(f"{RANK_COLUMN} is not a ranking of these {len(ds)} rows; use --recompute")
    else:
        check_model_ref(resolve_model_ref(args.embedder), "--embedder")
        emb = embed_examples(ds["messages"], args)
        with outputs.atomic_file(out / "embeddings.npy") as tmp:
            np.save(tmp, emb)
        order = k_center_greedy(emb, len(ds), seed=args.seed, show_progress=True)
        rank = np.empty(len(ds), dtype=np.int64)
        rank[order] = np.arange(len(ds))
        for col in (RANK_COLUMN, "diversity_keep"):
            if col in ds.column_names:
                ds = ds.remove_columns(col)
        ds = ds.add_column(RANK_COLUMN, rank.tolist())
    if "diversity_keep" in ds.column_names:
        ds = ds.remove_columns("diversity_keep")
    k = n_to_keep(len(ds), args.ratio)
    keep = rank < k
    ds = ds.add_column("diversity_keep", keep.tolist())
    counts = outputs.check_rows("diversity", len(ds), {"kept": int(keep.sum()), "dropped": int((~keep).sum())})
    outputs.save_dataset(ds, out / "ranked.jsonl")
    outputs.save_dataset(ds.select(np.flatnonzero(keep)), out / "selected.jsonl")
    outputs.save_dataset(ds.select(np.flatnonzero(~keep)), out / "dropped.jsonl")
    summary = {"rows": len(ds), "ratio": args.ratio, "kept": int(keep.sum()), "seed": args.seed}
    outputs.write_json(out / "summary.json", summary)
    outputs.write_manifest(
        out, "synth-diversity-select", {"dataset": args.dataset, "embedder": args.embedder}, args, counts,
        {n: out / n for n in ("ranked.jsonl", "selected.jsonl", "dropped.jsonl", "summary.json")},
        path=out / outputs.MANIFEST_NAME,
    )  # fmt: skip
    logger.info(f"ratio {args.ratio:g}: kept {summary['kept']} of {summary['rows']}; outputs in {out}")
    if args.hub_repo:  # after every local file is written: a failed push loses nothing
        from empathy_recipes.synth import selection_settings, synthetic_card_sections

        selected = ds.select(np.flatnonzero(keep))
        info = CardInfo(
            title=f"Synthetic empathetic dialogues, quality- and diversity-selected (r={args.ratio:g})",
            description=(
                "Synth-Empathy selection: synthetic examples (chat schema, the synthetic response last) that passed "
                "quality selection, then k-center greedy over sentence embeddings of context + response keeps the "
                f"share {args.ratio:g} that covers the embedding space best (`kcenter_rank` = pick order). "
                "`selected`: kept (the training data); `dropped`: the rest."
            ),
            command=redacted_command(argv, __file__),
            inputs=[input_ref(args.dataset)],
            tags=["synthetic"],
            extra_sections=synthetic_card_sections(
                selected.to_list(), {**selection_settings(out / "selected.jsonl"), "embedder": args.embedder}
            ),
        )
        sets = {"selected": selected, "dropped": ds.select(np.flatnonzero(~keep))}
        url = push_dataset(sets, args.hub_repo, info, private=args.private, local_output=str(out))
        logger.info(f"pushed to {url}")
    return summary


if __name__ == "__main__":
    main()
