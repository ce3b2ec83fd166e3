"""Synth-Empathy dialogues: the generation prompt, a robust ``Round / Context / Response`` parser, and the turn of a
parsed dialogue into chat-schema training examples. Pure functions; no model here.

A generation is a list of rounds; round ``t`` is a new emotional *context* (the speaker's turn) and the empathetic
*response* written for it, each round continuing the previous one. A training example built from rounds ``1..t``
is ``user c1, assistant r1, ..., user ct, assistant rt``: its last assistant turn is always the response written
for its own last context. (The paper's ``sample_turn.py`` builds the history up to round ``t`` but takes the
response of the dialogue's *last* round, so most of its examples answer a context they were not written for.)

Generations that cannot be parsed are never dropped silently: :func:`split_generations` returns them with a reason.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIN_ROUNDS = 3
MAX_RESPONSE_WORDS = 30


def separator_chars() -> str:
    """Every character ``str.split()`` splits on (those for which ``str.isspace()`` holds; all lie below U+3001):
    the word separators of :func:`count_words`."""
    return "".join(c for c in map(chr, range(0x3001)) if c.isspace())


def count_words(text: str) -> int:
    """The number of words in ``text``: the one definition of a word in the project, ``str.split()`` (runs of
    characters between whitespace, where whitespace is every character for which ``str.isspace()`` holds: ASCII
    spaces, ``\\x1c``-``\\x1f``, no-break and other Unicode spaces). The decoder's grammar
    (:data:`empathy_recipes.structured.WORD`) is derived from the same set, so a response the grammar lets through
    is never over the limit here."""
    return len(text.split())


GENERATION_PROMPT = """\
Below is a conversation from an emotional support chat. The speaker feels {emotion}.

{conversation}

Act as an empathetic psychologist with strong sensibility (you feel what the speaker feels) and strong rationality \
(you understand why, and what would help). Inspired by this conversation, write a completely new dialogue of at \
least {min_rounds} rounds. In each round, the speaker shares a new piece of emotional context and you answer with an \
empathetic response of at most {max_words} words. Each round must continue the previous one, so that the rounds read \
as one conversation.

Write only the rounds, in exactly this format:

Round 1:
Context: <what the speaker says>
Response: <your empathetic response>

Round 2:
Context: <what the speaker says next>
Response: <your empathetic response>

Round 3:
Context: <what the speaker says next>
Response: <your empathetic response>
"""


JSON_FORMAT_NOTE = """\
Answer with JSON only, in exactly this form (at least {min_rounds} rounds):
{{"rounds": [{{"context": "<what the speaker says>", "response": "<your empathetic response>"}}, \
{{"context": "<what the speaker says next>", "response": "<your empathetic response>"}}, ...]}}
"""
OUTPUT_FORMATS = ("json", "text")


def format_conversation(messages: Sequence[dict[str, str]]) -> str:
    """Chat messages as ``Speaker: ...`` / ``Listener: ...`` lines (user = speaker, assistant = listener)."""
    names = {"user": "Speaker", "assistant": "Listener"}
    return "\n".join(f"{names.get(m['role'], m['role'].title())}: {m['content'].strip()}" for m in messages)


def generation_prompt(
    messages: Sequence[dict[str, str]],
    emotion: str | None = None,
    min_rounds: int = MIN_ROUNDS,
    max_words: int = MAX_RESPONSE_WORDS,
    output_format: str = "text",
) -> str:
    """The instruction asking for ``min_rounds``+ new rounds inspired by an ED example (its messages and emotion).

    ``output_format="text"``: ``Round n: / Context: / Response:`` blocks; ``"json"``: the same instruction asking
    for ``{"rounds": [{"context": ..., "response": ...}, ...]}`` (what :func:`empathy_recipes.structured.
    dialogue_schema` enforces)."""
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
    prompt = GENERATION_PROMPT.format(
        emotion=(emotion or "").strip() or "a strong emotion",
        conversation=format_conversation(messages),
        min_rounds=min_rounds,
        max_words=max_words,
    )
    if output_format == "json":
        prompt = prompt.split("Write only the rounds")[0] + JSON_FORMAT_NOTE.format(min_rounds=min_rounds)
    return prompt


# ---- parsing -------------------------------------------------------------------------------------------------------

_DECORATION = re.compile(r"^[\s>#*_\-•·]+|[\s*_]+$")  # markdown headers, bullets, bold/italic marks at the edges
_ROUND = re.compile(
    r"^(?:round|turn)\s*(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten)?\b\s*[:.)\-–—]?\s*", re.I
)
_LABEL = re.compile(
    r"^(?:emotional\s+|empathetic\s+|new\s+)?(?P<label>context|response)\b\s*(?:\([^)]*\))?\s*[*_]*\s*[:\-–—]\s*[*_]*\s*(?P<rest>.*)$",
    re.I,
)
_INLINE_LABEL = re.compile(r"(?<=\S)\s+(?=(?:Context|Response|Round \d+)\s*:)")
_WORD_COUNT = re.compile(r"\s*[\[(]\s*\d+\s*words?\s*[\])]\s*$", re.I)
_PLACEHOLDER = re.compile(r"^<[^<>]*>$")
_QUOTES = "\"'“”‘’"


@dataclass
class ParsedGeneration:
    """The rounds found in one generation, and why it is unusable (``reason is None`` when usable)."""

    rounds: list[tuple[str, str]] = field(default_factory=list)
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def _clean(text: str) -> str:
    text = " ".join(text.split())
    text = _WORD_COUNT.sub("", text).strip()
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    text = text.strip("*_ ").strip()
    return "" if _PLACEHOLDER.match(text) else text


def _blocks(text: str) -> list[tuple[str, str]]:
    """``(label, content)`` pairs in order (label ``context``/``response``).

    Unlabelled lines continue the open block; a round header, or a blank line once the block has text, closes it.
    """
    blocks: list[tuple[str, list[str]]] = []
    is_open = False
    lines = []
    for raw in text.splitlines():
        # "Context: ... Response: ..." on one line: a capitalised label after text starts a new line.
        lines.extend(_INLINE_LABEL.split(raw.replace("**", "").replace("__", "")))
    for raw in lines:
        line = _DECORATION.sub("", raw.strip())
        header = _ROUND.match(line)
        if header and (header.end() == len(line) or _LABEL.match(line[header.end() :])):
            is_open = False
            line = line[header.end() :]
        label = _LABEL.match(line)
        if label:
            blocks.append((label.group("label").lower(), [label.group("rest")]))
            is_open = True
        elif is_open and line:
            blocks[-1][1].append(line)
        elif is_open and not line and any(p.strip() for p in blocks[-1][1]):
            is_open = False
    return [(label, _clean(" ".join(parts))) for label, parts in blocks]


def _turn_key(text: str) -> str:
    """A turn's text for comparing turns: lower case, words only (``Awesome,`` and ``awesome`` are the same turn)."""
    return " ".join(re.findall(r"\w+", text.lower()))


