"""Atomic writes, folder swaps, fingerprints, manifests and row accounting."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from datasets import Dataset

from empathy_recipes import outputs
from empathy_recipes.errors import EmpathyRecipesError


def test_atomic_file_keeps_the_old_content_when_the_writer_fails(tmp_path):
    target = tmp_path / "out.jsonl"
    outputs.write_text(target, "old\n")
    with pytest.raises(RuntimeError), outputs.atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_a_killed_writer_leaves_the_old_output_and_its_temporary_is_cleaned_later(tmp_path):
    target = tmp_path / "scored.jsonl"
    outputs.write_text(target, "old\n")
    code = textwrap.dedent(
        f"""
        import os, signal
        from empathy_recipes.outputs import atomic_file
        with atomic_file({str(target)!r}) as tmp:
            tmp.write_text("partial")
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ})
    assert proc.returncode == -9
    assert target.read_text() == "old\n"
    assert len(list(tmp_path.glob(".scored.jsonl.tmp-*"))) == 1
    outputs.write_text(target, "new\n")
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scored.jsonl"]


def test_write_jsonl_and_json(tmp_path):
    assert outputs.write_jsonl(tmp_path / "a.jsonl", [{"id": "1"}, {"id": "é"}]) == 2
    assert [json.loads(x) for x in (tmp_path / "a.jsonl").read_text(encoding="utf-8").splitlines()] == [
        {"id": "1"},
        {"id": "é"},
    ]
    outputs.write_json(tmp_path / "b.json", {"x": 1})
    assert json.loads((tmp_path / "b.json").read_text()) == {"x": 1}


def test_atomic_dir_swaps_the_whole_folder(tmp_path):
    target = tmp_path / "select"
    with outputs.atomic_dir(target) as tmp:
        (tmp / "a").mkdir()
        (tmp / "stats.json").write_text("1")
    with pytest.raises(RuntimeError), outputs.atomic_dir(target) as tmp:
        (tmp / "stats.json").write_text("2")
        raise RuntimeError
    assert (target / "stats.json").read_text() == "1" and (target / "a").is_dir()
    with outputs.atomic_dir(target, owned={"a", "b", "stats.json"}) as tmp:
        (tmp / "b").mkdir()
        (tmp / "stats.json").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["b", "stats.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["select"]


def test_atomic_dir_refuses_a_folder_holding_foreign_files(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(EmpathyRecipesError, match="did not write"), outputs.atomic_dir(tmp_path, owned={"a"}):
        pass
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_save_dataset_file_and_folder(tmp_path):
    ds = Dataset.from_dict({"id": ["1", "2"]})
    outputs.save_dataset(ds, tmp_path / "x.jsonl")
    assert len((tmp_path / "x.jsonl").read_text().splitlines()) == 2
    outputs.save_dataset(ds, tmp_path / "d")
    outputs.save_dataset(ds.select([0]), tmp_path / "d")
    assert Dataset.load_from_disk(str(tmp_path / "d"))["id"] == ["1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "x.jsonl"]


def test_fingerprint_follows_content_not_time(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_text("x\n")
    fp = outputs.fingerprint(a)
    os.utime(a, (1, 1))
    assert outputs._comparable(outputs.fingerprint(a)) == outputs._comparable(fp)
    a.write_text("y\n")
    assert outputs.fingerprint(a)["sha256"] != fp["sha256"]
    d = tmp_path / "d"
    d.mkdir()
    (d / "f").write_text("1")
    before = outputs.fingerprint(d)
    (d / "f").write_text("2")
    assert outputs.fingerprint(d)["sha256"] != before["sha256"]
    assert outputs.fingerprint("org/model") == {"path": "org/model", "kind": "ref"}


def test_manifest_matches_only_same_inputs_args_and_untouched_outputs(tmp_path):
    src = tmp_path / "examples.jsonl"
    src.write_text('{"id": 1}\n')
    out = tmp_path / "scored.jsonl"
    out.write_text("scored\n")
    args = {"threshold": 60, "hub_token": "hf_abcdefghijklmnop"}
    outputs.write_manifest(out, "quality", {"dataset": src}, args, counts={"rows": 1}, outputs={"scored": out})
    manifest = outputs.read_manifest(out)
    assert manifest["args"]["hub_token"] == "***"
    assert "hf_abcdefghijklmnop" not in (tmp_path / "scored.jsonl.manifest.yaml").read_text()
    assert outputs.manifest_matches(out, "quality", {"dataset": src}, args) == (True, "")
    ok, why = outputs.manifest_matches(out, "quality", {"dataset": src}, {**args, "threshold": 50})
    assert not ok and "threshold" in why
    assert outputs.manifest_matches(out, "quality", {"dataset": src}, {**args, "threshold": 50}, ["threshold"])[0]
    assert not outputs.manifest_matches(out, "other", {"dataset": src}, args)[0]
    os.utime(src, (2, 2))  # a newer file time alone changes nothing
    assert outputs.manifest_matches(out, "quality", {"dataset": src}, args)[0]
    src.write_text('{"id": 2}\n')
    assert outputs.manifest_matches(out, "quality", {"dataset": src}, args) == (False, "input dataset changed")
    src.write_text('{"id": 1}\n')
    out.write_text("scor")  # truncated after the fact
    assert outputs.manifest_matches(out, "quality", {"dataset": src}, args)[1].startswith("output scored")


def test_manifest_path_and_missing_manifest(tmp_path):
    assert outputs.manifest_path(tmp_path) == tmp_path / "manifest.yaml"
    assert outputs.manifest_path(tmp_path / "p.jsonl") == tmp_path / "p.jsonl.manifest.yaml"
    assert outputs.read_manifest(tmp_path / "p.jsonl") is None
    assert outputs.manifest_matches(tmp_path / "p.jsonl", "s", {}, {}) == (False, "no manifest")


def test_check_rows(caplog):
    assert outputs.check_rows("select", 5, {"kept": 3, "dropped": 2}) == {
        "rows_in": 5,
        "rows_out": {"kept": 3, "dropped": 2},
    }
    with pytest.raises(RuntimeError, match="rows in 5 = 3 kept is false"):
        outputs.check_rows("select", 5, {"kept": 3})


def test_read_jsonl_reads_back_what_write_jsonl_wrote(tmp_path):
    from empathy_recipes.outputs import read_jsonl, write_jsonl

    rows = [{"id": "a", "text": "naïve"}, {"id": "b", "n": 2}]
    path = tmp_path / "rows.jsonl"
    assert write_jsonl(path, rows) == 2
    path.write_text(path.read_text(encoding="utf-8") + "\n  \n", encoding="utf-8")  # trailing blank lines
    assert read_jsonl(path) == rows
