"""MoE stage: expert checks, positive prompts, mergekit configs, the build script and router-only training."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from empathy_recipes.data import load_ed, save_dataset
from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.moe import (
    ROUTER_PARAMETER_REGEX,
    architecture_signature,
    build_average_config,
    build_moe_config,
    check_distinct_experts,
    check_distinct_refs,
    check_expert_count,
    check_same_architecture,
    check_same_tokenizer,
    parse_expert_ref,
    render_prompt,
    router_parameter_names,
    sample_rows,
    validate_merge_config,
    validate_moe_config,
    vocab_fingerprint,
    weights_fingerprint,
)
from empathy_recipes.sft_args import parse_sft_args
from empathy_recipes.testing import build_tiny_llama

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = sorted(REPO.glob("recipes/*/moe/mergekit_moe.yaml"))
ROUTER_RECIPES = sorted(REPO.glob("recipes/*/moe/config_router.yaml"))


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def build_moe():
    return _load_script("build_moe")


@pytest.fixture(scope="module")
def experts(tmp_path_factory, ed_texts) -> tuple[Path, Path]:
    """Two tiny Llama experts: same tokenizer (same texts), different weights (different seeds)."""
    root = tmp_path_factory.mktemp("experts")
    return build_tiny_llama(root / "a", ed_texts, seed=0), build_tiny_llama(root / "b", ed_texts, seed=1)


@pytest.fixture(scope="module")
def prompt_sets(tmp_path_factory, ed_valid_path) -> tuple[Path, Path]:
    """Disjoint stand-ins for the split stage's output: <dir>/sensibility and <dir>/rationality."""
    root = tmp_path_factory.mktemp("selected")
    ds = load_ed(ed_valid_path)
    half = len(ds) // 2
    return (
        save_dataset(ds.select(range(half)), root / "sensibility"),
        save_dataset(ds.select(range(half, len(ds))), root / "rationality"),
    )


def _argv(experts, prompt_sets, out, *extra) -> list[str]:
    return [
        "--experts",
        *map(str, experts),
        "--prompt-sets",
        *map(str, prompt_sets),
        "--output-dir",
        str(out),
        "--num-prompts",
        "6",
        "--max-new-tokens",
        "4",
        *extra,
    ]


# ---- pure helpers ------------------------------------------------------------------------------------------------


def test_parse_expert_ref(experts, tmp_path):
    a, b = experts
    assert parse_expert_ref(str(a)).adapter is None
    ref = parse_expert_ref(f"{a}+{b}")
    assert (ref.model, ref.adapter) == (str(a), str(b))
    assert parse_expert_ref("org/model").model == "org/model"
    hub_lora = parse_expert_ref("meta-llama/Meta-Llama-3-8B-Instruct+someone/empathy-lora")
    assert hub_lora.adapter == "someone/empathy-lora"
    with pytest.raises(EmpathyRecipesError, match="neither an existing local folder"):
        parse_expert_ref(str(tmp_path / "missing"))
    with pytest.raises(EmpathyRecipesError, match="neither an existing local folder"):
        parse_expert_ref(f"{a}+{tmp_path / 'missing-adapter'}")
    with pytest.raises(EmpathyRecipesError, match="base\\+adapter"):
        parse_expert_ref(f"{a}+")


def test_check_distinct_refs(experts):
    a, b = experts
    check_distinct_refs([parse_expert_ref(str(a)), parse_expert_ref(str(b)), parse_expert_ref(f"{a}+{b}")])
    with pytest.raises(EmpathyRecipesError, match="are the same model"):
        check_distinct_refs([parse_expert_ref(str(a)), parse_expert_ref(str(a) + "/")])


def test_check_expert_count():
    check_expert_count(["a", "b"], 2)
    with pytest.raises(EmpathyRecipesError, match="at least two experts, got 1"):
        check_expert_count(["a"], 2)
    with pytest.raises(EmpathyRecipesError, match="experts_per_token"):
        check_expert_count(["a", "b"], 3)


def test_check_same_architecture():
    llama = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
    assert check_same_architecture(["a", "b"], [llama, dict(llama)]) == "llama"
    with pytest.raises(EmpathyRecipesError, match="a has hidden_size=64, b has hidden_size=32"):
        check_same_architecture(["a", "b"], [llama, {**llama, "hidden_size": 32}])
    with pytest.raises(EmpathyRecipesError, match="model_type"):
        check_same_architecture(["a", "b"], [llama, {**llama, "model_type": "qwen2"}])
    with pytest.raises(EmpathyRecipesError, match="Mixtral output takes llama or mistral"):
        check_same_architecture(["a", "b"], [{**llama, "model_type": "gpt2"}] * 2)
    assert set(architecture_signature(llama)) >= {"model_type", "hidden_size", "vocab_size"}


