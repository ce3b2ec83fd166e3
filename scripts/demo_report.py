"""Write ``<demo output>/report.md`` from the files the demo's stages left (used by ``scripts/demo.py``).

Only reads what the stages wrote: judge summary, split stats and histogram, trainer logs, the MoE config,
synthetic-data counts, metrics and predictions. A section whose stage did not run says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

CAVEAT = (
    "> **Read these numbers as a smoke test, not as results.** They come from a 135M-parameter model judged, "
    "trained and evaluated for minutes on a laptop CPU, on a few hundred ED rows. They show that every stage runs "
    "and what each one produces; they are not the papers' numbers (Llama-3-8B, 40k training rows, GPUs). "
    "See the README's *Reproduce the papers* for the full-size commands."
)


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _rel(path: Path, base: Path) -> str:
    return os.path.relpath(path, base)


def tensorboard_losses(output_dir: Path) -> list[tuple[int, float]]:
    """(step, loss) pairs of ``train/loss`` from the TensorBoard events under ``output_dir/runs`` (the recipes'
    ``report_to: tensorboard``); the newest run wins, a resumed run's events add to it."""
    found = (output_dir / "runs").glob("*/events.out.tfevents.*") if (output_dir / "runs").is_dir() else []
    runs = sorted(found, key=lambda p: p.stat().st_mtime)
    if not runs:
        return []
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: dict[int, float] = {}
    for events in runs:  # oldest first: a later run overwrites the steps it repeats
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        if "train/loss" in accumulator.Tags().get("scalars", []):
            points.update({int(e.step): float(e.value) for e in accumulator.Scalars("train/loss")})
    return sorted(points.items())


def loss_history(output_dir: Path) -> list[tuple[int, float]]:
    """(step, loss) pairs: from the run's TensorBoard logs, else from a Trainer's ``trainer_state.json`` in
    ``output_dir`` (or its newest checkpoint)."""
    logged = tensorboard_losses(output_dir)
    if logged:
        return logged
    candidates = [output_dir / "trainer_state.json"] + sorted(
        output_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[-1])
    )[::-1]
    for path in candidates:
        if path.exists():
            logs = json.loads(path.read_text()).get("log_history", [])
            return [(int(e["step"]), float(e["loss"])) for e in logs if "loss" in e and "step" in e]
    return []


