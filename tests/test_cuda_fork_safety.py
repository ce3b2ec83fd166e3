"""GPU paths checked on a CPU machine: the process that builds a distilabel pipeline never touches CUDA (its workers
are forked), and ``--device cuda`` cannot hang a pipeline.

The CUDA calls are recorded with monkeypatched ``torch.cuda`` functions; the GPU is faked (NVML count, ``pynvml``)
where a test needs one, so the worker really runs distilabel's CUDA device placement, then fails to load the model
(this torch has no CUDA): the pipeline must report it and end, not wait forever.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from empathy_recipes.testing import prepend_site

REPO = Path(__file__).resolve().parents[1]
CUDA_CALLS = ("is_available", "device_count", "_lazy_init", "init", "current_device", "get_device_properties")


class _PipelineBuilt(Exception):
    """Raised instead of running a built pipeline: the test only checks what happened while building it."""


def _load_script(rel: str):
    path = REPO / rel
    spec = importlib.util.spec_from_file_location(f"_forksafe_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def cuda_calls(monkeypatch):
    """Every call of a CUDA-initialising ``torch.cuda`` function, recorded (answers as on a machine without GPU)."""
    import torch

    calls: list[str] = []

    def recorder(name, answer):
        def record(*args, **kwargs):
            calls.append(name)
            return answer

        return record

    answers = {"is_available": False, "device_count": 0}
    for name in CUDA_CALLS:
        monkeypatch.setattr(torch.cuda, name, recorder(name, answers.get(name)))
    return calls


def _preds(path: Path, ed_test_path: Path, n: int = 4) -> Path:
    rows = [json.loads(line) for line in ed_test_path.read_text().splitlines()[:n]]
    preds = [
        {"id": r["id"], "emotion": r["emotion"], "context": r["context"], "prediction": r["reference"], "model": "m"}
        for r in rows
    ]
    path.write_text("".join(json.dumps(p) + "\n" for p in preds))
    return path


def test_building_each_pipeline_with_the_default_device_never_touches_cuda(
    cuda_calls, monkeypatch, tmp_path, tiny_model_dir, ed_valid_path, ed_test_path
):
    from distilabel.pipeline import Pipeline

    def built(self, *args, **kwargs):
        assert self.dag.G.number_of_nodes() >= 2, "the pipeline was run before its LLM step was added"
        raise _PipelineBuilt

    monkeypatch.setattr(Pipeline, "run", built)
    preds = _preds(tmp_path / "preds.jsonl", ed_test_path)
    common = ["--model", str(tiny_model_dir), "--cache-dir", str(tmp_path / "cache"), "--limit", "4"]
    stages = {
        "distilabel_pipelines/judge_sensibility_rationality.py": ["--dataset", str(ed_valid_path)],
        "distilabel_pipelines/synthesize_dialogues.py": ["--dataset", str(ed_valid_path)],
        "distilabel_pipelines/judge_dialogue_quality.py": ["--dataset", str(ed_valid_path)],
        "distilabel_pipelines/judge_predictions.py": ["--predictions", str(preds)],
        "distilabel_pipelines/pairwise_win_rate.py": ["--predictions-a", str(preds), "--predictions-b", str(preds)],
    }
    for script, argv in stages.items():
        stage = _load_script(script)
        with pytest.raises(_PipelineBuilt):
            stage.main([*argv, *common, "--output-dir", str(tmp_path / Path(script).stem)])
        assert cuda_calls == [], f"{script} called torch.cuda.{cuda_calls} in the process that forks the workers"


def test_gpu_count_and_device_policy_never_initialise_cuda(cuda_calls):
    from empathy_recipes.llm import pick_device, transformers_llm_kwargs, visible_gpu_count

    assert visible_gpu_count() == 0  # this machine: CPU-only torch
    assert pick_device() == "cpu" and pick_device("cuda:1") == "cuda:1"
    args = type("Args", (), {"device": None, "model": "m", "dtype": "auto"})()
    kwargs = transformers_llm_kwargs(args)
    assert (kwargs["model"], kwargs["device"], kwargs["torch_dtype"]) == ("m", "cpu", "float32")
    assert cuda_calls == []


# A fake one-GPU machine for a child process: NVML counts one GPU and `pynvml` answers, so the stage takes
# `--device cuda` and distilabel's worker runs its CUDA device placement; loading the model on CUDA then fails,
# since this torch has no CUDA. It must fail (one clear error) rather than hang.
FAKE_GPU_SITECUSTOMIZE = """
import sys, types
pynvml = types.ModuleType("pynvml")
pynvml.nvmlInit = lambda: None
pynvml.nvmlDeviceGetCount = lambda: 1
sys.modules["pynvml"] = pynvml
import torch
torch.backends.cuda.is_built = lambda: True
torch.cuda._device_count_nvml = lambda: 1
"""


@pytest.mark.slow
def test_device_cuda_fails_fast_instead_of_hanging(tmp_path, tiny_model_dir, ed_valid_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(FAKE_GPU_SITECUSTOMIZE)
    env = {
        **os.environ,
        "PYTHONPATH": prepend_site(site),
        "TMPDIR": str(tmp_path),  # distilabel's device placement file lives under the temp dir
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "COLUMNS": "300",
    }
    cmd = [
        sys.executable,
        str(REPO / "distilabel_pipelines" / "judge_sensibility_rationality.py"),
        "--dataset", str(ed_valid_path), "--limit", "2", "--batch-size", "2",
        "--model", str(tiny_model_dir), "--device", "cuda",
        "--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        log, _ = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the stage and its distilabel workers
        proc.communicate()
        pytest.fail("--device cuda hung: the pipeline never reported that its step failed to load")
    assert proc.returncode != 0, log[-3000:]
    assert "Failed to load" in log, log[-3000:]  # distilabel reported the load failure
    assert "NoneType" not in log, log[-3000:]  # not the placement's missing-logger crash
    assert not (tmp_path / "out" / "default.jsonl").exists()
