"""Synth-Empathy funnel: how many rows each step of one synth output folder produced, read from the steps' own files.

seeds -> generations -> dialogues -> examples -> kept by quality -> kept by diversity -> synthetic rows in the
training mix. A step that did not run (or wrote nothing) counts 0; nothing is recomputed and no model is loaded.

    python scripts/synth_funnel.py --synth-dir outputs/synth      # writes outputs/synth/summary.json

Reads ``<synth-dir>/generated/{default.jsonl,summary.json}``, ``quality/summary.json``, ``diversity/summary.json``
and ``mix/`` (the layout ``make synth``, ``make synth-select`` and ``make synth-mix`` write, and the demo's synth
stage). Writes ``--output`` (default ``<synth-dir>/summary.json``): ``{"seeds", "generations", "dialogues",
"examples", "quality_kept", "diversity_kept", "mix_rows", "mix_rows_total"}`` (``mix_rows``: the synthetic rows of
the mix; ``mix_rows_total``: with the ED rows).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from empathy_recipes import outputs
from empathy_recipes.errors import EmpathyRecipesError, exit_on_user_error
from empathy_recipes.logs import add_log_args, setup_logging

logger = logging.getLogger(__name__)
FUNNEL_KEYS = ("seeds", "generations", "dialogues", "examples", "quality_kept", "diversity_kept", "mix_rows")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--synth-dir", required=True, help="a synth output folder (generated/, quality/, ...)")
    p.add_argument("--output", default=None, help="where to write the counts (default: <synth-dir>/summary.json)")
    add_log_args(p)
    args = p.parse_args(argv)
    if not (Path(args.synth_dir) / "generated" / "summary.json").is_file():
        raise EmpathyRecipesError(f"{args.synth_dir}: no generated/summary.json, not a synth output folder")
    return args


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def funnel_counts(synth: Path) -> dict[str, int]:
    """The funnel of the synth folder ``synth`` (see the module docstring)."""
    generated = _json(synth / "generated" / "summary.json")
    raw = synth / "generated" / "default.jsonl"
    seeds = (
        {json.loads(line).get("seed_id") for line in raw.read_text().splitlines() if line.strip()}
        if (raw.is_file())
        else set()
    )
    mix_rows = mix_synthetic = 0
    if (synth / "mix").exists():
        from empathy_recipes.data import load_ed

        mix = load_ed(synth / "mix")
        mix_rows, mix_synthetic = len(mix), sum(s == "synthetic" for s in mix["source"])
    return {
        "seeds": len(seeds),
        "generations": int(generated.get("generations", 0)),
        "dialogues": int(generated.get("dialogues", 0)),
        "examples": int(generated.get("examples", 0)),
        "quality_kept": int(_json(synth / "quality" / "summary.json").get("kept", 0)),
        "diversity_kept": int(_json(synth / "diversity" / "summary.json").get("kept", 0)),
        "mix_rows": mix_synthetic,
        "mix_rows_total": mix_rows,
    }


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict[str, int]:
    args = parse_args(argv)
    setup_logging("funnel", args, __name__)
    synth = Path(args.synth_dir)
    funnel = funnel_counts(synth)
    path = Path(args.output) if args.output else synth / "summary.json"
    outputs.write_json(path, funnel)
    logger.info("funnel: %s -> %s", ", ".join(f"{k} {funnel[k]}" for k in FUNNEL_KEYS), path)
    return funnel


if __name__ == "__main__":
    main()
