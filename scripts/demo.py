#!/usr/bin/env python
"""The main job: every stage of both papers, end to end, on the embedded defaults, into one report.

    make demo                 # = python scripts/demo.py --output-dir outputs/demo
    make demo FRESH=1         # start over

Stages (each one a standalone script run as a subprocess, exactly the command printed; they meet only through the
files under ``--output-dir``):

  1. judge      score a few dozen ED valid rows with SmolLM2 (G-Eval probabilities) and compare with the paper's judge
  2. select     split the shipped sample on the paper's released scores (sensibility / rationality / discard)
  3. experts    LoRA-train a sensibility and a rationality expert from SmolLM2 (a few dozen steps each)
  4. moe        merge them into a Mixtral MoE with mergekit (2 experts, top-2), then train only its routers
  5. synth      write synthetic dialogues (JSON enforced by the decoder), select them by quality and diversity,
                rate them and ED with the data-quality judge, build the training mix, count the funnel
                (synth/summary.json) and run the quantity-vs-quality study on those scores (synth/study/)
  6. evaluate   generate on a slice of ED test with the base model, both experts and the MoE; score them
  7. report     ``scripts/demo_report.py``: ``<output-dir>/report.md`` from the files above (rerun every time)

Every size here is a demo setting, chosen so the whole demo runs in minutes on 2 CPU cores (``--help`` lists them;
the README's *Reproduce the papers* has the full-size commands). Two of them differ from the paper's on purpose
(docs/synth.md, *The demo's funnel*): the generator's repetition penalty (1.1; paper none, ``--synth-repetition-penalty
1``) and the quality threshold (T = 30; paper 60, ``--synth-threshold 60``). ``<output-dir>/demo.json`` records the settings
and every command's seconds.

A finished stage leaves ``<stage>/.done``; a rerun skips it (``--fresh`` starts over). A failing stage stops the run
with one line naming it and its log; finished stages are kept.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from empathy_recipes.logs import add_log_args, setup_logging

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
SMOL_RECIPES = "recipes/smollm2-135m-instruct"


@dataclass
class Step:
    """One command of a stage; ``skip_reason`` (checked just before it runs) may say why it has nothing to do."""

    cmd: list[str]
    skip_reason: Callable[[], str | None] = lambda: None


@dataclass
class Stage:
    name: str
    title: str
    commands: list[list[str] | Step] = field(default_factory=list)


def no_rows(path: Path, what: str) -> Callable[[], str | None]:
    """A ``skip_reason`` for a step whose input JSONL ``path`` may be empty (e.g. no synthetic dialogue parsed)."""

    def reason() -> str | None:
        if not path.exists():
            return f"{path} was not written (the step before had nothing to do); step skipped"
        return None if path.read_text().strip() else f"{path} has no rows ({what}); step skipped, nothing to select"

    return reason


def accelerate_sft(recipe: str, overrides: dict[str, object]) -> list[str]:
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    cmd = [
        accelerate,
        "launch",
        "--config_file",
        "accelerate_configs/single.yaml",
        "scripts/sft.py",
        "--config",
        recipe,
    ]
    for key, value in overrides.items():
        cmd += [f"--{key}", *(map(str, value) if isinstance(value, list) else [str(value)])]
    return cmd


def build_stages(a: argparse.Namespace, out: Path) -> list[Stage]:
    py = sys.executable
    llm = ["--model", a.base_model, "--cache-dir", str(out / "cache" / "distilabel")]
    train = {
        "max_steps": a.train_steps,
        "save_steps": a.train_steps,
        "logging_steps": max(1, a.train_steps // 8),
        "per_device_train_batch_size": a.train_batch,
        "gradient_accumulation_steps": 1,
        "max_length": 256,
    }
    select = out / "select"
    experts = {s: out / "experts" / s for s in ("sensibility", "rationality")}
    merged = {s: str(p / "merged") for s, p in experts.items()}
    synth, ev = out / "synth", out / "evaluate"
    models = {"base": a.base_model, "sensibility-expert": merged["sensibility"],
              "rationality-expert": merged["rationality"], "moe": str(out / "moe-router")}  # fmt: skip

    judge = [py, "distilabel_pipelines/judge_sensibility_rationality.py", "--dataset", a.train_data,
             "--limit", str(a.judge_rows), "--output-dir", str(out / "judge"), *llm]  # fmt: skip
    split = [py, "scripts/select_sets.py", "--dataset", a.train_data, "--output-dir", str(select), "--threshold", "5"]
    expert_runs = [
        accelerate_sft(f"{SMOL_RECIPES}/sft/config_{s}.yaml",
                       {"model_name_or_path": a.base_model, "dataset_name": select / s, "output_dir": p, **train})
        for s, p in experts.items()
    ]  # fmt: skip
    moe = [py, "scripts/build_moe.py", "--template", f"{SMOL_RECIPES}/moe/mergekit_moe.yaml",
           "--experts", merged["sensibility"], merged["rationality"],
           "--prompt-sets", str(select / "sensibility"), str(select / "rationality"),
           "--num-prompts", "8", "--contrastive", "--output-dir", str(out / "moe"), "--overwrite"]  # fmt: skip
    router = accelerate_sft(
        f"{SMOL_RECIPES}/moe/config_router.yaml",
        {"model_name_or_path": out / "moe" / "model", "dataset_name": select / "sensibility",
         "dataset_mixture": [select / "rationality", select / "discard"], "output_dir": out / "moe-router",
         **train, "max_steps": a.router_steps, "save_steps": a.router_steps},
    )  # fmt: skip
    synthesize = [py, "distilabel_pipelines/synthesize_dialogues.py", "--dataset", a.train_data,
                  "--limit", str(a.synth_rows), "--num-generations", str(a.synth_generations),
                  "--max-new-tokens", str(a.synth_tokens), "--max-rounds", "3", "--examples-per-dialogue", "all",
                  "--repetition-penalty", str(a.synth_repetition_penalty),
                  "--batch-size", str(a.synth_rows), "--output-dir", str(synth / "generated"), *llm]  # fmt: skip
    quality = [py, "scripts/synth_quality_select.py", "--dataset", str(synth / "generated" / "examples.jsonl"),
               "--discriminator", merged["sensibility"], "--embedder", a.embedder,
               "--threshold", str(a.synth_threshold), "--output-dir", str(synth / "quality")]  # fmt: skip
    diversity = [py, "scripts/synth_diversity_select.py", "--dataset", str(synth / "quality" / "selected.jsonl"),
                 "--embedder", a.embedder, "--ratio", str(a.synth_ratio),
                 "--output-dir", str(synth / "diversity")]  # fmt: skip
    judge_synth = [py, "distilabel_pipelines/judge_dialogue_quality.py", "--dataset",
                   str(synth / "quality" / "scored.jsonl"), "--group-by", "quality_keep",
                   "--output-dir", str(synth / "judged"), *llm]  # fmt: skip
    judge_ed = [py, "distilabel_pipelines/judge_dialogue_quality.py", "--dataset", a.train_data,
                "--limit", str(a.synth_judge_ed_rows), "--output-dir", str(synth / "judged_ed"), *llm]  # fmt: skip
    mix = [py, "scripts/synth_build_mix.py", "--synthetic", str(synth / "diversity" / "selected.jsonl"),
           "--ed", a.train_data, "--ed-limit", str(a.synth_mix_ed_rows), "--output", str(synth / "mix")]  # fmt: skip
    funnel = [py, "scripts/synth_funnel.py", "--synth-dir", str(synth)]
    study = [py, "scripts/synth_study.py", "--examples", str(synth / "generated" / "examples.jsonl"),
             "--judged-synth", str(synth / "judged" / "default.jsonl"),
             "--judged-ed", str(synth / "judged_ed" / "default.jsonl"), "--embedder", a.embedder,
             "--thresholds", a.synth_study_thresholds, "--ratios", a.synth_study_ratios,
             "--output-dir", str(synth / "study")]  # fmt: skip
    generate = [
        [py, "evaluation/generate.py", "--model", m, "--dataset", a.test_data, "--limit", str(a.test_rows),
         "--max-new-tokens", str(a.reply_tokens), "--output", str(ev / "predictions" / f"{name}.jsonl")]
        for name, m in models.items()
    ]  # fmt: skip
    metrics = [
        [py, "evaluation/compute_metrics.py", "--predictions", str(ev / "predictions" / f"{name}.jsonl"),
         "--output", str(ev / "metrics" / f"{name}.json")]
        for name in models
    ]  # fmt: skip
    report = [py, "evaluation/report.py", "--metrics", str(ev / "metrics"), "--output-dir", str(ev / "report")]
    return [
        Stage("judge", "judge ED valid rows with the embedded model, compare with the paper's judge", [judge]),
        Stage("select", "split on the paper's released judge scores", [split]),
        Stage("experts", "LoRA-train a sensibility and a rationality expert", expert_runs),
        Stage("moe", "merge the experts into a Mixtral MoE, train its routers", [moe, router]),
        Stage(
            "synth",
            "synthesise dialogues, select by quality and diversity, judge them and ED, build the training mix",
            [
                synthesize,
                Step(quality, no_rows(synth / "generated" / "examples.jsonl", "no generation parsed")),
                Step(diversity, no_rows(synth / "quality" / "selected.jsonl", "none passed the quality threshold")),
                Step(judge_synth, no_rows(synth / "quality" / "scored.jsonl", "no synthetic example")),
                judge_ed,
                Step(mix, no_rows(synth / "diversity" / "selected.jsonl", "no example survived the selection")),
                funnel,
                Step(study, no_rows(synth / "judged" / "default.jsonl", "no synthetic example was judged")),
            ],
        ),
        Stage("evaluate", "generate on ED test with every model, score the replies", [*generate, *metrics, report]),
        Stage(
            "report",
            "write report.md from the stages' files",
            [[py, "scripts/demo_report.py", "--output-dir", str(out)]],
        ),
    ]


def run_stage(stage: Stage, out: Path) -> tuple[float, list[dict[str, object]]]:
    """Run a stage's commands in order, streaming their output to the console and ``logs/<stage>.log``. Returns the
    stage's seconds and each command's ``{"command", "seconds"}`` (skipped steps: ``"skipped"``, the reason)."""
    log_path = out / "logs" / f"{stage.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": os.environ.get("COLUMNS", "160"),  # rich (distilabel's logs) wraps at 80 columns off a terminal
    }
    steps: list[dict[str, object]] = []
    with log_path.open("w") as log:
        for step in stage.commands:
            step = step if isinstance(step, Step) else Step(step)
            cmd, skip = step.cmd, step.skip_reason()
            if skip:
                logger.info(skip)
                log.write(f"[demo] {skip}\n")
                steps.append({"command": " ".join(map(str, step.cmd[:2])), "skipped": skip})
                continue
            shown = " ".join(shlex.quote(str(c)) for c in cmd)
            logger.info("$ %s", shown)
            log.write(f"$ {shown}\n")
            log.flush()
            began = time.monotonic()
            proc = subprocess.Popen(
                cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
            )
            for line in proc.stdout:
                sys.stdout.write(line)
                log.write(line)
            if proc.wait() != 0:
                raise StageFailed(stage.name, log_path)
            seconds = time.monotonic() - began
            steps.append({"command": shown, "seconds": round(seconds, 1)})
            logger.info("%.1f s", seconds)
            log.write(f"[demo] {seconds:.1f} s\n")
    return time.monotonic() - start, steps


class StageFailed(Exception):
    def __init__(self, stage: str, log: Path):
        super().__init__(f"stage '{stage}' failed (exit status != 0); its log: {log}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", default="outputs/demo")
    p.add_argument("--fresh", action="store_true", help="delete --output-dir first")
    p.add_argument("--only", nargs="+", help="run only these stages (after their inputs exist)")
    p.add_argument("--base-model", default="models/SmolLM2-135M-Instruct", help="base model, judge and generator")
    p.add_argument("--embedder", default="models/all-MiniLM-L6-v2")
    p.add_argument("--train-data", default="data/ed_valid_sample.jsonl", help="ED rows with the paper's judge_output")
    p.add_argument("--test-data", default="data/ed_test_sample.jsonl")
    p.add_argument("--judge-rows", type=int, default=24)
    p.add_argument("--train-steps", type=int, default=12, help="optimizer steps per expert")
    p.add_argument("--train-batch", type=int, default=4, help="examples per step")
    p.add_argument("--router-steps", type=int, default=6)
    p.add_argument("--synth-rows", type=int, default=6, help="ED seeds for synthesis")
    p.add_argument("--synth-generations", type=int, default=2, help="dialogues per seed")
    p.add_argument("--synth-tokens", type=int, default=300, help="token budget of one dialogue (paper: 300)")
    p.add_argument(
        "--synth-repetition-penalty",
        type=float,
        default=1.1,
        help="the generator's repetition penalty (paper: 1.0, none; without it SmolLM2-135M mostly repeats one round)",
    )
    p.add_argument(
        "--synth-threshold",
        type=float,
        default=30.0,
        help="quality threshold T, cosine x100. The demo's 30, not the paper's 60: its discriminator (the demo's "
        "sensibility expert, 135M) and MiniLM rarely reach 60 (docs/synth.md, 'The demo's funnel'); the report shows "
        "both lines and what T = 60 would keep. --synth-threshold 60 for the paper's",
    )
    p.add_argument("--synth-ratio", type=float, default=0.9, help="diversity ratio kept by k-center greedy")
    p.add_argument("--synth-study-thresholds", default="0,20,30,40,60", help="the study's quality thresholds T")
    p.add_argument("--synth-study-ratios", default="0.5,0.7,0.9,1.0", help="the study's diversity ratios r")
    p.add_argument("--synth-judge-ed-rows", type=int, default=12, help="ED rows rated by the data-quality judge")
    p.add_argument("--synth-mix-ed-rows", type=int, default=24, help="ED rows in the demo's training mix")
    p.add_argument("--test-rows", type=int, default=16)
    p.add_argument("--reply-tokens", type=int, default=32)
    add_log_args(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    setup_logging("demo", a, __name__)
    out = Path(a.output_dir).resolve()
    if a.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    stages = build_stages(a, out)
    settings = {k: v for k, v in vars(a).items() if k not in ("fresh", "only", "verbose", "quiet")}
    record = {"settings": settings, "stages": {}}
    total = time.monotonic()
    for i, stage in enumerate(stages, 1):
        done = out / stage.name / ".done"
        if a.only and stage.name not in a.only and stage.name != "report":
            if done.exists():  # for demo.json and the report
                record["stages"][stage.name] = json.loads(done.read_text())
            continue
        if stage.name == "report":  # always rewritten, from what every stage left (demo.json included)
            (out / "demo.json").write_text(json.dumps(record, indent=2) + "\n")
        elif done.exists():
            record["stages"][stage.name] = earlier = json.loads(done.read_text())
            logger.info("%d/%d %s: done earlier (%.0f s), skipped", i, len(stages), stage.name, earlier["seconds"])
            continue
        logger.info("%d/%d %s: %s", i, len(stages), stage.name, stage.title)
        try:
            seconds, steps = run_stage(stage, out)
        except StageFailed as err:
            logger.error("%s; finished stages are kept, rerun `make demo` to go on", err)
            return 1
        if stage.name != "report":
            record["stages"][stage.name] = {"seconds": seconds, "steps": steps}
            done.parent.mkdir(parents=True, exist_ok=True)
            done.write_text(json.dumps(record["stages"][stage.name]))
        logger.info("%d/%d %s: %.0f s", i, len(stages), stage.name, seconds)
    times = {k: v["seconds"] for k, v in record["stages"].items()}
    print(
        f"demo: finished in {time.monotonic() - total:.0f} s; stage times: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
        + f"; sum {sum(times.values()):.0f} s"
    )
    print(f"demo: open {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
