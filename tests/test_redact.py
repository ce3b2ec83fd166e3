"""Secrets in command lines and text are replaced by *** and nothing else changes."""

import json

import pytest

from empathy_recipes.redact import REDACTED, is_secret_name, redact_argv, redact_mapping, redact_text

HF = "hf_abcdefghijklmnopqrstuvwxyz0123"
SK = "sk-proj-ABCDEFGHIJKLMNOP1234567890"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--hub_token", "secret1", "--lr", "1e-4"], ["--hub_token", REDACTED, "--lr", "1e-4"]),
        (["--hub-token=secret1", "--max_steps", "5"], [f"--hub-token={REDACTED}", "--max_steps", "5"]),
        (["--api-key", "abc123", "--model", "m"], ["--api-key", REDACTED, "--model", "m"]),
        (["--api_key=abc123"], [f"--api_key={REDACTED}"]),
        (["--token", "x"], ["--token", REDACTED]),
        (["HF_TOKEN=abc", "make", "judge"], [f"HF_TOKEN={REDACTED}", "make", "judge"]),
        (["OPENAI_API_KEY=abc"], [f"OPENAI_API_KEY={REDACTED}"]),
        (["--note", HF], ["--note", REDACTED]),
        (["--base-url", "http://x", "--key-file", "k"], ["--base-url", "http://x", "--key-file", "k"]),
        (["--max_new_tokens", "50", "--pad_token", "<pad>"], ["--max_new_tokens", "50", "--pad_token", "<pad>"]),
        (["--max-tokens=50"], ["--max-tokens=50"]),
    ],
)
def test_redact_argv(argv, expected):
    assert redact_argv(argv) == expected


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("accelerate launch scripts/sft.py --hub_token abc123 --max_steps 5", "abc123"),
        ("run --hub-token=abc123 --x", "abc123"),
        ("HF_TOKEN=abc123 make sft", "abc123"),
        (f"Authorization: Bearer {SK}", SK),
        (f"token is {HF}.", HF),
        ("api_key: abc123\nmodel: m", "abc123"),
        ('{"api_key": "abc123", "model": "m"}', "abc123"),
        ("--api-key 'abc123'", "abc123"),
    ],
)
def test_redact_text_hides_the_secret(text, secret):
    out = redact_text(text)
    assert secret not in out
    assert REDACTED in out


@pytest.mark.parametrize(
    "text",
    [
        "--max_new_tokens 50 --eos_token <|im_end|>",
        "api_key: null",
        "tokenizer: models/x\nnum_tokens: 5",
        "a plain sentence about keys and tokens",
    ],
)
def test_redact_text_leaves_the_rest(text):
    assert redact_text(text) == text


def test_redact_mapping_is_deep_and_keeps_other_values():
    data = {"llm": {"api_key": "abc123", "model": "m", "generation_kwargs": {"max_new_tokens": 8}}, "argv": [HF, "1"]}
    out = redact_mapping(data)
    assert out == {
        "llm": {"api_key": REDACTED, "model": "m", "generation_kwargs": {"max_new_tokens": 8}},
        "argv": [REDACTED, "1"],
    }
    assert "abc123" not in json.dumps(out)
    assert data["llm"]["api_key"] == "abc123"  # a copy, not in place
    assert redact_mapping({"api_key": None}) == {"api_key": None}


def test_is_secret_name():
    assert all(map(is_secret_name, ["--hub_token", "HF_TOKEN", "api-key", "--api_key", "client_secret", "password"]))
    assert not any(map(is_secret_name, ["--max_new_tokens", "pad_token", "--eos-token", "tokenizer", "key"]))
