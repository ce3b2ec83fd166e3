"""Human A/B evaluation: export blind sheets for annotators, then score the filled sheets.

    python evaluation/human_eval.py export --predictions-a a.jsonl --predictions-b b.jsonl --n 100 --annotators 3 \\
        --output-dir outputs/eval/human
    python evaluation/human_eval.py score --sheets outputs/eval/human --output outputs/eval/human/results.json

``export`` samples ``--n`` test examples both models answered, shows the two replies as "Response 1" and
"Response 2" in a random order per item (the annotators never see which model wrote which), and writes one CSV
per annotator (``sheets/annotator_<k>.csv``, same items, each sheet in its own shuffled order) plus the hidden
``key.csv`` (which response is model A) and ``INSTRUCTIONS.md``. Keep ``key.csv`` away from the annotators.
Cells that a spreadsheet would run as a formula (text starting with ``= + - @``, a tab or a carriage return) get a
leading ``'``. Pairing is by ``id``: ids only one file has, or repeated ones, stop the export with one error line
unless ``--on-mismatch keep-aside`` (then they go to ``aside.jsonl`` with their reason).

Annotators fill one column per criterion (default, as in the papers' human studies: coherence, empathy,
informativeness, continuity) with ``1`` (response 1 is better), ``2`` (response 2 is better) or ``tie``.

``score`` unblinds with the key and reports, per criterion: model A's win / tie / loss rates over all
annotations, the same by per-item majority vote, and Fleiss' kappa (categories A / tie / B) over the items every
annotator rated. Unreadable cells are listed with their sheet, item and value, never silently dropped.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from empathy_recipes import outputs
from empathy_recipes.data import load_dataset_any
from empathy_recipes.errors import EmpathyRecipesError, exit_on_user_error
from empathy_recipes.logs import add_log_args, setup_logging
from empathy_recipes.pairing import add_mismatch_arg, pair_by_id

logger = logging.getLogger(__name__)

CRITERIA = ("coherence", "empathy", "informativeness", "continuity")
CATEGORIES = ("A", "tie", "B")
TIE_WORDS = {"tie", "0", "t", "=", "same", "equal"}
INSTRUCTIONS = """# A/B evaluation of listener replies

Each row shows a conversation (a speaker sharing a situation, sometimes with earlier listener turns) and two
candidate listener replies, "Response 1" and "Response 2", in random order. For each criterion column, write:

- `1` if Response 1 is better on that criterion,
- `2` if Response 2 is better,
- `tie` if they are about equally good (or equally bad).

Criteria:
- **coherence**: the reply makes sense and follows from the conversation.
- **empathy**: the reply understands and responds to the speaker's feelings.
- **informativeness**: the reply adds relevant content (questions, information, suggestions).
- **continuity**: the reply makes you want to continue the conversation.

Judge each criterion on its own. Do not edit other columns.
"""


def fleiss_kappa(counts: Sequence[Sequence[int]]) -> float:
    """Fleiss' kappa of an items x categories matrix of rating counts (every item rated by the same number of
    raters, at least 2). ``nan`` when chance agreement is 1 (every rating in one category): kappa is undefined.

    P_i = (sum_j n_ij^2 - n) / (n (n - 1)), P_bar = mean P_i, p_j = sum_i n_ij / (N n), P_e = sum_j p_j^2,
    kappa = (P_bar - P_e) / (1 - P_e).
    """
    rows = [list(map(int, r)) for r in counts]
    if not rows:
        raise EmpathyRecipesError("Fleiss' kappa needs at least one item")
    n = sum(rows[0])
    if n < 2 or any(sum(r) != n for r in rows):
        raise EmpathyRecipesError("Fleiss' kappa needs the same number (>= 2) of ratings for every item")
    n_items, k = len(rows), len(rows[0])
    p_bar = sum((sum(c * c for c in r) - n) / (n * (n - 1)) for r in rows) / n_items
    p_e = sum((sum(r[j] for r in rows) / (n_items * n)) ** 2 for j in range(k))
    if math.isclose(p_e, 1.0):
        return math.nan
    return (p_bar - p_e) / (1 - p_e)


def parse_choice(value: str | None) -> str | None:
    """A sheet cell -> ``"1"``, ``"2"``, ``"tie"``, or None when unreadable (blank included)."""
    v = (value or "").strip().lower().removeprefix("response").strip()
    if v in ("1", "2"):
        return v
    if v in TIE_WORDS:
        return "tie"
    return None


def unblind(choice: str, response_1_is: str) -> str:
    """``"1"``/``"2"``/``"tie"`` -> ``"A"``/``"B"``/``"tie"`` given which model was shown as Response 1."""
    if choice == "tie":
        return "tie"
    other = "B" if response_1_is == "A" else "A"
    return response_1_is if choice == "1" else other


def rates(labels: Sequence[str]) -> dict[str, float | int]:
    """Model A's win / tie / loss shares of ``labels`` (``"A"``, ``"tie"``, ``"B"``)."""
    c = Counter(labels)
    total = sum(c.values())
    if not total:
        return {"n": 0, "win": math.nan, "tie": math.nan, "loss": math.nan}
    return {"n": total, "win": c["A"] / total, "tie": c["tie"] / total, "loss": c["B"] / total}


