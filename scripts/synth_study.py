"""Synth-Empathy quantity-vs-quality study: how many synthetic rows each (quality threshold T, diversity ratio r)
keeps, and how good the judge finds them, next to what was dropped and next to ED itself.

One command, four steps (each a stage run on files; every step runs, and reuses its earlier output itself when
that output's manifest or cache matches, never because a file exists; ``--recompute`` rescores the quality step):

1. quality scores for every synthetic example (``scripts/synth_quality_select.py --threshold 0``),
2. the data-quality judge on every synthetic example (``distilabel_pipelines/judge_dialogue_quality.py``),
3. the same judge on ED (``--ed``, the comparison row),
4. here: embeddings of context + response once, then for every T the k-center greedy order of the rows scoring
   >= T (once per T: a ratio is a prefix of that order), and for every r the kept rows' mean judged scores.

    python scripts/synth_study.py --examples outputs/synth/generated/examples.jsonl --thresholds 0,50,60,70 \\
        --ratios 0.5,0.7,0.9,1.0 --output-dir outputs/synth/study

Steps 1-3 already run elsewhere (the demo's synth stage scores every example and judges them and ED)? Give their
outputs, ``--judged-synth <judge output over the scored examples> --judged-ed <judge output over ED>``, and only
step 4 runs (seconds, no LLM): the demo runs the study this way over ``outputs/demo/synth``.

Outputs in ``--output-dir``: ``study.csv`` and ``study.md`` (one row per setting: kept rows, kept share, mean
naturalness / coherence / empathy / overall of the kept rows and overall of the dropped ones; plus an ``ED`` row),
``study.png`` (rows kept vs judged quality, one line per T), and the step outputs (``quality/``, ``judged_synth/``,
``judged_ed/``).
"""

from __future__ import annotations

import argparse
import csv
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from empathy_recipes import outputs
from empathy_recipes.checks import check_model_ref, looks_like_hub_id
from empathy_recipes.errors import EmpathyRecipesError, exit_on_user_error
from empathy_recipes.judge_scores import axis_summary
from empathy_recipes.kcenter import k_center_greedy, n_to_keep
from empathy_recipes.logs import add_log_args, setup_logging
from empathy_recipes.models import default_embedder_path, default_model_path
from empathy_recipes.profiles import add_profile_arg
from empathy_recipes.redact import redact_argv
from empathy_recipes.tasks.dialogue_quality import DialogueQualityJudge

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
AXES = DialogueQualityJudge.axes_spec().names  # what the data-quality judge rates: its Task is the one source


def floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", required=True, help="synthetic examples (output of synthesize_dialogues.py)")
    p.add_argument("--ed", default=str(REPO / "data" / "ed_valid_sample.jsonl"), help="ED rows for the ED row")
    p.add_argument("--ed-limit", type=int, default=200, help="ED rows to judge (0: skip the ED row)")
    p.add_argument("--thresholds", type=floats, default=[0, 40, 50, 60, 70], help="quality thresholds T (cos x100)")
    p.add_argument("--ratios", type=floats, default=[0.5, 0.7, 0.9, 1.0], help="diversity ratios r in (0, 1]")
    p.add_argument("--discriminator", default=str(default_model_path()), help="see synth_quality_select.py")
    p.add_argument("--embedder", default=str(default_embedder_path()))
    p.add_argument("--judge-model", default=str(default_model_path()), help="the data-quality judge (--model)")
    p.add_argument("--judge-backend", choices=("transformers", "vllm", "openai"), default="transformers")
    p.add_argument("--judge-args", default="", help="extra flags for the judge pipeline, e.g. '--base-url ...'")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="only the first N synthetic examples")
    p.add_argument("--recompute", action="store_true", help="rerun every step even when its output exists")
    p.add_argument(
        "--judged-synth",
        default=None,
        help="skip steps 1-2: the data-quality judge's output over quality-scored examples (rows with quality_score "
        "and the judged axes, e.g. the demo's synth/judged/default.jsonl)",
    )
    p.add_argument(
        "--judged-ed",
        default=None,
        help="skip step 3: the judge's output over ED rows (e.g. synth/judged_ed/default.jsonl)",
    )
    p.add_argument("--output-dir", default="outputs/synth/study")
    p.add_argument("--trust-remote-code", action="store_true", help="run the embedder's own code (gte-Qwen2)")
    add_profile_arg(p)  # passed on to the quality step and the judges; paper: the embedder's "query" prompt here
    add_log_args(p)
    args = p.parse_args(argv)
    if not args.thresholds or any(not 0 <= t <= 100 for t in args.thresholds):
        raise EmpathyRecipesError("--thresholds: give cosine x100 values in [0, 100]")
    if not args.ratios or any(not 0 < r <= 1 for r in args.ratios):
        raise EmpathyRecipesError("--ratios: give values in (0, 1]")
    for name, ref in (("--examples", args.examples), ("--ed", args.ed if args.ed_limit > 0 else None)):
        if ref is not None and not Path(ref).exists() and not looks_like_hub_id(ref):
            raise EmpathyRecipesError(f"{name}: no such file or directory: {ref}")
    for name, path in (("--judged-synth", args.judged_synth), ("--judged-ed", args.judged_ed)):
        if path is not None and not Path(path).is_file():
            raise EmpathyRecipesError(f"{name}: no such file: {path}")
    for name, ref in (("--discriminator", args.discriminator), ("--embedder", args.embedder)):
        check_model_ref(ref, name)
    if args.judge_backend != "openai":
        check_model_ref(args.judge_model, "--judge-model")
    return args


