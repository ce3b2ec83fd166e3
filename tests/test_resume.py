"""Row-level resume after a kill, shared by every distilabel stage (``empathy_recipes.resume``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import jsonl, stage_env

from empathy_recipes.resume import ROW_KEY, ResumeStore
from empathy_recipes.testing import kill_after_cached_batches

REPO = Path(__file__).resolve().parents[1]
SYNTH = REPO / "distilabel_pipelines" / "synthesize_dialogues.py"
SYNTH_BATCH_LINE = re.compile(r"Processing batch (\d+) in 'write_rounds'")


def test_merge_puts_rows_of_several_runs_back_in_input_order():
    order = ["0", "1", "2", "3"]
    run1 = [{ROW_KEY: 2, "g": "c"}, {ROW_KEY: 0, "g": "a"}]
    run2 = [{ROW_KEY: 3, "g": "d"}, {ROW_KEY: 1, "g": "b"}, {ROW_KEY: 1, "g": "b2"}]  # two generations of row 1
    merged = ResumeStore.merge(order, run1, run2, key_column=ROW_KEY)
    assert [r["g"] for r in merged] == ["a", "b", "b2", "c", "d"]


def test_store_reads_the_batches_it_harvested(tmp_path):
    class Step:
        name, signature = "judge", "sig"

    batches = tmp_path / "pipe" / "steps_data" / "judge_sig"
    batches.mkdir(parents=True)
    (batches / "batch_0.json").write_text(json.dumps({"data": [[{ROW_KEY: 0, "x": 1}, {ROW_KEY: 1, "x": 2}]]}))
    store = ResumeStore(tmp_path, "pipe", "key", key_column=ROW_KEY)
    assert store.harvest(Step()) == 1
    assert not (tmp_path / "pipe").exists()  # distilabel's own (possibly inconsistent) state is dropped
    assert store.done_ids() == {"0", "1"} and [r["x"] for r in store.rows()] == [1, 2]


@pytest.mark.slow
def test_killed_synthesis_resumes_without_redoing_finished_batches(ed_valid_path, tiny_model_dir, tmp_path):
    n_rows, batch = 24, 2
    out, cache = tmp_path / "synth", tmp_path / "cache"
    cmd = [
        sys.executable, str(SYNTH), "--dataset", str(ed_valid_path), "--limit", str(n_rows),
        "--batch-size", str(batch), "--num-generations", "1", "--max-new-tokens", "24",
        "--model", str(tiny_model_dir), "--device", "cpu", "--output-dir", str(out), "--cache-dir", str(cache),
    ]  # fmt: skip
    env = stage_env()

    # Run 1: kill -9 the whole process group once a few batches are finished (in distilabel's cache).
    still_running, cached = kill_after_cached_batches(
        cmd, env, cache, "*/steps_data/write_rounds_*/batch_*.json", tmp_path / "run1.log"
    )
    assert still_running, "the first run ended before it could be killed; make it longer"
    time.sleep(0.2)
    finished = {}  # what run 1 wrote, by input row: it must come back as is (sampled text: redone would differ)
    for path in cache.glob("*/steps_data/write_rounds_*/batch_*.json"):
        for row in json.loads(path.read_text())["data"][0]:
            finished[row[ROW_KEY]] = row["generation"]
    assert len(finished) >= batch * 3 and not (out / "default.jsonl").exists()

    # Run 2: same arguments. The finished batches are kept; only the other rows go through the LLM.
    proc2 = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc2.returncode == 0, proc2.stdout[-2000:] + proc2.stderr[-3000:]
    log2 = proc2.stdout + proc2.stderr
    assert f"resuming: {len(finished)} of {n_rows} rows already done" in proc2.stderr
    redone = len(set(SYNTH_BATCH_LINE.findall(log2)))
    assert redone * batch == n_rows - len(finished)  # no finished batch generated twice, no row skipped
    rows = jsonl(out / "default.jsonl")
    expected = [str(r["id"]) for r in jsonl(ed_valid_path)[:n_rows]]
    assert [str(r["seed_id"]) for r in rows] == expected  # every seed once, in input order
    assert all(ROW_KEY not in r for r in rows)
    for position, generation in finished.items():
        assert rows[position]["generation"] == generation
    summary = json.loads((out / "summary.json").read_text())
    assert summary["generations"] == n_rows == summary["dialogues"] + summary["rejected"]
