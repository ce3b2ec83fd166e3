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


FUNNEL_KEYS = ("seeds", "generations", "dialogues", "examples", "quality_kept", "diversity_kept", "mix_rows")


def synth_funnel(out: Path) -> dict[str, int]:
    """How many rows each Synth-Empathy step of the demo produced: seeds -> generations -> dialogues -> examples
    -> kept by quality -> kept by diversity -> synthetic rows in the training mix (0 for a step that did not run)."""
    synth = out / "synth"
    generated = _read_json(synth / "generated" / "summary.json") or {}
    raw = _read_jsonl(synth / "generated" / "default.jsonl")
    quality = _read_json(synth / "quality" / "summary.json") or {}
    diversity = _read_json(synth / "diversity" / "summary.json") or {}
    mix_rows = mix_synthetic = 0
    if (synth / "mix").exists():
        from empathy_recipes.data import load_ed

        mix = load_ed(synth / "mix")
        mix_rows = len(mix)
        mix_synthetic = sum(s == "synthetic" for s in mix["source"])
    return {
        "seeds": len({r.get("seed_id") for r in raw}),
        "generations": int(generated.get("generations", 0)),
        "dialogues": int(generated.get("dialogues", 0)),
        "examples": int(generated.get("examples", 0)),
        "quality_kept": int(quality.get("kept", 0)),
        "diversity_kept": int(diversity.get("kept", 0)),
        "mix_rows": mix_synthetic,
        "mix_rows_total": mix_rows,
    }


def write_synth_funnel(out: Path) -> dict[str, int]:
    """Write ``<out>/synth/summary.json`` (the funnel counts of :func:`synth_funnel`) and return them."""
    funnel = synth_funnel(out)
    (out / "synth").mkdir(parents=True, exist_ok=True)
    (out / "synth" / "summary.json").write_text(json.dumps(funnel, indent=2) + "\n")
    return funnel


def _plot(path: Path, draw) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    draw(ax)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_funnel(funnel: dict[str, int], path: Path) -> Path:
    labels = [k.replace("_", " ") for k in FUNNEL_KEYS]
    values = [funnel.get(k, 0) for k in FUNNEL_KEYS]

    def draw(ax):
        bars = ax.barh(labels[::-1], values[::-1], color="#4c72b0")
        ax.bar_label(bars, padding=3)
        ax.set_xlabel("rows")
        ax.set_title("Synth-Empathy funnel (demo)")
        ax.set_xlim(0, max(values + [1]) * 1.15)

    return _plot(path, draw)


def plot_quality_histogram(scores: list[float], threshold: float, path: Path) -> Path:
    def draw(ax):
        ax.hist(scores, bins=20, range=(min(scores + [0.0]), 100), color="#55a868", edgecolor="white")
        ax.axvline(threshold, color="#c44e52", linestyle="--", label=f"threshold T = {threshold:g}")
        ax.set_xlabel("quality score = cosine x 100 (discriminator reply vs synthetic response)")
        ax.set_ylabel("examples")
        ax.set_title(f"Quality selection: {sum(s >= threshold for s in scores)} of {len(scores)} kept")
        ax.legend()

    return _plot(path, draw)


def judged_means(rows: list[dict]) -> dict[str, float | None]:
    """Mean probability-weighted rating per axis of the data-quality judge (the integer rating where no weighted
    score exists) and their mean, ``overall``; the axes are the judge Task's."""
    from empathy_recipes.judge_scores import axis_summary
    from empathy_recipes.tasks.dialogue_quality import DialogueQualityJudge

    summary = axis_summary(rows, DialogueQualityJudge.axes_spec())
    return {**{a: summary[a]["score"] for a in DialogueQualityJudge.axes_spec().names}, "overall": summary["overall"]}


def synth_section(out: Path) -> str:
    synth = out / "synth"
    if not synth.exists():
        return "_The synth stage did not run._"
    funnel = _read_json(synth / "summary.json") or synth_funnel(out)
    parts = [
        "Every count is a real run of the step (`synth/summary.json`): the generator writes JSON dialogues whose "
        "format the decoder enforces (`empathy_recipes.structured`), the parser turns them into examples, quality "
        "selection keeps an example when the discriminator's own reply is close to the synthetic response, k-center "
        "greedy keeps a diverse share, and the kept examples join ED rows in the training mix.",
        _table(["step", "rows"], [[k.replace("_", " "), funnel.get(k, 0)] for k in FUNNEL_KEYS]),
        f"![funnel]({_rel(plot_funnel(funnel, synth / 'funnel.png'), out)})",
    ]
    generated = _read_json(synth / "generated" / "summary.json") or {}
    if generated.get("rejected_reasons"):
        reasons = ", ".join(f"{n} x {why}" for why, n in generated["rejected_reasons"].items())
        parts.append(f"Rejected generations (each kept in `generated/rejected.jsonl` with its reason): {reasons}.")
    scored = _read_jsonl(synth / "quality" / "scored.jsonl")
    quality = _read_json(synth / "quality" / "summary.json") or {}
    if scored and "threshold" in quality:
        hist = plot_quality_histogram([float(r["quality_score"]) for r in scored], quality["threshold"],
                                      synth / "quality_histogram.png")  # fmt: skip
        parts.append(
            f"Quality scores (discriminator: `{quality.get('discriminator')}`; embedder: "
            f"`{quality.get('embedder')}`), mean {quality.get('mean_score', 0):.1f}:\n\n"
            f"![quality scores]({_rel(hist, out)})"
        )
    judged = _read_jsonl(synth / "judged" / "default.jsonl")
    judged_ed = _read_jsonl(synth / "judged_ed" / "default.jsonl")
    if judged or judged_ed:
        in_mix = {r["id"] for r in _read_jsonl(synth / "diversity" / "selected.jsonl")}
        groups = [
            ("synthetic, all", judged),
            ("synthetic, kept by quality", [r for r in judged if r.get("quality_keep")]),
            ("synthetic, in the mix (quality + diversity)", [r for r in judged if r.get("id") in in_mix]),
            ("ED (human)", judged_ed),
        ]
        means = [(name, len(rs), judged_means(rs)) for name, rs in groups if rs]
        columns = list(means[0][2]) if means else []
        parts.append(
            "The data-quality judge (the embedded model, 1-3 per criterion, probability-weighted means):\n\n"
            + _table(["rows", "n", *columns], [[name, n, *(_fmt(m[c]) for c in columns)] for name, n, m in means])
        )
    selected = _read_jsonl(synth / "diversity" / "selected.jsonl")
    if selected:
        example = max(selected, key=lambda r: len(r["messages"]))
        turns = [[m["role"], m["content"]] for m in example["messages"]]
        parts.append(f"One example that reached the mix (`{example['id']}`):\n\n" + _table(["role", "content"], turns))
    return "\n\n".join(parts)


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
