"""Synth-Empathy: parser on hand-written generations, own-response pairing, conservation of rows."""

from __future__ import annotations

import random

import pytest

from empathy_recipes.synth import (
    conversation_text,
    dialogue_to_examples,
    generation_prompt,
    parse_rounds,
    split_generations,
)

CLEAN = """Round 1:
Context: I just found out my best friend is moving across the country next month.
Response: That is hard news. Losing daily contact with someone so close can feel like a real loss.

Round 2:
Context: Yeah, we have been neighbours since we were kids. I don't know who I'll talk to.
Response: Twenty years of being next door is a lot. It makes sense you feel unsure.

Round 3:
Context: Maybe I should plan a trip to visit her before winter.
Response: That sounds like a lovely idea, something to look forward to together.
"""

MARKDOWN = """Sure! Here is a new dialogue:

### Round 1
**Context:** "My dog got sick last night and I had to rush him to the vet."
**Response:** "That must have been terrifying. I'm glad you got him help quickly." (13 words)

### Round 2
- **Context:** The vet says he needs surgery.
- **Response:** Surgery is scary, but it means there is a plan to help him.

### Round 3
**Context:**
He's twelve, so I worry
he won't make it.
**Response:**
Worrying shows how much you love him. Whatever happens, he has had a caring home.

I hope this helps!
"""

ONE_LINE = """Round 1: Context: I failed my driving test again. Response: I'm sorry, that is so frustrating.
Round 2: Context: It was my third try. Response: Three tries takes persistence; you have not given up.
Round 3: Context: My instructor says I'm close. Response: Then the next one could be it. You've got this.
Round 4: Context: I booked another for Friday. Response: Good luck on Friday!
"""


def test_parses_clean_format():
    result = parse_rounds(CLEAN)
    assert result.ok
    assert len(result.rounds) == 3
    assert result.rounds[0][0].startswith("I just found out my best friend")
    assert result.rounds[2][1] == "That sounds like a lovely idea, something to look forward to together."


def test_parses_markdown_quotes_word_counts_and_multiline():
    result = parse_rounds(MARKDOWN)
    assert result.ok, result.reason
    assert result.rounds[0] == (
        "My dog got sick last night and I had to rush him to the vet.",
        "That must have been terrifying. I'm glad you got him help quickly.",
    )
    assert result.rounds[1][0] == "The vet says he needs surgery."
    assert result.rounds[2][0] == "He's twelve, so I worry he won't make it."
    assert result.rounds[2][1].endswith("he has had a caring home.")  # the trailing "I hope this helps!" is not in


def test_parses_rounds_on_one_line():
    result = parse_rounds(ONE_LINE)
    assert result.ok
    assert [r[1] for r in result.rounds][-1] == "Good luck on Friday!"
    assert len(result.rounds) == 4


def test_words_that_look_like_headers_stay_text():
    text = CLEAN.replace("Maybe I should plan", "Turned out I should plan\nround the year")
    result = parse_rounds(text)
    assert result.ok
    assert result.rounds[2][0] == "Turned out I should plan round the year a trip to visit her before winter."


@pytest.mark.parametrize(
    ("text", "reason_part"),
    [
        ("", "empty generation"),
        ("   \n ", "empty generation"),
        (None, "empty generation"),
        ("I am so sorry to hear that. Let me help you with three rounds.", "no 'Context:' or 'Response:' label"),
        (CLEAN.split("Round 3:")[0], "only 2 complete round(s)"),
        (CLEAN + "Round 4:\nContext: And then", None),  # a truncated 4th round is cut, 3 remain: usable
        (CLEAN.replace("Round 2:\nContext", "Round 2:\nResponse: hm\nContext"), "a Response without a Context"),
        ("Context: a\nContext: b\nResponse: c", "Context followed by another Context"),
        ("Response: hi\nContext: a\nResponse: b", "a Response without a Context"),
        ("Round 1:\nContext: <what the speaker says>\nResponse: <your empathetic response>", "empty Context"),
        ("Context: I lost my job.\nResponse:\nContext: x\nResponse: y", "empty Response"),
        ("Context: a\nResponse: b\nContext: c", "Context without a Response (truncated?)"),
    ],
)
def test_malformed_generations_get_a_reason(text, reason_part):
    result = parse_rounds(text)
    if reason_part is None:
        assert result.ok and len(result.rounds) == 3
    else:
        assert not result.ok
        assert reason_part in result.reason


