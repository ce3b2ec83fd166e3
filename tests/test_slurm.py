"""The Slurm launchers: valid bash, and the stage command line that ``slurm/generate.slurm`` builds parses with the
stage's own argparse (no Slurm, no GPU: ``--print-command`` stops before anything cluster-side)."""

from __future__ import annotations

import importlib.util
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "slurm" / "generate.slurm"


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "slurm").glob("*.slurm")))
def test_slurm_scripts_are_valid_bash(script):
    done = subprocess.run(["bash", "-n", str(REPO / "slurm" / script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _printed_command(*options: str) -> list[str]:
    done = subprocess.run(["bash", str(LAUNCHER), *options], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    return shlex.split(done.stdout)


def _stage_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"slurm_stage_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STAGES = {
    "judge": ["--dataset", "data/ed_valid_sample.jsonl", "--output-dir", "outputs/judged", "--batch-size", "256"],
    "synth": ["--dataset", "data/ed_valid_sample.jsonl", "--num-generations", "5", "--output-dir", "outputs/s"],
    "synth-judge": ["--dataset", "data/ed_valid_sample.jsonl", "--output-dir", "outputs/judged-synth"],
    "eval-judge": ["--predictions", "outputs/eval/moe.jsonl", "--output-dir", "outputs/eval/judge"],
    "eval-winrate": ["--predictions-a", "a.jsonl", "--predictions-b", "b.jsonl", "--output-dir", "outputs/w"],
    "generate": [
        "--dataset",
        "data/ed_test_sample.jsonl",
        "--output",
        "outputs/eval/moe.jsonl",
        "--batch-size",
        "256",
    ],
}


# every stage with and without --ray, but generate (it sends its own requests: --ray is refused, tested below)
COMBOS = [(stage, ray) for stage in sorted(STAGES) for ray in (False, True) if not (stage == "generate" and ray)]


@pytest.mark.parametrize(("stage", "ray"), COMBOS)
def test_generate_slurm_stage_command_parses_with_the_stage_argparse(stage, ray, monkeypatch):
    model = "meta-llama/Meta-Llama-3-70B-Instruct"
    options = ["--print-command", "--stage", stage, "--model", model, *(["--ray"] if ray else [])]
    cmd = _printed_command(*options, "--", *STAGES[stage])
    assert cmd[:2] == ["python", "-u"]
    script = REPO / cmd[2]
    assert script.parent.name in ("distilabel_pipelines", "evaluation") and script.exists()
    monkeypatch.setenv("OPENAI_API_KEY", "EMPTY")  # what the launcher exports
    import empathy_recipes.llm as llm

    # the stage checks that --base-url accepts connections; the head node exists only on the cluster
    monkeypatch.setattr(llm, "check_server_reachable", lambda *a, **k: None, raising=False)
    args = _stage_module(script).parse_args(cmd[3:])
    assert args.backend == "openai" and args.base_url == "http://head-node:8000/v1" and args.model == model
    assert getattr(args, "ray", False) is ray
    if "--batch-size" in STAGES[stage]:
        assert args.batch_size == 256


def test_generate_slurm_bad_options_are_one_error_line():
    bad = (
        ["--stage", "nope", "--model", "m"],
        ["--stage", "judge"],
        ["--stage", "judge", "--oops"],
        ["--stage", "generate", "--model", "m", "--ray"],
    )
    for options in bad:
        done = subprocess.run(["bash", str(LAUNCHER), "--print-command", *options], capture_output=True, text=True)
        assert done.returncode == 2 and done.stderr.startswith("error: "), (options, done.stderr)
