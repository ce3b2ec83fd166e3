"""Every stage script: bad input is exactly one ``error: ...`` line on stderr (its last line, no traceback; library
warnings may come before it) and exit code 2, before any model weights are read.

Each case runs the script through the ``run_without_weights`` fixture (conftest.py): reading model weights is
fatal there (exit 97 and a marker file). The model arguments point at real models (the tiny Llama, MiniLM), so a
script that validated its input only after loading them would exit 97, not 2. A control case (valid input) shows
the guard fires.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MINILM = REPO / "models" / "all-MiniLM-L6-v2"


@pytest.fixture
def files(tmp_path, tiny_model_dir, ed_valid_path, ed_test_path) -> dict[str, str]:
    """Inputs a case refers to by name: a JSONL with no usable column, real models, real ED data."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"foo": 1, "bar": "x"}) + "\n" + json.dumps({"foo": 2, "bar": "y"}) + "\n")
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("foo,bar\n1,2\n")
    (tmp_path / "empty.json").write_text("{}")
    return {
        "BAD": str(bad),
        "SHEET": str(sheet),
        "EMPTY_JSON": str(tmp_path / "empty.json"),
        "TINY": str(tiny_model_dir),
        "MINILM": str(MINILM),
        "ED": str(ed_valid_path),
        "ED_TEST": str(ed_test_path),
        "OUT": str(tmp_path / "out"),
    }


# (stage, script, argv with placeholders): each with a model argument where the script takes one
CASES = [
    ("judge", "distilabel_pipelines/judge_sensibility_rationality.py",
     "--dataset BAD --model TINY --output-dir OUT"),
    ("select", "scripts/select_sets.py", "--dataset BAD --output-dir OUT"),
    ("sft", "scripts/sft.py",
     "--model_name_or_path TINY --dataset_name BAD --output_dir OUT --use_cpu --report_to none"),
    ("synth", "distilabel_pipelines/synthesize_dialogues.py", "--dataset BAD --model TINY --output-dir OUT"),
    ("synth-select quality", "scripts/synth_quality_select.py",
     "--dataset BAD --discriminator TINY --embedder MINILM --output-dir OUT"),
    ("synth-select diversity", "scripts/synth_diversity_select.py", "--dataset BAD --embedder MINILM --output-dir OUT"),
    ("synth-judge", "distilabel_pipelines/judge_dialogue_quality.py", "--dataset BAD --model TINY --output-dir OUT"),
    ("synth-study", "scripts/synth_study.py",
     "--examples BAD --ed ED --discriminator TINY --embedder MINILM --judge-model TINY --output-dir OUT"),
    ("synth-mix", "scripts/synth_build_mix.py", "--synthetic BAD --ed ED --output OUT"),
    ("judge-agreement", "scripts/judge_agreement.py", "--dataset BAD"),
    ("generate", "evaluation/generate.py", "--model TINY --dataset BAD --output OUT/p.jsonl"),
    ("eval-metrics", "evaluation/compute_metrics.py", "--predictions BAD --output OUT/m.json"),
    ("report", "evaluation/report.py", "--metrics EMPTY_JSON --output-dir OUT"),
    ("eval-judge", "distilabel_pipelines/judge_predictions.py", "--predictions BAD --model TINY --output-dir OUT"),
    ("win rate", "distilabel_pipelines/pairwise_win_rate.py",
     "--predictions-a BAD --predictions-b BAD --model TINY --output-dir OUT"),
    ("human eval export", "evaluation/human_eval.py", "export --predictions-a BAD --predictions-b BAD --output-dir OUT"),
    ("human eval score", "evaluation/human_eval.py", "score --sheets SHEET --output OUT/r.json"),
    ("build_moe", "scripts/build_moe.py", "--experts TINY TINY --prompt-sets BAD BAD --output-dir OUT"),
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("stage, script, argv", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line_exit_2_before_any_weights(stage, script, argv, files, run_without_weights):
    args = [files.get(a, a) for a in argv.split()]
    proc, mark = run_without_weights([str(REPO / script), *args])
    assert not mark.exists(), f"{stage} read model weights before rejecting bad input: {mark.read_text()}"
    assert proc.returncode == 2, proc.stderr[-2000:]
    # exactly one error line, and it is the last thing written (library warnings and progress bars may come before)
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error")]
    assert len(errors) == 1 and lines[-1] == errors[0] and errors[0].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow
def test_the_guard_catches_a_model_load(files, run_without_weights, tmp_path):
    """Control: valid input reaches the model, and the guard stops it (so the cases above can fail)."""
    out = tmp_path / "p.jsonl"
    argv = ["--model", files["TINY"], "--dataset", files["ED_TEST"], "--output", str(out), "--limit", "1"]
    proc, mark = run_without_weights([str(REPO / "evaluation" / "generate.py"), *argv])
    assert proc.returncode == 97 and "model.safetensors" in mark.read_text(), proc.stderr[-2000:]
    assert not out.exists()
