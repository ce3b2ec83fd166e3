"""Batched generation: same greedy replies as one-at-a-time, input order kept, stops at <|im_end|>, bad input."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from empathy_recipes import generation
from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.generation import (
    build_prompts,
    generate_replies,
    length_sorted_batches,
    load_generation_model,
    prefill_groups,
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


def test_prefill_groups_split_where_padding_would_exceed_the_bound():
    lengths = [3, 10, 2, 9, 3, 10]
    # 10, 10, 9 padded to 10: 30 <= 1.15 x 29; adding a 3 would pad 40 for 32 real tokens
    assert prefill_groups(lengths) == [[1, 5, 3], [0, 4, 2]]
    assert prefill_groups(lengths, max_padding=1.0) == [[1, 5], [3], [0, 4], [2]]
    assert prefill_groups(lengths, max_padding=10.0) == [[1, 5, 3, 0, 4, 2]]
    assert prefill_groups([]) == []
    with pytest.raises(EmpathyRecipesError, match="max_padding"):
        prefill_groups(lengths, max_padding=0.5)


def test_prompts_end_with_the_generation_prompt(tiny_model_dir):
    _, tok = load_generation_model(tiny_model_dir, device="cpu")
    prompts = build_prompts(tok, CONVERSATIONS[:2], system_prompt="be kind")
    assert all(p.endswith("<|im_start|>assistant\n") for p in prompts)
    assert prompts[0].startswith("<|im_start|>system\nbe kind<|im_end|>")
    assert tok.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(tok)


# short and long replies: in one batch, rows reach <|im_end|> at different steps
REPLIES = [
    "oh no , i am so sorry .",
    "i am so sorry to hear that . fourteen years is a long time , he was family . how are you holding up ?",
    "congratulations !",
    "you have studied for weeks , so you are ready . good luck tomorrow , you will do well !",
    "hi , how are you ?",
]


@pytest.fixture(scope="module")
def talking_tiny_model(tiny_model_dir, tmp_path_factory):
    """The tiny random Llama trained for a few steps to answer each conversation with its reply in ``REPLIES``, so
    greedy decoding writes real, non-empty text of different lengths (the random model alone writes '' for these
    prompts)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    texts = [
        tok.apply_chat_template([*c, {"role": "assistant", "content": r}], tokenize=False)
        for c, r in zip(CONVERSATIONS, REPLIES, strict=True)
    ]
    batch = tok(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(100):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    out = tmp_path_factory.mktemp("talking-tiny")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_batched_equals_one_at_a_time_in_input_order(talking_tiny_model, monkeypatch):
    pair = load_generation_model(talking_tiny_model, device="cpu")
    prefilled = []  # rows of each batch whose prompts were prefilled in groups of similar length
    prefill_cache = generation._prefill_cache

    def recording_prefill_cache(model, tokenizer, rows):
        cache = prefill_cache(model, tokenizer, rows)
        prefilled.append(len(rows) if cache is not None else 0)
        return cache

    monkeypatch.setattr(generation, "_prefill_cache", recording_prefill_cache)
    batched = generate_replies(pair, CONVERSATIONS, batch_size=4, max_new_tokens=12, progress=False)
    assert prefilled == [4], prefilled  # the batch of 4 mixes lengths: prefilled in groups, not padded as one
    single = [generate_replies(pair, [c], batch_size=1, max_new_tokens=12, progress=False)[0] for c in CONVERSATIONS]
    assert len(batched) == len(CONVERSATIONS)
    assert all(len(r.split()) >= 2 for r in single), single  # real replies, not '' compared with ''
    assert batched == single
    # the same call with another batch size is the same (greedy, padding does not leak into the replies)
    assert batched == generate_replies(pair, CONVERSATIONS, batch_size=2, max_new_tokens=12, progress=False)


def test_finished_rows_leave_the_batch_and_replies_stay_those_of_one_at_a_time(talking_tiny_model, monkeypatch):
    model, tok = pair = load_generation_model(talking_tiny_model, device="cpu")
    single = [generate_replies(pair, [c], batch_size=1, max_new_tokens=64, progress=False)[0] for c in CONVERSATIONS]
    lengths = [len(tok(r, add_special_tokens=False)["input_ids"]) for r in single]
    assert min(lengths) + generation.SEGMENT < max(lengths) < 64, (lengths, single)  # some end a segment earlier
    rows_per_call = []
    generate = model.generate

    def counting_generate(**kwargs):
        rows_per_call.append(kwargs["input_ids"].shape[0])
        return generate(**kwargs)

    monkeypatch.setattr(model, "generate", counting_generate)
    batched = generate_replies(pair, CONVERSATIONS, batch_size=5, max_new_tokens=64, progress=False)
    assert batched == single
    assert rows_per_call[0] == 5 and rows_per_call[-1] < 5, rows_per_call  # finished rows were dropped
    assert rows_per_call == sorted(rows_per_call, reverse=True)


def test_grouped_prefill_is_skipped_for_sliding_window_caches(tiny_model_dir):
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    llama, tok = load_generation_model(tiny_model_dir, device="cpu")
    config = MistralConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, sliding_window=4, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    sliding = MistralForCausalLM(config).eval()
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in ("a b c d e f g h i j k l", "a b c", "a b")]
    assert generation._prefill_cache(llama, tok, rows) is not None  # a mixed batch, full attention: grouped
    assert generation._prefill_cache(sliding, tok, rows) is None  # its cache keeps a window: one padded prefill