def majority(labels: Sequence[str]) -> str:
    """The most frequent label; ``"tie"`` when the top two are equally frequent."""
    top = Counter(labels).most_common()
    if len(top) > 1 and top[0][1] == top[1][1]:
        return "tie"
    return top[0][0]


def render_context(turns: Sequence[str]) -> str:
    n = len(turns)
    return "\n".join(f"{'Speaker' if (n - i) % 2 == 1 else 'Listener'}: {t}" for i, t in enumerate(turns))


def _load_predictions(source: str, column: str) -> list[dict]:
    ds = load_dataset_any(source)
    for col in ("id", "context", column):
        if col not in ds.column_names:
            raise EmpathyRecipesError(f"{source} has no column {col!r} (expected the output of make generate)")
    return ds.to_list()


def write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    """A CSV written atomically, every text cell made spreadsheet-safe (no cell runs as a formula)."""
    with outputs.atomic_file(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows({k: outputs.spreadsheet_safe(v) for k, v in r.items()} for r in rows)


def export(args: argparse.Namespace) -> dict:
    if args.n < 1 or args.annotators < 2:
        raise EmpathyRecipesError("--n must be >= 1 and --annotators >= 2 (Fleiss' kappa needs two raters)")
    rows_a = _load_predictions(args.predictions_a, args.prediction_column)
    rows_b = _load_predictions(args.predictions_b, args.prediction_column)
    names = (f"A ({args.predictions_a})", f"B ({args.predictions_b})")
    pairing = pair_by_id(rows_a, rows_b, args.on_mismatch, names=names)
    row_counts = outputs.check_rows("human-export", pairing.rows_in, pairing.counts())
    a = {str(ra["id"]): ra for ra, _ in pairing.pairs}
    b = {str(rb["id"]): rb for _, rb in pairing.pairs}
    common = pairing.ids
    rng = random.Random(args.seed)
    items = rng.sample(common, min(args.n, len(common)))
    out = Path(args.output_dir)
    (out / "sheets").mkdir(parents=True, exist_ok=True)
    key_rows, sheet_rows = [], []
    for k, ex_id in enumerate(items, start=1):
        first = "A" if rng.random() < 0.5 else "B"
        ra, rb = a[ex_id][args.prediction_column], b[ex_id][args.prediction_column]
        r1, r2 = (ra, rb) if first == "A" else (rb, ra)
        key_rows.append({"item": k, "id": ex_id, "response_1_is": first})
        sheet_rows.append(
            {"item": k, "context": render_context(a[ex_id]["context"]), "response_1": r1, "response_2": r2}
        )
    model_a = str(a[items[0]].get("model") or Path(args.predictions_a).stem)
    model_b = str(b[items[0]].get("model") or Path(args.predictions_b).stem)
    write_csv(out / "key.csv", ["item", "id", "response_1_is", "model_a", "model_b"],
              [{**r, "model_a": model_a, "model_b": model_b} for r in key_rows])  # fmt: skip
    fields = ["item", "context", "response_1", "response_2", *args.criteria]
    for annotator in range(1, args.annotators + 1):
        rows = sheet_rows[:]
        random.Random(args.seed * 1000 + annotator).shuffle(rows)
        write_csv(out / "sheets" / f"annotator_{annotator}.csv", fields,
                  [{**r, **dict.fromkeys(args.criteria, "")} for r in rows])  # fmt: skip
    outputs.write_text(out / "INSTRUCTIONS.md", INSTRUCTIONS)
    if pairing.aside:
        outputs.write_jsonl(out / "aside.jsonl", pairing.aside)
    summary = {"items": len(items), "annotators": args.annotators, "criteria": list(args.criteria), "dir": str(out)}
    summary["rows"] = {**row_counts, "aside": [{k: r[k] for k in ("side", "id", "reason")} for r in pairing.aside]}
    inputs = {"predictions_a": args.predictions_a, "predictions_b": args.predictions_b}
    outputs.write_manifest(out, "human-export", inputs, args, row_counts, path=out / outputs.MANIFEST_NAME)
    print(json.dumps(summary))
    logger.info(f"send {out / 'sheets'} and INSTRUCTIONS.md to annotators; keep {out / 'key.csv'}")
    return summary


def _sheet_files(sheets: list[str]) -> list[Path]:
    files: list[Path] = []
    for s in sheets:
        p = Path(s)
        if p.is_dir():
            files.extend(sorted((p / "sheets" if (p / "sheets").is_dir() else p).glob("*.csv")))
        elif p.is_file():
            files.append(p)
        else:
            raise EmpathyRecipesError(f"no such sheet file or directory: {s}")
    files = [f for f in files if f.name != "key.csv"]
    if len(files) < 2:
        raise EmpathyRecipesError(f"need at least two filled sheets, found {len(files)} in {' '.join(sheets)}")
    return files


def score_sheets(sheet_files: list[Path], key_file: Path, criteria: Sequence[str] | None = None) -> dict:
    """Unblind the filled sheets with the key; per criterion: rates, majority-vote rates and Fleiss' kappa."""
    if not key_file.is_file():
        raise EmpathyRecipesError(f"no key file {key_file} (written by `export` next to the sheets)")
    with key_file.open(newline="", encoding="utf-8") as f:
        key_rows = list(csv.DictReader(f))
    key = {r["item"]: r["response_1_is"] for r in key_rows}
    sheets = {}
    for path in sheet_files:
        with path.open(newline="", encoding="utf-8") as f:
            sheets[path.name] = list(csv.DictReader(f))
    found = [c for c in CRITERIA if all(c in (rows[0] if rows else {}) for rows in sheets.values())]
    criteria = list(criteria or found or [])
    if not criteria:
        raise EmpathyRecipesError("the sheets share no criterion column")
    invalid = []
    labels: dict[str, dict[str, list[str]]] = {c: {} for c in criteria}
    for name, rows in sheets.items():
        for row in rows:
            item = row.get("item", "")
            if item not in key:
                invalid.append(
                    {"sheet": name, "item": item, "criterion": None, "value": None, "reason": "item not in key"}
                )
                continue
            for c in criteria:
                choice = parse_choice(row.get(c))
                if choice is None:
                    reason = "blank" if not (row.get(c) or "").strip() else "not 1, 2 or tie"
                    invalid.append(
                        {"sheet": name, "item": item, "criterion": c, "value": row.get(c), "reason": reason}
                    )
                    continue
                labels[c].setdefault(item, []).append(unblind(choice, key[item]))
    results = {}
    for c in criteria:
        per_item = labels[c]
        all_labels = [lab for labs in per_item.values() for lab in labs]
        complete = [labs for labs in per_item.values() if len(labs) == len(sheets)]
        counts = [[labs.count(cat) for cat in CATEGORIES] for labs in complete]
        kappa = fleiss_kappa(counts) if counts else math.nan
        results[c] = {
            "annotations": rates(all_labels),
            "majority": rates([majority(labs) for labs in per_item.values()]),
            "fleiss_kappa": None if math.isnan(kappa) else kappa,
            "kappa_items": len(complete),
        }
    first = key_rows[0] if key_rows else {}
    return {
        "model_a": first.get("model_a"),
        "model_b": first.get("model_b"),
        "annotators": len(sheets),
        "items": len(key),
        "criteria": results,
        "invalid_cells": invalid,
    }


def markdown(result: dict) -> str:
    lines = [
        f"A = {result['model_a']}, B = {result['model_b']}; {result['annotators']} annotators, {result['items']} items",
        "",
        "| Criterion | A win | tie | A loss | majority A win | tie | loss | Fleiss' kappa |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c, r in result["criteria"].items():
        a, m = r["annotations"], r["majority"]
        kappa = "n/a" if r["fleiss_kappa"] is None else f"{r['fleiss_kappa']:.3f}"
        cells = [f"{100 * x:.1f}%" for x in (a["win"], a["tie"], a["loss"], m["win"], m["tie"], m["loss"])]
        lines.append(f"| {c} | " + " | ".join(cells) + f" | {kappa} |")
    return "\n".join(lines) + "\n"


def score(args: argparse.Namespace) -> dict:
    files = _sheet_files(args.sheets)
    key = Path(args.key) if args.key else files[0].parent.parent / "key.csv"
    if not args.key and not key.is_file():
        key = files[0].parent / "key.csv"
    result = score_sheets(files, key, args.criteria)
    out = Path(args.output)
    outputs.write_json(out, result)
    outputs.write_text(out.with_suffix(".md"), markdown(result))
    print(markdown(result))
    if result["invalid_cells"]:
        logger.info(f"{len(result['invalid_cells'])} unreadable cell(s) listed in {out}")
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="write blind A/B sheets and the hidden key")
    e.add_argument("--predictions-a", required=True)
    e.add_argument("--predictions-b", required=True)
    e.add_argument("--prediction-column", default="prediction")
    e.add_argument("--n", type=int, default=100, help="items to sample")
    e.add_argument("--annotators", type=int, default=3)
    e.add_argument("--criteria", nargs="+", default=list(CRITERIA))
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--output-dir", default="outputs/eval/human")
    add_mismatch_arg(e)
    add_log_args(e)
    s = sub.add_parser("score", help="score filled sheets: win/tie/loss and Fleiss' kappa per criterion")
    s.add_argument("--sheets", nargs="+", required=True, help="filled sheet CSVs, or the export directory")
    s.add_argument("--key", default=None, help="key.csv (default: next to the sheets/ folder)")
    s.add_argument("--criteria", nargs="+", default=None, help="default: the usual criteria present in the sheets")
    s.add_argument("--output", default="outputs/eval/human/results.json")
    add_log_args(s)
    return p.parse_args(argv)


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup_logging("human-eval", args, __name__)
    return export(args) if args.command == "export" else score(args)


if __name__ == "__main__":
    main()
