"""The SFT stage: argument validation, loss mask, training, saving, merging, resuming, partial fine-tuning."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.mixture import mixture_sizes, parse_mixture
from empathy_recipes.sft_args import (
    check_chat_rows,
    check_lora_target_modules,
    last_checkpoint,
    model_card_text,
    parse_sft_args,
    select_trainable_parameters,
    to_last_reply_completion,
    validate_recipe_keys,
)
from empathy_recipes.sft_train import ensure_training_template, load_sft_data

REPO = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("sft_script", REPO / "scripts" / "sft.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sft():
    return _load_script()


def _base_args(model_dir: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--model_name_or_path", str(model_dir), "--dataset_name", str(data), "--dataset_limit", "24",
        "--output_dir", str(out), "--per_device_train_batch_size", "4", "--max_length", "256",
        "--report_to", "none", "--use_cpu", "--bf16", "false", "--logging_steps", "1",
        "--save_strategy", "steps", "--save_steps", "100", "--gradient_checkpointing", "false",
        "--dataloader_num_workers", "0", "--disable_tqdm", "true", *extra,
    ]  # fmt: skip


def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


# ---- pure helpers ------------------------------------------------------------------------------------------------


def test_unknown_recipe_key_is_named_with_a_suggestion():
    with pytest.raises(EmpathyRecipesError, match=r"'learning_rat' \(did you mean 'learning_rate'\?\)"):
        validate_recipe_keys({"learning_rat": 1e-4, "env": {}}, {"learning_rate", "max_length"})
    validate_recipe_keys({"learning_rate": 1e-4, "env": {"A": 1}}, {"learning_rate"})


def test_parse_rejects_misspelled_recipe_key_and_cli_flag(tmp_path):
    recipe = tmp_path / "config_bad.yaml"
    recipe.write_text("model_name_or_path: org/model\ndataset_name: data/x.jsonl\nlora_rank: 8\n")
    with pytest.raises(EmpathyRecipesError, match=r"unknown key 'lora_rank' \(did you mean 'lora_r'\?\)"):
        parse_sft_args(["--config", str(recipe)])
    good = tmp_path / "config_good.yaml"
    good.write_text("model_name_or_path: org/model\ndataset_name: data/x.jsonl\nlora_r: 8\n")
    with pytest.raises(EmpathyRecipesError, match=r"command line: unknown key 'learning_rat'"):
        parse_sft_args(["--config", str(good), "--learning_rat", "3"])
    script_args, training_args, model_args = parse_sft_args(["--config", str(good), "--lora_r", "4"])
    assert model_args.lora_r == 4 and script_args.dataset_name == "data/x.jsonl"


def test_parse_value_checks(tmp_path):
    with pytest.raises(EmpathyRecipesError, match="dataset_name is required"):
        parse_sft_args(["--model_name_or_path", "org/model"])
    with pytest.raises(EmpathyRecipesError, match="exclusive"):
        parse_sft_args(
            ["--model_name_or_path", "o/m", "--dataset_name", "d", "--use_peft", "--trainable_parameters", "x"]
        )
    with pytest.raises(EmpathyRecipesError, match="not a valid regex"):
        parse_sft_args(["--model_name_or_path", "o/m", "--dataset_name", "d", "--trainable_parameters", "gate("])


def test_lora_target_module_check():
    names = ["", "model", "model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj", "lm_head"]
    check_lora_target_modules(["q_proj", "up_proj"], names)
    check_lora_target_modules(["all-linear"], names)
    check_lora_target_modules(None, names)
    with pytest.raises(EmpathyRecipesError, match=r"\['c_attn'\] not found.*q_proj"):
        check_lora_target_modules(["q_proj", "c_attn"], names)
    with pytest.raises(EmpathyRecipesError, match="matches no module"):
        check_lora_target_modules(r".*\.c_fc", names)


def test_trainable_parameter_selection():
    names = ["model.layers.0.block_sparse_moe.gate.weight", "model.layers.0.block_sparse_moe.experts.0.w1.weight"]
    assert select_trainable_parameters(names, r"block_sparse_moe\.gate\.") == names[:1]
    with pytest.raises(EmpathyRecipesError, match="matches none"):
        select_trainable_parameters(names, r"router")


def test_chat_row_checks():
    ok = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]]
    check_chat_rows(ok, "d")
    with pytest.raises(EmpathyRecipesError, match="empty"):
        check_chat_rows([], "d")
    with pytest.raises(EmpathyRecipesError, match="last message must be the assistant"):
        check_chat_rows([ok[0][:1]], "d")
    with pytest.raises(EmpathyRecipesError, match="'role' and 'content'"):
        check_chat_rows([[{"text": "x"}]], "d")
    pair = to_last_reply_completion(ok[0])
    assert pair == {"prompt": ok[0][:1], "completion": ok[0][1:]}


def test_last_checkpoint_and_card(tmp_path):
    assert last_checkpoint(tmp_path / "missing") is None
    for step in (2, 10, 11):
        (tmp_path / f"checkpoint-{step}").mkdir()
    for step in (2, 10):  # checkpoint-11 was cut short: no trainer_state.json
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path).endswith("checkpoint-10")
    card = model_card_text(
        title="t", base_model="org/base", datasets=["org/data", "data/x.jsonl"], recipe={"lr": 1e-4},
        metrics={"train_loss": 1.23456}, method="LoRA", merged_dir="merged/",
    )  # fmt: skip
    assert "base_model: org/base" in card and "- org/data" in card and "| train_loss | 1.235 |" in card
    assert "data/x.jsonl" in card.split("---")[2]  # listed in the body, not as a Hub dataset


# ---- the script on the tiny model --------------------------------------------------------------------------------


def test_bad_inputs_fail_before_any_model_load(sft, tiny_model_dir, ed_valid_path, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    no_cols = tmp_path / "nocols.jsonl"
    no_cols.write_text('{"text": "hello"}\n')
    cases = [
        (["--dataset_name", str(empty)], "is empty"),
        (["--dataset_name", str(no_cols)], "unrecognised ED format"),
        (["--dataset_name", str(ed_valid_path), "--use_peft", "--lora_target_modules", "c_attn"], "c_attn"),
        (["--dataset_name", str(ed_valid_path), "--trainable_parameters", "router"], "matches none"),
    ]
    for extra, message in cases:
        argv = ["--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path / "o"), *extra]
        with pytest.raises(SystemExit) as exc:
            sft.main(*parse_sft_args(argv))
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and message in err[-1], err
        assert not (tmp_path / "o").exists()


def test_loss_mask_covers_only_assistant_tokens(tiny_model_dir, ed_valid_path):
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from empathy_recipes.data import load_ed

    ds = load_ed(ed_valid_path, limit=40).select_columns(["messages"])
    ds = ds.filter(lambda m: len(m) >= 4 and sum(t["role"] == "assistant" for t in m) >= 2, input_columns="messages")
    assert len(ds) >= 1
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    args = SFTConfig(output_dir="/tmp/unused", assistant_only_loss=True, use_cpu=True, bf16=False, report_to="none")
    trainer = SFTTrainer(model=str(tiny_model_dir), args=args, train_dataset=ds.select([0]), processing_class=tok)
    row = trainer.train_dataset[0]
    batch = trainer.data_collator([row])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    kept = [i for i, lab in zip(ids, labels) if lab != -100]
    # what the labels keep is exactly the assistant turns' text with their end-of-turn token
    expected = "".join(m["content"] + "<|im_end|>" for m in ds[0]["messages"] if m["role"] == "assistant")
    assert tok.decode(kept) == expected
    user_text = next(m["content"] for m in ds[0]["messages"] if m["role"] == "user")
    assert user_text not in tok.decode(kept)


def test_trainable_parameters_changes_only_matching(sft, tiny_model_dir, ed_valid_path, tmp_path):
    out = tmp_path / "partial"
    argv = _base_args(tiny_model_dir, ed_valid_path, out, "--max_steps", "2", "--learning_rate", "1e-2")
    sft.main(*parse_sft_args([*argv, "--trainable_parameters", r"self_attn\.q_proj", "--assistant_only_loss"]))
    before = _tensors(tiny_model_dir / "model.safetensors")
    after = _tensors(out / "model.safetensors")
    changed = {k for k in before if not (before[k].float() == after[k].float()).all()}
    assert changed == {k for k in before if "self_attn.q_proj" in k}
    assert "trainable_parameters" in (out / "README.md").read_text()


def test_lora_run_trains_saves_merges_and_resumes(sft, tiny_model_dir, ed_valid_path, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    lora = ["--use_peft", "--lora_r", "4", "--lora_alpha", "8", "--lora_target_modules", "q_proj", "v_proj"]
    lora += ["--assistant_only_loss", "--save_steps", "2", "--learning_rate", "1e-2"]
    sft.main(*parse_sft_args([*_base_args(tiny_model_dir, ed_valid_path, out, "--max_steps", "2"), *lora]))
    assert (out / "adapter_model.safetensors").exists() and (out / "checkpoint-2").is_dir()
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    base = _tensors(tiny_model_dir / "model.safetensors")
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not (merged.state_dict()[q].float() == base[q].float()).all()  # the adapter is merged in
    card = (out / "README.md").read_text()
    assert f"[`{tiny_model_dir}`]" in card and "ed_valid_sample.jsonl" in card and "train_loss" in card
    assert "It has been trained using [TRL]" in card and "license: cc-by-nc-4.0" in card  # TRL's card, extended
    assert "base_model:" not in card  # a local base is no Hub reference

    # mark the checkpoint: a run that resumes from it carries the mark on, a fresh run would not
    state_path = out / "checkpoint-2" / "trainer_state.json"
    state = json.loads(state_path.read_text())
    state["log_history"].append({"resume_sentinel": 1.0, "step": 2})
    state_path.write_text(json.dumps(state))
    capsys.readouterr()
    sft.main(*parse_sft_args([*_base_args(tiny_model_dir, ed_valid_path, out, "--max_steps", "4"), *lora]))
    assert f"resuming from {out / 'checkpoint-2'}" in capsys.readouterr().err
    final = json.loads((out / "trainer_state.json").read_text())
    assert final["global_step"] == 4
    assert any("resume_sentinel" in h for h in final["log_history"])
    steps = [h["step"] for h in final["log_history"] if "loss" in h]
    assert steps == [1, 2, 3, 4]  # steps 1-2 from the first run, 3-4 from the resumed one


def test_last_reply_only_loss_masks_earlier_assistant_turns(sft, tiny_model_dir, ed_valid_path, tmp_path, monkeypatch):
    import trl

    trainers = []

    class Recording(trl.SFTTrainer):  # the script's own trainer, kept to look at the labels it trains on
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trainers.append(self)

    monkeypatch.setattr(trl, "SFTTrainer", Recording)
    out = tmp_path / "last"
    sft.main(
        *parse_sft_args(
            [*_base_args(tiny_model_dir, ed_valid_path, out, "--max_steps", "1"), "--last_reply_only_loss"]
        )
    )
    assert "loss on the final reply" in (out / "README.md").read_text()

    (trainer,) = trainers
    tok = trainer.processing_class
    replies = {json.loads(line)["response"] for line in ed_valid_path.read_text().splitlines()}
    with_earlier_turns = 0
    for row in trainer.train_dataset:
        batch = trainer.data_collator([row])
        ids, labels = batch["input_ids"][0], batch["labels"][0]
        full, trained = tok.decode(ids), tok.decode(ids[labels != -100])
        assert full.endswith(trained)  # the loss covers one tail of the text ...
        reply = trained.replace("<|im_end|>", "").strip()  # ... exactly the final reply (cut at max_length 256)
        assert reply in replies or (len(ids) == 256 and any(r.startswith(reply) for r in replies)), trained
        assert "<|im_start|>" not in trained
        with_earlier_turns += full.count("<|im_start|>assistant") >= 2
    assert with_earlier_turns >= 3  # rows whose earlier listener turns were masked


@pytest.mark.integration
def test_smollm2_recipe_trains_under_accelerate_launch(smollm2_dir, ed_valid_path, tmp_path):
    """`make sft` with the SmolLM2 recipe and the single-process accelerate config, a few steps on CPU."""
    import os
    import subprocess

    out = tmp_path / "smol"
    cmd = [
        str(REPO / ".venv" / "bin" / "accelerate"), "launch", "--config_file",
        str(REPO / "accelerate_configs" / "single.yaml"), str(REPO / "scripts" / "sft.py"),
        "--config", str(REPO / "recipes" / "smollm2-135m-instruct" / "sft" / "config_sensibility.yaml"),
        "--model_name_or_path", str(smollm2_dir), "--dataset_name", str(ed_valid_path), "--dataset_limit", "8",
        "--max_steps", "2", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
        "--max_length", "128", "--output_dir", str(out), "--save_steps", "2", "--logging_steps", "1",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert losses and all(0 < x < 20 for x in losses)
    adapter = _tensors(out / "adapter_model.safetensors")
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # the recipe's
    assert {t for t in targets if any(f".{t}.lora_A" in k for k in adapter)} == set(targets)
    assert any("lora_B" in k and adapter[k].abs().sum() > 0 for k in adapter)  # B starts at 0: it was trained
    merged_config = json.loads((out / "merged" / "config.json").read_text())
    assert merged_config["architectures"] == ["LlamaForCausalLM"] and "peft" not in json.dumps(merged_config)
    merged, base = _tensors(out / "merged" / "model.safetensors"), _tensors(smollm2_dir / "model.safetensors")
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not (merged[q].float() == base[q].float()).all()  # the adapter is merged into the full weights
    assert "loss on the final reply" in (out / "README.md").read_text()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_padding_free_rows_keep_examples_apart_on_cpu(tiny_model_dir, attn):
    """Packing / padding-free on CPU: a row of two examples (position_ids restart at 0) gives each example the
    logits it gets alone, so no token attends across examples. As in SFTTrainer's forward, without a KV cache
    (transformers only derives the block-diagonal mask from position_ids when there is none)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attn, dtype=torch.float32).eval()
    a, b = torch.arange(5, 25), torch.arange(40, 51)
    with torch.no_grad():
        alone = [model(input_ids=x[None], use_cache=False).logits[0] for x in (a, b)]
        packed = model(
            input_ids=torch.cat([a, b])[None],
            position_ids=torch.cat([torch.arange(len(a)), torch.arange(len(b))])[None],
            use_cache=False,
        ).logits[0]
        leaky = model(input_ids=torch.cat([a, b])[None], use_cache=False).logits[0]  # one sequence: b sees a
    torch.testing.assert_close(packed[: len(a)], alone[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(packed[len(a) :], alone[1], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(leaky[len(a) :], alone[1], atol=1e-4)


def test_mixture_skips_an_empty_member_and_shuffles(sft, ed_valid_path, tmp_path):
    from empathy_recipes.data import load_ed, save_dataset

    empty = save_dataset(load_ed(ed_valid_path).select([]), tmp_path / "discard")
    other = save_dataset(load_ed(ed_valid_path, limit=10), tmp_path / "rationality")
    first = load_ed(ed_valid_path).select(range(100, 110))
    first_dir = save_dataset(first, tmp_path / "sensibility")
    mix = parse_mixture([str(first_dir), {"path": str(other)}, str(empty)])
    ds = load_sft_data(mix, 12, "mix")
    assert len(ds) == 12
    first_msgs = {json.dumps(m) for m in first["messages"]}
    drawn = [json.dumps(m) in first_msgs for m in ds["messages"]]
    assert any(drawn) and not all(drawn)  # the limit drew from both non-empty members
    with pytest.raises(EmpathyRecipesError, match="empty"):
        load_sft_data(parse_mixture([str(empty), str(other)]), None, "mix")


def test_mixture_entries_take_trl_fields_config_columns_and_fraction(sft, ed_valid_path, tmp_path):
    from empathy_recipes.data import load_ed
    from empathy_recipes.hub import CardInfo, save_dataset_layout

    sets = {"a": load_ed(ed_valid_path, limit=30), "b": load_ed(ed_valid_path).select(range(100, 110))}
    repo = save_dataset_layout(sets, tmp_path / "repo", CardInfo(title="t", description="d", command="c"))
    entries = [{"path": str(repo), "name": n, "split": "train", "columns": ["messages"], "fraction": f}
               for n, f in (("a", 0.5), ("b", 0.5))]  # fmt: skip
    ds = load_sft_data(parse_mixture(entries), None, "mix")
    assert len(ds) == 20  # TRL's rule: 10 of b (all it has) and as many of a, nothing oversampled
    with pytest.raises(EmpathyRecipesError, match="unknown key"):
        parse_mixture([{"path": "x", "weight": 1}])
    with pytest.raises(EmpathyRecipesError, match="every entry or on none"):
        parse_mixture([{"path": "x", "fraction": 1}, "y"])
    with pytest.raises(EmpathyRecipesError, match="no column"):
        load_sft_data(parse_mixture([{"path": str(repo), "name": "a", "columns": ["nope"]}]), None, "mix")
    assert mixture_sizes([100, 10], [0.8, 0.2]) == [40, 10] and mixture_sizes([3, 4], [None, None]) == [3, 4]


@pytest.mark.slow
def test_run_killed_after_a_checkpoint_resumes_from_it(tiny_model_dir, ed_valid_path, tmp_path):
    """SIGKILL a run once a checkpoint is complete, start it again: it resumes from the newest complete one."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "killed"
    argv = _base_args(tiny_model_dir, ed_valid_path, out, "--save_steps", "1", "--learning_rate", "1e-3")
    env = dict(os.environ)
    script = str(REPO / "scripts" / "sft.py")
    proc = subprocess.Popen([sys.executable, script, *argv, "--max_steps", "200", "--dataset_limit", "400"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    while last_checkpoint(out) is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed_from = last_checkpoint(out)
    assert resumed_from is not None, "no checkpoint was completed before the kill"
    step = int(resumed_from.rsplit("-", 1)[1])
    assert not (out / "trainer_state.json").exists()  # the first run never finished
    done = subprocess.run([sys.executable, script, *argv, "--max_steps", str(step + 1), "--dataset_limit", "400"],
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming from {resumed_from}" in done.stderr
    final = json.loads((out / "trainer_state.json").read_text())
    assert final["global_step"] == step + 1
    assert [h["step"] for h in final["log_history"] if "loss" in h] == list(range(1, step + 2))


def test_training_template_is_put_when_the_model_has_no_generation_markers(sft, tiny_model_dir):
    from transformers import AutoTokenizer

    from empathy_recipes.chat_templates import CHATML_TRAINING_TEMPLATE, has_generation_markers

    messages = [{"role": "user", "content": "i lost my job"}, {"role": "assistant", "content": "oh no, i am sorry"}]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert ensure_training_template(tok) is None  # already has markers: untouched
    plain_chatml = CHATML_TRAINING_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    tok.chat_template = plain_chatml
    assert ensure_training_template(tok) == plain_chatml  # the original comes back, to restore at save time
    assert tok.chat_template == CHATML_TRAINING_TEMPLATE

    # a Llama-3 style vocabulary gets TRL's Llama-3 training template
    llama = AutoTokenizer.from_pretrained(tiny_model_dir)
    llama.add_special_tokens({"additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]})
    llama.chat_template = "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>{{ m['content'] }}<|eot_id|>{% endfor %}"
    for token in ("<|im_start|>", "<|im_end|>"):  # make it unmistakably not ChatML
        llama.chat_template = llama.chat_template.replace(token, "")
    vocab = llama.get_vocab()
    llama.get_vocab = lambda: {k: v for k, v in vocab.items() if k not in ("<|im_start|>", "<|im_end|>")}
    ensure_training_template(llama)
    assert has_generation_markers(llama.chat_template) and "<|start_header_id|>" in llama.chat_template
    out = llama.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    kept = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert "oh no, i am sorry" in llama.decode(kept) and "i lost my job" not in llama.decode(kept)

    # no known template fits: one clear error
    other = AutoTokenizer.from_pretrained(tiny_model_dir)
    other.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    other.get_vocab = lambda: {"a": 0}
    with pytest.raises(EmpathyRecipesError, match="no known training template"):
        ensure_training_template(other)


def test_last_reply_only_loss_keeps_only_the_final_reply(tiny_model_dir, ed_valid_path):
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from empathy_recipes.data import load_ed

    ds = load_ed(ed_valid_path, limit=40).select_columns(["messages"])
    ds = ds.filter(lambda m: sum(t["role"] == "assistant" for t in m) >= 2, input_columns="messages").select([0])
    messages = ds[0]["messages"]
    pairs = ds.map(to_last_reply_completion, input_columns="messages", remove_columns="messages")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    args = SFTConfig(output_dir="/tmp/unused", use_cpu=True, bf16=False, report_to="none")
    trainer = SFTTrainer(model=str(tiny_model_dir), args=args, train_dataset=pairs, processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    kept = tok.decode(
        [i for i, lab in zip(batch["input_ids"][0].tolist(), batch["labels"][0].tolist()) if lab != -100]
    )
    assert kept.strip() == messages[-1]["content"] + "<|im_end|>"
    earlier = next(m["content"] for m in messages[:-1] if m["role"] == "assistant")
    assert earlier not in kept
