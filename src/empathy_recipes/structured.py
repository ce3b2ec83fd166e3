"""Structured generation: the output format is enforced by the decoder, not hoped for.

A format is given once, as a JSON schema (synthetic dialogues) or a regular expression (a judge's score form), and
each backend enforces it its own way:

- ``transformers``: :class:`ConstrainedTransformersLLM`, a distilabel ``TransformersLLM`` whose ``generate`` runs a
  batched ``model.generate`` with :class:`GrammarLogitsProcessor`: at every step, the tokens that would break the
  format get ``-inf`` (masks computed by `llguidance <https://github.com/guidance-ai/llguidance>`_, the grammar
  engine behind vLLM's and llama.cpp's structured outputs). The mask is applied before temperature / top-p, so
  sampling stays as asked within the allowed tokens;
- ``vllm``: :class:`GuidedVLLM` passes the schema / regex to vLLM's own structured outputs (``SamplingParams``);
- ``openai`` (an OpenAI-compatible server): :func:`openai_extra_body` sends ``response_format`` with the JSON
  schema (``{"type": "json_schema", ...}``; honoured by OpenAI and ``vllm serve``, ignored by ``transformers
  serve``). A server that ignores it gets the same prompt; the parsers read what comes back and reject what they
  cannot read, with a reason.

Why llguidance (tried for real with SmolLM2-135M on CPU, see docs/synth.md): one wheel with no dependencies, masks
computed lazily per step (about 1 ms for a 49k vocabulary: 1.2 s of a 65 s generation of 4 x 300 tokens), and its
JSON-schema compiler takes ``pattern``, ``minItems`` and ``maxLength``, so "at least 3 rounds" and "at most 30 words
per response" are part of the grammar. distilabel 1.5.3's own ``structured_output`` calls ``outlines.processors.
JSONLogitsProcessor`` (the 0.1-era API, gone in outlines 1.x) through ``pkg_resources`` (not installed with recent
setuptools), so it cannot be used with the pinned stack.

Pure helpers: :func:`words_pattern`, :func:`dialogue_schema`, :func:`integer_regex`, :func:`score_form_regex`,
:func:`grammar_for` (a schema or a regex as an llguidance grammar).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import PrivateAttr

from empathy_recipes.backends import ChatVLLM, PlacementSafeTransformersLLM
from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.synth import separator_chars

logger = logging.getLogger(__name__)


def _char_class(chars: str, negate: bool = False) -> str:
    """A regex character class of ``chars`` written as ``\\uXXXX`` ranges (read alike by Python's ``re`` and by
    llguidance, whose ``\\s`` differs from Python's: it leaves out ``\\x1c``-``\\x1f``)."""
    codes = sorted({ord(c) for c in chars})
    ranges: list[list[int]] = []
    for code in codes:
        if ranges and code == ranges[-1][1] + 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    body = "".join(f"\\u{a:04x}" + (f"-\\u{b:04x}" if b > a else "") for a, b in ranges)
    return f"[{'^' if negate else ''}{body}]"


# Characters a word never holds: the separators (what str.split() splits on), the control characters (C0, DEL, C1),
# the JSON quote and backslash (so a string never needs escapes), and < > { } (no template placeholder such as
# "<what the speaker says>" and no template syntax can be echoed into a dialogue).
NON_WORD_CHARS = separator_chars() + "".join(map(chr, range(0x20))) + "".join(map(chr, range(0x7F, 0xA0))) + '"\\<>{}'
# A word: 1-24 characters, none of NON_WORD_CHARS. The same words as empathy_recipes.synth.count_words counts.
WORD = _char_class(NON_WORD_CHARS, negate=True) + "{1,24}"


# ---------------------------------------------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------------------------------------------
def words_pattern(max_words: int, min_words: int = 1) -> str:
    """A regex for a text of ``min_words``..``max_words`` words separated by single spaces (JSON-schema
    ``pattern``). Word length is bounded too (24 characters), so a string always ends within a known size."""
    if not 1 <= min_words <= max_words:
        raise EmpathyRecipesError(f"need 1 <= min_words <= max_words, got {min_words}..{max_words}")
    return rf"^{WORD}(?: {WORD}){{{min_words - 1},{max_words - 1}}}$"


def dialogue_schema(
    min_rounds: int = 3, max_words: int = 30, max_context_words: int = 40, max_rounds: int | None = None
) -> dict[str, Any]:
    """The JSON schema of a synthetic dialogue: ``{"rounds": [{"context": str, "response": str}, ...]}`` with at
    least ``min_rounds`` rounds (at most ``max_rounds`` when given), each response at most ``max_words`` words and
    each context at most ``max_context_words`` words."""
    if min_rounds < 1 or max_words < 1 or max_context_words < 1:
        raise EmpathyRecipesError("min_rounds, max_words and max_context_words must be >= 1")
    if max_rounds is not None and max_rounds < min_rounds:
        raise EmpathyRecipesError(f"max_rounds ({max_rounds}) must be >= min_rounds ({min_rounds})")
    rounds: dict[str, Any] = {
        "type": "array",
        "minItems": min_rounds,
        "items": {
            "type": "object",
            "properties": {
                "context": {"type": "string", "pattern": words_pattern(max_context_words)},
                "response": {"type": "string", "pattern": words_pattern(max_words)},
            },
            "required": ["context", "response"],
            "additionalProperties": False,
        },
    }
    if max_rounds is not None:
        rounds["maxItems"] = max_rounds
    return {
        "type": "object",
        "properties": {"rounds": rounds},
        "required": ["rounds"],
        "additionalProperties": False,
    }


def integer_regex(low: int, high: int) -> str:
    """A regex matching exactly the integers ``low..high`` (written without leading zeros)."""
    if not 0 <= low <= high:
        raise EmpathyRecipesError(f"need 0 <= low <= high, got {low}..{high}")
    return "(?:" + "|".join(str(n) for n in range(high, low - 1, -1)) + ")"


def regex_literal(text: str) -> str:
    """``text`` as a regex matching itself: only the metacharacters are escaped (``re.escape`` also escapes spaces
    and newlines, which not every regex engine accepts)."""
    return re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\1", text)


def score_form_regex(names: Sequence[str], low: int, high: int, line_template: str, form_prefix: str = "") -> str:
    """The regex of a judge's score form: ``form_prefix`` then one ``<line> <integer>`` line per axis, e.g.
    ``Evaluation Form (scores ONLY):\\n- Rationality: 8\\n- Sensibility: 5``."""
    number = integer_regex(low, high)
    lines = [regex_literal(line_template.format(Axis=a.title(), axis=a)) + " " + number for a in names]
    return regex_literal(form_prefix) + "\n".join(lines)


def grammar_for(json_schema: Mapping[str, Any] | None = None, regex: str | None = None) -> str:
    """An llguidance grammar (a JSON string) for exactly one of a JSON schema or a regex. The JSON is compact
    (no optional whitespace): fewer tokens, and the text is still valid JSON."""
    from llguidance import LLMatcher

    if (json_schema is None) == (regex is None):
        raise EmpathyRecipesError("give exactly one of a JSON schema or a regex")
    if json_schema is not None:
        return LLMatcher.grammar_from_json_schema(dict(json_schema), defaults={"whitespace_flexible": False})
    return LLMatcher.grammar_from_regex(regex)


def check_grammar(grammar: str, tokenizer: Any = None) -> None:
    """One :class:`EmpathyRecipesError` line when llguidance rejects ``grammar`` (with ``tokenizer``, an
    ``llguidance.LLTokenizer``, the check includes the vocabulary)."""
    from llguidance import LLMatcher

    is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar, tokenizer)
    if is_error:
        raise EmpathyRecipesError(f"the output format cannot be enforced: {' '.join(messages)[:300]}")


