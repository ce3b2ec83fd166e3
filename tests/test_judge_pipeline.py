"""The standalone judge pipeline: outputs, resume after a kill, bad input, and the 95% rule with SmolLM2."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import jsonl, stage_env

from empathy_recipes.testing import kill_after_cached_batches

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "distilabel_pipelines" / "judge_sensibility_rationality.py"
BATCH_LINE = re.compile(r"Processing batch (\d+) in 'judge'")


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


N_ROWS, BATCH = 40, 2


@pytest.fixture(scope="module")
def judged_tiny(ed_valid_path, tiny_model_dir, tmp_path_factory):
    """The judge on the tiny model, run once for this module's tests, 40 rows in batches of 2: run 1 is killed
    (``kill -9`` of its process group) once a few judge batches are in distilabel's cache, run 2 (same arguments)
    resumes to the end, run 3 (same arguments again) finds everything done."""
    tmp = tmp_path_factory.mktemp("judge-tiny")
    cache, out = tmp / "cache", tmp / "judged"
    cmd = _cmd(ed_valid_path, out, cache, tiny_model_dir, "--limit", str(N_ROWS), "--batch-size", str(BATCH))
    still_running, cached = kill_after_cached_batches(
        cmd, stage_env(), cache, "*/steps_data/judge_*/batch_*.json", tmp / "run1.log"
    )
    written_after_kill = (out / "default.jsonl").exists()
    proc2 = subprocess.run(cmd, capture_output=True, text=True, env=stage_env(), timeout=600)
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    summary2 = json.loads((out / "summary.json").read_text())
    proc3 = subprocess.run(cmd, capture_output=True, text=True, env=stage_env(), timeout=600)
    assert proc3.returncode == 0, proc3.stderr[-3000:]
    return SimpleNamespace(out=out, still_running=still_running, cached=cached,
                           written_after_kill=written_after_kill, proc2=proc2, summary2=summary2, proc3=proc3)  # fmt: skip


@pytest.mark.slow
def test_judge_pipeline_outputs_on_the_tiny_model(judged_tiny, ed_valid_path, tiny_model_dir):
    from distilabel.distiset import Distiset

    out = judged_tiny.out
    rows = jsonl(out / "default.jsonl")
    assert len(rows) == N_ROWS
    sample = {str(r["id"]): r for r in jsonl(ed_valid_path)}
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
    assert summary["agreement_with_reference"]["rationality"]["n"] == N_ROWS
    distiset = Distiset.load_from_disk(out / "distiset")
    assert len(distiset["default"]["train"]) == N_ROWS
    import yaml

    pipeline = yaml.safe_load((out / "distiset" / "distiset_configs" / "pipeline.yaml").read_text())
    steps = {s["name"]: s["step"] for s in pipeline["pipeline"]["steps"]}
    judges = [step for name, step in steps.items() if name.startswith("judge")]
    assert judges and all(step["llm"]["model"] == str(tiny_model_dir) for step in judges)  # the run, reproducible


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_finished_batches(judged_tiny, ed_valid_path):
    # Run 1: killed once a few judge batches were in distilabel's cache, before any output was written.
    assert judged_tiny.still_running, "the first run ended before it could be killed; make it longer"
    assert len(judged_tiny.cached) >= 3 and not judged_tiny.written_after_kill

    # Run 2: same arguments. The batches finished before the kill are reused; the judge only sees the other rows.
    proc2 = judged_tiny.proc2
    resumed = judged_tiny.summary2["resumed_rows"]
    assert resumed >= BATCH * len(judged_tiny.cached), f"only {resumed} rows reused of {len(judged_tiny.cached)}"
    judged_again = len(set(BATCH_LINE.findall(proc2.stdout + proc2.stderr)))
    assert judged_again * BATCH == N_ROWS - resumed  # no finished batch judged twice, no row skipped
    assert f"resuming: {resumed} of {N_ROWS} rows already done" in proc2.stderr
    expected_ids = [str(r["id"]) for r in jsonl(ed_valid_path)[:N_ROWS]]
    rows = jsonl(judged_tiny.out / "default.jsonl")
    assert [r["id"] for r in rows] == expected_ids  # every row once, in input order
    assert all(r["rationality"] is not None and r["sensibility"] is not None for r in rows)

    # Run 3: same arguments again: everything comes from the cache, the judge is not called at all.
    proc3 = judged_tiny.proc3
    assert not BATCH_LINE.findall(proc3.stdout + proc3.stderr)
    assert json.loads((judged_tiny.out / "summary.json").read_text())["resumed_rows"] == N_ROWS


@pytest.mark.slow
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
    proc = subprocess.run(cmd, capture_output=True, text=True, env=stage_env(), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = jsonl(out / "default.jsonl")
    assert len(rows) == 20
    both = [r for r in rows if r["rationality"] is not None and r["sensibility"] is not None]
    assert len(both) / len(rows) >= 0.95
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scored_share"] >= 0.95
    for r in both:
        assert 0 <= r["rationality_weighted"] <= 10 and 0 <= r["sensibility_weighted"] <= 10
