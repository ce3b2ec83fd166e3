"""Shared fixtures: Hub-free, offline; the tiny random Llama is built once per session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

# Under pytest-xdist (`make test`: 2 workers) the workers share the cores: one compute thread each, for them and the
# stages they start, and OpenMP waiting passively, so workers do not spin against each other (2 workers x 2 threads
# took 60% more CPU for the same tests, and 3-6 times longer for the SmolLM2 ones). Set before torch is imported.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _THREADS = str(max(1, (os.cpu_count() or 1) // _WORKERS))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, _THREADS)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
SHARED_DATA = REPO.parent / "shared" / "data"


# The slowest files (CONTRIBUTING, "Tests"), run first: under xdist (`make test`: --dist loadfile
# --no-loadscope-reorder) the long files start at once on the two workers and the many short ones fill the gaps at
# the end, instead of a long file starting last and running alone.
SLOW_FILES_FIRST = (
    "test_demo.py", "test_gpu_check.py", "test_judge_pipeline.py", "test_synth.py", "test_server.py",
    "test_bad_inputs.py", "test_sft.py", "test_ray.py", "test_cli_errors.py", "test_eval_judge.py",
    "test_resume.py", "test_hub_chain.py", "test_generation.py", "test_paper_profile.py", "test_reliability.py",
)  # fmt: skip


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's tests stay in order


@pytest.fixture(autouse=True)
def _stage_logging_reset():
    """A stage's ``main`` configures logging for its process; undo it after each test (caplog sees the next one)."""
    from empathy_recipes.logs import reset_logging

    yield
    reset_logging()


# Variables an outer `make test ARGS=...` hands down to every make below it (MAKEFLAGS): a test that runs `make`
# must not inherit them.
_OUTER_MAKE = frozenset({"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARGS"})


def stage_env(**extra: str) -> dict[str, str]:
    """The environment for a stage run as a child process: this one, offline, without an outer make's variables,
    and ``COLUMNS=300`` so distilabel's rich log lines stay one line each (tests grep them); ``extra`` on top."""
    env = {k: v for k, v in os.environ.items() if k not in _OUTER_MAKE}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", COLUMNS="300")
    env.update(extra)
    return env


def jsonl(path: Path) -> list[dict]:
    """The rows of a JSONL file (blank lines skipped)."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def ed_valid_path() -> Path:
    """The shipped sample of ED valid with the paper's judge outputs (400 rows)."""
    return DATA / "ed_valid_sample.jsonl"


@pytest.fixture(scope="session")
def ed_test_path() -> Path:
    """The shipped sample of ED test with references (300 rows)."""
    return DATA / "ed_test_sample.jsonl"


@pytest.fixture(scope="session")
def ed_texts(ed_valid_path: Path) -> list[str]:
    rows = [json.loads(line) for line in ed_valid_path.read_text().splitlines()]
    return [turn for r in rows for turn in r["context"]] + [r["response"] for r in rows]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, ed_texts) -> Path:
    """A random LlamaForCausalLM (hidden 64, 2 layers) with a BPE tokenizer trained here and the ChatML training
    template (with generation markers). Built once per session, in about two seconds."""
    from empathy_recipes.testing import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), ed_texts)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct prepared by `make install` (integration tests only)."""
    from empathy_recipes.models import default_model_path

    path = default_model_path()
    assert (path / "config.json").exists(), f"{path} missing: run `make install` first"
    return path


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from empathy_recipes.models import default_embedder_path

    return default_embedder_path()


@pytest.fixture
def local_hub(tmp_path, monkeypatch) -> Path:
    """A Hub that lives in ``tmp_path/hub``: pushes (``HfApi.create_repo`` / ``upload_folder``) write the very files
    they would upload into ``<root>/datasets/<org>/<name>`` or ``<root>/models/<org>/<name>``; the next stage reads
    that folder by path. Nothing reaches the network."""
    from empathy_recipes.testing import patch_hub_to_folder

    return patch_hub_to_folder(monkeypatch, tmp_path / "hub")


_FORBID_WEIGHTS = """
import os
import sys

_MARK = os.environ.get("EMPATHY_FORBID_WEIGHTS")
_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def _forbid(what):
    with open(_MARK, "a") as f:
        f.write(what + "\\n")
    os._exit(97)


if _MARK:

    def _hook(event, args):
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.fsdecode(args[0])
            if path.endswith(_SUFFIXES):
                _forbid("open " + path)

    sys.addaudithook(_hook)
    import safetensors

    def _safe_open(path, *args, **kwargs):
        _forbid("safe_open " + os.fsdecode(path))

    safetensors.safe_open = _safe_open
"""


@pytest.fixture
def run_without_weights(tmp_path):
    """``run(argv) -> (CompletedProcess, marker)``: ``python *argv`` in a fresh process (cwd ``tmp_path``) where
    reading model weights is fatal. Its ``sitecustomize`` (first on PYTHONPATH, so every Python child process gets
    it too) replaces ``safetensors.safe_open`` (what transformers and sentence-transformers load weights through)
    and audits Python ``open`` of ``.safetensors`` / ``.bin`` / ``.pt`` / ``.pth`` / ``.gguf`` files: either writes
    the path to the marker file and exits 97. A script that reads no weights leaves no marker."""
    from empathy_recipes.testing import prepend_site

    guard = tmp_path / "forbid-weights"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(_FORBID_WEIGHTS)
    mark = tmp_path / "weights_read.txt"

    def run(argv: list[str], timeout: int = 300) -> tuple[subprocess.CompletedProcess, Path]:
        env = {
            **os.environ,
            "PYTHONPATH": prepend_site(guard),
            "EMPATHY_FORBID_WEIGHTS": str(mark),
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        cmd = [sys.executable, *argv]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=timeout), mark

    return run


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process_group(proc, grace: float = 20.0) -> None:
    """SIGTERM the process group ``proc`` leads (started with ``start_new_session=True``), SIGKILL after ``grace``."""
    import signal
    import subprocess

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="session")
def openai_server(smollm2_dir, tmp_path_factory):
    """A real OpenAI-compatible server for the session: ``transformers serve`` (transformers' own server) with the
    embedded SmolLM2 on 127.0.0.1 and a free port. Yields ``{"base_url", "model", "log"}``; waits at most
    ``EMPATHY_SERVER_TIMEOUT`` seconds (default 240) for ``/health``; stops the server's process group at the end."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    log = tmp_path_factory.mktemp("openai-server") / "server.log"
    serve = Path(sys.executable).with_name("transformers")
    cmd = [str(serve), "serve", str(smollm2_dir), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--device", "cpu", "--log-level", "info"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "NO_COLOR": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + float(os.environ.get("EMPATHY_SERVER_TIMEOUT", "240"))
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve not ready on port {port}:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield {"base_url": f"http://127.0.0.1:{port}/v1", "model": str(smollm2_dir), "log": log}
    finally:
        stop_process_group(proc)
