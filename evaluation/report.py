"""Several models' metric files -> one markdown table and one grouped bar chart.

    python evaluation/report.py --metrics a.json b.json [or a directory of *.json] --output-dir outputs/report

Reads the flat JSON objects ``compute_metrics.py`` writes (one per model); writes ``metrics.md`` (rows: models,
columns: metrics, best value per column in bold) and ``metrics.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from empathy_recipes import outputs
from empathy_recipes.errors import EmpathyRecipesError, exit_on_user_error
from empathy_recipes.logs import add_log_args, setup_logging
from empathy_recipes.metrics import METRIC_NAMES

logger = logging.getLogger(__name__)

COLUMNS = (*METRIC_NAMES, "bertscore_f1")
HEADERS = {
    "bleu_1": "BLEU-1",
    "bleu_2": "BLEU-2",
    "bleu_3": "BLEU-3",
    "bleu_4": "BLEU-4",
    "dist_1": "Dist-1",
    "dist_2": "Dist-2",
    "rouge_1": "ROUGE-1",
    "rouge_2": "ROUGE-2",
    "rouge_l": "ROUGE-L",
    "f1": "F1",
    "rouge_1_stemmed": "ROUGE-1 (stemmed)",
    "rouge_2_stemmed": "ROUGE-2 (stemmed)",
    "rouge_l_stemmed": "ROUGE-L (stemmed)",
    "bertscore_f1": "BERTScore-F1",
}


def find_metric_files(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(path.glob("*.json")))
        elif path.is_file():
            files.append(path)
        else:
            raise EmpathyRecipesError(f"no such metrics file or directory: {item}")
    if not files:
        raise EmpathyRecipesError(f"no .json metrics files in {' '.join(inputs)}")
    return files


def load_rows(files: list[Path]) -> list[dict]:
    rows = []
    for f in files:
        try:
            data = json.loads(f.read_text())
        except json.JSONDecodeError as err:
            raise EmpathyRecipesError(f"{f} is not JSON: {err.msg} at line {err.lineno}") from None
        if not isinstance(data, dict) or not any(k in data for k in COLUMNS):
            raise EmpathyRecipesError(f"{f} holds no metrics (expected keys like {', '.join(COLUMNS[:3])})")
        data.setdefault("model", f.stem)
        rows.append(data)
    return rows


def markdown_table(rows: list[dict]) -> str:
    """Rows = models, columns = the metrics any row has; the best (highest) value per column in bold."""
    columns = [c for c in COLUMNS if any(c in r for r in rows)]
    best = {c: max(r[c] for r in rows if c in r) for c in columns}
    lines = ["| Model | n | " + " | ".join(HEADERS[c] for c in columns) + " |"]
    lines.append("|---|---:|" + "---:|" * len(columns))
    for r in rows:
        cells = []
        for c in columns:
            if c not in r:
                cells.append("-")
            else:
                text = f"{r[c]:.2f}"
                cells.append(f"**{text}**" if len(rows) > 1 and r[c] == best[c] else text)
        lines.append(f"| {r['model']} | {r.get('n', '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [c for c in COLUMNS if any(c in r for r in rows)]
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(columns)), 4.5))
    for i, r in enumerate(rows):
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(columns))]
        ax.bar(xs, [r.get(c, 0.0) for c in columns], width, label=str(r["model"])[-40:])
    ax.set_xticks(range(len(columns)), [HEADERS[c] for c in columns], rotation=30, ha="right")
    ax.set_ylabel("score (x100)")
    ax.set_title("Automatic metrics on EmpatheticDialogues test")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--metrics", nargs="+", required=True, help="metrics JSON files and/or directories of them")
    p.add_argument("--output-dir", default="outputs/report")
    add_log_args(p)
    args = p.parse_args(argv)
    setup_logging("eval-report", args, __name__)
    rows = load_rows(find_metric_files(args.metrics))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows)
    outputs.write_text(out / "metrics.md", table)
    bar_chart(rows, out / "metrics.png")
    print(table)
    logger.info(f"{len(rows)} model(s) -> {out / 'metrics.md'}, {out / 'metrics.png'}")


if __name__ == "__main__":
    main()