def test_check_same_tokenizer():
    vocab = {"a": 0, "b": 1}
    check_same_tokenizer(["x", "y"], [vocab, dict(reversed(list(vocab.items())))])
    assert vocab_fingerprint(vocab) != vocab_fingerprint({"a": 1, "b": 0})
    with pytest.raises(EmpathyRecipesError, match="different tokenizers"):
        check_same_tokenizer(["x", "y"], [vocab, {"a": 0, "c": 1}])


def test_weights_fingerprint_tells_experts_apart(experts, tmp_path):
    a, b = experts
    fa, fb = weights_fingerprint(a), weights_fingerprint(b)
    assert fa != fb
    copy = shutil.copytree(a, tmp_path / "copy")
    assert weights_fingerprint(copy) == fa
    check_distinct_experts(["a", "b"], [fa, fb])
    with pytest.raises(EmpathyRecipesError, match="identical MLP weights"):
        check_distinct_experts(["a", "b", "copy"], [fa, fb, fa])


def test_sample_rows_is_reproducible():
    first = sample_rows(100, 10, seed=3)
    assert first == sample_rows(100, 10, seed=3)
    assert first != sample_rows(100, 10, seed=4)
    assert len(set(first)) == 10 and all(0 <= i < 100 for i in first)
    assert sorted(sample_rows(5, 10, seed=0)) == [0, 1, 2, 3, 4]
    with pytest.raises(EmpathyRecipesError, match="empty"):
        sample_rows(0, 3, seed=0)


def test_render_prompt_matches_what_mergekit_tokenizes(experts):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(experts[0])
    messages = [{"role": "user", "content": "I lost my dog."}, {"role": "assistant", "content": "I am so sorry."}]
    chat = render_prompt(messages, "chat", tok.apply_chat_template, tok.bos_token)
    full = tok.apply_chat_template(messages, tokenize=False)
    # mergekit prepends the BOS token itself: the prompt plus that BOS is exactly the chat-template text.
    assert full.startswith(tok.bos_token) and tok.bos_token + chat == full
    assert "I am so sorry." in chat
    no_reply = render_prompt(messages, "chat", tok.apply_chat_template, tok.bos_token, include_reply=False)
    assert "I am so sorry." not in no_reply and no_reply.endswith("<|im_start|>assistant\n")
    assert render_prompt(messages, "plain") == "I lost my dog.\nI am so sorry."
    with pytest.raises(EmpathyRecipesError, match="prompt format"):
        render_prompt(messages, "markdown")


def test_moe_config_is_valid_for_mergekit():
    config = build_moe_config("base", ["e1", "e2"], [["warm"], ["logical"]], gate_mode="hidden", dtype="bfloat16")
    parsed = validate_moe_config(config)
    assert parsed.gate_mode == "hidden" and parsed.experts_per_token == 2 and parsed.architecture == "mixtral"
    assert [e.positive_prompts for e in parsed.experts] == [["warm"], ["logical"]]
    contrastive = build_moe_config("base", ["e1", "e2", "e3"], [["a"], ["b"], ["c"]], contrastive=True)
    assert [e["negative_prompts"] for e in contrastive["experts"]] == [["b", "c"], ["a", "c"], ["a", "b"]]
    validate_moe_config(contrastive)
    random_cfg = build_moe_config("base", ["e1", "e2"], None, gate_mode="random")
    assert all("positive_prompts" not in e for e in random_cfg["experts"])
    validate_moe_config(random_cfg)
    with pytest.raises(EmpathyRecipesError, match="one positive prompt set per expert"):
        build_moe_config("base", ["e1", "e2"], [["warm"]], gate_mode="cheap_embed")
    with pytest.raises(EmpathyRecipesError, match="gate mode"):
        build_moe_config("base", ["e1", "e2"], None, gate_mode="learned")
    # mergekit's own sanity checks (is_bad_config) surface as one line.
    with pytest.raises(EmpathyRecipesError, match="identical for all experts"):
        validate_moe_config(build_moe_config("base", ["e1", "e2"], [["same"], ["same"]]))
    with pytest.raises(EmpathyRecipesError, match="mergekit rejects the MoE config at experts"):
        validate_moe_config({"base_model": "base", "experts": "nope"})


