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
                rate them and ED with the data-quality judge, build the training mix; funnel in synth/summary.json
  6. evaluate   generate on a slice of ED test with the base model, both experts and the MoE; score them
  7. report     ``<output-dir>/report.md``

A finished stage leaves ``<stage>/.done``; a rerun skips it (``--fresh`` starts over). A failing stage stops the run
with one line naming it and its log; finished stages are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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
            ],
        ),
        Stage("evaluate", "generate on ED test with every model, score the replies", [*generate, *metrics, report]),
    ]


def run_stage(stage: Stage, out: Path) -> float:
    """Run a stage's commands in order, streaming their output to the console and ``logs/<stage>.log``."""
    log_path = out / "logs" / f"{stage.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": os.environ.get("COLUMNS", "160"),  # rich (distilabel's logs) wraps at 80 columns off a terminal
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    with log_path.open("w") as log:
        for step in stage.commands:
            step = step if isinstance(step, Step) else Step(step)
            cmd, skip = step.cmd, step.skip_reason()
            if skip:
                print(f"[demo] {skip}", flush=True)
                log.write(f"[demo] {skip}\n")
                continue
            shown = " ".join(shlex.quote(str(c)) for c in cmd)
            print(f"$ {shown}", flush=True)
            log.write(f"$ {shown}\n")
            log.flush()
            proc = subprocess.Popen(
                cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
            )
            for line in proc.stdout:
                sys.stdout.write(line)
                log.write(line)
            if proc.wait() != 0:
                raise StageFailed(stage.name, log_path)
    return time.monotonic() - start


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
    p.add_argument("--synth-rows", type=int, default=4, help="ED seeds for synthesis")
    p.add_argument("--synth-generations", type=int, default=2, help="dialogues per seed")
    p.add_argument("--synth-tokens", type=int, default=300, help="token budget of one dialogue (paper: 300)")
    p.add_argument(
        "--synth-threshold",
        type=float,
        default=60.0,
        help="quality threshold T, cosine x100 (paper: 60; the discriminator here is the demo's sensibility expert)",
    )
    p.add_argument("--synth-ratio", type=float, default=0.9, help="diversity ratio kept by k-center greedy")
    p.add_argument("--synth-judge-ed-rows", type=int, default=12, help="ED rows rated by the data-quality judge")
    p.add_argument("--synth-mix-ed-rows", type=int, default=24, help="ED rows in the demo's training mix")
    p.add_argument("--test-rows", type=int, default=16)
    p.add_argument("--reply-tokens", type=int, default=32)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    out = Path(a.output_dir).resolve()
    if a.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    stages = build_stages(a, out)
    times: dict[str, float] = {}
    total = time.monotonic()
    for i, stage in enumerate(stages, 1):
        done = out / stage.name / ".done"
        if a.only and stage.name not in a.only:
            continue
        if done.exists():
            times[stage.name] = json.loads(done.read_text())["seconds"]
            print(f"[demo {i}/{len(stages) + 1}] {stage.name}: done earlier ({times[stage.name]:.0f} s), skipped")
            continue
        print(f"[demo {i}/{len(stages) + 1}] {stage.name}: {stage.title}", flush=True)
        try:
            seconds = run_stage(stage, out)
        except StageFailed as err:
            print(f"demo: {err}; finished stages are kept, rerun `make demo` to go on", file=sys.stderr)
            return 1
        done.parent.mkdir(parents=True, exist_ok=True)
        if stage.name == "synth":
            from demo_report import write_synth_funnel  # scripts/demo_report.py, next to this file

            funnel = write_synth_funnel(out)
            print("[demo] synth funnel: " + ", ".join(f"{k} {v}" for k, v in funnel.items()), flush=True)
        done.write_text(json.dumps({"seconds": seconds}))
        times[stage.name] = seconds
        print(f"[demo {i}/{len(stages) + 1}] {stage.name}: {seconds:.0f} s", flush=True)
    print(f"[demo {len(stages) + 1}/{len(stages) + 1}] report", flush=True)
    from demo_report import write_report  # scripts/demo_report.py, next to this file

    report = write_report(out, times, vars(a))
    print(
        f"demo: finished in {time.monotonic() - total:.0f} s; stage times: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
    )
    print(f"demo: open {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
