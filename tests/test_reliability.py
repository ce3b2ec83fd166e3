"""Nothing lost, nothing leaked: manifest-based reuse, bad inputs caught early, secrets kept out of files."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_script(rel: str):
    path = REPO / rel
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


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
    assert len(read_jsonl(scored)) == 8
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