def test_average_config_is_valid_for_mergekit():
    config = build_average_config(["e1", "e2"], dtype="bfloat16")
    parsed = validate_merge_config(config)
    assert parsed.merge_method == "linear"
    assert [m.parameters["weight"] for m in parsed.models] == [1.0, 1.0]
    with pytest.raises(EmpathyRecipesError, match="at least two"):
        build_average_config(["e1"])


def test_router_regex_selects_only_routers():
    names = [
        "model.embed_tokens.weight",
        "model.layers.0.mlp.gate.weight",
        "model.layers.0.mlp.experts.gate_up_proj",
        "model.layers.0.mlp.experts.down_proj",
        "model.layers.11.mlp.gate.weight",
        "model.layers.0.self_attn.q_proj.weight",
    ]
    assert router_parameter_names(names) == ["model.layers.0.mlp.gate.weight", "model.layers.11.mlp.gate.weight"]


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.parts[-3])
def test_templates_are_valid_mergekit_configs(template):
    parsed = validate_moe_config(yaml.safe_load(template.read_text()))
    assert parsed.architecture == "mixtral" and parsed.gate_mode == "hidden" and parsed.experts_per_token == 2
    assert len(parsed.experts) >= 2
    # --average-base builds the average's config from the experts (no recipe file holds it)
    average = validate_merge_config(build_average_config([str(e.source_model) for e in parsed.experts], "bfloat16"))
    assert average.merge_method == "linear"
    assert {str(m.model) for m in average.models} == {str(e.source_model) for e in parsed.experts}


def test_templates_exist():
    assert {p.parts[-3] for p in TEMPLATES} >= {"llama-3-8b-instruct", "smollm2-135m-instruct"}
    assert {p.parts[-3] for p in ROUTER_RECIPES} >= {"llama-3-8b-instruct", "smollm2-135m-instruct"}


@pytest.mark.parametrize("recipe", ROUTER_RECIPES, ids=lambda p: p.parts[-3])
def test_router_recipes_train_only_the_routers(recipe):
    config = yaml.safe_load(recipe.read_text())
    assert config["trainable_parameters"] == ROUTER_PARAMETER_REGEX
    assert not config.get("use_peft", False)


# ---- the build script on tiny experts ----------------------------------------------------------------------------


