"""The standalone judge pipeline: outputs, resume after a kill, bad input, and the 95% rule with SmolLM2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from empathy_recipes.testing import kill_after_cached_batches

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "distilabel_pipelines" / "judge_sensibility_rationality.py"
BATCH_LINE = re.compile(r"Processing batch (\d+) in 'judge'")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(REPO / "src"),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        COLUMNS="300",  # distilabel logs through rich: keep each log line on one line
    )
    return env


def _cmd(dataset: Path, out: Path, cache: Path, model: Path | str, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(SCRIPT),
        "--dataset",
        str(dataset),
        "--output-dir",
        str(out),
        "--cache-dir",
        str(cache),
        "--model",
        str(model),
        "--device",
        "cpu",
        *extra,
    ]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_judge_pipeline_outputs_on_the_tiny_model(ed_valid_path, tiny_model_dir, tmp_path):
    from distilabel.distiset import Distiset

    out = tmp_path / "judged"
    cmd = _cmd(ed_valid_path, out, tmp_path / "cache", tiny_model_dir, "--limit", "6", "--batch-size", "3")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(out / "default.jsonl")
    assert len(rows) == 6
    sample = {str(r["id"]): r for r in _rows(ed_valid_path)}
    for row in rows:
        # input rows kept, the paper's judge output kept aside, our raw text + parsed + weighted scores added
        assert row["reference_judge_output"] == sample[row["id"]]["judge_output"]
        assert row["messages"][-1]["content"] == sample[row["id"]]["response"]
        assert row["judge_output"].startswith("Evaluation Form (scores ONLY):\n- Rationality: ")
        assert 0 <= row["rationality"] <= 10 and 0 <= row["sensibility"] <= 10
        assert 0 <= row["rationality_weighted"] <= 10 and len(row["sensibility_probs"]) == 11
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scored_share"] == 1.0
    assert set(summary["agreement_with_reference"]) == {"rationality", "sensibility"}
    assert summary["agreement_with_reference"]["rationality"]["n"] == 6
    distiset = Distiset.load_from_disk(out / "distiset")
    assert len(distiset["default"]["train"]) == 6
    import yaml

    pipeline = yaml.safe_load((out / "distiset" / "distiset_configs" / "pipeline.yaml").read_text())
    steps = {s["name"]: s["step"] for s in pipeline["pipeline"]["steps"]}
    judges = [step for name, step in steps.items() if name.startswith("judge")]
    assert judges and all(step["llm"]["model"] == str(tiny_model_dir) for step in judges)  # the run, reproducible


def test_killed_run_resumes_without_redoing_finished_batches(ed_valid_path, tiny_model_dir, tmp_path):
    n_rows, batch = 40, 2
    cache, out = tmp_path / "cache", tmp_path / "judged"
    cmd = _cmd(ed_valid_path, out, cache, tiny_model_dir, "--limit", str(n_rows), "--batch-size", str(batch))

    # Run 1: kill -9 the whole process group once a few judge batches are in distilabel's cache.
    still_running, cached = kill_after_cached_batches(
        cmd, _env(), cache, "*/steps_data/judge_*/batch_*.json", tmp_path / "run1.log"
    )
    assert still_running, "the first run ended before it could be killed; make it longer"
    assert len(cached) >= 3 and not (out / "default.jsonl").exists()

    # Run 2: same arguments. The batches finished before the kill are reused; the judge only sees the other rows.
    proc2 = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    resumed = summary["resumed_rows"]
    assert resumed >= batch * len(cached), f"only {resumed} rows reused of {len(cached)} finished batches"
    judged_again = len(set(BATCH_LINE.findall(proc2.stdout + proc2.stderr)))
    assert judged_again * batch == n_rows - resumed  # no finished batch judged twice, no row skipped
    assert f"resuming: {resumed} of {n_rows} rows already done" in proc2.stderr
    rows = _rows(out / "default.jsonl")
    expected_ids = [str(r["id"]) for r in _rows(ed_valid_path)[:n_rows]]
    assert [r["id"] for r in rows] == expected_ids  # every row once, in input order
    assert all(r["rationality"] is not None and r["sensibility"] is not None for r in rows)

    # Run 3: same arguments again: everything comes from the cache, the judge is not called at all.
    proc3 = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert proc3.returncode == 0, proc3.stderr[-3000:]
    assert not BATCH_LINE.findall(proc3.stdout + proc3.stderr)
    assert [r["id"] for r in _rows(out / "default.jsonl")] == expected_ids


def test_bad_input_is_one_line_before_any_model_loads(tmp_path, tiny_model_dir, run_without_weights):
    """Each bad input: exit 2, one ``error:`` line (the last), and no model weights read (the fixture makes reading
    them fatal), although --model names a real model."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"foo": 1}) + "\n")
    base = [str(SCRIPT), "--model", str(tiny_model_dir), "--output-dir", str(tmp_path / "o")]
    cases = [
        ([*base, "--dataset", str(tmp_path / "missing.jsonl")], "error: "),
        ([*base, "--dataset", str(bad)], "error: unrecognised ED format"),
        ([*base, "--dataset", "x.jsonl", "--backend", "openai"], "error: --backend openai needs --base-url"),
        ([str(SCRIPT), "--model", str(tiny_model_dir), "--dataset", "x.jsonl"], "error: "),  # no output at all
    ]
    for argv, expected in cases:
        proc, mark = run_without_weights(argv)
        assert not mark.exists(), f"model weights read before the error: {mark.read_text()}"
        lines = proc.stderr.strip().splitlines()
        errors = [line for line in lines if line.startswith("error")]
        assert proc.returncode == 2 and errors == [lines[-1]] and lines[-1].startswith(expected), proc.stderr[-500:]
    assert "--output-dir and/or --hub-repo" in proc.stderr


@pytest.mark.integration
def test_smollm2_judge_scores_at_least_95_percent_of_rows(ed_valid_path, smollm2_dir, tmp_path):
    """The embedded SmolLM2-135M judges 20 rows of the shipped sample; >= 95% must get both scores."""
    out = tmp_path / "judged"
    cmd = _cmd(ed_valid_path, out, tmp_path / "cache", smollm2_dir, "--limit", "20", "--batch-size", "20")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(out / "default.jsonl")
    assert len(rows) == 20
    both = [r for r in rows if r["rationality"] is not None and r["sensibility"] is not None]
    assert len(both) / len(rows) >= 0.95
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scored_share"] >= 0.95
    for r in both:
        assert 0 <= r["rationality_weighted"] <= 10 and 0 <= r["sensibility_weighted"] <= 10
