#!/usr/bin/env python
"""Every stage on one device, each as its real script in a subprocess, with a random-weight model built here.

    python scripts/gpu_check.py                      # make gpu-check: CUDA, SmolLM2-135M's architecture
    python scripts/gpu_check.py --device cpu         # make gpu-check DEVICE=cpu: the tiny model (2 CPU cores)

The model is built locally, nothing is downloaded: on a GPU a random-weight model with SmolLM2-135M-Instruct's
architecture (``models/SmolLM2-135M-Instruct/config.json`` + its tokenizer), on CPU by default the tiny random Llama
of ``empathy_recipes.testing`` (``--model-size`` picks either). Stages, in order, each feeding the next:
judge, synth, sft (a LoRA expert), moe (that expert + the base), moe-router, generate (with the router-trained MoE),
eval-judge (its predictions). Sizes are a few rows and steps: this checks that every stage runs on the device, not
what it learns.

"Device seen" is what the stage used, not the argument: the training, MoE and generation stages report the device
their model sits on through ``empathy_recipes.device_report`` (``$EMPATHY_RECIPES_DEVICE_LOG``); the distilabel
stages (judge, synth, eval-judge) run with ``TRANSFORMERS_VERBOSITY=debug`` and the device is read from the line
transformers' pipeline logs when the model is placed (``Device set to use ...``). A stage is ok when it exits 0 and
every device it reports is of the requested kind (``cuda`` for ``cuda:0``).

Prints one table (stage / device seen / seconds / ok), writes ``<output-dir>/summary.json``
(``{"stages": {name: {"device", "seconds", "ok"}}}``) and each stage's log next to it; exits 1 when a stage failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from empathy_recipes.device_report import ENV_VAR, device_kind, read_device_reports
from empathy_recipes.errors import EmpathyRecipesError, exit_on_user_error
from empathy_recipes.logs import add_log_args, setup_logging

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
ACCELERATE = str(Path(PY).with_name("accelerate"))
ED_VALID = str(REPO / "data" / "ed_valid_sample.jsonl")
ED_TEST = str(REPO / "data" / "ed_test_sample.jsonl")
PIPELINE_DEVICE = re.compile(r"Device set to use (\S+)")


@dataclass
class Stage:
    name: str
    argv: Callable[[Path, str, str], list[str]]  # (output dir, model, device) -> command line
    distilabel: bool = False  # device read from transformers' pipeline log line


def _sft(out: Path, model: str, device: str, recipe: str, output: str, *extra: str) -> list[str]:
    cpu = ["--use_cpu", "true"] if device_kind(device) == "cpu" else ["--use_cpu", "false"]
    return [
        ACCELERATE, "launch", "--config_file", str(REPO / "accelerate_configs" / "single.yaml"),
        str(REPO / "scripts" / "sft.py"), "--config", str(REPO / recipe), "--model_name_or_path", model,
        "--dataset_name", ED_VALID, "--dataset_limit", "16", "--max_steps", "2", "--per_device_train_batch_size", "4",
        "--gradient_accumulation_steps", "1", "--max_length", "256", "--save_strategy", "no", "--logging_steps", "1",
        "--output_dir", str(out / output), *cpu, *extra,
    ]  # fmt: skip


def _distilabel(script: str, output: str, *args: str) -> Callable[[Path, str, str], list[str]]:
    """A distilabel stage: ``distilabel_pipelines/<script>`` with its own ``args`` (``{out}`` is the output dir),
    then the model, the device, its output folder and the shared cache."""
    return lambda out, model, device: [
        PY, str(REPO / "distilabel_pipelines" / script), *(a.format(out=out) for a in args), "--model", model,
        "--device", device, "--output-dir", str(out / output), "--cache-dir", str(out / "cache"),
    ]  # fmt: skip


# fmt: off
STAGES = [
    Stage(
        "judge",
        _distilabel("judge_sensibility_rationality.py", "judge", "--dataset", ED_VALID, "--limit", "8",
                    "--batch-size", "4"),
        distilabel=True,
    ),
    Stage(
        "synth",
        _distilabel("synthesize_dialogues.py", "synth", "--dataset", ED_VALID, "--limit", "2", "--num-generations", "2",
                    "--max-new-tokens", "48", "--batch-size", "2"),
        distilabel=True,
    ),
    Stage(
        "sft",
        lambda out, model, device: _sft(out, model, device, "recipes/smollm2-135m-instruct/sft/config_sensibility.yaml",
                                        "sft"),
    ),
    Stage(
        "moe",
        lambda out, model, device: [
            PY, str(REPO / "scripts" / "build_moe.py"),
            "--template", str(REPO / "recipes" / "smollm2-135m-instruct" / "moe" / "mergekit_moe.yaml"),
            "--experts", str(out / "sft" / "merged"), model,
            "--prompt-sets", str(out / "prompts-0.jsonl"), str(out / "prompts-1.jsonl"), "--num-prompts", "4",
            "--output-dir", str(out / "moe"), "--device", device, "--overwrite",
        ],
    ),
    Stage(
        "moe-router",
        lambda out, model, device: _sft(out, str(out / "moe" / "model"), device,
                                        "recipes/smollm2-135m-instruct/moe/config_router.yaml", "moe-router",
                                        "--dataset_mixture", ED_VALID),
    ),
    Stage(
        "generate",
        lambda out, model, device: [
            PY, str(REPO / "evaluation" / "generate.py"), "--model", str(out / "moe-router"), "--dataset", ED_TEST,
            "--limit", "8", "--batch-size", "8", "--max-new-tokens", "16", "--device", device,
            "--output", str(out / "generate" / "predictions.jsonl"),
        ],
    ),
    Stage(
        "eval-judge",
        _distilabel("judge_predictions.py", "eval-judge", "--predictions", "{out}/generate/predictions.jsonl",
                    "--limit", "4", "--batch-size", "4"),
        distilabel=True,
    ),
]
# fmt: on


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:1, cpu, ... (default cuda)")
    parser.add_argument(
        "--model-size",
        choices=("smollm2", "tiny"),
        default=None,
        help="random model: SmolLM2-135M's architecture or the tiny Llama (default: tiny on cpu, else smollm2)",
    )
    parser.add_argument("--output-dir", default="outputs/gpu-check")
    parser.add_argument("--stage-timeout", type=int, default=600, help="seconds before a stage is stopped")
    add_log_args(parser)
    args = parser.parse_args(argv)
    if args.model_size is None:
        args.model_size = "tiny" if device_kind(args.device) == "cpu" else "smollm2"
    if device_kind(args.device) not in ("cpu", "cuda", "mps", "xpu"):
        raise EmpathyRecipesError(f"--device must be cpu, cuda[:N], mps or xpu, not {args.device!r}")
    return args


def check_device_is_there(device: str) -> None:
    """Fail early, in this process, when the requested accelerator is not visible (this script forks nothing)."""
    kind = device_kind(device)
    if kind == "cpu":
        return
    import torch

    backend = getattr(torch, kind, None)
    if backend is None or not backend.is_available():
        raise EmpathyRecipesError(f"--device {device}: torch sees no {kind} device here (use DEVICE=cpu)")


def build_model(size: str, out: Path) -> Path:
    from empathy_recipes.models import default_model_path
    from empathy_recipes.testing import build_random_like, build_tiny_llama

    target = out / f"model-{size}"
    shutil.rmtree(target, ignore_errors=True)
    if size == "smollm2":
        return build_random_like(default_model_path(), target)
    texts = [json.loads(line) for line in Path(ED_VALID).read_text().splitlines()]
    return build_tiny_llama(target, [t for row in texts for t in [*row["context"], row["response"]]])


def run_stage(stage: Stage, out: Path, model: str, device: str, timeout: int) -> dict:
    log_path, device_log = out / "logs" / f"{stage.name}.log", out / "logs" / f"{stage.name}.devices.jsonl"
    device_log.unlink(missing_ok=True)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "COLUMNS": "300",
        ENV_VAR: str(device_log),
    }
    if stage.distilabel:
        env["TRANSFORMERS_VERBOSITY"] = "debug"
    if device_kind(device) == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # "cpu" means the CPU even on a GPU machine
    start = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            stage.argv(out, model, device), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
            start_new_session=True,
        )  # fmt: skip
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            returncode = proc.wait()
            log.write(f"\n[gpu-check] stopped after {timeout} s\n")
    seconds = time.perf_counter() - start
    seen = sorted({r["device"] for r in read_device_reports(device_log)})
    if stage.distilabel:
        seen = sorted(set(seen) | set(PIPELINE_DEVICE.findall(log_path.read_text(errors="replace"))))
    ok = returncode == 0 and bool(seen) and all(device_kind(d) == device_kind(device) for d in seen)
    return {"device": ",".join(seen) or "unknown", "seconds": round(seconds, 1), "ok": ok, "returncode": returncode}


def table(stages: dict[str, dict]) -> str:
    lines = [f"{'stage':<12} {'device seen':<16} {'seconds':>8}  ok", "-" * 44]
    for name, r in stages.items():
        lines.append(f"{name:<12} {r['device']:<16} {r['seconds']:>8.1f}  {'yes' if r['ok'] else 'NO'}")
    return "\n".join(lines)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging("gpu-check", args, __name__)
    check_device_is_there(args.device)
    out = Path(args.output_dir).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "cache", ignore_errors=True)
    start = time.perf_counter()
    lines = Path(ED_VALID).read_text().splitlines()
    for i in range(2):  # one positive-prompt set per expert, and they must differ (mergekit refuses identical ones)
        (out / f"prompts-{i}.jsonl").write_text("\n".join(lines[i * 50 : (i + 1) * 50]) + "\n")
    model = str(build_model(args.model_size, out))
    logger.info("random %s model in %s (%.1f s)", args.model_size, model, time.perf_counter() - start)
    results: dict[str, dict] = {}
    for stage in STAGES:
        logger.info("%s ...", stage.name)
        results[stage.name] = run_stage(stage, out, model, args.device, args.stage_timeout)
        r = results[stage.name]
        logger.info("%s: %s in %.1f s on %s", stage.name, "ok" if r["ok"] else "FAILED", r["seconds"], r["device"])
    summary = {
        "device": args.device,
        "model": args.model_size,
        "seconds": round(time.perf_counter() - start, 1),
        "stages": results,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(table(results))  # the result, on stdout
    logger.info(f"total {summary['seconds']:.1f} s; logs in {out / 'logs'}; summary in {out / 'summary.json'}")
    failed = [name for name, r in results.items() if not r["ok"]]
    if failed:
        logger.error("failed: %s (see %s)", ", ".join(failed), out / "logs")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