# ---------------------------------------------------------------------------------------------------------------
# transformers: a logits processor and the distilabel LLM using it
# ---------------------------------------------------------------------------------------------------------------
class GrammarLogitsProcessor:
    """A ``transformers`` logits processor that keeps every row of a ``generate`` call inside ``grammar``.

    One llguidance matcher per row; the first call of a ``generate`` sees the prompts (nothing to consume), every
    later call first feeds each row's last token to its matcher. A row whose matcher has finished may only emit
    end-of-sequence. Use one instance per ``generate`` call.
    """

    def __init__(self, ll_tokenizer: Any, grammar: str, eos_token_ids: Sequence[int]) -> None:
        self.ll_tokenizer = ll_tokenizer
        self.grammar = grammar
        self.eos_token_ids = list(eos_token_ids)
        self.matchers: list[Any] = []
        self.errors: list[str | None] = []
        self._prompt_len: int | None = None
        self._bitmask = None

    def __call__(self, input_ids, scores):
        import llguidance
        import llguidance.torch
        import torch

        batch, vocab = scores.shape
        if self._prompt_len is None:
            self._prompt_len = input_ids.shape[1]
            self.matchers = [llguidance.LLMatcher(self.ll_tokenizer, self.grammar, log_level=0) for _ in range(batch)]
            self.errors = [None] * batch
            self._bitmask = llguidance.torch.allocate_token_bitmask(batch, self.ll_tokenizer.vocab_size)
        else:
            for i, m in enumerate(self.matchers):
                token = int(input_ids[i, -1])
                if m.is_stopped() or self.errors[i] is not None:
                    continue
                if not m.consume_token(token):
                    self.errors[i] = m.get_error() or f"token {token} rejected"
        bitmask = self._bitmask
        for i, m in enumerate(self.matchers):
            if m.is_stopped() or self.errors[i] is not None:
                bitmask[i].zero_()
            else:
                llguidance.torch.fill_next_token_bitmask(m, bitmask, i)
        bits = torch.arange(32, dtype=torch.int32)
        allowed = ((bitmask.unsqueeze(-1) >> bits) & 1).reshape(batch, -1)[:, :vocab].bool()
        if allowed.shape[1] < vocab:  # model vocab padded beyond the tokenizer's: never allowed
            pad = torch.zeros(batch, vocab - allowed.shape[1], dtype=torch.bool)
            allowed = torch.cat([allowed, pad], dim=1)
        for i, m in enumerate(self.matchers):
            if m.is_stopped() or self.errors[i] is not None or not allowed[i].any():
                allowed[i, self.eos_token_ids] = True
        return scores.masked_fill(~allowed.to(scores.device), float("-inf"))


