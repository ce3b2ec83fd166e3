"""The shared LLM layer (llm, prob_scoring, pipeline_io): flags, validation, backend objects, pipelines, G-Eval math."""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import math
import os
import re
import sys
import types

import pytest

from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.llm import (
    add_llm_args,
    build_llm,
    check_llm_environment,
    generation_kwargs_for,
    validate_llm_args,
)
from empathy_recipes.pipeline_io import make_pipeline
from empathy_recipes.prob_scoring import (
    ScoreAxes,
    ScoreFormTask,
    TransformersFormScorer,
    VLLMFormScorer,
    argmax_score,
    build_scoring_llm,
    common_prefix_length,
    expected_score,
    locate_score_distributions,
    probs_from_logprobs,
    score_distribution,
)

AXES = ScoreAxes(("rationality", "sensibility"), 0, 10)


def parse(argv: list[str], model: str | None = None) -> argparse.Namespace:
    return add_llm_args(argparse.ArgumentParser(), default_model=model).parse_args(argv)


# ---- flags and validation -------------------------------------------------------------------------------------
def test_flags_and_defaults(tiny_model_dir):
    args = parse([], model=str(tiny_model_dir))
    assert args.backend == "transformers" and args.model == str(tiny_model_dir)
    assert (args.batch_size, args.num_generations, args.limit, args.ray, args.hub_repo) == (8, 1, None, False, None)
    args = parse(["--backend", "openai", "--base-url", "http://x/v1", "--api-key-env", "MY_KEY", "--ray", "--private"])
    assert (args.backend, args.base_url, args.api_key_env, args.ray, args.private) == (
        "openai",
        "http://x/v1",
        "MY_KEY",
        True,
        True,
    )
    with pytest.raises(SystemExit):
        parse(["--backend", "llamacpp"])


def test_default_model_is_the_embedded_smollm2():
    from empathy_recipes.models import default_model_path

    assert parse([]).model == str(default_model_path())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--backend", "openai"], "needs --base-url"),
        (["--backend", "openai", "--base-url", "http://x/v1", "--api-key-env", "NO_SUCH_VAR_42"], "NO_SUCH_VAR_42"),
        (["--model", "./does/not/exist"], "neither an existing local folder nor a Hub id"),
        (["--base-url", "http://x/v1"], "only applies to --backend openai"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--limit", "0"], "--limit must be >= 1"),
        (["--top-p", "0"], "--top-p"),
        (["--hub-repo", "not a repo"], "--hub-repo"),
    ],
)
def test_validation_gives_one_line_errors(argv, message, tiny_model_dir, monkeypatch):
    monkeypatch.delenv("NO_SUCH_VAR_42", raising=False)
    args = parse(argv, model=str(tiny_model_dir))
    with pytest.raises(EmpathyRecipesError, match=message.replace("-", r"\-").replace(".", r"\.")):
        validate_llm_args(args)


def test_missing_backend_package_is_one_clear_error(tiny_model_dir, monkeypatch):
    import empathy_recipes.llm as llm_module

    args = parse(["--backend", "vllm"], model=str(tiny_model_dir))
    # None in sys.modules: find_spec says "not installed", whether or not vllm is installed here
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(EmpathyRecipesError, match=r"vllm is not installed: pip install -e '\.\[vllm\]'"):
        check_llm_environment(args)
    # and with vllm importable (a stand-in module) and a GPU seen, no error
    monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
    monkeypatch.setattr(sys.modules["vllm"], "__spec__", importlib.machinery.ModuleSpec("vllm", None))
    monkeypatch.setattr(llm_module, "visible_gpu_count", lambda: 1)
    check_llm_environment(args)


# ---- backend objects (built, not loaded: vLLM / OpenAI / Ray cannot run here) -----------------------------------
def test_build_llm_per_backend(tiny_model_dir, monkeypatch):
    from distilabel.models.llms import OpenAILLM, TransformersLLM, vLLM

    llm = build_llm(parse(["--temperature", "0", "--device", "cpu"], model=str(tiny_model_dir)))
    assert isinstance(llm, TransformersLLM) and llm.device == "cpu" and llm.torch_dtype == "float32"
    assert llm.generation_kwargs["do_sample"] is False and llm.generation_kwargs["max_new_tokens"] == 256

    llm = build_llm(parse(["--backend", "vllm", "--temperature", "0.3"], model=str(tiny_model_dir)), max_new_tokens=9)
    assert isinstance(llm, vLLM) and llm.generation_kwargs == {"max_new_tokens": 9, "temperature": 0.3, "top_p": 1.0}

    monkeypatch.setenv("MY_KEY", "secret")
    args = parse(["--backend", "openai", "--base-url", "http://localhost:8000/v1", "--api-key-env", "MY_KEY"])
    args.model = "served-judge"
    llm = build_llm(args)
    assert isinstance(llm, OpenAILLM) and llm.base_url == "http://localhost:8000/v1" and llm.model == "served-judge"
    assert llm.api_key.get_secret_value() == "secret"