@pytest.mark.parametrize("gate_mode", ["hidden", "cheap_embed", "random"])
def test_build_moe_each_gate_mode(build_moe, experts, prompt_sets, tmp_path, gate_mode):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = tmp_path / gate_mode
    summary = build_moe.main(_argv(experts, prompt_sets, out, "--gate-mode", gate_mode))
    assert summary["architecture"] == "MixtralForCausalLM" and summary["num_local_experts"] == 2
    assert summary["router_parameters"] == ["model.layers.0.mlp.gate.weight", "model.layers.1.mlp.gate.weight"]
    assert summary["check_device"] == "cpu"  # the final check ran where --device says
    config = yaml.safe_load((out / "mergekit_moe.yaml").read_text())
    assert config["gate_mode"] == gate_mode and config["experts_per_token"] == 2
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    assert type(model).__name__ == "MixtralForCausalLM"
    # Expert i of the MoE is the MLP of expert model i.
    moe = model.state_dict()
    for idx, expert in enumerate(experts):
        weights = load_file(expert / "model.safetensors")
        gate_up = moe["model.layers.1.mlp.experts.gate_up_proj"][idx]
        expected = torch.cat([weights[f"model.layers.1.mlp.{p}.weight"] for p in ("gate_proj", "up_proj")])
        assert gate_up.equal(expected)
    # The reported check generation is the MoE's own greedy output for the fixed prompt (--max-new-tokens 4).
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out / "model")
    assert "I finally got the job I wanted" in summary["check_prompt"]
    inputs = tok(summary["check_prompt"], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=4, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    assert len(ids) == 4  # no early stop: four tokens, so the check cannot be empty
    assert summary["check_completion"] and summary["check_completion"] == tok.decode(ids, skip_special_tokens=True)


def test_positive_prompts_come_from_each_experts_own_set(build_moe, experts, prompt_sets, tmp_path):
    out = tmp_path / "prompts"
    build_moe.main(_argv(experts, prompt_sets, out, "--seed", "7"))
    config = yaml.safe_load((out / "mergekit_moe.yaml").read_text())
    records = [json.loads(line) for line in (out / "positive_prompts.jsonl").read_text().splitlines()]
    for idx, source in enumerate(prompt_sets):
        ids = set(load_ed(source)["id"])
        mine = [r for r in records if r["expert"] == idx]
        assert len(mine) == 6 and all(r["prompt_set"] == str(source) and r["id"] in ids for r in mine)
        assert config["experts"][idx]["positive_prompts"] == [r["prompt"] for r in mine]
    other_ids = set(load_ed(prompt_sets[1])["id"])
    assert not any(r["id"] in other_ids for r in records if r["expert"] == 0)
    # Reproducible: the same seed samples the same rows.
    again = tmp_path / "prompts-again"
    build_moe.main(_argv(experts, prompt_sets, again, "--seed", "7"))
    assert (again / "positive_prompts.jsonl").read_text() == (out / "positive_prompts.jsonl").read_text()


def test_contrastive_prompts_start_router_rows_apart(build_moe, experts, prompt_sets, tmp_path):
    plain = build_moe.main(_argv(experts, prompt_sets, tmp_path / "plain"))
    summary = build_moe.main(_argv(experts, prompt_sets, tmp_path / "contrastive", "--contrastive"))
    config = yaml.safe_load((tmp_path / "contrastive" / "mergekit_moe.yaml").read_text())
    first, second = config["experts"]
    assert first["negative_prompts"] == second["positive_prompts"]
    assert second["negative_prompts"] == first["positive_prompts"]
    # Two experts: the rows are (mean_a - mean_b) and (mean_b - mean_a), normalised: cosine -1 in every layer but
    # the first, whose input (the last prompt token's embedding, the same template token for every prompt) gives a
    # zero difference, hence zero rows (cosine 0): mean over the 2 layers -0.5.
    assert summary["router_rows_max_cosine_mean"] == pytest.approx(-0.5, abs=1e-2)
    assert plain["router_rows_max_cosine_mean"] > summary["router_rows_max_cosine_mean"]


def test_average_base_makes_non_mlp_weights_the_experts_mean(build_moe, experts, prompt_sets, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = tmp_path / "avg"
    summary = build_moe.main(_argv(experts, prompt_sets, out, "--average-base"))
    assert summary["base_model"] == str(out / "base_average")
    assert yaml.safe_load((out / "mergekit_average.yaml").read_text())["merge_method"] == "linear"
    moe = AutoModelForCausalLM.from_pretrained(out / "model").state_dict()
    a, b = (load_file(e / "model.safetensors") for e in experts)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert moe[name].allclose((a[name] + b[name]) / 2, atol=1e-6)
    assert not moe[name].allclose(a[name])


def test_lora_expert_is_merged_first(build_moe, experts, prompt_sets, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = experts[0]
    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=4, target_modules=["gate_proj", "up_proj", "down_proj"], init_lora_weights=False),
    )
    adapter = tmp_path / "adapter"
    model.save_pretrained(adapter)
    out = tmp_path / "lora"
    summary = build_moe.main(_argv([base, f"{base}+{adapter}"], prompt_sets, out))
    merged = out / "experts" / "1-a_adapter"
    assert summary["experts"][1]["path"] == str(merged) and (merged / "model.safetensors").exists()
    expected = model.merge_and_unload().state_dict()["model.layers.0.mlp.down_proj.weight"]
    moe = AutoModelForCausalLM.from_pretrained(out / "model").state_dict()
    assert moe["model.layers.0.mlp.experts.down_proj"][1].allclose(expected, atol=1e-6)


# ---- bad input: one error line, before mergekit ----------------------------------------------------------------


def _bad_input(build_moe, argv, capsys, out: Path) -> str:
    capsys.readouterr()  # drop what the fixtures printed
    with pytest.raises(SystemExit) as exc:
        build_moe.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert not (out / "model").exists() and not (out / "mergekit_moe.yaml").exists()
    return err[0]


def test_bad_input_single_expert(build_moe, experts, prompt_sets, tmp_path, capsys):
    out = tmp_path / "single"
    line = _bad_input(build_moe, _argv(experts[:1], prompt_sets[:1], out), capsys, out)
    assert "at least two experts" in line


def test_bad_input_identical_experts(build_moe, experts, prompt_sets, tmp_path, capsys):
    out = tmp_path / "same"
    copy = shutil.copytree(experts[0], tmp_path / "a-copy")
    line = _bad_input(build_moe, _argv([experts[0], copy], prompt_sets, out), capsys, out)
    assert "identical MLP weights" in line


def test_bad_input_same_expert_twice(build_moe, experts, prompt_sets, tmp_path, capsys):
    out = tmp_path / "twice"
    line = _bad_input(build_moe, _argv([experts[0], experts[0]], prompt_sets, out), capsys, out)
    assert "are the same model" in line


def test_bad_input_missing_path(build_moe, experts, prompt_sets, tmp_path, capsys):
    out = tmp_path / "missing"
    line = _bad_input(build_moe, _argv([experts[0], tmp_path / "nowhere"], prompt_sets, out), capsys, out)
    assert "nowhere" in line and "neither an existing local folder" in line


def test_bad_input_different_architecture(build_moe, experts, prompt_sets, ed_texts, tmp_path, capsys):
    out = tmp_path / "arch"
    wide = build_tiny_llama(tmp_path / "wide", ed_texts, hidden_size=32)
    line = _bad_input(build_moe, _argv([experts[0], wide], prompt_sets, out), capsys, out)
    assert "different architectures" in line and "hidden_size" in line


def test_bad_input_different_tokenizer(build_moe, experts, prompt_sets, ed_texts, tmp_path, capsys):
    out = tmp_path / "tok"
    other = build_tiny_llama(tmp_path / "other-tok", ed_texts[::-1][:300] + ["zebra quartz"], seed=1)
    line = _bad_input(build_moe, _argv([experts[0], other], prompt_sets, out), capsys, out)
    assert "different tokenizers" in line


def test_explicit_base_model(build_moe, experts, prompt_sets, ed_texts, tmp_path, capsys):
    base = build_tiny_llama(tmp_path / "base", ed_texts, seed=2)
    summary = build_moe.main(_argv(experts, prompt_sets, tmp_path / "based", "--base-model", str(base)))
    assert summary["base_model"] == str(base.resolve())
    out = tmp_path / "bad-base"
    wide = build_tiny_llama(tmp_path / "wide-base", ed_texts, hidden_size=32)
    line = _bad_input(build_moe, _argv(experts, prompt_sets, out, "--base-model", str(wide)), capsys, out)
    assert "different architectures" in line


def test_bad_input_prompt_sets_do_not_match_experts(build_moe, experts, prompt_sets, tmp_path, capsys):
    out = tmp_path / "sets"
    line = _bad_input(build_moe, _argv(experts, prompt_sets[:1], out), capsys, out)
    assert "one prompt set per expert" in line


# ---- atomic output folder and manifest -------------------------------------------------------------------------


def test_build_moe_writes_manifest_and_a_failed_build_keeps_the_old_output(
    build_moe, experts, prompt_sets, tmp_path, monkeypatch
):
    out = tmp_path / "moe"
    build_moe.main(_argv(experts, prompt_sets, out, "--average-base"))
    manifest = yaml.safe_load((out / "manifest.yaml").read_text())
    assert manifest["stage"] == "moe"
    assert manifest["counts"] == {"experts": 2, "positive_prompts": 12, "router_parameters": 2}
    assert set(manifest["inputs"]) == {"expert_0", "expert_1", "prompt_set_0", "prompt_set_1"}
    for name, ref in zip(("expert_0", "expert_1", "prompt_set_0", "prompt_set_1"), (*experts, *prompt_sets)):
        fp = manifest["inputs"][name]
        assert fp["path"] == str(ref) and fp["kind"] == "dir" and len(fp["sha256"]) == 64
    assert manifest["inputs"]["expert_0"]["sha256"] != manifest["inputs"]["expert_1"]["sha256"]
    assert manifest["args"]["output_dir"] == str(out) and manifest["args"]["num_prompts"] == 6
    # Built aside, but every file names the final folder: no temporary path survives, no temporary folder is left.
    for path in out.rglob("*"):
        if path.suffix in (".json", ".jsonl", ".md", ".yaml", ".yml"):
            assert ".moe.tmp-" not in path.read_text(), path
    assert yaml.safe_load((out / "mergekit_moe.yaml").read_text())["base_model"] == str(out / "base_average")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moe"]
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    # A rebuild that fails after mergekit wrote the model leaves the earlier build exactly as it was.
    written = []

    def fail_after_mergekit(model_dir, *args, **kwargs):
        written.append(sorted(p.name for p in Path(model_dir).iterdir()))
        raise RuntimeError("killed mid-build")

    monkeypatch.setattr(build_moe, "check_moe", fail_after_mergekit)
    with pytest.raises(RuntimeError, match="killed mid-build"):
        build_moe.main(_argv(experts, prompt_sets, out, "--overwrite", "--seed", "3"))
    assert "model.safetensors" in written[0] or any(n.endswith(".safetensors") for n in written[0])
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moe"]
    # A first build that fails leaves no folder at all.
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="killed mid-build"):
        build_moe.main(_argv(experts, prompt_sets, fresh))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moe"]