def plot_losses(curves: dict[str, list[tuple[int, float]]], path: Path) -> Path | None:
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, points in curves.items():
        ax.plot([s for s, _ in points], [v for _, v in points], marker="o", markersize=3, label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def judge_section(out: Path) -> str:
    summary = _read_json(out / "judge" / "summary.json")
    if summary is None:
        return "_The judge stage did not run._"
    text = [f"{summary['scored_both']} of {summary['rows']} rows got both scores ({summary['scored_share']:.0%})."]
    agreement = summary.get("agreement_with_reference")
    if agreement:
        keys = ("spearman", "exact", "within_1", "mean_abs_diff", "n")
        rows = [[axis, *(_fmt(values.get(k)) for k in keys)] for axis, values in agreement.items()]
        text.append("Agreement with the paper's released judge scores on the same rows:\n")
        text.append(_table(["axis", "Spearman", "exact", "within 1", "mean abs diff", "rows"], rows))
    return "\n\n".join(text)


def select_section(out: Path) -> str:
    stats = _read_json(out / "select" / "stats.json")
    if stats is None:
        return "_The select stage did not run._"
    counts = stats["counts"]
    total = sum(counts.values())
    parts = [_table(["set", "rows", "share"], [[k, v, f"{v / total:.1%}"] for k, v in counts.items()])]
    hist = out / "select" / "score_histogram.png"
    if hist.exists():
        parts.append(f"![rationality vs sensibility]({_rel(hist, out)})")
    sweep = out / "select" / "threshold_sweep.md"
    if sweep.exists():
        parts.append("Threshold sweep (share of each set for T = 3..7):\n\n" + sweep.read_text().strip())
    return "\n\n".join(parts)


def training_section(out: Path) -> str:
    curves = {
        "sensibility expert": loss_history(out / "experts" / "sensibility"),
        "rationality expert": loss_history(out / "experts" / "rationality"),
        "MoE router": loss_history(out / "moe-router"),
    }
    plot = plot_losses(curves, out / "training_loss.png")
    if plot is None:
        return "_No training logs found._"
    rows = [[k, len(v), f"{v[0][1]:.3f}", f"{v[-1][1]:.3f}"] for k, v in curves.items() if v]
    return (
        _table(["run", "logged steps", "first loss", "last loss"], rows) + f"\n\n![training loss]({_rel(plot, out)})"
    )


def moe_section(out: Path) -> str:
    config = out / "moe" / "mergekit_moe.yaml"
    if not config.exists():
        return "_The MoE stage did not run._"
    text = [
        "The mergekit-moe config that was run (`mergekit-moe` reruns it by hand):",
        "```yaml",
        config.read_text().strip(),
        "```",
    ]
    summary = _read_json(out / "moe" / "build_moe.json")
    if summary and summary.get("router_parameters"):
        text.append(
            f"Router tensors trained by the router stage: {len(summary['router_parameters'])} "
            f"(e.g. `{summary['router_parameters'][0]}`)."
        )
    return "\n".join(text)


def synth_section(out: Path) -> str:
    synth = out / "synth"
    if not synth.exists():
        return "_The synth stage did not run._"
    rows = []
    for name in ("generated", "quality", "diversity"):
        summary = _read_json(synth / name / "summary.json")
        if summary:
            flat = {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}
            rows.append(
                [name, ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in flat.items())]
            )
    return _table(["step", "summary"], rows) if rows else "_No synthetic-data summaries found._"


def evaluation_section(out: Path, n_examples: int = 4) -> str:
    ev = out / "evaluate"
    table = ev / "report" / "metrics.md"
    if not table.exists():
        return "_The evaluate stage did not run._"
    parts = [table.read_text().strip()]
    chart = ev / "report" / "metrics.png"
    if chart.exists():
        parts.append(f"![metrics]({_rel(chart, out)})")
    preds = {p.stem: _read_jsonl(p) for p in sorted((ev / "predictions").glob("*.jsonl"))}
    if preds:
        first = next(iter(preds.values()))
        for i, row in enumerate(first[:n_examples]):
            context = row["context"][-1] if isinstance(row["context"], list) else row["context"]
            lines = [
                f"**Example {i + 1}** (id {row['id']}). Speaker: _{context}_",
                "",
                _table(
                    ["who", "reply"],
                    [["human reference", row["reference"]]]
                    + [[name, rows[i]["prediction"]] for name, rows in preds.items() if i < len(rows)],
                ),
            ]
            parts.append("\n".join(lines))
    return "\n\n".join(parts)


def write_report(out: Path, times: dict[str, float], settings: dict) -> Path:
    sections = [
        "# empathy-recipes demo report",
        CAVEAT,
        "## Stage times\n\n"
        + _table(["stage", "seconds"], [[k, f"{v:.0f}"] for k, v in times.items()])
        + f"\n\nSettings: `{json.dumps({k: v for k, v in settings.items() if k not in ('fresh', 'only')})}`",
        "## 1. Judge (Efficient-Empathy)\n\n" + judge_section(out),
        "## 2. Split on the paper's released scores (T = 5)\n\n" + select_section(out),
        "## 3. Experts and router training\n\n" + training_section(out),
        "## 4. Mixture of experts\n\n" + moe_section(out),
        "## 5. Synthetic data (Synth-Empathy)\n\n" + synth_section(out),
        "## 6. Evaluation on ED test\n\n" + evaluation_section(out),
    ]
    path = out / "report.md"
    path.write_text("\n\n".join(sections) + "\n")
    return path
