"""The selected synthetic data travels: quality, diversity and the mix push the kept examples with a card to a Hub
that lives in a folder (nothing reaches the network); quality selection refuses rows that are not synthetic
examples; the demo's funnel counts come from the steps' own outputs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from empathy_recipes.data import load_ed

REPO = Path(__file__).resolve().parents[1]


def load_script(rel: str):
    spec = importlib.util.spec_from_file_location(Path(rel).stem, REPO / rel)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _examples(n: int) -> list[dict]:
    return [
        {
            "id": f"s{i}_g0_r2", "emotion": "sad", "dialogue_id": f"s{i}_g0", "seed_id": f"s{i}",
            "source": "synthetic", "generator": "models/SmolLM2-135M-Instruct", "n_rounds": 2,
            "messages": [{"role": "user", "content": f"My dog {i} ran away."},
                         {"role": "assistant", "content": "That is scary."},
                         {"role": "user", "content": f"I searched for {i} hours."},
                         {"role": "assistant", "content": f"You must be exhausted after {i} hours."}],
            "quality_score": float(40 + 5 * i),
        }
        for i in range(n)
    ]  # fmt: skip


def _write(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_selection_and_mix_push_the_kept_examples_with_a_card(tmp_path, local_hub, minilm_dir, ed_valid_path):
    out = tmp_path / "synth"
    quality = load_script("scripts/synth_quality_select.py")
    diversity = load_script("scripts/synth_diversity_select.py")
    mix = load_script("scripts/synth_build_mix.py")
    scored = _write(_examples(8), out / "generated" / "examples.jsonl")  # already scored: no model loads
    q = quality.main(["--dataset", str(scored), "--threshold", "60", "--output-dir", str(out / "quality"),
                      "--hub-repo", "org/quality"])  # fmt: skip
    assert (q["kept"], q["dropped"]) == (4, 4)  # scores 60, 65, 70, 75
    d = diversity.main(["--dataset", str(out / "quality" / "selected.jsonl"), "--ratio", "0.5", "--embedder",
                        str(minilm_dir), "--output-dir", str(out / "diversity"), "--hub-repo", "org/diverse",
                        "--private"])  # fmt: skip
    assert d["kept"] == 2
    m = mix.main(["--synthetic", str(out / "diversity" / "selected.jsonl"), "--ed", str(ed_valid_path),
                  "--ed-limit", "3", "--output", str(out / "mix"), "--hub-repo", "org/mix"])  # fmt: skip
    assert len(m) == 5

    repo = local_hub / "datasets" / "org" / "diverse"
    kept = load_ed(repo, config="selected")
    assert sorted(kept["id"]) == sorted(r["id"] for r in load_ed(out / "diversity" / "selected.jsonl"))
    assert len(load_ed(repo, config="dropped")) == 2
    assert (repo / ".private").read_text() == "True"
    card = (repo / "README.md").read_text()
    for text in ("cc-by-nc-4.0", "CC BY-NC 4.0", "models/SmolLM2-135M-Instruct", "quality_threshold", "`60.0`",
                 "diversity_ratio", "`0.5`", "| `selected` | `train` | 2 |"):  # fmt: skip
        assert text in card, text
    assert len(load_ed(local_hub / "datasets" / "org" / "quality", config="selected")) == 4
    mix_repo = local_hub / "datasets" / "org" / "mix"
    assert sorted(load_ed(mix_repo)["source"]) == ["ed"] * 3 + ["synthetic"] * 2
    assert "quality_threshold" in (mix_repo / "README.md").read_text()


@pytest.mark.parametrize(
    ("row", "message"),
    [({"seed_id": "7", "generation": '{"rounds": []}', "model_name": "m"}, "raw generations"),
     ({"source": "ed"}, "source is ed")],
)  # fmt: skip
def test_quality_refuses_rows_that_are_not_synthetic_examples(tmp_path, capsys, row, message):
    quality = load_script("scripts/synth_quality_select.py")
    seed = {"id": "7", "emotion": "sad", "messages": [{"role": "user", "content": "I lost my job."},
                                                        {"role": "assistant", "content": "I'm sorry."}]}  # fmt: skip
    data = _write([{**seed, **row}], tmp_path / "rows.jsonl")
    with pytest.raises(SystemExit) as exc:
        quality.main(["--dataset", str(data), "--output-dir", str(tmp_path / "q")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith(("error", "Traceback"))]
    assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("error:") and message in err[0]
    assert not (tmp_path / "q" / "selected.jsonl").exists()


def test_bad_selection_input_is_one_error_line(tmp_path, capsys):
    quality = load_script("scripts/synth_quality_select.py")
    empty = _write([], tmp_path / "empty.jsonl")
    for argv in (["--dataset", str(empty)], ["--dataset", str(empty), "--threshold", "-1"]):
        with pytest.raises(SystemExit) as exc:
            quality.main([*argv, "--output-dir", str(tmp_path / "q")])
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith(("error", "Traceback"))]
        assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("error:")


def test_demo_funnel_counts_come_from_the_steps_outputs(tmp_path):
    funnel_script, report = load_script("scripts/synth_funnel.py"), load_script("scripts/demo_report.py")
    synth = tmp_path / "synth"
    _write([{"seed_id": s} for s in ("1", "1", "2", "2")], synth / "generated" / "default.jsonl")
    (synth / "generated" / "summary.json").write_text(
        json.dumps({"generations": 4, "dialogues": 4, "rejected": 0, "examples": 12, "rejected_reasons": {}})
    )
    rows = _examples(12)
    _write([{**r, "quality_keep": r["quality_score"] >= 60} for r in rows], synth / "quality" / "scored.jsonl")
    (synth / "quality" / "summary.json").write_text(json.dumps({"threshold": 60, "kept": 8, "mean_score": 67.5}))
    (synth / "diversity" / "summary.json").parent.mkdir(parents=True)
    (synth / "diversity" / "summary.json").write_text(json.dumps({"ratio": 0.9, "kept": 7}))
    _write(rows[:7], synth / "diversity" / "selected.jsonl")
    judged = [{**r, "naturalness_weighted": 2.5, "coherence_weighted": 2.0, "empathy_weighted": 1.5} for r in rows]
    _write(judged, synth / "judged" / "default.jsonl")
    _write([{"id": "e", "naturalness": 3, "coherence": 3, "empathy": 3}], synth / "judged_ed" / "default.jsonl")
    assert "not written" in report.synth_section(tmp_path)  # no funnel yet: the report says so
    funnel = funnel_script.main(["--synth-dir", str(synth)])
    assert json.loads((synth / "summary.json").read_text()) == funnel == funnel_script.funnel_counts(synth)
    expected = {"seeds": 2, "generations": 4, "dialogues": 4, "examples": 12, "quality_kept": 8, "diversity_kept": 7}
    assert {k: funnel[k] for k in expected} == expected and funnel["mix_rows"] == 0  # no mix was built
    section = report.synth_section(tmp_path)
    assert "| quality kept | 8 |" in section and "| ED (human) | 1 | 3.000 |" in section
    assert (synth / "funnel.png").exists() and (synth / "quality_histogram.png").exists()
    # a demo threshold below the paper's: the report and the histogram show both and what T = 60 would keep
    (synth / "quality" / "summary.json").write_text(json.dumps({"threshold": 30, "kept": 8, "mean_score": 67.5}))
    kept_at_60 = sum(r["quality_score"] >= 60 for r in rows)
    assert f"the paper's T = 60 would keep {kept_at_60} of 12" in report.synth_section(tmp_path)


def test_synthesis_bad_input_is_one_error_line_before_any_model_loads(tmp_path, capsys):
    synth = load_script("distilabel_pipelines/synthesize_dialogues.py")
    empty = _write([], tmp_path / "empty.jsonl")
    cases = [
        (["--dataset", str(empty)], "empty"),
        (["--max-rounds", "2"], "--max-rounds"),
        (["--response-prefix", "Round 1:"], "--output-format text"),
        (["--max-context-words", "0"], "--max-context-words"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exc:
            synth.main([*argv, "--output-dir", str(tmp_path / "out")])
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith(("error", "Traceback"))]
        assert exc.value.code == 2 and len(err) == 1 and message in err[0], (argv, err)
    assert not (tmp_path / "out" / "summary.json").exists()