def first_repeated_round(rounds: Sequence[tuple[str, str]]) -> tuple[int, str] | None:
    """``(t, why)`` for the first round ``t`` (1-based) that says nothing new: its response repeats its own
    context, or its context or response repeats an earlier turn of the dialogue (compared by :func:`_turn_key`);
    ``None`` when every round is new. Each round must bring a new piece of context and a response written for it
    (what the generation prompt asks); a small generator otherwise writes the same round again and again, and a
    discriminator that copies the history then "agrees" with it at cosine 100."""
    seen: set[str] = set()
    for t, (context, response) in enumerate(rounds, start=1):
        c, r = _turn_key(context), _turn_key(response)
        if c == r:
            return t, "response repeats its context"
        if c in seen:
            return t, "context repeats an earlier turn"
        if r in seen:
            return t, "response repeats an earlier turn"
        seen.update((c, r))
    return None


def _checked_rounds(
    rounds: list[tuple[str, str]], problem: str | None, min_rounds: int, max_response_words: int | None
) -> ParsedGeneration:
    """The rules both parsers share: the rounds up to the first one that repeats (:func:`first_repeated_round`),
    at least ``min_rounds`` of them, each response within the word limit."""
    repeated = first_repeated_round(rounds)
    if repeated is not None and repeated[0] <= min_rounds:
        t, why = repeated
        return ParsedGeneration(
            rounds=rounds[: t - 1], reason=f"round {t}: {why} (only {t - 1} new round(s), need {min_rounds})"
        )
    if repeated is not None:  # enough new rounds before it: keep those, as with a round cut by the token limit
        rounds = rounds[: repeated[0] - 1]
    if len(rounds) < min_rounds:
        why = f"only {len(rounds)} complete round(s), need at least {min_rounds}"
        return ParsedGeneration(rounds=rounds, reason=f"{why} ({problem})" if problem else why)
    if max_response_words is not None:
        for t, (_, response) in enumerate(rounds, start=1):
            if count_words(response) > max_response_words:
                return ParsedGeneration(
                    rounds=rounds,
                    reason=f"round {t}: response has {count_words(response)} words (> {max_response_words})",
                )
    return ParsedGeneration(rounds=rounds)