def test_generation_kwargs_sampling_vs_greedy(tiny_model_dir):
    args = parse(["--temperature", "0.7", "--top-p", "0.9"], model=str(tiny_model_dir))
    assert generation_kwargs_for(args) == {"max_new_tokens": 256, "temperature": 0.7, "top_p": 0.9, "do_sample": True}
    args.backend = "vllm"
    assert "do_sample" not in generation_kwargs_for(args, temperature=0.0)


def test_build_scoring_llm_per_backend_and_mode(tiny_model_dir, monkeypatch):
    from distilabel.models.llms import OpenAILLM

    from empathy_recipes.backends import PlacementSafeTransformersLLM

    args = parse([], model=str(tiny_model_dir))
    scorer = build_scoring_llm(args, AXES, "probs")
    assert isinstance(scorer, TransformersFormScorer) and scorer.score_axes == ["rationality", "sensibility"]
    plain = build_scoring_llm(args, AXES, "generate")  # the decoder holds the form (empathy_recipes.structured)
    assert isinstance(plain, PlacementSafeTransformersLLM) and plain.generation_kwargs["do_sample"] is False
    assert "Rationality" in plain.grammar

    args.backend = "vllm"
    assert isinstance(build_scoring_llm(args, AXES, "probs"), VLLMFormScorer)

    monkeypatch.setenv("OPENAI_API_KEY", "EMPTY")
    args = parse(["--backend", "openai", "--base-url", "http://localhost:8000/v1"])
    llm = build_scoring_llm(args, AXES, "probs")
    assert isinstance(llm, OpenAILLM)
    assert llm.generation_kwargs["logprobs"] is True and llm.generation_kwargs["top_logprobs"] == 20
    assert llm.generation_kwargs["temperature"] == 0.0
    with pytest.raises(EmpathyRecipesError, match="--scoring"):
        build_scoring_llm(args, AXES, "vibes")


def test_make_pipeline_plain_and_ray(tmp_path):
    from distilabel.pipeline import Pipeline, RayPipeline

    assert type(make_pipeline("p", argparse.Namespace(ray=False), tmp_path)) is Pipeline
    assert isinstance(make_pipeline("p", argparse.Namespace(ray=True), tmp_path), RayPipeline)


# ---- pure scoring math --------------------------------------------------------------------------------------------
def test_score_distribution_merges_spaced_tokens_and_ignores_non_digits():
    dist = score_distribution({"8": 0.3, " 8": 0.1, "7": 0.2, "hello": 0.4}, 0, 10)
    assert dist[8] == pytest.approx(0.4 / 0.6) and dist[7] == pytest.approx(0.2 / 0.6)
    assert sum(dist.values()) == pytest.approx(1.0) and set(dist) == set(range(11))
    assert argmax_score(dist) == 8
    assert expected_score(dist) == pytest.approx((8 * 0.4 + 7 * 0.2) / 0.6)


def test_score_distribution_two_token_ten():
    # P("1") = 0.5, and after "1" the next token is "0" with 0.6, "1" (-> 11, out of range) with 0.1.
    dist = score_distribution({"1": 0.5, "9": 0.5}, 0, 10, {"1": {"0": 0.6, "1": 0.1, "\n": 0.3}})
    # 10: .5*.6 = .30 ; 1: .5*(1-.7) = .15 ; 9: .5 -> total .95
    assert dist[10] == pytest.approx(0.30 / 0.95)
    assert dist[1] == pytest.approx(0.15 / 0.95)
    assert dist[9] == pytest.approx(0.50 / 0.95)
    # a space after "1" starts a new number: not glued
    assert score_distribution({"1": 1.0}, 0, 10, {"1": {" 0": 0.9}})[1] == pytest.approx(1.0)
    # without continuation information, "1" is 1
    assert score_distribution({"1": 1.0}, 0, 10)[1] == 1.0
    # tokenizers with multi-digit tokens
    assert score_distribution({"10": 0.7, "9": 0.3}, 0, 10)[10] == pytest.approx(0.7)


