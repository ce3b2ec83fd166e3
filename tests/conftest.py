"""Shared fixtures: Hub-free, offline; the tiny random Llama is built once per session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
SHARED_DATA = REPO.parent / "shared" / "data"


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
