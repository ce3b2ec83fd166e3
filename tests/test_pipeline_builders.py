"""Each pipeline script has a pure ``build_distilabel_pipeline(args, cache_dir)`` apart from its CLI (open-r1
style): it builds one LLM step (a judge, or the dialogue writer), writes nothing and loads no model; the rows come at
run time."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from distilabel.constants import STEP_ATTR_NAME

from empathy_recipes.tasks.dialogue_quality import DialogueQualityJudge
from empathy_recipes.tasks.pairwise import PairwiseJudge
from empathy_recipes.tasks.sensibility_rationality import SensibilityRationalityJudge

REPO = Path(__file__).resolve().parents[1]
CASES = {
    "judge_sensibility_rationality": (["--dataset", "x.jsonl"], SensibilityRationalityJudge, ("rationality",)),
    "judge_dialogue_quality": (["--dataset", "x.jsonl"], DialogueQualityJudge, ("naturalness",)),
    "judge_predictions": (["--predictions", "x.jsonl", "--rubric", "quality"], DialogueQualityJudge, ("empathy",)),
    "pairwise_win_rate": (
        ["--predictions-a", "a.jsonl", "--predictions-b", "b.jsonl", "--criteria", "empathy", "fun"],
        PairwiseJudge,
        ("empathy", "fun"),
    ),
}


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "distilabel_pipelines" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(CASES))
def test_build_distilabel_pipeline_is_pure(name, tiny_model_dir, tmp_path):
    argv, task_cls, some_axes = CASES[name]
    script = _script(name)
    out = tmp_path / "out"
    args = script.parse_args([*argv, "--model", str(tiny_model_dir), "--output-dir", str(out), "--batch-size", "3"])
    pipeline = script.build_distilabel_pipeline(args, tmp_path / "cache")
    steps = [pipeline.dag.get_step(n)[STEP_ATTR_NAME] for n in pipeline.dag]
    assert len(steps) == 1 and type(steps[0]) is task_cls  # one judge step, no generator: rows come at run time
    task = steps[0]
    assert set(some_axes) <= set(task.score_axes) and task.input_batch_size == 3
    assert task.llm.model == str(tiny_model_dir) and not task.add_raw_output
    assert not out.exists() and not (tmp_path / "cache").exists()  # built, nothing written


@pytest.mark.parametrize("output_format", ["json", "text"])
def test_synthesis_pipeline_builder_is_pure(output_format, tiny_model_dir, tmp_path):
    from empathy_recipes.backends import PlacementSafeTransformersLLM
    from empathy_recipes.structured import ConstrainedTransformersLLM

    script = _script("synthesize_dialogues")
    out = tmp_path / "out"
    argv = ["--dataset", "x.jsonl", "--model", str(tiny_model_dir), "--output-dir", str(out), "--batch-size", "2"]
    args = script.parse_args([*argv, "--num-generations", "3", "--output-format", output_format, "--seed", "5"])
    pipeline = script.build_distilabel_pipeline(args, tmp_path / "cache")
    steps = [pipeline.dag.get_step(n)[STEP_ATTR_NAME] for n in pipeline.dag]
    assert len(steps) == 1 and type(steps[0]) is script.WriteEmpatheticRounds
    task = steps[0]
    assert (task.num_generations, task.input_batch_size, task.output_format) == (3, 2, output_format)
    constrained = isinstance(task.llm, ConstrainedTransformersLLM)
    assert constrained == (output_format == "json") and isinstance(task.llm, PlacementSafeTransformersLLM)
    assert task.llm.seed == 5 and (task.response_prefix == "") == (output_format == "json")
    assert not out.exists() and not (tmp_path / "cache").exists()  # built, nothing written
