"""The ``paper`` profile of the SFT and generation stages, and the global batch of every paper-setting command.

Global batch = per_device_train_batch_size x gradient_accumulation_steps x processes. The paper's values, from its
code (Aurora-slz/Efficient-Empathy):
- Qwen experts: ``train_qwen/finetune_ds.sh``: 8 per device x 2 accumulation x 4 GPUs (CUDA_VISIBLE_DEVICES=4,5,6,7,
  torchrun --nproc_per_node = device count) = 64.
- Llama-3 experts and router: ``train_llama/sft_llama3.py`` / ``sft_llama3_moe.py``: 16 per device x 1, run as one
  Python process (device_map="auto" spreads the model over the GPUs; no torchrun) = 16.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.sft_args import effective_recipe, parse_sft_args, to_training_example

REPO = Path(__file__).resolve().parents[1]
PAPER_GLOBAL_BATCH = {"qwen1.5-1.8b-chat": 64, "llama-3-8b-instruct": 16, "smollm2-135m-instruct": 16}
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _commands(path: Path) -> list[str]:
    """The `make sft` / `make moe-router` commands of a markdown file (continuation lines joined), comments cut."""
    text = re.sub(r"\\\n\s*#?\s*", " ", path.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if re.match(r"make (sft|moe-router)\b", line):
            found.append(line.split("  #")[0])
    return found


def _global_batch(command: str) -> tuple[str, str, int]:
    """(recipe, profile, global batch) of one make command, with the Makefile's defaults."""
    tokens = shlex.split(command)
    make_vars = dict(t.split("=", 1) for t in tokens[2:] if "=" in t and not t.startswith("-"))
    if tokens[1] == "moe-router":
        recipe = (
            make_vars.get("RECIPE")
            or f"recipes/{make_vars.get('MOE_MODEL', 'smollm2-135m-instruct')}/moe/config_router.yaml"
        )
    else:
        recipe = make_vars.get("RECIPE", "recipes/smollm2-135m-instruct/sft/config_sensibility.yaml")
    profile = make_vars.get("PROFILE")
    values = effective_recipe(REPO / recipe, profile)
    overrides = shlex.split(make_vars.get("ARGS", ""))
    for i, tok in enumerate(overrides[:-1]):
        if tok.startswith("--"):
            values[tok[2:]] = overrides[i + 1]
    accelerate = yaml.safe_load(
        (REPO / "accelerate_configs" / f"{make_vars.get('ACCELERATE', 'single')}.yaml").read_text()
    )
    processes = accelerate["num_processes"]
    acc_args = shlex.split(make_vars.get("ACCELERATE_ARGS", ""))
    if "--num_processes" in acc_args:
        processes = int(acc_args[acc_args.index("--num_processes") + 1])
    per_device = int(values["per_device_train_batch_size"])
    accumulation = int(values.get("gradient_accumulation_steps", 1))
    return recipe, profile or "project", per_device * accumulation * processes


def _paper_commands() -> list[tuple[str, str]]:
    return [(p.name, c) for p in DOCS for c in _commands(p) if "PROFILE=paper" in c]


def test_the_docs_give_paper_setting_commands_for_every_paper_model():
    models = {re.search(r"recipes/([^/]+)/", _global_batch(c)[0]).group(1) for _, c in _paper_commands()}
    assert {"qwen1.5-1.8b-chat", "llama-3-8b-instruct"} <= models, _paper_commands()
    routers = [c for _, c in _paper_commands() if "moe-router" in c]
    assert routers, "a paper-setting router command"


@pytest.mark.parametrize("where, command", _paper_commands())
def test_every_paper_setting_command_has_the_papers_global_batch(where, command):
    recipe, profile, batch = _global_batch(command)
    model = re.search(r"recipes/([^/]+)/", recipe).group(1)
    assert profile == "paper"
    assert batch == PAPER_GLOBAL_BATCH[model], f"{where}: `{command}` gives global batch {batch}"


def test_the_batch_arithmetic_catches_the_old_commands():
    """The commands issue 13 found: the Qwen recipe on 8 processes, the Llama router under ZeRO-3 (8 processes)."""
    qwen = "make sft RECIPE=recipes/qwen1.5-1.8b-chat/sft/config_sensibility.yaml ACCELERATE=zero3 ACCELERATE_ARGS='--num_processes 8'"
    router = "make moe-router MOE_MODEL=llama-3-8b-instruct ACCELERATE=zero3"
    assert _global_batch(qwen)[2] == 128 and _global_batch(router)[2] == 128


def test_every_sft_recipe_has_a_paper_profile_block():
    for path in sorted(REPO.glob("recipes/*/*/config_*.yaml")):
        recipe = yaml.safe_load(path.read_text())
        assert "paper" in recipe.get("profiles", {}), path


def test_paper_profile_resolution_and_explicit_flags_win():
    qwen = "recipes/qwen1.5-1.8b-chat/sft/config_sensibility.yaml"
    script, training, _ = parse_sft_args(["--config", qwen, "--profile", "paper"])
    assert (script.profile, script.last_reply_only_loss, training.assistant_only_loss) == ("paper", False, True)
    assert script.system_prompt == "You are a helpful assistant."
    script, training, _ = parse_sft_args(["--config", qwen])
    assert (script.profile, script.last_reply_only_loss, script.system_prompt) == ("project", True, None)
    llama = "recipes/llama-3-8b-instruct/sft/config_full.yaml"
    script, _, _ = parse_sft_args(["--config", llama, "--profile=paper", "--prompt_format", "messages"])
    assert (script.profile, script.prompt_format) == ("paper", "messages")
    script, _, _ = parse_sft_args(["--config", llama, "--profile", "paper"])
    assert script.prompt_format == "transcript"


