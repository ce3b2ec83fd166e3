"""``make gpu-check``: the device reports, the stage verdicts, the model-FLOPs arithmetic of bench_sft_gpu, and the
whole check on CPU (every stage as its real script, the tiny random model)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import stage_env

from empathy_recipes.device_report import ENV_VAR, device_kind, read_device_reports, report_device

REPO = Path(__file__).resolve().parents[1]


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


gpu_check = _load(REPO / "scripts" / "gpu_check.py", "gpu_check_script")
bench = _load(REPO / "bench" / "bench_sft_gpu.py", "bench_sft_gpu_script")


def test_device_reports_round_trip(tmp_path, monkeypatch):
    log = tmp_path / "sub" / "devices.jsonl"
    monkeypatch.setenv(ENV_VAR, str(log))
    report_device("sft", "cuda:1")
    report_device("sft", "cpu")
    reports = read_device_reports(log)
    assert [(r["stage"], r["device"]) for r in reports] == [("sft", "cuda:1"), ("sft", "cpu")]
    assert all(r["pid"] == os.getpid() for r in reports)
    assert read_device_reports(tmp_path / "missing.jsonl") == []
    assert [device_kind(d) for d in ("cuda:0", "cuda", "CPU", "mps")] == ["cuda", "cuda", "cpu", "mps"]


def _fake_stage(name: str, code: str) -> gpu_check.Stage:
    return gpu_check.Stage(name, lambda out, model, device: [sys.executable, "-c", code])


REPORT = "from empathy_recipes.device_report import report_device; report_device('x', {!r})"


@pytest.mark.parametrize(
    ("code", "device", "ok", "seen"),
    [
        (REPORT.format("cpu"), "cpu", True, "cpu"),
        (REPORT.format("cuda:0"), "cpu", False, "cuda:0"),  # used another device than asked: not ok
        (REPORT.format("cuda:0"), "cuda", True, "cuda:0"),
        ("pass", "cpu", False, "unknown"),  # exit 0 but no device reported: not ok
        (REPORT.format("cpu") + "; raise SystemExit(3)", "cpu", False, "cpu"),
    ],
)
def test_a_stage_is_ok_only_on_the_device_it_reports(tmp_path, code, device, ok, seen):
    (tmp_path / "logs").mkdir()
    result = gpu_check.run_stage(_fake_stage("x", code), tmp_path, "model", device, timeout=120)
    assert result["ok"] is ok and result["device"] == seen


def test_distilabel_stage_device_comes_from_the_pipeline_log_line(tmp_path):
    (tmp_path / "logs").mkdir()
    stage = gpu_check.Stage("j", lambda o, m, d: [sys.executable, "-c", "print('Device set to use cpu')"], True)
    assert gpu_check.run_stage(stage, tmp_path, "model", "cpu", timeout=120)["ok"] is True
    assert gpu_check.run_stage(stage, tmp_path, "model", "cuda", timeout=120)["ok"] is False


def test_table_has_one_line_per_stage():
    text = gpu_check.table({"judge": {"device": "cuda:0", "seconds": 3.25, "ok": True}})
    assert text.splitlines()[2].split() == ["judge", "cuda:0", "3.2", "yes"]


def test_model_flops_hand_worked():
    # 10 tokens in one sequence of 10: matmul 10 x (4 x 100 + 2 x 5) = 4100; attention 6 x 2 x 8 x 10 x 11 = 10560
    assert bench.step_flops(10, 10 * 11, 100, 5, layers=2, hidden=8) == 4100 + 10560
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0 and bench.peak_tflops("NVIDIA H200") == 989.0
    assert bench.peak_tflops("NVIDIA H100 PCIe") == 756.0 and bench.peak_tflops("Tesla T4") is None


def test_sequence_lengths_padded_and_packed():
    import torch

    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    assert bench.sequence_lengths(torch.zeros(2, 4), attention_mask=mask) == [3, 4]
    positions = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])  # three packed sequences in one row
    assert bench.sequence_lengths(torch.zeros(1, 9), position_ids=positions) == [3, 2, 4]
    assert bench.sequence_lengths(torch.zeros(2, 5)) == [5, 5]


def test_bad_device_is_one_error_line(tmp_path):
    cmd = [sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--device", "tpu", "--output-dir", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: --device")


@pytest.mark.integration
def test_make_gpu_check_on_cpu(tmp_path):
    """`make gpu-check DEVICE=cpu`: every stage as its real script on the CPU, all ok, the table and summary.json."""
    out = tmp_path / "gpu-check"
    cmd = ["make", "--no-print-directory", "gpu-check", "DEVICE=cpu", f"ARGS=--output-dir {out}"]
    done = subprocess.run(cmd, cwd=REPO, env=stage_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    stages = ["judge", "synth", "sft", "moe", "moe-router", "generate", "eval-judge"]
    assert list(summary["stages"]) == stages
    for name in stages:
        assert summary["stages"][name]["ok"] is True and summary["stages"][name]["device"] == "cpu", name
        assert summary["stages"][name]["seconds"] > 0
        assert f"{name} " in done.stdout
    assert (out / "generate" / "predictions.jsonl").read_text().count("\n") == 8