def run_step(name: str, cmd: list[str], output: Path) -> Path:
    logger.info(f"{name}: {' '.join(redact_argv(cmd))}")
    proc = subprocess.run(cmd, cwd=REPO)  # the package is installed: the step's environment is this one
    if proc.returncode == 2:  # a user error: the step printed its one `error:` line already, keep it the only one
        raise SystemExit(2)
    if proc.returncode != 0:
        raise EmpathyRecipesError(f"step {name} failed with exit code {proc.returncode} (its error is above)")
    if not output.exists():
        raise EmpathyRecipesError(f"step {name} finished without writing {output}")
    return output


def judged_means(rows: list[dict[str, Any]], axes: tuple[str, ...] = AXES) -> dict[str, float | None]:
    """Mean per axis (probability-weighted score when present, else the integer) and their mean, ``overall``."""
    summary = axis_summary(rows, axes)
    return {**{a: summary[a]["score"] for a in axes}, "overall": summary["overall"]}


def sweep(
    rows: list[dict[str, Any]],
    emb: np.ndarray,
    thresholds: list[float],
    ratios: list[float],
    seed: int,
    axes: tuple[str, ...] = AXES,
) -> list[dict[str, Any]]:
    """One table row per (T, r): kept count/share and judged means of kept and dropped rows."""
    scores = np.asarray([r["quality_score"] for r in rows], dtype=np.float64)
    n = len(rows)
    table = []
    for t in thresholds:
        passed = np.flatnonzero(scores >= t)
        order = passed[k_center_greedy(emb[passed], len(passed), seed=seed)] if len(passed) else passed
        for r in ratios:
            kept = order[: n_to_keep(len(passed), r)] if len(passed) else order
            kept_set = set(kept.tolist())
            kept_m = judged_means([rows[i] for i in kept], axes)
            dropped_m = judged_means([rows[i] for i in range(n) if i not in kept_set], axes)
            table.append(
                {
                    "setting": f"T={t:g} r={r:g}",
                    "T": t,
                    "r": r,
                    "kept": len(kept),
                    "kept_share": len(kept) / n if n else 0.0,
                    **{a: kept_m[a] for a in axes},
                    "overall": kept_m["overall"],
                    "dropped": n - len(kept),
                    "dropped_overall": dropped_m["overall"],
                }
            )
    return table


def fmt(v: Any, column: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}" if column in ("T", "r") else f"{v:.3f}"
    return str(v)