def test_paper_profile_without_a_block_is_one_error(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model_name_or_path: m\ndataset_name: d\n")
    with pytest.raises(EmpathyRecipesError, match="has no `profiles: {paper: ...}` block"):
        parse_sft_args(["--config", str(recipe), "--profile", "paper"])
    recipe.write_text("model_name_or_path: m\ndataset_name: d\nprofiles:\n  paper:\n    lerning_rate: 1\n")
    with pytest.raises(EmpathyRecipesError, match="unknown key 'lerning_rate'"):
        parse_sft_args(["--config", str(recipe), "--profile", "paper"])


MESSAGES = [
    {"role": "user", "content": "i lost my job ."},
    {"role": "assistant", "content": "oh no ."},
    {"role": "user", "content": "they closed the office ."},
    {"role": "assistant", "content": "that is awful , i am sorry ."},
]


def test_training_examples_for_each_format():
    llama = to_training_example(MESSAGES, "transcript")
    assert llama == {
        "prompt": [
            {
                "role": "user",
                "content": "Speaker: i lost my job .\nListener: oh no .\nSpeaker: they closed the office .\nListener: ",
            }
        ],
        "completion": [MESSAGES[-1]],
    }
    qwen = to_training_example(MESSAGES, system_prompt="You are a helpful assistant.")
    assert qwen == {"messages": [{"role": "system", "content": "You are a helpful assistant."}, *MESSAGES]}
    assert to_training_example(MESSAGES, last_reply_only_loss=True) == {
        "prompt": MESSAGES[:-1],
        "completion": MESSAGES[-1:],
    }
    with pytest.raises(EmpathyRecipesError, match="prompt_format"):
        to_training_example(MESSAGES, "alpaca")


def test_qwen_paper_profile_masks_all_but_every_assistant_turn(tiny_model_dir):
    """The loss mask of the paper profile (assistant_only_loss over the conversation with its system message) covers
    every assistant turn and nothing else."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    example = to_training_example(MESSAGES, system_prompt="You are a helpful assistant.")
    out = tok.apply_chat_template(example["messages"], return_dict=True, return_assistant_tokens_mask=True)
    masked = tok.decode([t for t, m in zip(out["input_ids"], out["assistant_masks"]) if m])
    assert "oh no ." in masked and "that is awful" in masked
    assert "i lost my job" not in masked and "helpful assistant" not in masked


@pytest.mark.integration
def test_sft_paper_profile_trains_on_the_transcript(tiny_model_dir, ed_valid_path, tmp_path):
    out = tmp_path / "paper"
    cmd = [sys.executable, str(REPO / "scripts" / "sft.py"), "--config",
           str(REPO / "recipes" / "smollm2-135m-instruct" / "sft" / "config_sensibility.yaml"), "--profile", "paper",
           "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(ed_valid_path), "--dataset_limit", "8",
           "--max_steps", "1", "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
           "--max_length", "128", "--output_dir", str(out), "--save_strategy", "no", "--use_cpu", "true",
           "--merge_lora", "false"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    card = (out / "README.md").read_text()
    assert "loss on the final reply (context as one Speaker/Listener transcript message)" in card
    assert "profile: paper" in card and "prompt_format: transcript" in card


@pytest.mark.integration
def test_generate_paper_profile_keeps_the_first_line(tiny_model_dir, ed_test_path, tmp_path):
    out = tmp_path / "preds.jsonl"
    cmd = [sys.executable, str(REPO / "evaluation" / "generate.py"), "--model", str(tiny_model_dir), "--dataset",
           str(ed_test_path), "--limit", "3", "--output", str(out), "--profile", "paper", "--max-new-tokens", "24"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert "\n" not in row["prediction"]
        assert row["prediction"] == row["prediction_full"].strip().split("\n")[0].strip()


def test_geval_prompts_are_the_paper_layout():
    from empathy_recipes.tasks.dialogue_quality import DialogueQualityJudge
    from empathy_recipes.tasks.geval_prompts import geval_dialogue_quality, geval_sensibility_rationality
    from empathy_recipes.tasks.sensibility_rationality import SensibilityRationalityJudge

    sr = geval_sensibility_rationality(MESSAGES)
    assert [m["role"] for m in sr] == ["system", "user", "user"] and sr[0]["content"] == "You are a helpful assistant."
    assert sr[1]["content"].startswith("You will be given a conversation between two individuals.")
    assert sr[2]["content"] == (
        "Conversation History:\nSpeaker: i lost my job .\nListener: oh no .\nSpeaker: they closed the office .\n"
        "Listener: \n\nResponse:\nthat is awful , i am sorry .\n\nEvaluation Form (scores ONLY):\n- Rationality:\n"
        "- Sensibility:"
    )
    quality = geval_dialogue_quality(MESSAGES)
    assert "Naturalness (1-3) Is the response naturally written?" in quality[1]["content"]
    assert quality[2]["content"].endswith("- Naturalness:\n- Coherence:\n- Empathy:")
    for task in (SensibilityRationalityJudge, DialogueQualityJudge):  # the project's prompt stays the default
        assert task.model_fields["prompt"].default == "project"
