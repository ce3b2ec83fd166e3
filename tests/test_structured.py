"""Structured generation: the formats, the JSON dialogue parser, and constrained decoding on the tiny random model
(whose unconstrained output is garbage: every constrained output must still parse)."""

from __future__ import annotations

import argparse
import json
import re

import pytest

from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.judge_scores import parse_judge_text
from empathy_recipes.llm import add_llm_args, build_llm
from empathy_recipes.structured import (
    WORD,
    ConstrainedTransformersLLM,
    GuidedVLLM,
    build_structured_llm,
    check_grammar,
    dialogue_schema,
    grammar_for,
    integer_regex,
    openai_extra_body,
    score_form_regex,
    words_pattern,
)
from empathy_recipes.synth import count_words, parse_generation, parse_json_rounds, separator_chars


def _rounds_json(rounds: list[tuple[str, str]]) -> str:
    return json.dumps({"rounds": [{"context": c, "response": r} for c, r in rounds]})


THREE = [
    ("I failed my driving test today.", "I'm sorry, that is disappointing after all the practice."),
    ("The examiner said I was too nervous.", "Nerves are normal; it says nothing about how well you can drive."),
    ("I'll book another one next month.", "That's a brave step. You'll be calmer the second time."),
]


def test_words_pattern_counts_words():
    pattern = re.compile(words_pattern(30))
    assert pattern.fullmatch(" ".join(["word"] * 30))
    assert not pattern.fullmatch(" ".join(["word"] * 31))
    assert not pattern.fullmatch("")
    assert not pattern.fullmatch("two  spaces")
    assert not pattern.fullmatch("x" * 25)  # a word is at most 24 characters
    with pytest.raises(EmpathyRecipesError):
        words_pattern(0)


def test_one_word_definition_for_the_grammar_and_the_checker():
    """The grammar's word never holds a character str.split() splits on (llguidance's \\s leaves out \\x1c-\\x1f,
    so a response written with them passed the grammar and was then rejected as "response has 31 words")."""
    assert set(separator_chars()) == {chr(c) for c in range(0x110000) if chr(c).isspace()}
    word_char = re.compile(WORD.replace("{1,24}", ""))
    for c in map(chr, range(0x110000)):
        if c.isspace():
            assert not word_char.fullmatch(c), hex(ord(c))
    assert word_char.fullmatch("é") and word_char.fullmatch("👍") and not word_char.fullmatch("<")
    pattern = re.compile(words_pattern(3))
    for sep in separator_chars().replace(" ", ""):  # the single space is the grammar's own separator
        glued = f"one{sep}two three"  # 3 words for the checker, one of them glued by sep: the grammar refuses it
        assert count_words(glued) == 3 and not pattern.fullmatch(glued)
    assert count_words("a\u00a0b\x1cc d") == 4


def test_the_decoder_never_writes_a_glued_word(tiny_model_dir):
    """The same check through llguidance itself: JSON text whose string holds a separator (raw or as a \\u escape)
    is refused, so every response the decoder writes has as many words for the checker as for the grammar."""
    import llguidance
    import llguidance.hf
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ll_tok = llguidance.hf.from_tokenizer(tok)
    grammar = grammar_for(json_schema={"type": "string", "pattern": words_pattern(3)})

    def accepts(text: str) -> bool:
        matcher = llguidance.LLMatcher(ll_tok, grammar, log_level=0)
        return all(matcher.consume_token(t) for t in tok(text, add_special_tokens=False)["input_ids"]) and (
            matcher.is_accepting()
        )

    assert accepts('"one two three"') and not accepts('"one two three four"')
    for sep in ("\x1c", "\x1f", "\u00a0", "\u2009", "\u3000", "\x85"):
        assert not accepts(json.dumps(f"one{sep}two three")), repr(sep)  # \u escaped
        assert not accepts(json.dumps(f"one{sep}two three", ensure_ascii=False)), repr(sep)  # raw


def test_dialogue_schema_and_score_regex():
    schema = dialogue_schema(min_rounds=3, max_words=30, max_context_words=40, max_rounds=5)
    rounds = schema["properties"]["rounds"]
    assert (rounds["minItems"], rounds["maxItems"]) == (3, 5)
    assert rounds["items"]["required"] == ["context", "response"]
    with pytest.raises(EmpathyRecipesError):
        dialogue_schema(min_rounds=3, max_rounds=2)
    assert re.fullmatch(integer_regex(0, 10), "10") and not re.fullmatch(integer_regex(0, 10), "11")
    assert not re.fullmatch(integer_regex(1, 3), "0")
    form = score_form_regex(["rationality", "sensibility"], 0, 10, "- {Axis}:", "Evaluation Form (scores ONLY):\n")
    assert re.fullmatch(form, "Evaluation Form (scores ONLY):\n- Rationality: 10\n- Sensibility: 0")
    assert not re.fullmatch(form, "Evaluation Form (scores ONLY):\n- Rationality: 11\n- Sensibility: 0")


