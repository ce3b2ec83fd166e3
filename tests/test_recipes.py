"""Every SFT recipe (any recipes/**/config_*.yaml) parses and validates with the SFT script's own parser, offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from empathy_recipes.sft_args import check_lora_target_modules, parse_sft_args

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("**/config_*.yaml"))
ACCELERATE_CONFIGS = sorted((REPO / "accelerate_configs").glob("*.yaml"))


def test_recipes_exist():
    names = {p.relative_to(REPO / "recipes").as_posix() for p in RECIPES}
    for model in ("llama-3-8b-instruct", "smollm2-135m-instruct", "qwen1.5-1.8b-chat"):
        for stage in ("sensibility", "rationality", "full"):
            assert f"{model}/sft/config_{stage}.yaml" in names


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.relative_to(REPO / "recipes").as_posix())
def test_recipe_parses_and_validates(recipe: Path):
    script_args, training_args, model_args = parse_sft_args(["--config", str(recipe)])
    raw = yaml.safe_load(recipe.read_text())
    assert model_args.model_name_or_path == raw["model_name_or_path"]
    assert script_args.dataset_name == raw.get("dataset_name")
    assert [m.path for m in script_args.dataset_mixture or []] == [m["path"] for m in raw.get("dataset_mixture", [])]
    assert training_args.output_dir == raw["output_dir"]
    assert training_args.report_to == ["tensorboard"]  # logs under output_dir/runs by default (pinned dependency)


def _meta_module_names(model_type: str) -> list[str]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, num_hidden_layers=1, hidden_size=64, intermediate_size=128,
                                  num_attention_heads=4, num_key_value_heads=2, vocab_size=128)  # fmt: skip
    with torch.device("meta"):
        return [n for n, _ in AutoModelForCausalLM.from_config(config).named_modules()]


@pytest.mark.parametrize(
    "recipe",
    [p for p in RECIPES if yaml.safe_load(p.read_text()).get("use_peft")],
    ids=lambda p: p.relative_to(REPO / "recipes").as_posix(),
)
def test_lora_recipes_target_modules_exist_in_the_architecture(recipe: Path):
    """The recipes' models are Llama-architecture (Llama 3, SmolLM2): their LoRA targets must exist in a Llama."""
    raw = yaml.safe_load(recipe.read_text())
    check_lora_target_modules(raw["lora_target_modules"], _meta_module_names("llama"))


def test_paper_settings():
    for stage in ("sensibility", "rationality", "full"):
        llama = yaml.safe_load((REPO / f"recipes/llama-3-8b-instruct/sft/config_{stage}.yaml").read_text())
        assert (llama["lora_r"], llama["lora_alpha"], llama["lora_dropout"]) == (8, 32, 0.1)
        assert len(llama["lora_target_modules"]) == 7 and llama["learning_rate"] == 1e-4
        assert llama["per_device_train_batch_size"] * llama["gradient_accumulation_steps"] == 16
        assert (llama["max_length"], llama["bf16"], llama["gradient_checkpointing"]) == (512, True, True)
        qwen = yaml.safe_load((REPO / f"recipes/qwen1.5-1.8b-chat/sft/config_{stage}.yaml").read_text())
        assert not qwen.get("use_peft") and qwen["learning_rate"] == 1e-5 and qwen["lr_scheduler_type"] == "cosine"
        assert (qwen["weight_decay"], qwen["adam_beta2"], qwen["warmup_steps"]) == (0.1, 0.95, 0.01)
        assert qwen["per_device_train_batch_size"] * qwen["gradient_accumulation_steps"] * 4 == 64


@pytest.mark.parametrize("config", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_configs_load(config: Path):
    from accelerate.commands.config.config_args import load_config_from_file

    loaded = load_config_from_file(str(config))
    assert loaded.num_processes >= 1
    if config.stem in ("zero2", "zero3", "multi_node"):
        assert loaded.distributed_type.value == "DEEPSPEED"


def test_expected_accelerate_configs():
    assert {p.stem for p in ACCELERATE_CONFIGS} >= {"single", "ddp", "zero2", "zero3", "fsdp", "multi_node"}


def test_slurm_launcher_is_valid_bash():
    import subprocess

    script = REPO / "slurm" / "train.slurm"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "accelerate launch" in text and "--machine_rank $SLURM_PROCID" in text and "scripts/sft.py" in text