def write_outputs(table: list[dict[str, Any]], out: Path, axes: tuple[str, ...] = AXES) -> None:
    cols = ["setting", "T", "r", "kept", "kept_share", *axes, "overall", "dropped", "dropped_overall"]
    with outputs.atomic_file(out / "study.csv") as tmp, tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows({k: outputs.spreadsheet_safe(v) for k, v in row.items()} for row in table)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(row.get(c), c) for c in cols) + " |" for row in table]
    outputs.write_text(out / "study.md", "\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for t in sorted({row["T"] for row in table if row["setting"] != "ED"}):
        pts = [(row["kept"], row["overall"], row["r"]) for row in table if row.get("T") == t]
        pts = [p for p in pts if p[1] is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"T={t:g}")
            for x, y, r in pts:
                ax.annotate(f"r={r:g}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ed = next((row for row in table if row["setting"] == "ED"), None)
    if ed and ed["overall"] is not None:
        ax.axhline(ed["overall"], color="grey", linestyle="--", label=f"ED ({ed['kept']} rows)")
    ax.set_xlabel("rows kept")
    judge = DialogueQualityJudge.axes_spec()
    ax.set_ylabel(f"judged quality (mean of {len(axes)} axes, {judge.low}-{judge.high})")
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.set_title("Synth-Empathy: quantity vs quality")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "study.png", dpi=120)
    plt.close(fig)


@exit_on_user_error
def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    setup_logging("study", args, __name__)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    limit = ["--limit", str(args.limit)] if args.limit else []
    judge = [
        "--model", args.judge_model, "--backend", args.judge_backend, "--batch-size", str(args.batch_size),
        "--profile", args.profile, *args.judge_args.split(),
    ]  # fmt: skip
    judged_synth = Path(args.judged_synth) if args.judged_synth else None
    if judged_synth is None:
        scored = run_step(
            "quality scores",
            [py, "scripts/synth_quality_select.py", "--dataset", args.examples, "--threshold", "0",
             *(["--recompute"] if args.recompute else []), "--discriminator", args.discriminator,
             "--embedder", args.embedder, "--output-dir", str(out / "quality"), *limit, "--profile", args.profile,
             *(["--trust-remote-code"] if args.trust_remote_code else [])],
            out / "quality" / "scored.jsonl",
        )  # fmt: skip
        judged_synth = run_step(
            "judge synthetic",
            [py, "distilabel_pipelines/judge_dialogue_quality.py", "--dataset", str(scored), "--group-by",
             "quality_keep", "--output-dir", str(out / "judged_synth"), *judge],
            out / "judged_synth" / "default.jsonl",
        )  # fmt: skip
    rows = outputs.read_jsonl(judged_synth)[: args.limit]
    if not rows:
        raise EmpathyRecipesError(f"{judged_synth} holds no rows: no synthetic example to study")
    if any("quality_score" not in r for r in rows):
        raise EmpathyRecipesError(
            f"{judged_synth}: rows without quality_score (give the judge's output over scored rows)"
        )

    from empathy_recipes.embeddings import encode, load_embedder
    from empathy_recipes.synth import conversation_text

    prompt = "query" if args.profile == "paper" else None
    embedder = load_embedder(args.embedder, trust_remote_code=args.trust_remote_code, prompt_name=prompt)
    emb = encode(embedder, [conversation_text(r["messages"]) for r in rows], show_progress=True, prompt_name=prompt)
    table = sweep(rows, emb, args.thresholds, args.ratios, args.seed)

    if args.judged_ed or args.ed_limit > 0:
        judged_ed = Path(args.judged_ed) if args.judged_ed else run_step(
            "judge ED",
            [py, "distilabel_pipelines/judge_dialogue_quality.py", "--dataset", args.ed, "--limit",
             str(args.ed_limit), "--output-dir", str(out / "judged_ed"), *judge],
            out / "judged_ed" / "default.jsonl",
        )  # fmt: skip
        ed_rows = outputs.read_jsonl(judged_ed)
        ed_m = judged_means(ed_rows)
        table.append({"setting": "ED", "T": None, "r": None, "kept": len(ed_rows), "kept_share": None, **ed_m})
    write_outputs(table, out)
    print((out / "study.md").read_text())  # the result, on stdout
    logger.info(f"wrote {out / 'study.csv'}, {out / 'study.md'}, {out / 'study.png'}")
    return table


if __name__ == "__main__":
    main()
