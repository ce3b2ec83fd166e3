"""Nothing lost, nothing leaked: manifest-based reuse, bad inputs caught early, secrets kept out of files."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
from pathlib import Path

import pytest
from conftest import jsonl

REPO = Path(__file__).resolve().parents[1]


def load_script(rel: str):
    path = REPO / rel
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _examples(n: int) -> list[dict]:
    return [
        {"id": str(i), "emotion": "", "messages": [{"role": "user", "content": f"c{i}"},
                                                   {"role": "assistant", "content": f"r{i}"}]}
        for i in range(n)
    ]  # fmt: skip


def test_quality_reuses_scores_only_when_the_manifest_matches(tmp_path, tiny_model_dir, monkeypatch):
    quality = load_script("scripts/synth_quality_select.py")
    calls = []

    def fake_scores(ds, args):
        calls.append(len(ds))
        return [f"reply {i}" for i in ds["id"]], [float(10 * int(i)) for i in ds["id"]]

    monkeypatch.setattr(quality, "score_rows", fake_scores)
    examples = tmp_path / "examples.jsonl"
    examples.write_text("".join(json.dumps(r) + "\n" for r in _examples(6)))
    out = tmp_path / "q"
    base = ["--dataset", str(examples), "--discriminator", str(tiny_model_dir), "--embedder", str(tiny_model_dir),
            "--output-dir", str(out)]  # fmt: skip

    first = quality.main([*base, "--threshold", "30"])
    assert calls == [6] and (first["kept"], first["dropped"]) == (3, 3)
    assert (out / "manifest.yaml").exists()
    second = quality.main([*base, "--threshold", "45"])  # another threshold: scores reused
    assert calls == [6] and (second["kept"], second["dropped"]) == (1, 5)
    os.utime(examples)  # a newer file time alone is no reason to rescore...
    quality.main([*base, "--threshold", "45"])
    assert calls == [6]
    quality.main([*base, "--threshold", "45", "--max-new-tokens", "8"])  # ...but another scoring argument is
    assert calls == [6, 6]
    examples.write_text("".join(json.dumps(r) + "\n" for r in _examples(8)))  # new examples: rescored
    third = quality.main([*base, "--threshold", "45", "--max-new-tokens", "8"])
    assert calls == [6, 6, 8] and third["rows"] == 8
    scored = out / "scored.jsonl"
    scored.write_text(scored.read_text()[:50])  # a damaged scored.jsonl is never reused
    quality.main([*base, "--threshold", "45", "--max-new-tokens", "8"])
    assert calls == [6, 6, 8, 8]
    assert len(jsonl(scored)) == 8
    assert sorted(p.name for p in out.iterdir()) == [
        "dropped.jsonl", "manifest.yaml", "scored.jsonl", "selected.jsonl", "summary.json"
    ]  # fmt: skip


def test_select_replaces_its_folder_as_a_whole(tmp_path, ed_valid_path, monkeypatch):
    from datasets import load_from_disk

    from empathy_recipes.outputs import read_manifest

    select = load_script("scripts/select_sets.py")
    out = tmp_path / "select"
    select.main(["--dataset", str(ed_valid_path), "--output-dir", str(out), "--threshold", "5"])
    before = json.loads((out / "stats.json").read_text())
    manifest = read_manifest(out / "manifest.yaml")
    assert manifest["counts"]["rows_in"] == sum(manifest["counts"]["rows_out"].values()) == before["rows"]

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # a run stopped after the sets were written, before stats.json

    monkeypatch.setattr(select, "plot_histogram", killed)
    with pytest.raises(KeyboardInterrupt):
        select.main(["--dataset", str(ed_valid_path), "--output-dir", str(out), "--threshold", "3"])
    assert json.loads((out / "stats.json").read_text()) == before
    assert {n: len(load_from_disk(str(out / n))) for n in before["counts"]} == before["counts"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["select"]  # no temporary left behind
    monkeypatch.undo()
    select.main(["--dataset", str(ed_valid_path), "--output-dir", str(out), "--threshold", "3"])
    after = json.loads((out / "stats.json").read_text())
    assert after["threshold"] == 3
    assert {n: len(load_from_disk(str(out / n))) for n in after["counts"]} == after["counts"]


def test_select_refuses_a_folder_with_foreign_files(tmp_path, ed_valid_path, capsys):
    select = load_script("scripts/select_sets.py")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as exc:
        select.main(["--dataset", str(ed_valid_path), "--output-dir", str(tmp_path)])
    assert exc.value.code == 2 and "did not write (notes.txt)" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def _session_members(sid: int) -> list[int]:
    """Live (not zombie) processes whose session id is ``sid``, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        state, session = fields[0], int(fields[3])
        if session == sid and state != "Z":
            members.append(int(entry.name))
    return members


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                out.append(int(entry.name))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_sigkill_of_a_judge_leaves_no_worker_running(tmp_path, tiny_model_dir, ed_valid_path):
    import signal
    import subprocess
    import sys
    import time

    cmd = [sys.executable, str(REPO / "distilabel_pipelines" / "judge_sensibility_rationality.py"),
           "--dataset", str(ed_valid_path), "--model", str(tiny_model_dir), "--batch-size", "1",
           "--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while len(_children(proc.pid)) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # wait for distilabel's manager and pool workers
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert len(_children(proc.pid)) >= 2, "the pipeline never started its workers"
        time.sleep(2)  # let the workers load the model
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        survivors = _session_members(proc.pid)
        deadline = time.monotonic() + 20
        while survivors and time.monotonic() < deadline:
            time.sleep(0.2)
            survivors = _session_members(proc.pid)
        assert survivors == [], f"processes left running after SIGKILL of the stage: {survivors}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def test_a_damaged_resume_batch_is_skipped_with_a_warning_and_redone(tmp_path, caplog):
    from empathy_recipes.resume import ResumeStore, heal_pipeline_cache

    store = ResumeStore(tmp_path, "judge", "key")
    good = {"data": [[{"id": "1", "rationality": 5}, {"id": "2", "rationality": 6}]]}
    (store.dir / "a-1-batch_0.json").write_text(json.dumps(good))
    (store.dir / "a-2-batch_1.json").write_text(json.dumps({"data": [[{"id": "3", "rationality": 7}]]})[:25])
    with caplog.at_level("WARNING"):
        assert store.done_ids() == {"1", "2"}  # the truncated batch's row 3 is not done: it will be judged again
    assert "damaged cache batch" in caplog.text
    assert (store.dir / "a-2-batch_1.json.damaged").exists() and not (store.dir / "a-2-batch_1.json").exists()

    execution = tmp_path / "judge" / "sig" / "executions" / "e1"
    (execution / "steps_data" / "judge_0").mkdir(parents=True)
    (execution / "batch_manager.json").write_text("{}")
    (execution / "steps_data" / "judge_0" / "batch_0.json").write_text('{"data": [[{"id"')
    healthy = tmp_path / "judge" / "sig" / "executions" / "e2"
    healthy.mkdir(parents=True)
    (healthy / "batch_manager.json").write_text("{}")
    assert heal_pipeline_cache(tmp_path, "judge") == 1
    assert not execution.exists() and healthy.exists()


HF_SECRET = "hf_reliabilityTestTokenAbCdEf0123456789"
SK_SECRET = "sk-reliabilityTestKey0123456789abcdef"


def _files_holding(root: Path, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.mark.slow
def test_a_hub_token_on_the_sft_command_line_lands_in_no_file(tmp_path, tiny_model_dir, ed_valid_path):
    import subprocess
    import sys

    out = tmp_path / "sft"
    cmd = [sys.executable, str(REPO / "scripts" / "sft.py"), "--model_name_or_path", str(tiny_model_dir),
           "--dataset_name", str(ed_valid_path), "--dataset_limit", "8", "--output_dir", str(out),
           "--per_device_train_batch_size", "4", "--max_length", "128", "--report_to", "none", "--use_cpu",
           "--bf16", "false", "--max_steps", "1", "--save_strategy", "steps", "--save_steps", "1",
           "--gradient_checkpointing", "false", "--dataloader_num_workers", "0", "--disable_tqdm", "true",
           "--hub_token", HF_SECRET]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    card = (out / "README.md").read_text()
    assert "--hub_token '***'" in card or "--hub_token ***" in card
    assert list(out.rglob("training_args.bin"))  # the pickled arguments exist, without the token
    assert _files_holding(out, HF_SECRET) == []
    assert HF_SECRET not in done.stdout + done.stderr


def test_distilabel_serialisation_and_our_outputs_keep_api_keys_out(tmp_path):
    from distilabel.models.llms import OpenAILLM

    from empathy_recipes import outputs

    llm = OpenAILLM(model="m", base_url="http://127.0.0.1:9/v1", api_key=SK_SECRET)
    assert SK_SECRET not in json.dumps(llm.dump(), default=str)  # distilabel excludes api_key from pipeline.yaml
    args = {"model": "m", "api_key": SK_SECRET, "note": f"Bearer {SK_SECRET}", "hub_token": HF_SECRET}
    outputs.write_manifest(tmp_path / "o.jsonl", "s", {}, args)
    assert _files_holding(tmp_path, SK_SECRET) == [] and _files_holding(tmp_path, HF_SECRET) == []
