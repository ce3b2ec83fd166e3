"""Split judged ED data into the Efficient-Empathy sets: sensibility, rationality, discard (+ unscored).

The Efficient-Empathy data stage, step 2 (step 1 is ``distilabel_pipelines/judge_sensibility_rationality.py``).
At threshold T, with R = rationality and S = sensibility scores (integers 0-10):

    sensibility = R < T and S > T      discard = R > T and S < T      rationality = every other scored row
    unscored    = rows whose scores are missing, not integers or out of range (with the reason per row)

Scores come from parsed ``rationality`` / ``sensibility`` columns when the input has them (the judge pipeline's
output), else from a raw judge text column (``--text-column``, default ``judge_output``, e.g. the paper's).

    python scripts/select_sets.py --dataset outputs/judged/default.jsonl --output-dir outputs/sets --threshold 5

Writes to ``--output-dir``: ``sensibility/ rationality/ discard/ unscored/`` (``save_to_disk`` datasets in the
common schema plus ``rationality``, ``sensibility``, ``unscored_reason``; ``load_ed("<dir>/sensibility")``
reads them), ``stats.json`` (``counts`` with exactly those four keys, shares, the sweep, the histogram),
``score_histogram.png`` (rationality vs sensibility, the paper's Fig. 4) and ``threshold_sweep.csv`` /
``.md`` (T = 3..7: the share of each set), ``manifest.yaml`` (input fingerprint, arguments, counts). The folder is
built aside and swapped in as a whole (a killed run leaves the previous one intact); a folder holding other files
is refused. ``--hub-repo org/name`` then pushes the four sets as one Hub dataset,
one config per set with a ``train`` split (``load_dataset(repo, "sensibility", split="train")``), with a card.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from empathy_recipes import outputs
from empathy_recipes.data import load_ed
from empathy_recipes.errors import EmpathyRecipesError, exit_on_user_error
from empathy_recipes.hub import CardInfo, add_hub_args, input_ref, push_dataset, redacted_command
from empathy_recipes.judge_scores import (
    REASON_COLUMN,
    SET_NAMES,
    SWEEP_THRESHOLDS,
    assign_sets,
    count_sets,
    default_axes,
    score_histogram,
    threshold_sweep,
)
from empathy_recipes.logs import add_log_args, setup_logging

logger = logging.getLogger(__name__)

JUDGE = default_axes()  # the Efficient-Empathy judge's axes and range, from its Task
LOW, HIGH = JUDGE.low, JUDGE.high
OUTPUT_NAMES = (*SET_NAMES, "stats.json", "threshold_sweep.csv", "threshold_sweep.md", "score_histogram.png")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="judged ED data: Hub id, local dir or JSON/JSONL/CSV/parquet")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--threshold", type=float, default=5, help="T of the split rule (default 5)")
    parser.add_argument("--split", default=None, help="split of a Hub/dir dataset")
    parser.add_argument("--text-column", default="judge_output", help="raw judge text column (when no parsed scores)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N rows")
    add_hub_args(parser, "the four sets (one config each, split train)")
    add_log_args(parser)
    args = parser.parse_args(argv)
    if not LOW <= args.threshold <= HIGH:
        raise EmpathyRecipesError(f"--threshold must be within {LOW}..{HIGH}, not {args.threshold:g}")
    if args.limit is not None and args.limit < 1:
        raise EmpathyRecipesError("--limit must be >= 1")
    return args


def read_scores(dataset, text_column: str):
    """(scores frame, where they came from): parsed columns win over the raw text column."""
    if all(axis in dataset.column_names for axis in JUDGE.names):
        columns = {axis: dataset[axis] for axis in JUDGE.names}
        return JUDGE.from_columns(columns), "columns " + ", ".join(JUDGE.names)
    if text_column in dataset.column_names:
        return JUDGE.parse(dataset.data.column(text_column)), f"text column {text_column}"
    raise EmpathyRecipesError(
        f"no scores in the input: expected columns {' and '.join(JUDGE.names)}, or a judge text column "
        f"{text_column!r} (--text-column); found {dataset.column_names}"
    )


def plot_histogram(hist: np.ndarray, threshold: float, path: Path, title: str) -> None:
    """Rationality (rows, y) vs sensibility (columns, x) counts as a heatmap with the threshold lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    im = ax.imshow(hist, origin="lower", cmap="viridis", extent=(LOW - 0.5, HIGH + 0.5, LOW - 0.5, HIGH + 0.5))
    for r in range(hist.shape[0]):
        for s in range(hist.shape[1]):
            if hist[r, s]:
                color = "white" if hist[r, s] < hist.max() / 2 else "black"
                ax.text(s + LOW, r + LOW, str(hist[r, s]), ha="center", va="center", fontsize=6, color=color)
    ax.axvline(threshold, color="red", lw=1, ls="--")
    ax.axhline(threshold, color="red", lw=1, ls="--")
    ax.set_xlabel("sensibility score")
    ax.set_ylabel("rationality score")
    ax.set_xticks(range(LOW, HIGH + 1))
    ax.set_yticks(range(LOW, HIGH + 1))
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="examples")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup_logging("select", args, __name__)
    dataset = load_ed(args.dataset, split=args.split, limit=args.limit)
    scores, source = read_scores(dataset, args.text_column)
    labels = assign_sets(scores, args.threshold, JUDGE)
    counts = count_sets(labels)
    assert sum(counts.values()) == len(dataset), "every row lands in exactly one set"

    # Attach the checked scores (and the reason for unscored rows) to every row, replacing any old columns.
    dataset = dataset.remove_columns([c for c in (*JUDGE.names, REASON_COLUMN) if c in dataset.column_names])
    for axis in JUDGE.names:
        dataset = dataset.add_column(axis, [None if pd.isna(v) else int(v) for v in scores[axis]])
    dataset = dataset.add_column(REASON_COLUMN, [None if r is None else str(r) for r in scores[REASON_COLUMN]])

    out = Path(args.output_dir)
    row_counts = outputs.check_rows("select", len(dataset), counts)
    # Everything is built in a temporary folder and swapped in as a whole: the four sets and stats.json always
    # come from the same run, even when a run is killed midway.
    with outputs.atomic_dir(out, owned=OUTPUT_NAMES) as tmp:
        sets = {}
        for name in SET_NAMES:
            sets[name] = dataset.select(np.flatnonzero(labels == name))
            sets[name].save_to_disk(str(tmp / name), num_shards=1)  # one shard even when empty: it reloads

        sweep = threshold_sweep(scores, SWEEP_THRESHOLDS, JUDGE)
        sweep.to_csv(tmp / "threshold_sweep.csv", index=False)
        table = sweep[["threshold", *(f"{k}_share" for k in SET_NAMES)]].to_markdown(
            index=False, floatfmt=("g", ".3f", ".3f", ".3f", ".3f")
        )
        (tmp / "threshold_sweep.md").write_text(table + "\n")
        hist = score_histogram(scores["rationality"], scores["sensibility"], LOW, HIGH)
        n_scored = counts["rationality"] + counts["sensibility"] + counts["discard"]
        plot_histogram(
            hist, args.threshold, tmp / "score_histogram.png", f"{Path(str(args.dataset)).name}: {n_scored} scored"
        )
        n = len(dataset)
        reasons = sets["unscored"][REASON_COLUMN]
        stats = {
            "input": str(args.dataset),
            "rows": n,
            "threshold": args.threshold,
            "score_source": source,
            "counts": counts,
            "shares": {k: (v / n if n else 0.0) for k, v in counts.items()},
            "unscored_reasons": {r: reasons.count(r) for r in sorted(set(reasons))},
            "threshold_sweep": sweep.to_dict(orient="records"),
            "histogram": {"rows": "rationality 0..10", "columns": "sensibility 0..10", "counts": hist.tolist()},
        }
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2))
        outputs.write_manifest(
            tmp, "select", {"dataset": args.dataset}, args, counts=row_counts, path=tmp / outputs.MANIFEST_NAME
        )

    # the result, on stdout
    print(f"{n} rows from {args.dataset} ({source}), threshold {args.threshold:g}:")
    for name in SET_NAMES:
        print(f"  {name:<12} {counts[name]:>7}  ({stats['shares'][name]:.1%})  -> {out / name}")
    print(f"threshold sweep (share of each set):\n{table}")
    logger.info(f"stats: {out / 'stats.json'}  histogram: {out / 'score_histogram.png'}")

    if args.hub_repo:  # after every local file is written: a failed push loses nothing
        info = CardInfo(
            title=f"EmpatheticDialogues split by the sensibility/rationality judge (T={args.threshold:g})",
            description=(
                "The Efficient-Empathy data stage: judged ED examples split at threshold T into `sensibility` "
                "(R < T and S > T), `rationality` (every other scored row), `discard` (R > T and S < T) and "
                "`unscored` (with `unscored_reason`). Common chat schema: `id`, `emotion`, `messages` (the "
                f"listener reply last) plus `rationality`, `sensibility`. Scores from {source}."
            ),
            command=redacted_command(argv, __file__),
            inputs=[input_ref(args.dataset)],
            extra_sections={"Threshold sweep (share of each set)": table},
        )
        url = push_dataset(sets, args.hub_repo, info, private=args.private, local_output=str(out))
        logger.info(f"pushed to {url}")
    return stats


if __name__ == "__main__":
    main()