def test_build_moe_refuses_a_folder_of_other_files(build_moe, experts, prompt_sets, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    line = _bad_input(build_moe, _argv(experts, prompt_sets, out), capsys, out)
    assert "holds files this stage did not write (notes.txt)" in line
    assert (out / "notes.txt").read_text() == "keep me"


# ---- router training through the real SFT script -----------------------------------------------------------------


def test_router_training_changes_only_router_weights(build_moe, experts, prompt_sets, ed_valid_path, tmp_path):
    import torch
    from safetensors.torch import load_file

    moe_out = tmp_path / "moe"
    build_moe.main(_argv(experts, prompt_sets, moe_out))
    before = load_file(moe_out / "model" / "model.safetensors")
    recipe = REPO / "recipes" / "smollm2-135m-instruct" / "moe" / "config_router.yaml"
    trained = tmp_path / "router"
    sft = _load_script("sft")
    sft.main(
        *parse_sft_args(
            [
                "--config",
                str(recipe),
                "--model_name_or_path",
                str(moe_out / "model"),
                "--dataset_name",
                str(ed_valid_path),
                "--dataset_mixture",
                str(ed_valid_path),
                "--dataset_limit",
                "16",
                "--output_dir",
                str(trained),
                "--max_steps",
                "2",
                "--per_device_train_batch_size",
                "4",
                "--gradient_accumulation_steps",
                "1",
                "--learning_rate",
                "1e-2",
                "--max_length",
                "128",
                "--dtype",
                "float32",
                "--save_strategy",
                "no",
                "--logging_steps",
                "1",
                "--gradient_checkpointing",
                "false",
            ]
        )
    )
    after = load_file(trained / "model.safetensors")
    router = re.compile(ROUTER_PARAMETER_REGEX)
    routers = [name for name in before if router.search(name)]
    assert len(routers) == 2
    assert set(after) == set(before)
    for name, tensor in before.items():
        if router.search(name):
            assert not torch.equal(after[name], tensor.to(after[name].dtype)), f"router {name} did not change"
        else:
            assert after[name].dtype == tensor.dtype and torch.equal(after[name], tensor), f"{name} changed"


# ---- integration: two SmolLM2 experts ----------------------------------------------------------------------------


@pytest.mark.integration
def test_build_moe_from_two_smollm2_experts(build_moe, smollm2_dir, prompt_sets, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    second = shutil.copytree(smollm2_dir, tmp_path / "smollm2-perturbed")
    weights = load_file(second / "model.safetensors")
    generator = torch.Generator().manual_seed(0)
    for name, tensor in weights.items():
        if ".mlp." in name:
            noise = torch.randn(tensor.shape, generator=generator) * 1e-3
            weights[name] = (tensor.float() + noise).to(tensor.dtype)
    save_file(weights, second / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "smol-moe"
    summary = build_moe.main(
        _argv([smollm2_dir, second], prompt_sets, out, "--max-new-tokens", "8", "--num-prompts", "2")
    )
    assert summary["architecture"] == "MixtralForCausalLM" and summary["num_local_experts"] == 2
    assert len(summary["router_parameters"]) == 30
    assert summary["check_completion"].strip()
    # Both experts are (nearly) SmolLM2 and the routers' weights sum to 1, so the MoE must predict like SmolLM2:
    # a wrong expert/projection layout or lost non-MLP weight would not.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    messages = [
        {"role": "user", "content": "My dog ran away during the storm last night and I cannot stop worrying."},
        {"role": "assistant", "content": "Oh no, I am so sorry. I hope he finds his way home soon."},
    ]
    ids = tok(tok.apply_chat_template(messages, tokenize=False), return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        base_next = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)(**ids).logits.argmax(-1)
        moe_next = AutoModelForCausalLM.from_pretrained(out / "model", dtype=torch.float32)(**ids).logits.argmax(-1)
    assert (base_next == moe_next).float().mean().item() >= 0.95
