"""Redact secrets (tokens, API keys) from command lines and free text before anything is written or logged.

Two kinds of secrets are recognised:

- the *value* of a secret-named option or environment variable, in any spelling: ``--hub_token X``,
  ``--hub-token=X``, ``--api-key X``, ``--api_key=X``, ``--token X``, ``--password X``, ``HF_TOKEN=X``,
  ``OPENAI_API_KEY=X``, ``api_key: X`` (YAML) and ``"api_key": "X"`` (JSON);
- a token that looks like one wherever it appears: ``hf_...`` (Hugging Face), ``sk-...`` (OpenAI and compatibles),
  ``ghp_...``/``github_pat_...`` (GitHub).

Everything else is left byte for byte, so a redacted command still reads (and reruns once the secret is given back).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "***"
_EMPTY_VALUES = {REDACTED, "null", "None", "~", "false", "False"}

# An option or variable name that holds a secret: ends in token/key/secret/password (any case, - or _).
_SECRET_NAME = r"[A-Za-z0-9_-]*(?:token|api[-_]?key|secret|password|passwd|credentials?)"
_SECRET_NAME_RE = re.compile(rf"^{_SECRET_NAME}$", re.IGNORECASE)
# Names that end like a secret but are not one (counts and ids of tokens, tokenizer options).
_NOT_SECRET = re.compile(
    r"(max|min|num|n|pad|eos|bos|unk|sep|cls|mask|special|new|prompt|total|per)[-_]?tokens?$"
    r"|tokens?[-_]?(id|ids|count|length|len)$|^(--)?(max|min)[-_]",
    re.IGNORECASE,
)

# Tokens recognisable by their shape, wherever they stand.
_TOKEN_SHAPES = re.compile(
    r"\b(?:hf_[A-Za-z0-9]{8,}|sk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}|ghp_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"
)
# `--name=value`, `NAME=value` (env style), `name: value` (YAML), `"name": "value"` (JSON) in free text.
_ASSIGNMENT = re.compile(
    rf"""(?<![A-Za-z0-9_-])(?P<key>(?:--)?{_SECRET_NAME})(?P<q1>["']?)(?P<sep>\s*[:=]\s*)(?P<q2>["']?)(?P<value>[^\s"',}}]+)""",
    re.IGNORECASE,
)
# `--name value` in free text (a logged command line).
_OPTION_SPACE = re.compile(
    rf"(?<![A-Za-z0-9_-])(?P<key>--{_SECRET_NAME})(?P<sep>\s+)(?P<q>[\"']?)(?P<value>(?!-)[^\s\"']+)", re.IGNORECASE
)


def is_secret_name(name: str) -> bool:
    """True when an option or variable *name* (``--hub_token``, ``HF_TOKEN``, ``api_key``) holds a secret."""
    bare = name.lstrip("-")
    return bool(_SECRET_NAME_RE.match(bare)) and not _NOT_SECRET.search(bare)


def redact_text(text: str) -> str:
    """Return *text* with every secret value replaced by ``***`` (see the module docstring for what is a secret)."""

    def _assignment(match: re.Match[str]) -> str:
        if not is_secret_name(match["key"]) or match["value"] in _EMPTY_VALUES:
            return match[0]
        return f"{match['key']}{match['q1']}{match['sep']}{match['q2']}{REDACTED}"

    def _option(match: re.Match[str]) -> str:
        if not is_secret_name(match["key"]) or match["value"] == REDACTED:
            return match[0]
        return f"{match['key']}{match['sep']}{match['q']}{REDACTED}"

    text = _ASSIGNMENT.sub(_assignment, text)
    text = _OPTION_SPACE.sub(_option, text)
    return _TOKEN_SHAPES.sub(REDACTED, text)


def redact_argv(argv: Iterable[str]) -> list[str]:
    """Return a copy of a command line with secret option values replaced by ``***``.

    Handles ``--hub_token X`` (the value is the next argument), ``--hub-token=X``, ``HF_TOKEN=X`` and bare
    ``hf_...``/``sk-...`` tokens in any argument.
    """
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        if arg.startswith("--") and "=" not in arg and is_secret_name(arg):
            out.append(arg)
            hide_next = True
            continue
        out.append(redact_text(arg))
    return out


def redact_mapping(data: Any) -> Any:
    """Return a deep copy of a JSON-like value with the values under secret-named keys, and token shapes, redacted."""
    if isinstance(data, Mapping):
        return {
            key: (REDACTED if isinstance(key, str) and is_secret_name(key) and value else redact_mapping(value))
            for key, value in data.items()
        }
    if isinstance(data, list | tuple):
        return [redact_mapping(item) for item in data]
    if isinstance(data, str):
        return redact_text(data)
    return data
