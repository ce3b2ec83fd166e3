"""The demo's last stage: write ``<output-dir>/report.md`` from the files the demo's stages left.

    python scripts/demo_report.py --output-dir outputs/demo      # scripts/demo.py runs exactly this

Only reads what the stages wrote: ``demo.json`` (settings and stage times, written by ``scripts/demo.py``), the judge
summary, split stats and histogram, trainer logs, the MoE config, the synth funnel (``synth/summary.json``), quality
scores, judged ratings and the quantity-vs-quality study, metrics and predictions. A section whose stage did not run
says so. The report stays short (at most 250 lines): long material (the MoE config, every example) sits in
collapsed ``<details>`` blocks or in the linked files.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from empathy_recipes.errors import EmpathyRecipesError, exit_on_user_error
from empathy_recipes.logs import add_log_args, setup_logging
from empathy_recipes.outputs import read_jsonl

logger = logging.getLogger(__name__)
MAX_LINES = 250

CAVEAT = (
    "> **Read these numbers as a smoke test, not as results.** They come from a 135M-parameter model judged, "
    "trained and evaluated for minutes on a laptop CPU, on a few hundred ED rows. They show that every stage runs "
    "and what each one produces; they are not the papers' numbers (Llama-3-8B, 40k training rows, GPUs). "
    "See the README's *Reproduce the papers* for the full-size commands."
)


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _read_jsonl(path: Path) -> list[dict]:
    return read_jsonl(path) if path.exists() else []


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


def _details(summary: str, body: str) -> str:
    """A collapsed block (GitHub and most markdown viewers render it closed)."""
    return f"<details><summary>{summary}</summary>\n\n{body.strip()}\n\n</details>"


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
        parts.append(_details("Threshold sweep (share of each set for T = 3..7)", sweep.read_text()))
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
    import yaml

    cfg = yaml.safe_load(config.read_text()) or {}
    experts = cfg.get("experts") or []
    rows = [[e.get("source_model"), len(e.get("positive_prompts") or []), len(e.get("negative_prompts") or [])]
            for e in experts]  # fmt: skip
    settings = {k: v for k, v in cfg.items() if k != "experts"}
    text = [
        f"mergekit-moe config: [`{_rel(config, out)}`]({_rel(config, out)}) (`mergekit-moe` reruns it by hand); "
        f"its settings: `{json.dumps(settings)}`.",
        _table(["expert", "positive prompts", "negative prompts"], rows),
    ]
    summary = _read_json(out / "moe" / "build_moe.json")
    if summary and summary.get("router_parameters"):
        text.append(
            f"Router tensors trained by the router stage: {len(summary['router_parameters'])} "
            f"(e.g. `{summary['router_parameters'][0]}`)."
        )
    return "\n\n".join(text)


FUNNEL_KEYS = ("seeds", "generations", "dialogues", "examples", "quality_kept", "diversity_kept", "mix_rows")
PAPER_THRESHOLD = 60.0


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
    """The quality scores with the threshold used (and the paper's T = 60 when the run used another)."""

    def draw(ax):
        ax.hist(scores, bins=20, range=(min(scores + [0.0]), 100), color="#55a868", edgecolor="white")
        ax.axvline(threshold, color="#c44e52", linestyle="--", label=f"T used = {threshold:g}")
        if threshold != PAPER_THRESHOLD:
            kept = sum(s >= PAPER_THRESHOLD for s in scores)
            ax.axvline(PAPER_THRESHOLD, color="#8172b2", linestyle=":", label=f"paper's T = 60 (would keep {kept})")
        ax.set_xlabel("quality score = cosine x 100 (discriminator reply vs synthetic response)")
        ax.set_ylabel("examples")
        ax.set_title(f"Quality selection: {sum(s >= threshold for s in scores)} of {len(scores)} kept")
        ax.legend(fontsize=8)

    return _plot(path, draw)


def judged_means(rows: list[dict]) -> dict[str, float | None]:
    """Mean probability-weighted rating per axis of the data-quality judge (the integer rating where no weighted
    score exists) and their mean, ``overall``; the axes are the judge Task's."""
    from empathy_recipes.judge_scores import axis_summary
    from empathy_recipes.tasks.dialogue_quality import DialogueQualityJudge

    summary = axis_summary(rows, DialogueQualityJudge.axes_spec())
    return {**{a: summary[a]["score"] for a in DialogueQualityJudge.axes_spec().names}, "overall": summary["overall"]}


def _quality_part(synth: Path, out: Path) -> str | None:
    scored = _read_jsonl(synth / "quality" / "scored.jsonl")
    quality = _read_json(synth / "quality" / "summary.json") or {}
    if not scored or "threshold" not in quality:
        return None
    scores = [float(r["quality_score"]) for r in scored]
    threshold = float(quality["threshold"])
    hist = plot_quality_histogram(scores, threshold, synth / "quality_histogram.png")
    text = (
        f"Quality scores (discriminator: `{quality.get('discriminator')}`; embedder: `{quality.get('embedder')}`), "
        f"mean {quality.get('mean_score', 0):.1f}; T = {threshold:g} keeps {sum(s >= threshold for s in scores)} "
        f"of {len(scores)}."
    )
    if threshold != PAPER_THRESHOLD:
        text += (
            f" **T = {threshold:g} is the demo's threshold, not the paper's 60**: the paper's T = 60 would keep "
            f"{sum(s >= PAPER_THRESHOLD for s in scores)} of {len(scores)} here (why: docs/synth.md, *7. The demo's "
            "funnel*)."
        )
    return text + f"\n\n![quality scores]({_rel(hist, out)})"


def _judged_part(synth: Path) -> str | None:
    judged = _read_jsonl(synth / "judged" / "default.jsonl")
    judged_ed = _read_jsonl(synth / "judged_ed" / "default.jsonl")
    if not (judged or judged_ed):
        return None
    in_mix = {r["id"] for r in _read_jsonl(synth / "diversity" / "selected.jsonl")}
    groups = [
        ("synthetic, all", judged),
        ("synthetic, kept by quality", [r for r in judged if r.get("quality_keep")]),
        ("synthetic, in the mix (quality + diversity)", [r for r in judged if r.get("id") in in_mix]),
        ("ED (human)", judged_ed),
    ]
    means = [(name, len(rs), judged_means(rs)) for name, rs in groups if rs]
    columns = list(means[0][2]) if means else []
    return "The data-quality judge (the embedded model, 1-3 per criterion, probability-weighted means):\n\n" + _table(
        ["rows", "n", *columns], [[name, n, *(_fmt(m[c]) for c in columns)] for name, n, m in means]
    )


def _study_part(synth: Path, out: Path) -> str | None:
    study = synth / "study"
    if not (study / "study.md").exists():
        return None
    text = (
        "Quantity vs quality (`scripts/synth_study.py` on the demo's own scores and ratings): rows kept and their "
        "judged quality for each quality threshold T and diversity ratio r."
    )
    if (study / "study.png").exists():
        text += f"\n\n![quantity vs quality]({_rel(study / 'study.png', out)})"
    return (
        text
        + "\n\n"
        + _details(f"The study's table (`{_rel(study / 'study.csv', out)}`)", (study / "study.md").read_text())
    )


def synth_section(out: Path) -> str:
    synth = out / "synth"
    if not synth.exists():
        return "_The synth stage did not run._"
    funnel = _read_json(synth / "summary.json")
    if funnel is None:
        return "_The synth stage did not finish: `synth/summary.json` (its funnel) was not written._"
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
    parts += [p for p in (_quality_part(synth, out), _judged_part(synth), _study_part(synth, out)) if p]
    selected = _read_jsonl(synth / "diversity" / "selected.jsonl")
    if selected:
        example = max(selected, key=lambda r: len(r["messages"]))
        turns = [[m["role"], m["content"]] for m in example["messages"]]
        parts.append(
            _details(
                f"One example that reached the mix (`{example['id']}`; all: `synth/diversity/selected.jsonl`)",
                _table(["role", "content"], turns),
            )
        )
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
        examples = []
        for i, row in enumerate(first[:n_examples]):
            context = row["context"][-1] if isinstance(row["context"], list) else row["context"]
            rows = [["human reference", row["reference"]]]
            rows += [[name, rows_[i]["prediction"]] for name, rows_ in preds.items() if i < len(rows_)]
            examples.append(
                f"**Example {i + 1}** (id {row['id']}). Speaker: _{context}_\n\n" + _table(["who", "reply"], rows)
            )
        parts.append(
            _details(
                f"{len(examples)} examples, every model's reply (all: `{_rel(ev / 'predictions', out)}/`)",
                "\n\n".join(examples),
            )
        )
    return "\n\n".join(parts)


def stage_times(out: Path) -> tuple[dict[str, float], dict]:
    """Stage seconds and settings from ``demo.json`` (written by ``scripts/demo.py``), else from the ``.done``
    markers."""
    demo = _read_json(out / "demo.json") or {}
    times = {k: float(v["seconds"]) for k, v in (demo.get("stages") or {}).items()}
    if not times:
        for done in sorted(out.glob("*/.done")):
            times[done.parent.name] = float(json.loads(done.read_text())["seconds"])
    return times, demo.get("settings") or {}


def write_report(out: Path) -> Path:
    times, settings = stage_times(out)
    total = sum(times.values())
    sections = [
        "# empathy-recipes demo report",
        CAVEAT,
        "## Stage times\n\n"
        + _table(["stage", "seconds"], [*([k, f"{v:.0f}"] for k, v in times.items()), ["total", f"{total:.0f}"]])
        + "\n\nEach command's own time: `demo.json`; its output: `logs/<stage>.log`.\n\n"
        + _details(
            "Settings (the demo's small settings; `python scripts/demo.py --help`)", f"`{json.dumps(settings)}`"
        ),
        "## 1. Judge (Efficient-Empathy)\n\n" + judge_section(out),
        "## 2. Split on the paper's released scores (T = 5)\n\n" + select_section(out),
        "## 3. Experts and router training\n\n" + training_section(out),
        "## 4. Mixture of experts\n\n" + moe_section(out),
        "## 5. Synthetic data (Synth-Empathy)\n\n" + synth_section(out),
        "## 6. Evaluation on ED test\n\n" + evaluation_section(out),
    ]
    text = "\n\n".join(sections) + "\n"
    n_lines = text.count("\n")
    if n_lines > MAX_LINES:
        logger.warning("the report has %d lines (more than %d)", n_lines, MAX_LINES)
    path = out / "report.md"
    path.write_text(text)
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", default="outputs/demo", help="the demo's output folder (scripts/demo.py)")
    add_log_args(p)
    args = p.parse_args(argv)
    if not Path(args.output_dir).is_dir():
        raise EmpathyRecipesError(f"--output-dir {args.output_dir}: no such folder (run scripts/demo.py first)")
    return args


@exit_on_user_error
def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    setup_logging("report", args, __name__)
    path = write_report(Path(args.output_dir))
    logger.info("wrote %s", path)
    return path


if __name__ == "__main__":
    main()