def parse_rounds(
    text: str | None,
    min_rounds: int = MIN_ROUNDS,
    max_response_words: int | None = None,
) -> ParsedGeneration:
    """Parse ``Round / Context / Response`` blocks out of a generation.

    Tolerates markdown (``**Context:**``, ``### Round 1``, bullets), labels on their own line with the text below,
    ``Round 1: Context: ...`` on one line, quotes around the text, and trailing ``(25 words)`` counts. The rounds
    kept are the longest run of complete rounds from the start (a round with no response, e.g. cut by the token
    limit, ends the run: a later round would not continue the kept ones). The generation is unusable when fewer
    than ``min_rounds`` rounds remain, or (when ``max_response_words`` is set) a kept response is longer.
    """
    if text is None or not str(text).strip():
        return ParsedGeneration(reason="empty generation")
    blocks = _blocks(str(text))
    if not blocks:
        return ParsedGeneration(reason="no 'Context:' or 'Response:' label found")
    rounds: list[tuple[str, str]] = []
    problem = None
    i = 0
    while i < len(blocks):
        label, content = blocks[i]
        if label != "context":
            problem = f"round {len(rounds) + 1}: a Response without a Context before it"
            break
        if not content:
            problem = f"round {len(rounds) + 1}: empty Context"
            break
        if i + 1 >= len(blocks):
            problem = f"round {len(rounds) + 1}: Context without a Response (truncated?)"
            break
        next_label, response = blocks[i + 1]
        if next_label != "response":
            problem = f"round {len(rounds) + 1}: Context followed by another Context"
            break
        if not response:
            problem = f"round {len(rounds) + 1}: empty Response"
            break
        rounds.append((content, response))
        i += 2
    return _checked_rounds(rounds, problem, min_rounds, max_response_words)


_JSON_ROUND = re.compile(
    r'\{\s*"context"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"response"\s*:\s*"((?:[^"\\]|\\.)*)"\s*\}', re.S
)


def looks_like_json(text: str | None) -> bool:
    """True when a generation is (the start of) a JSON object: it is then read by :func:`parse_json_rounds`."""
    return bool(text) and str(text).lstrip().startswith("{")


def parse_json_rounds(
    text: str | None,
    min_rounds: int = MIN_ROUNDS,
    max_response_words: int | None = None,
) -> ParsedGeneration:
    """Parse a ``{"rounds": [{"context": ..., "response": ...}, ...]}`` generation (what constrained decoding
    writes).

    A complete JSON object is read as is. A generation cut by the token limit is a prefix of valid JSON: its
    complete round objects are kept (the cut one is dropped, and the reason says so when too few remain). The
    same rules as :func:`parse_rounds` follow: at least ``min_rounds`` rounds with a non-empty context and
    response, and (when set) no response longer than ``max_response_words``.
    """
    if text is None or not str(text).strip():
        return ParsedGeneration(reason="empty generation")
    text = str(text).strip()
    truncated = False
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
        truncated = True
    if data is not None:
        items = data.get("rounds") if isinstance(data, dict) else None
        if not isinstance(items, list):
            return ParsedGeneration(reason="JSON without a 'rounds' list")
        pairs = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("context"), str):
                break
            if not isinstance(item.get("response"), str):
                break
            pairs.append((item["context"], item["response"]))
    else:
        pairs = [(json.loads(f'"{c}"'), json.loads(f'"{r}"')) for c, r in _JSON_ROUND.findall(text)]
    rounds: list[tuple[str, str]] = []
    problem = None
    for context, response in pairs:
        context, response = " ".join(context.split()), " ".join(response.split())
        if not context or not response:
            problem = f"round {len(rounds) + 1}: empty {'Context' if not context else 'Response'}"
            break
        rounds.append((context, response))
    if len(rounds) < min_rounds and problem is None and truncated:
        problem = "JSON cut short (token limit?)" if rounds or "context" in text else "not JSON"
    return _checked_rounds(rounds, problem, min_rounds, max_response_words)


def parse_generation(
    text: str | None, min_rounds: int = MIN_ROUNDS, max_response_words: int | None = None
) -> ParsedGeneration:
    """One parser for both formats: JSON (:func:`parse_json_rounds`) when the generation starts with ``{``, else
    ``Round / Context / Response`` text (:func:`parse_rounds`). A server that ignored the JSON schema is read
    whichever way it answered."""
    parse = parse_json_rounds if looks_like_json(text) else parse_rounds
    return parse(text, min_rounds=min_rounds, max_response_words=max_response_words)


