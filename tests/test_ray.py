"""``--ray`` for real: the judge pipeline runs as a distilabel RayPipeline on a local Ray cluster that this module
starts (``ray start --head`` on 127.0.0.1, 2 CPUs, a small object store) and gives the same rows and scores as the
local pipeline. Marker ``ray``; ``-m "not ray"`` skips it."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import free_port, jsonl, stage_env, stop_process_group

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "distilabel_pipelines" / "judge_sensibility_rationality.py"
pytestmark = pytest.mark.ray


def _env(**extra: str) -> dict[str, str]:
    env = stage_env(RAY_USAGE_STATS_ENABLED="0", **extra)
    if "RAY_ADDRESS" not in extra:
        env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture(scope="module")
def ray_cluster():
    """A one-node Ray cluster on 127.0.0.1 for this module, started here and not waited for: ``wait()`` returns its
    address once ``ray start`` says it runs (the test judges locally meanwhile). Stopped (process group) at the end."""
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    port = free_port()
    cmd = [
        # the `ray` CLI through this interpreter, whatever the shebang of the venv's `ray` entry script says
        sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
        "--node-ip-address", "127.0.0.1", "--port", str(port),
        "--num-cpus", "2", "--num-gpus", "0", "--object-store-memory", str(100 * 2**20),
        "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp_dir,
        "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
        "--dashboard-agent-grpc-port", str(free_port()), "--runtime-env-agent-port", str(free_port()),
        "--metrics-export-port", str(free_port()),
    ]  # fmt: skip
    log = Path(temp_dir) / "ray-start.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)

    def wait() -> str:
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        return f"127.0.0.1:{port}"

    try:
        yield wait
    finally:
        stop_process_group(proc, grace=3.0)  # ray start --block takes 20 s and more to stop on SIGTERM
        shutil.rmtree(temp_dir, ignore_errors=True)


def _judge(out: Path, cache: Path, model: Path, dataset: Path, *extra: str, env: dict[str, str]):
    cmd = [
        sys.executable, str(SCRIPT), "--dataset", str(dataset), "--output-dir", str(out), "--cache-dir", str(cache),
        "--model", str(model), "--device", "cpu", "--limit", "4", "--batch-size", "2", *extra,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return jsonl(out / "default.jsonl"), proc.stdout + proc.stderr


def test_ray_pipeline_gives_the_local_rows_and_scores(ray_cluster, tiny_model_dir, ed_valid_path, tmp_path):
    local, _ = _judge(tmp_path / "local", tmp_path / "cache-local", tiny_model_dir, ed_valid_path, env=_env())
    address = ray_cluster()  # started before the local run, ready by now or soon
    on_ray, log = _judge(
        tmp_path / "ray",
        tmp_path / "cache-ray",
        tiny_model_dir,
        ed_valid_path,
        "--ray",
        env=_env(RAY_ADDRESS=address),  # RayPipeline's ray.init() joins this cluster
    )
    assert [r["id"] for r in on_ray] == [r["id"] for r in local] and len(local) == 4
    for a, b in zip(local, on_ray):
        assert a["judge_output"] == b["judge_output"]
        for axis in ("rationality", "sensibility"):
            assert a[axis] == b[axis]
            assert math.isclose(a[f"{axis}_weighted"], b[f"{axis}_weighted"], rel_tol=1e-5)
    # the run really went through the cluster: RayPipeline logs the cluster's nodes, and joined this address
    assert "Ray nodes GPUs" in log, log[-3000:]
    assert address in log or "Connecting to existing Ray cluster" in log, log[-3000:]


def test_ray_not_installed_is_one_error_line(monkeypatch, ed_valid_path, tmp_path):
    """``--ray`` without ray installed: one clear error from the stage's argument checks, before any model loads."""
    import importlib.util

    from empathy_recipes.errors import EmpathyRecipesError

    spec = importlib.util.spec_from_file_location("judge_for_ray_test", SCRIPT)
    judge = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(judge)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    argv = ["--dataset", str(ed_valid_path), "--output-dir", str(tmp_path), "--device", "cpu", "--ray"]
    with pytest.raises(EmpathyRecipesError, match=r"ray is not installed: pip install -e '\.\[ray\]'"):
        judge.parse_args(argv)