def test_score_distribution_other_ranges_and_empty():
    dist = score_distribution({"0": 0.2, "2": 0.3, "3": 0.1, "4": 0.4}, 1, 3)
    assert set(dist) == {1, 2, 3} and dist[2] == pytest.approx(0.75) and dist[1] == 0.0
    assert score_distribution({"a": 1.0}, 0, 10) == {}
    assert expected_score({}) is None and argmax_score({}) is None
    assert argmax_score({1: 0.5, 2: 0.5}) == 1  # ties -> the lowest


def test_probs_from_logprobs():
    got = probs_from_logprobs([{"token": "8", "logprob": math.log(0.5)}, {"token": "8", "logprob": math.log(0.25)}])
    assert got == {"8": pytest.approx(0.75)}
    assert probs_from_logprobs(None) == {}


def _lp(pairs):
    return [{"token": t, "logprob": math.log(p)} for t, p in pairs]


def test_locate_score_distributions_in_a_free_generation():
    text = "- Rationality: 10\n- Sensibility: 3"
    positions = [
        _lp([("- Rational", 0.9), ("Sure", 0.1)]),
        _lp([("ity", 0.99)]),
        _lp([(":", 0.99)]),
        _lp([(" 1", 0.6), (" 9", 0.3), (" 8", 0.1)]),  # the score starts here
        _lp([("0", 0.5), ("\n", 0.5)]),  # continuation after " 1"
        _lp([("\n", 1.0)]),
        _lp([("- Sens", 1.0)]),
        _lp([("ibility:", 1.0)]),
        _lp([(" 3", 0.7), (" 4", 0.3)]),
    ]
    dists = locate_score_distributions(text, positions, AXES)
    r, s = dists["rationality"], dists["sensibility"]
    assert r[10] == pytest.approx(0.3) and r[1] == pytest.approx(0.3) and r[9] == pytest.approx(0.3)
    assert s[3] == pytest.approx(0.7) and expected_score(s) == pytest.approx(3.3)
    # misaligned logprobs: nothing is invented
    assert locate_score_distributions(text, [_lp([("x", 1.0)])], AXES) == {}


def test_common_prefix_length():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 9], [1, 2, 3]]) == 2
    assert common_prefix_length([[1, 2, 3]]) == 2  # one row keeps at least one token to run
    assert common_prefix_length([]) == 0


# ---- the reusable Task base and the transformers form scorer -------------------------------------------------------
class ThreeAxisJudge(ScoreFormTask):
    score_axes: list[str] = ["naturalness", "coherence", "empathy"]
    score_low: int = 1
    score_high: int = 3
    raw_output_column: str = "quality_judge_output"

    def format_input(self, input):
        return [{"role": "user", "content": f"Rate: {input['text']}"}]


def test_score_form_task_reads_logprobs_into_weighted_scores(tiny_model_dir):
    from distilabel.models.llms import TransformersLLM

    task = ThreeAxisJudge(llm=TransformersLLM(model=str(tiny_model_dir)))
    assert ThreeAxisJudge.axes_spec() == ScoreAxes(("naturalness", "coherence", "empathy"), 1, 3)
    text = "- Naturalness: 3\n- Coherence: 2\n- Empathy: 9"
    positions = [
        _lp([("- Naturalness:", 1.0)]),
        _lp([(" 3", 0.5), (" 2", 0.5)]),
        _lp([("\n- Coherence:", 1.0)]),
        _lp([(" 2", 1.0)]),
        _lp([("\n- Empathy:", 1.0)]),
        _lp([(" 9", 1.0)]),
    ]
    rows = task._format_outputs({"generations": [text], "statistics": {}, "logprobs": [positions]}, {"text": "x"})
    row = rows[0]
    assert row["quality_judge_output"] == text
    # 9 is out of 1..3: the row's integer scores are all None (unscored), nothing is invented...
    assert (row["naturalness"], row["coherence"], row["empathy"]) == (None, None, None)
    # ...while the probabilities that do exist are still reported
    assert row["naturalness_weighted"] == pytest.approx(2.5) and row["coherence_probs"] == [0.0, 1.0, 0.0]
    assert math.isnan(row["empathy_weighted"])
    good = task._format_outputs({"generations": [text.replace("9", "1")], "statistics": {}}, {"text": "x"})[0]
    assert (good["naturalness"], good["coherence"], good["empathy"]) == (3, 2, 1)
    assert math.isnan(good["naturalness_weighted"])  # no probabilities given: NaN, not a guess
    assert not any(k.startswith("llm_") for k in row)  # the raw logprobs are not copied into columns