def test_grammar_engine_rejects_a_bad_format_with_one_line():
    check_grammar(grammar_for(json_schema=dialogue_schema()))
    with pytest.raises(EmpathyRecipesError, match="cannot be enforced"):
        check_grammar(grammar_for(json_schema={"type": "string", "pattern": "(["}))
    with pytest.raises(EmpathyRecipesError):
        grammar_for()


def test_json_parser_complete_truncated_and_bad():
    ok = parse_json_rounds(_rounds_json(THREE))
    assert ok.ok and ok.rounds == THREE
    # cut by the token limit inside round 4: the three complete rounds are kept
    cut = _rounds_json([*THREE, ("And then?", "Tell me more")])[:-25]
    assert parse_json_rounds(cut).rounds == THREE and parse_json_rounds(cut).ok
    short = parse_json_rounds(_rounds_json(THREE)[:-60])
    assert not short.ok and "only 2 complete round(s)" in short.reason and "cut short" in short.reason
    assert parse_json_rounds('{"answer": 1}').reason == "JSON without a 'rounds' list"
    assert "empty Response" in parse_json_rounds(_rounds_json([("hi", " ")] * 3)).reason
    long = parse_json_rounds(_rounds_json(THREE), max_response_words=5)
    assert not long.ok and "words (> 5)" in long.reason
    assert parse_json_rounds("").reason == "empty generation"
    # one parser for both formats: text still goes to the Round/Context/Response parser
    text = "\n\n".join(f"Round {i}:\nContext: {c}\nResponse: {r}" for i, (c, r) in enumerate(THREE, 1))
    assert parse_generation(text).rounds == THREE
    assert parse_generation(_rounds_json(THREE)).rounds == THREE


def _args(model, backend="transformers", **kw):
    parser = add_llm_args(argparse.ArgumentParser())
    argv = ["--backend", backend, "--model", str(model), "--temperature", "0.8", "--top-p", "0.9"]
    argv += ["--max-new-tokens", "64", "--batch-size", "4"] + (
        ["--device", "cpu"] if backend == "transformers" else []
    )
    args = parser.parse_args(argv)
    for key, value in kw.items():
        setattr(args, key, value)
    return args


def _load(llm):
    llm.load()
    return llm


def test_constrained_dialogues_always_parse_on_the_tiny_model(tiny_model_dir):
    schema = dialogue_schema(min_rounds=3, max_words=4, max_context_words=4, max_rounds=3)
    chats = [[{"role": "user", "content": f"Write a dialogue about feeling {e}."}] for e in ("sad", "proud", "afraid")]
    llm = _load(build_structured_llm(_args(tiny_model_dir, max_new_tokens=700), json_schema=schema))
    assert isinstance(llm, ConstrainedTransformersLLM)
    outputs = llm.generate(chats, num_generations=2, **llm.generation_kwargs)
    texts = [t for o in outputs for t in o["generations"]]
    assert len(texts) == 6
    for text in texts:
        parsed = parse_json_rounds(text, min_rounds=3, max_response_words=4)
        assert parsed.ok, (parsed.reason, text)
        assert all(len(r.split()) <= 4 and len(c.split()) <= 4 for c, r in parsed.rounds)
    # The same model unconstrained writes no dialogue at all: the test above can fail.
    plain = _load(build_llm(_args(tiny_model_dir, max_new_tokens=200)))
    free = [t for o in plain.generate(chats, **plain.generation_kwargs) for t in o["generations"]]
    assert not any(parse_generation(t).ok for t in free)


@pytest.mark.parametrize(
    ("axes", "low", "high", "prefix"),
    [(["rationality", "sensibility"], 0, 10, "Evaluation Form (scores ONLY):\n"),
     (["naturalness", "coherence", "empathy"], 1, 3, "Evaluation Form (scores ONLY):\n")],
)  # fmt: skip
def test_constrained_score_forms_always_parse(tiny_model_dir, axes, low, high, prefix):
    regex = score_form_regex(axes, low, high, "- {Axis}:", prefix)
    llm = _load(build_structured_llm(_args(tiny_model_dir, temperature=0.0), regex=regex))
    chats = [[{"role": "user", "content": f"Rate reply {i}."}] for i in range(4)]
    texts = [t for o in llm.generate(chats, **llm.generation_kwargs) for t in o["generations"]]
    for text in texts:
        scores = parse_judge_text(text, axes, low, high)
        assert all(isinstance(scores[a], int) and low <= scores[a] <= high for a in axes), text


def test_vllm_and_openai_get_the_format_their_own_way(monkeypatch):
    schema = dialogue_schema()
    llm = build_structured_llm(_args("meta-llama/Meta-Llama-3-8B-Instruct", backend="vllm"), json_schema=schema)
    assert isinstance(llm, GuidedVLLM) and json.loads(llm.json_schema) == schema
    monkeypatch.setenv("OPENAI_API_KEY", "EMPTY")
    args = _args("served", backend="openai", base_url="http://127.0.0.1:9/v1")
    llm = build_structured_llm(args, json_schema=schema)
    assert llm.generation_kwargs["extra_body"] == openai_extra_body(schema)
    assert llm.generation_kwargs["extra_body"]["response_format"]["json_schema"]["schema"] == schema
