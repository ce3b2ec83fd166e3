"""Batched generation: same greedy replies as one-at-a-time, input order kept, stops at <|im_end|>, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.generation import (
    build_prompts,
    generate_replies,
    length_sorted_batches,
    load_generation_model,
    stop_token_ids,
)

CONVERSATIONS = [
    [{"role": "user", "content": "i lost my job today ."}],
    [
        {"role": "user", "content": "my dog passed away last week and the house feels so empty without him ."},
        {"role": "assistant", "content": "i am so sorry . how old was he ?"},
        {"role": "user", "content": "he was fourteen . we had him since i was a kid ."},
    ],
    [{"role": "user", "content": "i got the promotion !"}],
    [{"role": "user", "content": "i am nervous about my exam tomorrow , i have studied for weeks ."}],
    [{"role": "user", "content": "hi"}],
]


def test_length_sorted_batches_cover_every_index_once_longest_first():
    lengths = [3, 9, 1, 9, 5]
    batches = length_sorted_batches(lengths, 2)
    assert batches == [[1, 3], [4, 0], [2]]
    assert sorted(i for b in batches for i in b) == list(range(5))
    with pytest.raises(EmpathyRecipesError):
        length_sorted_batches(lengths, 0)


def test_prompts_end_with_the_generation_prompt(tiny_model_dir):
    _, tok = load_generation_model(tiny_model_dir, device="cpu")
    prompts = build_prompts(tok, CONVERSATIONS[:2], system_prompt="be kind")
    assert all(p.endswith("<|im_start|>assistant\n") for p in prompts)
    assert prompts[0].startswith("<|im_start|>system\nbe kind<|im_end|>")
    assert tok.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(tok)


@pytest.fixture(scope="module")
def talking_tiny_model(tiny_model_dir, tmp_path_factory):
    """The tiny random Llama trained for a few steps to answer every conversation with one fixed reply, so greedy
    decoding writes real, non-empty text (the random model alone writes '' for these prompts)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    reply = "i am so sorry to hear that . how are you feeling now ?"
    texts = [
        tok.apply_chat_template([*c, {"role": "assistant", "content": reply}], tokenize=False) for c in CONVERSATIONS
    ]
    batch = tok(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    out = tmp_path_factory.mktemp("talking-tiny")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_batched_equals_one_at_a_time_in_input_order(talking_tiny_model):
    pair = load_generation_model(talking_tiny_model, device="cpu")
    batched = generate_replies(pair, CONVERSATIONS, batch_size=4, max_new_tokens=12, progress=False)
    single = [generate_replies(pair, [c], batch_size=1, max_new_tokens=12, progress=False)[0] for c in CONVERSATIONS]
    assert len(batched) == len(CONVERSATIONS)
    assert all(len(r.split()) >= 3 for r in single), single  # real replies, not '' compared with ''
    assert batched == single
    # the same call with another batch size is the same (greedy, padding does not leak into the replies)
    assert batched == generate_replies(pair, CONVERSATIONS, batch_size=2, max_new_tokens=12, progress=False)


def test_bad_input_is_a_user_error(tiny_model_dir):
    with pytest.raises(EmpathyRecipesError, match="max_new_tokens"):
        generate_replies(tiny_model_dir, CONVERSATIONS, max_new_tokens=0)
    with pytest.raises(EmpathyRecipesError, match="conversation 1"):
        generate_replies(tiny_model_dir, [CONVERSATIONS[0], []])
    with pytest.raises(EmpathyRecipesError, match="backend"):
        generate_replies(tiny_model_dir, CONVERSATIONS, backend="tgi")
    with pytest.raises(EmpathyRecipesError, match="neither"):
        generate_replies("./no/such/model", CONVERSATIONS)
    assert generate_replies(tiny_model_dir, [], progress=False) == []


def test_vllm_backend_without_vllm_is_a_user_error(tiny_model_dir, monkeypatch):
    # None in sys.modules makes `import vllm` raise ImportError, whether or not vllm is installed
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(EmpathyRecipesError, match="vllm is not installed"):
        generate_replies(tiny_model_dir, CONVERSATIONS, backend="vllm")


@pytest.mark.integration
def test_smollm2_batched_replies_are_english_and_stop_at_im_end(smollm2_dir):
    pair = load_generation_model(smollm2_dir, device="cpu")
    replies = generate_replies(pair, CONVERSATIONS[:3], batch_size=3, max_new_tokens=24, progress=False)
    single = generate_replies(pair, CONVERSATIONS[:1], batch_size=1, max_new_tokens=24, progress=False)
    assert replies[0] == single[0]
    assert all(r and "<|im_end|>" not in r and "<|im_start|>" not in r for r in replies)
    assert sum(c.isalpha() for c in "".join(replies)) > 20


def test_generate_script_writes_one_row_per_example(tiny_model_dir, ed_test_path, tmp_path, repo_root):
    out = tmp_path / "preds.jsonl"
    cmd = [
        sys.executable,
        str(repo_root / "evaluation" / "generate.py"),
        "--model",
        str(tiny_model_dir),
        "--dataset",
        str(ed_test_path),
        "--output",
        str(out),
        "--limit",
        "6",
        "--max-new-tokens",
        "8",
        "--batch-size",
        "4",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=repo_root)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    first = json.loads(ed_test_path.read_text().splitlines()[0])
    assert len(rows) == 6
    assert set(rows[0]) >= {"id", "context", "reference", "prediction", "model"}
    assert rows[0]["context"] == first["context"] and rows[0]["reference"] == first["reference"]
    assert rows[0]["id"] == str(first["id"]) and rows[0]["model"] == str(tiny_model_dir)


def test_generate_script_bad_model_is_one_line_error(ed_test_path, tmp_path, repo_root):
    cmd = [sys.executable, str(repo_root / "evaluation" / "generate.py"), "--model", "./nope", "--output", "x.jsonl"]
    cmd += ["--dataset", str(ed_test_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error:") and len(done.stderr.strip().splitlines()) == 1