def test_prefilled_cache_keeps_each_row_in_input_order_right_aligned(tiny_model_dir):
    import torch

    model, tok = load_generation_model(tiny_model_dir, device="cpu")
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in ("a b", "a b c d e f g h i j k l", "a b c d")]
    cache = generation._prefill_cache(model, tok, rows)  # rows not longest first: the groups run in another order
    assert cache is not None
    for r, ids in enumerate(rows):
        with torch.inference_mode():
            alone = model(input_ids=torch.tensor([ids[:-1]]), use_cache=True).past_key_values
        n = len(ids) - 1
        for layer, own in zip(cache.layers, alone.layers, strict=True):
            torch.testing.assert_close(layer.keys[r, :, -n:], own.keys[0])
            torch.testing.assert_close(layer.values[r, :, -n:], own.values[0])
            assert not layer.keys[r, :, :-n].any()  # masked left padding: zeros


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


@pytest.mark.slow
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


# ---- vLLM prompts: token ids, one BOS (runs without vllm: it tests what is sent to it) ----------------------------
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


@pytest.fixture(scope="module")
def llama3_style_tokenizer(ed_texts):
    """A locally trained BPE tokenizer that behaves like Llama-3's: it adds ``<|begin_of_text|>`` to every encoding
    (post-processor) AND its chat template writes ``{{ bos_token }}`` itself."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(ed_texts[:500], trainer=trainer)
    bos_id = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B", special_tokens=[("<|begin_of_text|>", bos_id)]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    fast.chat_template = LLAMA3_TEMPLATE
    return fast


def test_vllm_prompt_ids_carry_one_bos_with_a_llama3_template(llama3_style_tokenizer):
    from empathy_recipes.generation import vllm_prompts

    tok = llama3_style_tokenizer
    bos = tok.bos_token_id
    texts = build_prompts(tok, CONVERSATIONS, system_prompt="be kind")
    assert tok(texts[0])["input_ids"][:2] == [bos, bos]  # the trap: a text prompt tokenized as vLLM does
    prompts = vllm_prompts(tok, CONVERSATIONS, system_prompt="be kind")
    assert len(prompts) == len(CONVERSATIONS)
    for text, prompt in zip(texts, prompts):
        ids = prompt["prompt_token_ids"]
        assert ids[0] == bos and ids.count(bos) == 1
        assert tok.decode(ids) == text  # the whole rendered chat, nothing added or lost


def test_distilabel_vllm_stage_sends_token_ids_with_one_bos(llama3_style_tokenizer, tiny_model_dir, monkeypatch):
    import types

    from empathy_recipes.backends import ChatVLLM
    from empathy_recipes.prob_scoring import ScoreAxes, VLLMFormScorer

    tok = llama3_style_tokenizer
    llm = ChatVLLM(model=str(tiny_model_dir), response_prefix="Round 1:")
    llm._tokenizer = tok  # what load() takes from the vLLM engine
    prompt = llm.prepare_input(CONVERSATIONS[1])
    ids = prompt["prompt_token_ids"]
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert tok.decode(ids).endswith("<|start_header_id|>assistant<|end_header_id|>\n\nRound 1:")

    # Structured generation groups rows by schema; equal prompts (dicts, unhashable) must not collide.
    a, b = {"type": "object", "title": "A"}, {"type": "object", "title": "B"}
    rows = [(CONVERSATIONS[0], a), (CONVERSATIONS[1], b), (CONVERSATIONS[0], a), (CONVERSATIONS[0], b)]
    batches, order = llm._prepare_batches(rows)
    assert [schema for _, schema in batches] == [a, b] and [len(batch) for batch, _ in batches] == [2, 2]
    assert order == [0, 2, 1, 3] and batches[0][0][0] == batches[0][0][1] == llm.prepare_input(CONVERSATIONS[0])

    # The probability scorer's one-token calls get token ids too.
    axes = ScoreAxes(("empathy",), 1, 3)
    scorer = VLLMFormScorer(model=str(tiny_model_dir), score_axes=list(axes.names), score_low=1, score_high=3)
    scorer._tokenizer = tok
    sent = []

    class Engine:
        def generate(self, prompts, sampling_params, use_tqdm):
            sent.extend(prompts)
            return [type("Out", (), {"outputs": []})() for _ in prompts]

    scorer._model = Engine()
    if importlib.util.find_spec("vllm") is None:  # only SamplingParams is used from vllm here
        monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(SamplingParams=lambda **kwargs: kwargs))
    scorer.generate([CONVERSATIONS[0]])
    assert sent and all(p["prompt_token_ids"].count(tok.bos_token_id) == 1 for p in sent)


# ---- openai backend: chat completions against a local fake OpenAI-compatible server ------------------------------
def _load_generate_script():
    path = Path(__file__).resolve().parents[1] / "evaluation" / "generate.py"
    spec = importlib.util.spec_from_file_location("_generate_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATE_SCRIPT = _load_generate_script()


@pytest.fixture
def fake_openai_server():
    """A tiny OpenAI-compatible server on 127.0.0.1: ``/v1/chat/completions`` answers with the last user message
    reversed, and records every request body."""
    import http.server
    import threading

    requests: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
            text = body["messages"][-1]["content"][::-1]
            answer = {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": f" {text} "}}
                ],
            }
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", requests
    server.shutdown()
    server.server_close()


def test_openai_backend_sends_chat_messages_and_keeps_input_order(fake_openai_server):
    base_url, requests = fake_openai_server
    replies = generate_replies(
        "served-model",
        CONVERSATIONS,
        backend="openai",
        base_url=base_url,
        api_key="sk-test",
        batch_size=3,
        max_new_tokens=7,
        system_prompt="be kind",
        progress=False,
    )
    assert replies == [conv[-1]["content"][::-1].strip() for conv in CONVERSATIONS]  # input order, stripped
    assert len(requests) == len(CONVERSATIONS)
    by_last = {r["messages"][-1]["content"]: r for r in requests}
    for conv in CONVERSATIONS:
        sent = by_last[conv[-1]["content"]]
        assert sent["messages"] == [{"role": "system", "content": "be kind"}, *conv]  # chat messages, no template
        assert sent["path"] == "/v1/chat/completions" and sent["model"] == "served-model"
        assert sent["max_tokens"] == 7 and sent["temperature"] == 0.0 and "seed" not in sent  # greedy
        assert sent["auth"] == "Bearer sk-test"


def test_generate_script_runs_against_an_openai_server(fake_openai_server, ed_test_path, tmp_path, monkeypatch):
    base_url, requests = fake_openai_server
    monkeypatch.setenv("OPENAI_API_KEY", "EMPTY")
    out = tmp_path / "preds.jsonl"
    cmd = ["--backend", "openai", "--base-url", base_url, "--model", "served", "--dataset", str(ed_test_path)]
    GENERATE_SCRIPT.main([*cmd, "--limit", "4", "--output", str(out), "--do-sample", "--temperature", "0.5"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prediction"] for r in rows] == [r["context"][-1][::-1].strip() for r in rows]
    assert len(requests) == 4 and all(r["temperature"] == 0.5 and r["seed"] == 42 for r in requests)


def test_generate_script_unreachable_server_is_one_line(tmp_path, monkeypatch, capsys):
    import socket

    monkeypatch.setenv("OPENAI_API_KEY", "EMPTY")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["--backend", "openai", "--base-url", f"http://127.0.0.1:{port}/v1", "--output", str(tmp_path / "p.jsonl")]
    with pytest.raises(SystemExit) as exc:
        GENERATE_SCRIPT.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --base-url") and "cannot connect" in err and len(err.splitlines()) == 1
