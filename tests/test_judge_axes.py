"""Adding an axis to a judge is one change, in its Task: the prompt, the parser, the split, the summaries and the
Synth-Empathy study all read the axes from the Task (issue 15, "one source per fact")."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from distilabel.models.llms import TransformersLLM

from empathy_recipes.judge_scores import ScoreAxes, assign_sets, axis_summary, default_axes
from empathy_recipes.tasks.dialogue_quality import DialogueQualityJudge
from empathy_recipes.tasks.sensibility_rationality import SensibilityRationalityJudge

REPO = Path(__file__).resolve().parents[1]
MESSAGES = [{"role": "user", "content": "I failed my exam."}, {"role": "assistant", "content": "Oh no, I'm sorry."}]


class FluencyJudge(SensibilityRationalityJudge):
    """The Efficient-Empathy judge with a third axis: the whole change is these three fields."""

    score_axes: list[str] = [*SensibilityRationalityJudge.model_fields["score_axes"].default, "fluency"]
    rubric: dict[str, str] = {
        **SensibilityRationalityJudge.model_fields["rubric"].default,
        "fluency": "is the reply well written?\n0 = broken; 5 = readable; 10 = fluent.",
    }
    geval_criteria: dict[str, str] = {
        **SensibilityRationalityJudge.model_fields["geval_criteria"].default,
        "fluency": "Is the response well written?\n- A score of 0 means it is broken.",
    }


class DepthQualityJudge(DialogueQualityJudge):
    score_axes: list[str] = [*DialogueQualityJudge.model_fields["score_axes"].default, "depth"]
    rubric: dict[str, str] = {**DialogueQualityJudge.model_fields["rubric"].default, "depth": "does it go deep?"}


def _task(cls, **kwargs):
    return cls(llm=TransformersLLM(model="unused"), **kwargs)


def test_the_default_judge_axes_come_from_its_task():
    assert default_axes() == SensibilityRationalityJudge.axes_spec()
    assert default_axes().names == ("rationality", "sensibility") and (default_axes().low, default_axes().high) == (
        0,
        10,
    )
    from empathy_recipes import judge_scores

    assert judge_scores.DEFAULT_AXES == default_axes().names


def test_a_third_axis_reaches_the_prompts_and_the_form():
    spec = FluencyJudge.axes_spec()
    assert spec == ScoreAxes(("rationality", "sensibility", "fluency"), 0, 10, form_prefix=spec.form_prefix)
    user = _task(FluencyJudge).format_input({"messages": MESSAGES})[1]["content"]
    assert "on three independent scales, each an integer from 0 to 10" in user
    assert "\nFluency: is the reply well written?\n0 = broken" in user
    assert user.endswith("- Rationality: <0-10>\n- Sensibility: <0-10>\n- Fluency: <0-10>")
    geval = _task(FluencyJudge, prompt="geval").format_input({"messages": MESSAGES})
    assert "Fluency (0-10) Is the response well written?" in geval[1]["content"]
    assert "the rationality, the sensibility and the fluency of the response" in geval[1]["content"]
    assert geval[2]["content"].endswith("- Sensibility:\n- Fluency:")
    assert "Fluency" not in _task(SensibilityRationalityJudge).format_input({"messages": MESSAGES})[1]["content"]


def test_an_axis_without_its_rubric_line_is_one_error():
    class Forgetful(SensibilityRationalityJudge):
        score_axes: list[str] = ["rationality", "sensibility", "fluency"]

    with pytest.raises(Exception, match="no rubric for the axis fluency"):
        _task(Forgetful).format_input({"messages": MESSAGES})


def test_a_third_axis_is_parsed_split_and_summarised():
    task = _task(FluencyJudge)
    assert task.outputs[:4] == ["judge_output", "rationality", "sensibility", "fluency"]
    full = "Evaluation Form (scores ONLY):\n- Rationality: 2\n- Sensibility: 8\n- Fluency: 7"
    row = task.format_output(full)
    assert (row["rationality"], row["sensibility"], row["fluency"]) == (2, 8, 7)
    partial = task.format_output(full.rsplit("\n", 1)[0])  # no fluency line: the row is unscored, nothing guessed
    assert (partial["rationality"], partial["sensibility"], partial["fluency"]) == (None, None, None)

    spec = FluencyJudge.axes_spec()
    scores = spec.parse([full, full.rsplit("\n", 1)[0], full.replace("Fluency: 7", "Fluency: 11")])
    assert list(scores.columns) == ["rationality", "sensibility", "fluency", "unscored_reason"]
    assert scores["unscored_reason"].tolist()[1:] == ["no fluency score", "fluency score 11 out of range 0-10"]
    assert assign_sets(scores, 5, spec).tolist() == ["sensibility", "unscored", "unscored"]
    # the two-axis judge splits the same rows on its own axes only
    assert assign_sets(default_axes().parse([full.rsplit("\n", 1)[0]]), 5).tolist() == ["sensibility"]

    rows = [task.format_output(full), partial]
    rows[0]["fluency_weighted"] = 6.5
    summary = axis_summary(pd.DataFrame(rows), spec)
    assert summary["rows"] == 2 and summary["scored_all"] == 1
    assert summary["fluency"] == {"mean": 7.0, "mean_weighted": 6.5, "scored": 1, "score": 6.5}
    assert summary["overall"] == pytest.approx((2 + 8 + 6.5) / 3)


def test_the_study_reports_every_axis_of_its_judge(tmp_path):
    spec = importlib.util.spec_from_file_location("synth_study", REPO / "scripts" / "synth_study.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    assert study.AXES == DialogueQualityJudge.axes_spec().names
    axes = DepthQualityJudge.axes_spec().names
    rows = [
        {"quality_score": float(s), "naturalness": 3, "coherence": 2, "empathy": 1, "depth": 2, "depth_weighted": 2.5}
        for s in (10, 60, 90, 95)
    ]
    emb = np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)
    table = study.sweep(rows, emb, [50], [1.0], seed=0, axes=axes)
    assert table[0]["kept"] == 3 and table[0]["depth"] == 2.5
    assert table[0]["overall"] == pytest.approx((3 + 2 + 1 + 2.5) / 4)
    study.write_outputs(table, tmp_path, axes)
    assert (tmp_path / "study.csv").read_text().splitlines()[0].split(",")[5:9] == list(axes)
