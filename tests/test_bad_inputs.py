"""Every make target, given a bad input, stops with one ``error:`` line and exit 2 before any model loads.

A table of (target, make variables, what the error line must say). The time bound (5 s) is a correctness bound:
a check that waits for a model or a data pass to fail is a check in the wrong place. It is measured as the CPU time
of the make run and its children (user + system), which, unlike wall time, does not grow when other jobs share
the machine's cores.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import stage_env

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # 25 make runs, each a fresh Python
BOUND_S = 5.0


@pytest.fixture(scope="module")
def bad(tmp_path_factory, ed_valid_path, ed_test_path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    rows = [json.loads(line) for line in ed_valid_path.read_text().splitlines()[:4]]
    mixed = [dict(r) for r in rows]
    mixed[0]["id"], mixed[1]["id"], mixed[2]["id"] = "a", 7, 8.5
    (root / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mixed))
    lines = [json.dumps(r) for r in rows]
    lines[1] = lines[1][:40]
    (root / "malformed.jsonl").write_text("\n".join(lines) + "\n")
    (root / "header.csv").write_text("context,response\n")
    (root / "badmodel").mkdir()
    (root / "badmodel" / "config.json").write_text('{"model_type": ')
    tests = [json.loads(line) for line in ed_test_path.read_text().splitlines()[:6]]
    preds = [{"id": str(r["id"]), "context": r["context"], "prediction": "ok", "model": "m"} for r in tests]
    (root / "preds_a.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    (root / "preds_b.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds[:4] + preds[:1]))
    (root / "synth" / "generated").mkdir(parents=True)
    shutil.copy(ed_valid_path, root / "synth" / "generated" / "examples.jsonl")
    return {p.name: p for p in root.iterdir()}


def cases(bad: dict[str, Path]) -> list[tuple[str, list[str], str]]:
    b = {k: str(v) for k, v in bad.items()}
    out = str(bad["synth"].parent / "out")
    unknown = "nobody/no-such-model"
    return [
        ("select", ["THRESHOLD=abc", f"OUTPUT_DIR={out}/s"], "argument --threshold: invalid float value: 'abc'"),
        ("select", ["THRESHOLD=11", f"OUTPUT_DIR={out}/s"], "--threshold must be within 0..10"),
        ("select", [f"DATASET={b['malformed.jsonl']}", f"OUTPUT_DIR={out}/s"], "malformed.jsonl, line 2:"),
        ("select", [f"DATASET={b['header.csv']}", f"OUTPUT_DIR={out}/s"], "has a header but no data rows"),
        ("select", [f"DATASET={b['mixed.jsonl']}", f"OUTPUT_DIR={out}/s"], "row 2: id 8.5 is neither"),
        ("judge", [f"MODEL={unknown}", f"OUTPUT_DIR={out}/j"], "offline (HF_HUB_OFFLINE=1) and not in the local"),
        ("judge", [f"MODEL={b['badmodel']}", f"OUTPUT_DIR={out}/j"], "config.json is unreadable"),
        ("judge", [f"DATASET={b['malformed.jsonl']}", f"OUTPUT_DIR={out}/j"], "malformed.jsonl, line 2:"),
        ("synth", [f"SYNTH_MODEL={unknown}", f"SYNTH_OUT={out}/y"], "offline (HF_HUB_OFFLINE=1)"),
        ("synth", [f"SYNTH_DATASET={b['header.csv']}", f"SYNTH_OUT={out}/y"], "has a header but no data rows"),
        ("synth-select", ["RATIO=1.5", f"SYNTH_OUT={b['synth']}"], "--ratio must be in (0, 1], not 1.5"),
        ("synth-select", ["T=150", f"SYNTH_OUT={b['synth']}"], "--threshold is a cosine x100"),
        ("synth-select", [f"DISCRIMINATOR={unknown}", f"SYNTH_OUT={b['synth']}"], "offline (HF_HUB_OFFLINE=1)"),
        ("synth-select", [f"EMBEDDER={b['badmodel']}", f"SYNTH_OUT={b['synth']}"], "config.json is unreadable"),
        ("synth-judge", [f"JUDGE_DATA={b['malformed.jsonl']}", f"SYNTH_OUT={out}/y"], "malformed.jsonl, line 2:"),
        ("synth-study", [f"ED_EVAL={out}/missing.jsonl", f"SYNTH_OUT={b['synth']}"], "--ed: no such file"),
        ("synth-study", ["THRESHOLDS=0,abc", f"SYNTH_OUT={b['synth']}"], "comma-separated numbers"),
        ("synth-mix", [f"ED_TRAIN={out}/missing.jsonl", f"SYNTH_OUT={b['synth']}"], "no such file"),
        ("generate", [f"MODEL={unknown}", f"OUTPUT={out}/p.jsonl"], "offline (HF_HUB_OFFLINE=1)"),
        ("generate", [f"DATASET={b['mixed.jsonl']}", f"OUTPUT={out}/p.jsonl"], "row 2: id 8.5"),
        ("eval-metrics", [f"PREDICTIONS={b['malformed.jsonl']}", f"OUTPUT={out}/m.json"], "line 2:"),
        ("eval-judge", [f"PREDICTIONS={b['preds_a.jsonl']}", f"MODEL={unknown}"], "offline (HF_HUB_OFFLINE=1)"),
        (
            "eval-winrate",
            [f"PREDICTIONS_A={b['preds_a.jsonl']}", f"PREDICTIONS_B={b['preds_b.jsonl']}", f"OUTPUT_DIR={out}/w"],
            "do not pair up by id: 2 id(s) only in A",
        ),  # fmt: skip
        (
            "eval-human-export",
            [f"PREDICTIONS_A={b['preds_a.jsonl']}", f"PREDICTIONS_B={b['preds_b.jsonl']}", f"OUTPUT_DIR={out}/h"],
            "1 id(s) repeated in B",
        ),  # fmt: skip
        ("moe", [f"EXPERTS={b['badmodel']} {b['badmodel']}", f"OUTPUT_DIR={out}/moe"], "config.json is unreadable"),
    ]


def test_every_make_target_refuses_bad_input_in_one_line_fast(bad):
    env = stage_env()  # without the outer `make test ARGS=...`'s variables
    failures = []
    for target, variables, expected in cases(bad):
        before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
        done = subprocess.run(
            ["make", "--no-print-directory", target, *variables], cwd=REPO, env=env, capture_output=True, text=True
        )
        after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic() - start
        seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        lines = done.stderr.strip().splitlines()
        errors = [line for line in lines if line.startswith("error:")]
        problems = []
        if done.returncode == 0 or not lines or not lines[-1].endswith("Error 2"):
            problems.append(f"exit: {lines[-1] if lines else done.returncode}")
        if len(errors) != 1 or expected not in errors[0]:
            problems.append(f"error lines {errors}")
        if "Traceback" in done.stderr or "usage:" in done.stderr:
            problems.append("a traceback or usage block")
        if seconds >= BOUND_S:
            problems.append(f"{seconds:.1f} s of CPU ({wall:.1f} s wall)")
        if problems:
            failures.append(f"make {target} {' '.join(variables)}: {'; '.join(problems)}")
    assert failures == [], "\n".join(failures)
