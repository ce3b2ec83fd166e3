"""How well does a judge agree with reference scores (e.g. the paper's)? Spearman and exact agreement per axis.

Calibrate a judge before scoring 40k rows: judge a few hundred rows that carry the paper's ``judge_output``
(the shipped sample does), then compare. The judge pipeline prints the same numbers at the end of a run when its
input had reference outputs; this script compares any two sources after the fact:

    python scripts/judge_agreement.py --dataset outputs/judged/default.jsonl
        # ours (rationality/sensibility columns) vs the reference_judge_output column of the same rows
    python scripts/judge_agreement.py --dataset outputs/judged/default.jsonl \\
        --reference data/ed_valid_sample.jsonl --reference-column judge_output   # rows matched by `id`

Scores come from parsed ``rationality`` / ``sensibility`` columns when present, else from a judge text column
(parsed like ``scripts/select_sets.py``). Rows where either side lacks a score are left out of that axis (``n``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from empathy_recipes import outputs
from empathy_recipes.data import load_dataset_any
from empathy_recipes.errors import EmpathyRecipesError, exit_on_user_error
from empathy_recipes.judge_scores import default_axes, judge_agreement
from empathy_recipes.logs import add_log_args, setup_logging

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="judged data (Hub id, dir or file)")
    p.add_argument("--judge-column", default="judge_output", help="judge text column, when no parsed score columns")
    p.add_argument("--reference", default=None, help="another dataset holding the reference (rows matched by id)")
    p.add_argument(
        "--reference-column",
        default=None,
        help="reference judge text column (default: reference_judge_output, or judge_output with --reference)",
    )
    p.add_argument("--output", default=None, help="write the agreement as JSON here")
    add_log_args(p)
    return p.parse_args(argv)


def scores_of(frame: pd.DataFrame, text_column: str, prefer_parsed: bool = True) -> pd.DataFrame:
    judge = default_axes()  # the Efficient-Empathy judge's axes and range, from its Task
    if prefer_parsed and all(a in frame.columns for a in judge.names):
        return judge.from_columns({a: frame[a] for a in judge.names})
    if text_column not in frame.columns:
        raise EmpathyRecipesError(f"no scores: no {'/'.join(judge.names)} columns and no {text_column!r} column")
    return judge.parse(frame[text_column])


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup_logging("judge-agreement", args, __name__)
    ours = load_dataset_any(args.dataset, None).to_pandas()
    predicted = scores_of(ours, args.judge_column)
    if args.reference:
        ref_col = args.reference_column or "judge_output"
        ref = load_dataset_any(args.reference, None).to_pandas()
        if "id" not in ours.columns or "id" not in ref.columns:
            raise EmpathyRecipesError("--reference needs an `id` column on both sides to match rows")
        if ref_col not in ref.columns:
            raise EmpathyRecipesError(f"{args.reference} has no {ref_col!r} column")
        texts = dict(zip(ref["id"].astype(str), ref[ref_col]))
        reference = default_axes().parse([texts.get(i) for i in ours["id"].astype(str)])
        source = f"{args.reference}:{ref_col}"
    else:
        ref_col = args.reference_column or "reference_judge_output"
        if ref_col not in ours.columns:
            raise EmpathyRecipesError(
                f"{args.dataset} has no {ref_col!r} column; give --reference-column or --reference"
            )
        reference = scores_of(ours, ref_col, prefer_parsed=False)
        source = ref_col
    result = {"rows": len(ours), "reference": source, "agreement": judge_agreement(predicted, reference)}

    # the result, on stdout
    print(f"judge agreement on {len(ours)} rows of {args.dataset} vs {source}:")
    print(f"  {'axis':<12} {'n':>6} {'spearman':>9} {'exact':>7} {'within 1':>9} {'mean |diff|':>12}")
    for axis, a in result["agreement"].items():
        cells = [("-" if a[k] is None else f"{a[k]:.3f}") for k in ("spearman", "exact", "within_1", "mean_abs_diff")]
        print(f"  {axis:<12} {a['n']:>6} {cells[0]:>9} {cells[1]:>7} {cells[2]:>9} {cells[3]:>12}")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        outputs.write_json(args.output, result)
    return result


if __name__ == "__main__":
    main()