class ConstrainedTransformersLLM(PlacementSafeTransformersLLM):
    """A distilabel ``TransformersLLM`` (:class:`~empathy_recipes.backends.PlacementSafeTransformersLLM`) whose answers
    always follow ``grammar`` (an llguidance grammar from
    :func:`grammar_for`). ``generate`` runs one batched ``model.generate`` per call (left padding; every input
    times ``num_generations`` rows) with a fresh :class:`GrammarLogitsProcessor`. An answer cut by
    ``max_new_tokens`` is returned as it is (a prefix of a valid answer); the parser decides what it is worth.
    """

    grammar: str

    _ll_tokenizer: Any = PrivateAttr(default=None)

    def load(self) -> None:
        super().load()
        import llguidance.hf

        tok = self._pipeline.tokenizer
        try:
            self._ll_tokenizer = llguidance.hf.from_tokenizer(tok)
        except ValueError as err:  # a slow (Python) tokenizer
            raise EmpathyRecipesError(f"{self.model}: constrained decoding needs a fast tokenizer ({err})") from err
        check_grammar(self.grammar, self._ll_tokenizer)

    def generate(  # type: ignore[override]
        self,
        inputs: list[Any],
        num_generations: int = 1,
        max_new_tokens: int = 128,
        temperature: float = 0.1,
        repetition_penalty: float = 1.1,
        top_p: float = 1.0,
        top_k: int = 0,
        do_sample: bool = True,
    ) -> list[dict[str, Any]]:
        import torch
        from transformers import LogitsProcessorList

        model, tok = self._pipeline.model, self._pipeline.tokenizer
        prompts = [self.prepare_input(input=chat) for chat in inputs]
        tok.padding_side = "left"
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        eos = tok.eos_token_id
        processor = GrammarLogitsProcessor(self._ll_tokenizer, self.grammar, [eos])
        sampling = {"temperature": temperature, "top_p": top_p, "top_k": top_k} if do_sample else {}
        with torch.inference_mode():
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                num_return_sequences=num_generations,
                repetition_penalty=repetition_penalty,
                logits_processor=LogitsProcessorList([processor]),
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos,
                **sampling,
            )
        new = out[:, enc["input_ids"].shape[1] :]
        texts = tok.batch_decode(new, skip_special_tokens=True)
        n_tokens = [int((row != (tok.pad_token_id or eos)).sum()) for row in new]
        for i, err in enumerate(processor.errors):
            if err:
                logger.warning("constrained decoding, row %d: %s", i, err)
        results = []
        for k in range(len(inputs)):
            rows = range(k * num_generations, (k + 1) * num_generations)
            results.append(
                {
                    "generations": [texts[r] for r in rows],
                    "statistics": {
                        "input_tokens": [int(enc["attention_mask"][k].sum())] * num_generations,
                        "output_tokens": [n_tokens[r] for r in rows],
                    },
                }
            )
        return results


