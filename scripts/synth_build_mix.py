"""Synth-Empathy training mix: the selected synthetic examples plus ED train, as one dataset in the common chat
schema that the SFT stage takes as is (``--dataset_name <output>``; it reads it with ``load_ed``).

Columns: ``id`` (prefixed ``synthetic-`` / ``ed-`` so the two never collide), ``emotion``, ``messages``,
``source`` (``synthetic`` or ``ed``). Other columns are dropped so the two parts share one schema. Rows are
shuffled with ``--seed`` (``--no-shuffle``: ED first, then synthetic).

    python scripts/synth_build_mix.py --synthetic outputs/synth/diversity/selected.jsonl \\
        --ed <ED train: Hub id or local path> --output outputs/synth/mix
"""

from __future__ import annotations

import argparse
import logging

from datasets import Dataset, concatenate_datasets

from empathy_recipes import outputs
from empathy_recipes.data import load_ed
from empathy_recipes.errors import EmpathyRecipesError, exit_on_user_error
from empathy_recipes.hub import CardInfo, add_hub_args, input_ref, push_dataset, redacted_command
from empathy_recipes.logs import add_log_args, setup_logging

logger = logging.getLogger(__name__)

COLUMNS = ["id", "emotion", "messages", "source"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--synthetic", required=True, help="selected synthetic examples (chat schema)")
    p.add_argument("--ed", required=True, help="ED train: Hub id or local path, any ED layout")
    p.add_argument("--ed-split", default=None, help="split of --ed (default: the only one, else train)")
    p.add_argument("--ed-limit", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-shuffle", action="store_true")
    p.add_argument("--output", default="outputs/synth/mix", help="a directory (save_to_disk) or a .jsonl/.parquet")
    add_hub_args(p, "the training mix, with a card")
    add_log_args(p)
    return p.parse_args(argv)


def tag(ds: Dataset, source: str) -> Dataset:
    ds = ds.map(lambda r: {"id": f"{source}-{r['id']}", "source": source}, desc=f"tag {source}")
    return ds.select_columns(COLUMNS)


@exit_on_user_error
def main(argv: list[str] | None = None) -> Dataset:
    args = parse_args(argv)
    setup_logging("mix", args, __name__)
    synthetic = load_ed(args.synthetic)
    ed = load_ed(args.ed, split=args.ed_split, limit=args.ed_limit)
    for name, ds in (("synthetic", synthetic), ("ed", ed)):
        if len(ds) == 0:
            raise EmpathyRecipesError(f"--{name} holds no rows")
    parts = [tag(ed, "ed"), tag(synthetic, "synthetic")]
    parts[1] = parts[1].cast(parts[0].features)
    mix = concatenate_datasets(parts)
    if not args.no_shuffle:
        mix = mix.shuffle(seed=args.seed).flatten_indices()
    counts = outputs.check_rows("mix", len(ed) + len(synthetic), {"mix": len(mix)})
    path = outputs.save_dataset(mix, args.output)
    outputs.write_manifest(path, "mix", {"synthetic": args.synthetic, "ed": args.ed}, args, counts, {"mix": path})
    logger.info(f"{len(ed)} ED + {len(synthetic)} synthetic = {len(mix)} rows -> {path}")
    if args.hub_repo:  # after the local output is written: a failed push loses nothing
        from empathy_recipes.synth import selection_settings, synthetic_card_sections

        info = CardInfo(
            title="Synth-Empathy training mix: selected synthetic dialogues + EmpatheticDialogues",
            description=(
                f"{len(synthetic)} selected synthetic examples and {len(ed)} ED examples in one chat-schema dataset "
                "(`id` prefixed `synthetic-` / `ed-`, `emotion`, `messages`, `source`), shuffled with seed "
                f'{args.seed}; `make sft ARGS="--dataset_name <this repo>"` trains on it as is.'
            ),
            command=redacted_command(argv, __file__),
            inputs=[input_ref(args.synthetic), input_ref(args.ed)],
            tags=["synthetic"],
            extra_sections=synthetic_card_sections(synthetic.to_list(), selection_settings(args.synthetic)),
        )
        url = push_dataset({"default": mix}, args.hub_repo, info, private=args.private, local_output=str(path))
        logger.info(f"pushed to {url}")
    return mix


if __name__ == "__main__":
    main()