def split_generations(
    rows: Iterable[dict[str, Any]],
    text_key: str = "generation",
    min_rounds: int = MIN_ROUNDS,
    max_response_words: int | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Parse every row's ``text_key``: ``(parsed, rejected)``, every input row in exactly one of them.

    Parsed rows get ``rounds`` (list of ``{"context", "response"}``); rejected rows get ``reason``. All other keys
    are kept.
    """
    parsed, rejected = [], []
    for row in rows:
        result = parse_generation(row.get(text_key), min_rounds=min_rounds, max_response_words=max_response_words)
        if result.ok:
            rounds = [{"context": c, "response": r} for c, r in result.rounds]
            parsed.append({**row, "rounds": rounds})
        else:
            rejected.append({**row, "reason": result.reason})
    return parsed, rejected


# ---- dialogues -> training examples ---------------------------------------------------------------------------------


def round_messages(rounds: Sequence[dict[str, str] | tuple[str, str]], n_rounds: int) -> list[dict[str, str]]:
    """Messages for rounds ``1..n_rounds``: each round's context (user) then that same round's response (assistant)."""
    if not 1 <= n_rounds <= len(rounds):
        raise ValueError(f"n_rounds must be in [1, {len(rounds)}], got {n_rounds}")
    messages = []
    for rnd in rounds[:n_rounds]:
        context, response = (rnd["context"], rnd["response"]) if isinstance(rnd, dict) else rnd
        messages.append({"role": "user", "content": context})
        messages.append({"role": "assistant", "content": response})
    return messages


def paper_round_count(n_rounds: int, rng: random.Random) -> int:
    """How many rounds one example keeps, as in the paper: 2 to 4 (the last 1-3 rounds as history), capped at
    ``n_rounds``."""
    return min(rng.randint(1, 3), n_rounds - 1) + 1


def dialogue_to_examples(
    rounds: Sequence[dict[str, str] | tuple[str, str]],
    dialogue_id: str,
    emotion: str = "",
    mode: str = "sample",
    rng: random.Random | None = None,
) -> list[dict[str, Any]]:
    """Chat-schema examples (``id``, ``emotion``, ``messages``, ``n_rounds``) from one parsed dialogue.

    ``mode="sample"``: one example per dialogue with a paper-like number of rounds (2-4, drawn from ``rng``);
    ``mode="all"``: one example per prefix (rounds 1, 1-2, ..., 1-n). Ids are ``<dialogue_id>_r<n_rounds>``.
    """
    if not rounds:
        return []
    if mode == "all":
        lengths = list(range(1, len(rounds) + 1))
    elif mode == "sample":
        lengths = [paper_round_count(len(rounds), rng or random.Random(0))]
    else:
        raise ValueError(f"mode must be 'sample' or 'all', got {mode!r}")
    return [
        {"id": f"{dialogue_id}_r{t}", "emotion": emotion, "messages": round_messages(rounds, t), "n_rounds": t}
        for t in lengths
    ]


def conversation_text(messages: Sequence[dict[str, str]]) -> str:
    """One string for embedding a whole example (context + response): the turns joined by newlines."""
    return "\n".join(m["content"] for m in messages)


# ---- what a pushed selection says about itself -------------------------------------------------------------------


def selection_settings(selected_path: str | Path) -> dict[str, Any]:
    """The selection settings behind a file of the synth layout (``<out>/quality/selected.jsonl`` or
    ``<out>/diversity/selected.jsonl``), read from the steps' ``summary.json`` files next to it: quality threshold,
    discriminator, embedder, diversity ratio. Empty for a file outside that layout (or a Hub id)."""
    path = Path(selected_path)
    settings: dict[str, Any] = {}
    for summary_path in (path.parent / "summary.json", path.parent.parent / "quality" / "summary.json"):
        if not summary_path.is_file():
            continue
        summary = json.loads(summary_path.read_text())
        if "ratio" in summary and "diversity_ratio" not in settings:
            settings.update(diversity_ratio=summary["ratio"], diversity_seed=summary.get("seed"))
        if "threshold" in summary and "quality_threshold" not in settings:
            settings.update(quality_threshold=summary["threshold"])
            for key in ("discriminator", "embedder"):
                if summary.get(key):
                    settings[key] = summary[key]
    return settings


def synthetic_card_sections(rows: Sequence[dict[str, Any]], settings: dict[str, Any]) -> dict[str, str]:
    """The card sections of a pushed set of synthetic examples: who generated them (``generator`` column) from
    which seeds, and the selection settings (thresholds) that kept them."""
    synthetic = [r for r in rows if r.get("source", "synthetic") == "synthetic"]
    generators = sorted({str(r["generator"]) for r in synthetic if r.get("generator")})
    seeds = {str(r["seed_id"]) for r in synthetic if r.get("seed_id") is not None}
    generation = [
        f"- generator: {', '.join(f'`{g}`' for g in generators) or 'not recorded'}",
        f"- synthetic examples: {len(synthetic)}" + (f", from {len(seeds)} ED seed examples" if seeds else ""),
        "- format: multi-round dialogues written as JSON whose format the decoder enforced "
        "(`empathy_recipes.structured`), parsed into chat examples (the last assistant turn answers its own context)",
    ]
    lines = [f"| {k} | `{v}` |" for k, v in settings.items() if v is not None]
    selection = "\n".join(["| setting | value |", "| --- | --- |", *lines]) if lines else "No selection recorded."
    return {"Generation": "\n".join(generation), "Selection": selection}
