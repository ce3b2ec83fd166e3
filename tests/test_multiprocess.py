"""Multi-process training for real: ``make sft ACCELERATE=ddp`` with two processes on CPU (DDP over gloo) trains a
few steps of the tiny model and saves; the script logs the global batch. Marker ``multiprocess``."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.multiprocess


def test_make_sft_ddp_two_processes_on_cpu(tiny_model_dir, ed_valid_path, tmp_path):
    out = tmp_path / "ddp"
    args = [
        *("--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(ed_valid_path)),
        *("--dataset_limit", "24", "--max_steps", "3", "--per_device_train_batch_size", "2"),
        *("--gradient_accumulation_steps", "2", "--save_steps", "3", "--logging_steps", "1"),
        *("--output_dir", str(out), "--max_length", "128"),
    ]
    cmd = [
        "make", "--no-print-directory", "sft", "ACCELERATE=ddp",
        "ACCELERATE_ARGS=--num_processes 2 --main_process_port 0",
        "ARGS=" + " ".join(args),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    # one line from rank 0: 2 per device x 2 processes x 2 accumulation, over gloo on the CPU
    line = re.search(r"global batch = 2 per device x (\d+) processes x 2 accumulation = (\d+) sequences.*", log)
    assert line, log[-4000:]
    assert line.group(1) == "2" and line.group(2) == "8"
    assert re.search(r"\(device cpu(:\d+)?, MULTI_CPU\)", line.group(0))  # DDP over gloo between CPU processes
    assert log.count("global batch =") == 1  # logged once, by the main process
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert state["train_batch_size"] == 2  # per device; each process trained on its own shard
    assert (out / "adapter_model.safetensors").exists() and (out / "merged" / "config.json").exists()
    assert json.loads((out / "train_results.json").read_text())["train_samples"] == 24
