"""LLM-judge evaluation: pairwise verdict arithmetic with position swapping, the prompt, and both pipelines end to
end on the tiny model (probability scoring, so every row gets a verdict)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset

from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.pairing import pair_by_id
from empathy_recipes.tasks.pairwise import (
    PairwiseJudge,
    combine_orders,
    pairwise_axes,
    pairwise_prompt,
    verdict_winner,
    win_rates,
)
from empathy_recipes.testing import load_script

judge_predictions = load_script(Path(__file__).resolve().parents[1] / "distilabel_pipelines" / "judge_predictions.py")
pairwise_win_rate = load_script(Path(__file__).resolve().parents[1] / "distilabel_pipelines" / "pairwise_win_rate.py")


def test_verdicts_map_to_models_through_the_order():
    assert [verdict_winner(v, "AB") for v in (1, 2, 0, None, 7)] == ["A", "B", "tie", None, None]
    assert [verdict_winner(v, "BA") for v in (1, 2, 0)] == ["B", "A", "tie"]
    with pytest.raises(ValueError):
        verdict_winner(1, "XY")


def test_a_win_needs_both_orders():
    assert combine_orders("A", "A") == "A" and combine_orders("B", "B") == "B"
    assert combine_orders("A", "B") == "tie"  # position bias: each order picked its first reply
    assert combine_orders("A", "tie") == "tie" and combine_orders("tie", "tie") == "tie"
    assert combine_orders(None, "A") is None


def test_combine_and_rates_hand_worked():
    # id1: AB says 1 (A), BA says 2 (A) -> A.  id2: AB 1 (A), BA 1 (B) -> tie, inconsistent.
    # id3: AB 2 (B), BA 1 (B) -> B.            id4: both 0 -> tie, consistent.   id5: AB unreadable -> set aside.
    verdicts = {"1": (1, 2), "2": (1, 1), "3": (2, 1), "4": (0, 0), "5": (None, 1)}
    rows = [{"id": i, "order": o, "empathy": v[k]} for i, v in verdicts.items() for k, o in enumerate(("AB", "BA"))]
    pairs, summary = pairwise_win_rate.combine(Dataset.from_list(rows), ["empathy"])
    assert [p["outcome"] for p in pairs] == ["A", "tie", "B", "tie", None]
    # 4 readable pairs: win 1/4, tie 2/4, loss 1/4; orders agree on ids 1, 3, 4 -> 3/4.
    assert summary["empathy"] == {
        "pairs": 4,
        "unreadable": 1,
        "win": 0.25,
        "tie": 0.5,
        "loss": 0.25,
        "position_consistency": 0.75,
    }
    assert win_rates([None])["win"] is None


def test_prompt_shows_context_both_replies_and_the_form():
    context = [{"role": "user", "content": "my cat died ."}]
    msgs = pairwise_prompt(context, "so sorry .", "cool !", ["empathy", "overall"], emotion="sad")
    user = msgs[-1]["content"]
    assert "Speaker: my cat died ." in user and "(the speaker feels sad)" in user
    assert user.index("Response 1:\nListener: so sorry .") < user.index("Response 2:\nListener: cool !")
    assert user.rstrip().endswith("Verdict (ONLY):\n- Empathy: <0, 1 or 2>\n- Overall: <0, 1 or 2>")
    assert pairwise_axes(["empathy"]).render({"empathy": 2}) == "Verdict (ONLY):\n- Empathy: 2"
    assert PairwiseJudge.axes_spec().low == 0 and PairwiseJudge.axes_spec().high == 2


def _write_predictions(path: Path, ed_test_path: Path, constant: str | None, model: str, n: int = 2) -> Path:
    rows = [json.loads(line) for line in ed_test_path.read_text().splitlines()][:n]
    with path.open("w") as f:
        for r in rows:
            pred = constant if constant is not None else r["reference"]
            row = {"id": str(r["id"]), "emotion": r["emotion"], "context": r["context"], "reference": r["reference"]}
            f.write(json.dumps({**row, "prediction": pred, "model": model}) + "\n")
    return path


def _run_pipeline(script: str, argv: list[str], out: Path) -> dict:
    """Run a pipeline script in a fresh process: distilabel forks its workers, and a fork of a process whose torch
    thread pool already ran (other tests in the same session) can deadlock."""
    path = Path(__file__).resolve().parents[1] / "distilabel_pipelines" / script
    done = subprocess.run([sys.executable, str(path), *argv], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def test_both_orders_swaps_the_replies(tmp_path, ed_test_path):
    a, _ = pairwise_win_rate._by_id(
        str(_write_predictions(tmp_path / "a.jsonl", ed_test_path, None, "A")), "prediction"
    )
    b, _ = pairwise_win_rate._by_id(
        str(_write_predictions(tmp_path / "b.jsonl", ed_test_path, "ok .", "B")), "prediction"
    )
    ds = pairwise_win_rate.both_orders(pair_by_id(a, b), "prediction")
    assert ds["order"] == ["AB", "BA", "AB", "BA"]
    assert (
        ds[0]["response_2"] == "ok ." and ds[1]["response_1"] == "ok ." and ds[0]["response_1"] == ds[1]["response_2"]
    )
    assert ds[0]["messages"][-1]["role"] == "user"
    with pytest.raises(EmpathyRecipesError, match="share no example id"):
        pair_by_id(a, [{"id": "x"}], "keep-aside")


@pytest.mark.slow
def test_pairwise_pipeline_end_to_end_on_tiny_model(tmp_path, ed_test_path, tiny_model_dir):
    a = _write_predictions(tmp_path / "a.jsonl", ed_test_path, None, "model-a")
    b = _write_predictions(tmp_path / "b.jsonl", ed_test_path, "ok .", "model-b")
    out = tmp_path / "winrate"
    argv = ["--predictions-a", str(a), "--predictions-b", str(b), "--model", str(tiny_model_dir)]
    argv += ["--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"), "--criteria", "empathy", "overall"]
    summary = _run_pipeline("pairwise_win_rate.py", argv, out)
    assert summary["model_a"] == "model-a" and set(summary["criteria"]) == {"empathy", "overall"}
    for rates in summary["criteria"].values():
        assert rates["pairs"] == 2 and rates["unreadable"] == 0
        assert rates["win"] + rates["tie"] + rates["loss"] == pytest.approx(1.0)
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 4 and all(p["winner_AB_order"] in ("A", "B", "tie") for p in pairs)
    judged = [json.loads(line) for line in (out / "default.jsonl").read_text().splitlines()]
    assert len(judged) == 4 and all(r["empathy"] in (0, 1, 2) for r in judged)


@pytest.mark.slow
def test_judge_predictions_end_to_end_on_tiny_model(tmp_path, ed_test_path, tiny_model_dir):
    preds = _write_predictions(tmp_path / "p.jsonl", ed_test_path, None, "model-a", n=3)
    out = tmp_path / "judged"
    argv = ["--predictions", str(preds), "--rubric", "quality", "--model", str(tiny_model_dir)]
    summary = _run_pipeline(
        "judge_predictions.py", argv + ["--output-dir", str(out), "--cache-dir", str(tmp_path / "cache")], out
    )
    assert summary["rated_model"] == "model-a" and summary["rows"] == 3 and summary["unscored_ids"] == []
    for axis in ("naturalness", "coherence", "empathy"):
        stats = summary["axes"][axis]
        assert stats["scored"] == 3 and 1 <= stats["mean"] <= 3 and 1 <= stats["mean_weighted"] <= 3
    rows = [json.loads(line) for line in (out / "default.jsonl").read_text().splitlines()]
    written = {r["id"]: r for r in map(json.loads, preds.read_text().splitlines())}
    for row in rows:  # the rated reply is the prediction, after the test context, in the chat schema
        source = written[str(row["id"])]
        assert row["messages"][-1] == {"role": "assistant", "content": source["prediction"]}
        assert [m["content"] for m in row["messages"][:-1]] == source["context"]
    assert json.loads((out / "summary.json").read_text())["rubric"] == "quality"


def test_pipelines_refuse_bad_input_before_loading_a_model(tmp_path, ed_test_path):
    preds = _write_predictions(tmp_path / "p.jsonl", ed_test_path, None, "m")
    with pytest.raises(SystemExit) as exc:
        judge_predictions.main(["--predictions", str(preds)])  # no --output-dir / --hub-repo
    assert exc.value.code == 2
    (tmp_path / "bad.jsonl").write_text(json.dumps({"id": "1", "prediction": "x"}) + "\n")
    with pytest.raises(EmpathyRecipesError, match="no column 'context'"):
        judge_predictions.predictions_to_rows(str(tmp_path / "bad.jsonl"), "prediction")
    with pytest.raises(SystemExit) as exc:
        pairwise_win_rate.main(["--predictions-a", str(preds), "--predictions-b", str(preds), "--output-dir", "x"] + [
            "--model", "./no/such/model"
        ])  # fmt: skip
    assert exc.value.code == 2