# ---------------------------------------------------------------------------------------------------------------
# vLLM and OpenAI-compatible servers
# ---------------------------------------------------------------------------------------------------------------
def vllm_structured_params(json_schema: Mapping[str, Any] | None = None, regex: str | None = None) -> dict[str, Any]:
    """The ``SamplingParams`` keyword for vLLM's own structured outputs: ``structured_outputs=
    StructuredOutputsParams(...)`` (vLLM >= 0.11) or ``guided_decoding=GuidedDecodingParams(...)`` (older)."""
    if (json_schema is None) == (regex is None):
        raise EmpathyRecipesError("give exactly one of a JSON schema or a regex")
    spec = {"json": dict(json_schema)} if json_schema is not None else {"regex": regex}
    try:
        from vllm.sampling_params import StructuredOutputsParams

        return {"structured_outputs": StructuredOutputsParams(**spec)}
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(**spec)}


class GuidedVLLM(ChatVLLM):
    """A distilabel ``vLLM`` whose answers follow ``json_schema`` (a JSON string) or ``regex``, through vLLM's own
    structured outputs (GPU; not testable on CPU)."""

    json_schema: str | None = None
    regex: str | None = None

    def generate(self, inputs, num_generations: int = 1, **kwargs):  # type: ignore[override]
        schema = json.loads(self.json_schema) if self.json_schema else None
        extra = {**(kwargs.pop("extra_sampling_params", None) or {}), **vllm_structured_params(schema, self.regex)}
        return super().generate(inputs, num_generations=num_generations, extra_sampling_params=extra, **kwargs)


def openai_extra_body(json_schema: Mapping[str, Any], name: str = "answer") -> dict[str, Any]:
    """``extra_body`` for an OpenAI-compatible chat request asking for ``json_schema`` (``response_format`` of
    type ``json_schema``, strict). Servers without structured outputs ignore it; the answer is then parsed as is."""
    return {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": dict(json_schema), "strict": True},
        }
    }


# ---------------------------------------------------------------------------------------------------------------
# One entry point per backend
# ---------------------------------------------------------------------------------------------------------------
def build_structured_llm(
    args: Any, json_schema: Mapping[str, Any] | None = None, regex: str | None = None, **generation_overrides: Any
):
    """The distilabel LLM for ``args.backend`` whose answers follow ``json_schema`` or ``regex``, validated (the
    format is checked here, before any model loads: a format the grammar engine rejects is one error line).

    transformers -> :class:`ConstrainedTransformersLLM`; vllm -> :class:`GuidedVLLM`; openai -> the plain
    ``OpenAILLM`` with ``response_format`` (JSON schemas only: a regex cannot be sent, the parser then reads the
    answer as it comes).
    """
    from empathy_recipes.llm import (
        build_llm,
        generation_kwargs_for,
        transformers_llm_kwargs,
        validate_llm_args,
        vllm_llm_kwargs,
    )

    validate_llm_args(args)
    if args.backend == "transformers":
        grammar = grammar_for(json_schema, regex)
        check_grammar(grammar)
        gen = generation_kwargs_for(args, **generation_overrides)
        return ConstrainedTransformersLLM(**transformers_llm_kwargs(args), generation_kwargs=gen, grammar=grammar)
    if args.backend == "vllm":
        check_grammar(grammar_for(json_schema, regex))
        gen = generation_kwargs_for(args, **generation_overrides)
        schema_text = json.dumps(dict(json_schema)) if json_schema is not None else None
        return GuidedVLLM(**vllm_llm_kwargs(args), generation_kwargs=gen, json_schema=schema_text, regex=regex)
    if json_schema is not None:
        generation_overrides = {**generation_overrides, "extra_body": openai_extra_body(json_schema)}
    return build_llm(args, **generation_overrides)