def test_transformers_form_scorer_on_the_tiny_model(tiny_model_dir):
    scorer = TransformersFormScorer(model=str(tiny_model_dir), device="cpu", score_axes=["rationality", "sensibility"])
    scorer.load()
    chats = [[{"role": "user", "content": f"Rate reply number {i} please."}] for i in range(3)]
    batched = scorer.generate(chats)
    one_by_one = [scorer.generate([c])[0] for c in chats]
    for out, single in zip(batched, one_by_one):
        text = out["generations"][0]
        assert text.startswith("- Rationality: ") and "\n- Sensibility: " in text
        for axis in ("rationality", "sensibility"):
            dist = out["score_distributions"][0][axis]
            assert set(dist) == set(range(11)) and sum(dist.values()) == pytest.approx(1.0)
            # the shared-prefix KV cache gives the same distributions as running each row alone
            for v in range(11):
                assert dist[v] == pytest.approx(single["score_distributions"][0][axis][v], abs=1e-4)
        assert text == single["generations"][0]


# ---- scale flags (vLLM tensor parallelism, memory, context, dtype, replicas) -------------------------------------
def test_scale_flags_reach_the_vllm_engine_and_the_step_resources(tiny_model_dir):
    from empathy_recipes.backends import ChatVLLM
    from empathy_recipes.llm import llm_step_resources

    argv = ["--backend", "vllm", "--tensor-parallel-size", "4", "--gpu-memory-utilization", "0.8"]
    args = parse(
        [*argv, "--max-model-len", "4096", "--dtype", "bfloat16", "--replicas", "2"], model=str(tiny_model_dir)
    )
    llm = build_llm(args)
    assert isinstance(llm, ChatVLLM) and llm.dtype == "bfloat16"
    assert llm.extra_kwargs == {"tensor_parallel_size": 4, "gpu_memory_utilization": 0.8, "max_model_len": 4096}
    scorer = build_scoring_llm(args, AXES, "probs")
    assert isinstance(scorer, VLLMFormScorer) and scorer.extra_kwargs["tensor_parallel_size"] == 4
    resources = llm_step_resources(args)
    assert (resources.replicas, resources.gpus) == (2, 4)  # each replica one 4-GPU engine

    args = parse(["--replicas", "3", "--dtype", "float16", "--device", "cpu"], model=str(tiny_model_dir))
    assert (llm_step_resources(args).replicas, llm_step_resources(args).gpus) == (3, None)
    assert build_llm(args).torch_dtype == "float16"  # --dtype overrides the CPU float32 rule


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--tensor-parallel-size", "0", "--backend", "vllm"], "--tensor-parallel-size must be >= 1"),
        (["--tensor-parallel-size", "2"], "--tensor-parallel-size applies to --backend vllm"),
        (["--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization must be in (0, 1]"),
        (["--max-model-len", "0"], "--max-model-len must be >= 1"),
        (["--replicas", "0"], "--replicas must be >= 1"),
        (["--device", "gpu0"], "--device must be cpu, cuda, cuda:N or mps"),
    ],
)
def test_scale_flags_give_one_line_errors(argv, message, tiny_model_dir):
    with pytest.raises(EmpathyRecipesError, match=re.escape(message)):
        validate_llm_args(parse(argv, model=str(tiny_model_dir)))