def test_mid_dialogue_gap_keeps_only_the_leading_run():
    text = CLEAN.replace("Response: Twenty years", "Note: Twenty years")  # round 2 loses its response
    result = parse_rounds(text, min_rounds=1)
    assert result.ok
    assert len(result.rounds) == 1  # round 3 would not continue round 1: not kept


def test_max_response_words():
    long = CLEAN.replace("That is hard news.", "That is hard news. " + "really " * 40)
    assert parse_rounds(long).ok
    result = parse_rounds(long, max_response_words=30)
    assert not result.ok and "round 1: response has" in result.reason


def test_split_generations_conserves_rows_and_keeps_columns():
    rows = [
        {"seed_id": "a", "generation": CLEAN},
        {"seed_id": "b", "generation": "gibberish"},
        {"seed_id": "c", "generation": None},
        {"seed_id": "d", "generation": MARKDOWN},
    ]
    parsed, rejected = split_generations(rows)
    assert len(parsed) + len(rejected) == len(rows)
    assert [r["seed_id"] for r in parsed] == ["a", "d"]
    assert [r["seed_id"] for r in rejected] == ["b", "c"]
    assert all(r["reason"] for r in rejected)
    assert rejected[0]["generation"] == "gibberish"  # the raw text is kept with its reason
    assert parsed[0]["rounds"][0] == {
        "context": "I just found out my best friend is moving across the country next month.",
        "response": "That is hard news. Losing daily contact with someone so close can feel like a real loss.",
    }


@pytest.mark.parametrize("mode", ["all", "sample"])
def test_every_example_ends_with_the_response_of_its_own_last_context(mode):
    """The paper's sample_turn.py pairs history up to round t with the *last* round's response; ours never does."""
    rng = random.Random(0)
    for gen in (CLEAN, MARKDOWN, ONE_LINE):
        rounds = parse_rounds(gen).rounds
        for k in range(20 if mode == "sample" else 1):
            for ex in dialogue_to_examples(rounds, f"d{k}", "sad", mode=mode, rng=rng):
                t = ex["n_rounds"]
                msgs = ex["messages"]
                assert len(msgs) == 2 * t
                assert [m["role"] for m in msgs] == ["user", "assistant"] * t
                assert msgs[-2]["content"] == rounds[t - 1][0]
                assert msgs[-1]["content"] == rounds[t - 1][1]  # its own response, not rounds[-1][1]
                for i in range(t):
                    assert (msgs[2 * i]["content"], msgs[2 * i + 1]["content"]) == rounds[i]


def test_dialogue_to_examples_modes():
    rounds = parse_rounds(ONE_LINE).rounds
    every = dialogue_to_examples(rounds, "x", "joyful", mode="all")
    assert [e["id"] for e in every] == ["x_r1", "x_r2", "x_r3", "x_r4"]
    assert all(e["emotion"] == "joyful" for e in every)
    counts = {dialogue_to_examples(rounds, "x", mode="sample", rng=random.Random(s))[0]["n_rounds"] for s in range(50)}
    assert counts == {2, 3, 4}  # the paper's 1-3 rounds of history before the final round
    assert dialogue_to_examples([], "x") == []
    with pytest.raises(ValueError):
        dialogue_to_examples(rounds, "x", mode="bogus")


def test_prompt_and_text_helpers():
    msgs = [{"role": "user", "content": "I lost my keys."}, {"role": "assistant", "content": "Oh no!"}]
    prompt = generation_prompt(msgs, "annoyed")
    assert "Speaker: I lost my keys.\nListener: Oh no!" in prompt
    assert "feels annoyed" in prompt and "at most 30 words" in prompt and "at least 3 rounds" in prompt
    assert "Round 1:\nContext:" in prompt and "Response:" in prompt
    assert parse_rounds(prompt).ok is False  # the template's own placeholders are not a dialogue
    assert conversation_text(msgs) == "I lost my keys.\nOh no!"
