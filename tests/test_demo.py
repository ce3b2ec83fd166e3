"""`make demo`'s stages, end to end, on the tiny random model (not SmolLM2), so the demo cannot rot unseen.

Every stage must leave its outputs, and rows must be conserved where a stage splits or selects.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import jsonl

pytestmark = pytest.mark.slow


STAGES = ("judge", "select", "experts", "moe", "synth", "evaluate")


@pytest.fixture(scope="module")
def killed_then_resumed(tmp_path_factory, tiny_model_dir, minilm_dir, repo_root):
    """Run the demo, SIGKILL its whole process group while the experts train (judge and select finished), then
    run it again with the same arguments to the end. Returns (output dir, stages finished at the kill, rerun)."""
    out = tmp_path_factory.mktemp("demo")
    cmd = [
        sys.executable, "scripts/demo.py", "--output-dir", str(out), "--base-model", str(tiny_model_dir),
        "--embedder", str(minilm_dir), "--judge-rows", "8", "--train-steps", "2", "--train-batch", "2",
        "--router-steps", "2", "--synth-rows", "2", "--synth-tokens", "24", "--test-rows", "6", "--reply-tokens", "8",
    ]  # fmt: skip
    experts_log = out / "logs" / "experts.log"
    with (out.parent / f"{out.name}-run1.log").open("w") as log:
        first = subprocess.Popen(cmd, cwd=repo_root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 900
        while time.time() < deadline and first.poll() is None:
            if experts_log.exists() and experts_log.stat().st_size > 0:
                break
            time.sleep(0.05)
        running = first.poll() is None
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert running, "the first demo run ended before it could be killed"
    finished = {stage for stage in STAGES if (out / stage / ".done").exists()}
    rerun = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=1500)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    return out, finished, rerun


@pytest.fixture(scope="module")
def demo_run(killed_then_resumed):
    out, _, proc = killed_then_resumed
    return out, proc


def test_killed_demo_resumes_skipping_finished_stages(killed_then_resumed):
    out, finished, rerun = killed_then_resumed
    assert finished == {"judge", "select"}  # killed mid-experts
    skipped = {stage for stage in STAGES if f" {stage}: done earlier" in rerun.stderr}  # the demo's log lines
    assert skipped == finished  # finished stages skipped, the killed one and the rest run
    for stage in STAGES:
        assert json.loads((out / stage / ".done").read_text())["seconds"] > 0


def test_every_stage_finished_and_timed(demo_run):
    out, proc = demo_run
    for stage in STAGES:
        assert json.loads((out / stage / ".done").read_text())["seconds"] > 0, stage
        assert f" {stage}: " in proc.stderr
    report = (out / "report.md").read_text()
    assert "not the papers' numbers" in report and "## 6. Evaluation on ED test" in report
    assert len(report.splitlines()) <= 250 and "<details>" in report  # long material collapsed or linked
    assert f"demo: open {out / 'report.md'}" in proc.stdout
    record = json.loads((out / "demo.json").read_text())  # every command of every stage, timed
    assert set(record["stages"]) == set(STAGES) and record["settings"]["test_rows"] == 6
    assert all(s.get("seconds", 0) > 0 or s.get("skipped") for v in record["stages"].values() for s in v["steps"])


def test_judge_and_select_conserve_rows(demo_run, ed_valid_path):
    out, _ = demo_run
    summary = json.loads((out / "judge" / "summary.json").read_text())
    assert summary["rows"] == 8 and summary["scored_both"] == 8  # probability scoring: every row gets both
    stats = json.loads((out / "select" / "stats.json").read_text())
    assert set(stats["counts"]) == {"sensibility", "rationality", "discard", "unscored"}
    assert sum(stats["counts"].values()) == len(ed_valid_path.read_text().splitlines())


def _weights(folder):
    from safetensors.torch import load_file

    tensors = {}
    for path in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(str(path)))
    assert tensors, f"no weights in {folder}"
    return tensors


def test_experts_moe_and_router(demo_run, tiny_model_dir):
    out, _ = demo_run
    base = _weights(tiny_model_dir)
    q = "model.layers.0.self_attn.q_proj.weight"
    for expert in ("sensibility", "rationality"):
        merged = out / "experts" / expert / "merged"
        assert json.loads((merged / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
        assert not (_weights(merged)[q].float() == base[q].float()).all()  # trained and merged
    config = json.loads((out / "moe" / "model" / "config.json").read_text())
    assert config["architectures"] == ["MixtralForCausalLM"] and config["num_local_experts"] == 2
    assert config["num_experts_per_tok"] == 2
    router_config = json.loads((out / "moe-router" / "config.json").read_text())
    assert router_config["architectures"] == ["MixtralForCausalLM"] and router_config["num_local_experts"] == 2
    # the routers per layer (mergekit writes block_sparse_moe.gate, transformers saves mlp.gate)
    gate = re.compile(r"layers\.(\d+)\.(?:block_sparse_moe|mlp)\.gate\.weight$")
    moe, router = (
        {int(m.group(1)): t for k, t in _weights(folder).items() if (m := gate.search(k))}
        for folder in (out / "moe" / "model", out / "moe-router")
    )
    assert len(moe) == config["num_hidden_layers"] and set(router) == set(moe)
    assert any(not (moe[i].float() == router[i].float()).all() for i in moe)  # the routers were trained


def test_synth_accounts_for_every_generation(demo_run):
    out, _ = demo_run
    summary = json.loads((out / "synth" / "generated" / "summary.json").read_text())
    assert summary["generations"] == 2 * 2  # --synth-rows 2 x 2 generations each
    assert summary["dialogues"] + summary["rejected"] == summary["generations"]
    assert len(jsonl(out / "synth" / "generated" / "rejected.jsonl")) == summary["rejected"]
    funnel = json.loads((out / "synth" / "summary.json").read_text())  # the funnel, from the steps' own outputs
    keys = {"seeds", "generations", "dialogues", "examples", "quality_kept", "diversity_kept", "mix_rows"}
    assert keys <= set(funnel) and funnel["seeds"] == 2 and funnel["generations"] == summary["generations"]
    assert funnel["diversity_kept"] <= funnel["quality_kept"] <= funnel["examples"]
    assert "| quality kept |" in (out / "report.md").read_text()


def test_evaluation_scored_every_model(demo_run):
    out, _ = demo_run
    for name in ("base", "sensibility-expert", "rationality-expert", "moe"):
        rows = jsonl(out / "evaluate" / "predictions" / f"{name}.jsonl")
        assert len(rows) == 6 and all("prediction" in r and "reference" in r for r in rows)
        metrics = json.loads((out / "evaluate" / "metrics" / f"{name}.json").read_text())
        assert {"bleu_1", "bleu_4", "dist_1", "dist_2", "rouge_l", "f1"} <= set(metrics)
    table = (out / "evaluate" / "report" / "metrics.md").read_text().splitlines()
    for name in ("base", "sensibility-expert", "rationality-expert", "moe"):  # one table row per model
        model = json.loads((out / "evaluate" / "metrics" / f"{name}.json").read_text())["model"]
        assert sum(line.startswith(f"| {model} | 6 |") for line in table) == 1, (model, table)


def test_rerun_skips_finished_stages(demo_run, tiny_model_dir, minilm_dir, repo_root):
    out, _ = demo_run
    cmd = [sys.executable, "scripts/demo.py", "--output-dir", str(out), "--base-model", str(tiny_model_dir),
           "--embedder", str(minilm_dir)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("done earlier") == 6


def test_every_stage_accounts_for_its_rows(demo_run):
    """rows in = sum of rows out, from every manifest the demo's stages wrote (issue 16 item 4)."""
    from empathy_recipes.outputs import read_manifest

    out, _ = demo_run
    counted = {}
    for path in sorted(out.rglob("*manifest.yaml")):
        counts = (read_manifest(path) or {}).get("counts") or {}
        if "rows_in" in counts:
            assert counts["rows_in"] == sum(counts["rows_out"].values()), (path, counts)
            counted[str(path.relative_to(out))] = counts
    expected = {"judge/manifest.yaml", "select/manifest.yaml", "synth/generated/synth.manifest.yaml"}
    expected |= {f"evaluate/{d}/{m}.{e}.manifest.yaml" for m in ("base", "sensibility-expert", "rationality-expert", "moe")
                 for d, e in (("predictions", "jsonl"), ("metrics", "json"))}  # fmt: skip
    for step in ("quality", "diversity"):  # skipped by the demo when the step before had no rows
        if (out / "synth" / step / "summary.json").exists():
            expected.add(f"synth/{step}/manifest.yaml")
    assert expected <= set(counted), sorted(expected - set(counted))
    assert counted["select/manifest.yaml"]["rows_in"] == sum(
        json.loads((out / "select" / "stats.json").read_text())["counts"].values()
    )
