"""The stages through a real OpenAI-compatible server: ``transformers serve`` with the embedded SmolLM2 on 127.0.0.1
(the ``openai_server`` fixture in conftest.py), reached with ``--backend openai --base-url``.

The server returns no logprobs and ignores ``response_format``, so the judges run with ``--scoring generate`` and
synthesis with its prompt + parser; generation sends its chat completions itself. Each test checks that the stage's
requests reached the server (its access log) and that every input row came back. Marker ``server``;
``-m "not server"`` skips them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import jsonl, stage_env

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.server, pytest.mark.integration]
CHAT = '"POST /v1/chat/completions HTTP/1.1" 200'  # uvicorn access log, answered requests only


def _run(server: dict, script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    backend = ["--backend", "openai", "--base-url", server["base_url"], "--model", server["model"]]
    cmd = [sys.executable, str(REPO / script), *args, *backend]
    env = stage_env(OPENAI_API_KEY="EMPTY")  # transformers serve has no auth; the client needs some key
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)


def _chat_requests(server: dict) -> int:
    return server["log"].read_text().count(CHAT)


def test_judge_through_the_server(openai_server, ed_valid_path, tmp_path):
    before = _chat_requests(openai_server)
    out = tmp_path / "judged"
    proc = _run(
        openai_server,
        "distilabel_pipelines/judge_sensibility_rationality.py",
        *("--dataset", str(ed_valid_path), "--limit", "3", "--batch-size", "1", "--max-new-tokens", "24"),
        *("--scoring", "generate", "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache")),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = jsonl(out / "default.jsonl")
    sample = [json.loads(line) for line in ed_valid_path.read_text().splitlines()][:3]
    assert [r["id"] for r in rows] == [str(s["id"]) for s in sample]  # every row back, in order
    assert all(isinstance(r["judge_output"], str) and r["judge_output"].strip() for r in rows)
    assert all(r["model_name"] == openai_server["model"] for r in rows)
    assert json.loads((out / "summary.json").read_text())["rows"] == 3
    assert _chat_requests(openai_server) - before >= 3  # one chat request per row reached the server


def test_synth_through_the_server(openai_server, ed_valid_path, tmp_path):
    before = _chat_requests(openai_server)
    out = tmp_path / "synth"
    proc = _run(
        openai_server,
        "distilabel_pipelines/synthesize_dialogues.py",
        *("--dataset", str(ed_valid_path), "--limit", "2", "--num-generations", "1", "--max-new-tokens", "48"),
        *("--batch-size", "1", "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache")),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    generations = jsonl(out / "default.jsonl")
    assert len(generations) == 2 and all(g["generation"] for g in generations)
    # nothing lost: each generation is either a parsed dialogue or a rejected one with its reason
    dialogues, rejected = jsonl(out / "dialogues.jsonl"), jsonl(out / "rejected.jsonl")
    assert len(dialogues) + len(rejected) == 2 and all(r["reason"] for r in rejected)
    assert _chat_requests(openai_server) - before >= 2


def test_eval_judge_through_the_server(openai_server, ed_test_path, tmp_path):
    rows = [json.loads(line) for line in ed_test_path.read_text().splitlines()][:2]
    predictions = tmp_path / "predictions.jsonl"
    with predictions.open("w") as f:
        for r in rows:
            keep = {"id": str(r["id"]), "emotion": r["emotion"], "context": r["context"], "reference": r["reference"]}
            f.write(json.dumps({**keep, "prediction": r["reference"], "model": "reference"}) + "\n")
    before = _chat_requests(openai_server)
    out = tmp_path / "eval-judge"
    proc = _run(
        openai_server,
        "distilabel_pipelines/judge_predictions.py",
        *("--predictions", str(predictions), "--scoring", "generate", "--max-new-tokens", "24"),
        *("--batch-size", "1", "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache")),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    judged = jsonl(out / "default.jsonl")
    assert sorted(r["id"] for r in judged) == sorted(str(r["id"]) for r in rows)
    assert all(isinstance(r["judge_output"], str) and r["judge_output"].strip() for r in judged)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == 2 and summary["judge"] == openai_server["model"]
    assert _chat_requests(openai_server) - before >= 2


def test_generate_through_the_server(openai_server, ed_test_path, tmp_path):
    before = _chat_requests(openai_server)
    output = tmp_path / "predictions.jsonl"
    proc = _run(
        openai_server,
        "evaluation/generate.py",
        *("--dataset", str(ed_test_path), "--limit", "3", "--batch-size", "1", "--max-new-tokens", "16"),
        *("--output", str(output)),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = jsonl(output)
    sample = [json.loads(line) for line in ed_test_path.read_text().splitlines()][:3]
    assert [r["id"] for r in rows] == [str(s["id"]) for s in sample]
    assert all(isinstance(r["prediction"], str) and r["prediction"].strip() for r in rows)
    assert [r["reference"] for r in rows] == [s["reference"] for s in sample]
    assert _chat_requests(openai_server) - before >= 3