def test_more_gpus_than_visible_is_one_clear_error(tiny_model_dir, tmp_path, monkeypatch):
    import empathy_recipes.llm as llm_module

    fake = tmp_path / "pkgs" / "vllm"  # an importable `vllm` package so the GPU check is reached
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    monkeypatch.setattr(llm_module, "visible_gpu_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    args = parse(["--backend", "vllm", "--tensor-parallel-size", "4"], model=str(tiny_model_dir))
    with pytest.raises(EmpathyRecipesError, match=re.escape("needs 4 GPU(s), 2 visible (CUDA_VISIBLE_DEVICES=0,1)")):
        check_llm_environment(args)
    args = parse(["--backend", "vllm", "--tensor-parallel-size", "2", "--replicas", "2"], model=str(tiny_model_dir))
    with pytest.raises(EmpathyRecipesError, match=re.escape("x --replicas 2 needs 4 GPU(s), 2 visible")):
        check_llm_environment(args)
    check_llm_environment(parse(["--backend", "vllm", "--tensor-parallel-size", "2"], model=str(tiny_model_dir)))
    with pytest.raises(EmpathyRecipesError, match=re.escape("--device cuda:2 but 2 CUDA GPU(s) visible")):
        check_llm_environment(parse(["--device", "cuda:2"], model=str(tiny_model_dir)))


def test_unreachable_base_url_fails_fast_before_any_pipeline(monkeypatch):
    import socket
    import time

    monkeypatch.setenv("OPENAI_API_KEY", "EMPTY")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = parse(["--backend", "openai", "--base-url", f"http://127.0.0.1:{port}/v1"])
    start = time.monotonic()
    with pytest.raises(EmpathyRecipesError, match=f"cannot connect to 127.0.0.1:{port}"):
        check_llm_environment(args)
    assert time.monotonic() - start < 10
    with pytest.raises(EmpathyRecipesError, match="must be an http"):
        validate_llm_args(parse(["--backend", "openai", "--base-url", "localhost:8000"]))
    with socket.socket() as server:  # and a listening one passes
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_llm_environment(
            parse(["--backend", "openai", "--base-url", f"http://127.0.0.1:{server.getsockname()[1]}/v1"])
        )


def test_device_cuda_placement_cannot_crash_the_load(tiny_model_dir, tmp_path, monkeypatch):
    """distilabel's TransformersLLM runs its CUDA device placement before its logger exists: the placement's log
    call raised, then ``unload`` raised again outside distilabel's error handling, and the pipeline hung."""
    import sys
    import types

    import distilabel.models.mixins.cuda_device_placement as placement
    import transformers

    pynvml = types.ModuleType("pynvml")
    pynvml.nvmlInit = lambda: None
    pynvml.nvmlDeviceGetCount = lambda: 2
    monkeypatch.setitem(sys.modules, "pynvml", pynvml)
    device_map = tmp_path / "placement.json"
    device_map.write_text(json.dumps({"judge-replica-0": [0], "other-replica-0": [1]}))  # left by a killed run
    monkeypatch.setattr(placement, "_CUDA_DEVICE_PLACEMENT_MIXIN_FILE", device_map)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    loaded = {}

    def fake_pipeline(task, **kwargs):
        loaded.update(kwargs)
        return types.SimpleNamespace(tokenizer=types.SimpleNamespace(pad_token="x", chat_template="t"))

    monkeypatch.setattr(transformers, "pipeline", fake_pipeline)
    llm = build_llm(parse(["--device", "cuda"], model=str(tiny_model_dir)))
    llm._llm_identifier = "judge-replica-0"  # what distilabel's step wrapper sets in the worker
    llm.load()
    assert loaded["device"] == "cuda"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"  # its stale entry dropped, GPU 0 is its own again
    assert json.loads(device_map.read_text()) == {"judge-replica-0": [0], "other-replica-0": [1]}
    llm.unload()
    assert json.loads(device_map.read_text()) == {"other-replica-0": [1]}


# ---- a stage's --seed reaches the generator ------------------------------------------------------------------
def test_seed_flag_reaches_transformers_and_vllm_llms(tiny_model_dir):
    args = parse([], model=str(tiny_model_dir))
    assert build_llm(args).seed is None  # a stage without --seed: nothing is seeded
    args.seed = 7
    assert build_llm(args).seed == 7
    args.backend = "vllm"
    assert build_llm(args).seed == 7  # distilabel's vLLM passes it to vllm.LLM(seed=...)


@pytest.mark.slow
def test_seeded_transformers_llm_samples_the_same_generations_again(tiny_model_dir):
    """Two fresh loads with the same seed sample the same tokens; another seed samples others."""
    args = parse(["--temperature", "1.0", "--max-new-tokens", "12"], model=str(tiny_model_dir))
    chat = [[{"role": "user", "content": "I failed my exam today."}]]

    def sample(seed: int) -> list[str]:
        args.seed = seed
        llm = build_llm(args)
        llm.load()
        return llm.generate(inputs=chat, num_generations=3, **llm.generation_kwargs)[0]["generations"]

    first = sample(3)
    assert any(first), "the tiny model wrote nothing: the comparison would be vacuous"
    assert sample(3) == first
    assert sample(4) != first
