"""The judge parsers read only a well-formed form (issue 13 item 4, issue 16 item 5): every malformed form, echoed
template placeholder or odd score value lands in ``unscored`` with its reason, never as a silent number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from empathy_recipes.judge_scores import (
    REASON_COLUMN,
    assign_sets,
    count_sets,
    parse_judge_outputs,
    parse_judge_text,
    scores_from_columns,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
QUALITY = ("naturalness", "coherence", "empathy")

# (judge text, reason). Each was read as a number before (the comment says which): now unscored with the reason.
MALFORMED = [
    (  # was R=0, S=0: the 0 of the placeholder
        "Evaluation Form (scores ONLY):\n- Rationality: <0-10>\n- Sensibility: <0-10>",
        "rationality: template placeholder '<0-10>' echoed; sensibility: template placeholder '<0-10>' echoed",
    ),
    (  # was R=0, S=0
        "Rationality (0-10): 7\nSensibility (0-10): 6",
        "rationality: template placeholder '(0-10)' echoed; sensibility: template placeholder '(0-10)' echoed",
    ),
    (  # was R=8 (the sensibility's number)
        "Rationality: Sensibility: 8",
        "no rationality score after its colon (it reads 'Sensibility: 8'); no sensibility score",
    ),
    ("- Rationality: 1e1\n- Sensibility: 5", "rationality score '1e1' is not an integer"),  # was 1
    ("- Rationality: 3-4\n- Sensibility: 5", "rationality score '3-4' is not one integer"),  # was 3
    ("- Rationality: 3 to 4\n- Sensibility: 5", "rationality score '3 to 4' is not one integer"),
    ("- Rationality: 3\n- Sensibility: 5\n- Rationality: 9", "rationality given 2 times"),  # was the first, 3
    ("- Rationality: 4\n- Rationality: 4\n- Sensibility: 5", "rationality given 2 times"),
    (  # a lone surrogate (UTF-8 cannot hold it): the row, not the whole file
        "- Rationality: 3\n- Sensibility: 5 \ud800",
        "judge output holds undecodable text (U+FFFD or a lone surrogate)",
    ),
    ("- Rationality: 3\n- Sensibility: 5 \ufffd", "judge output holds undecodable text (U+FFFD or a lone surrogate)"),
    (
        "Rationality score out of ten: 8\nSensibility: 5",
        "rationality: unexpected text 'score out of ten' before the colon",
    ),
    ("- Rationality:\n- Sensibility: 5", "no rationality score after its colon"),
    ("- Rationality - 8\n- Sensibility: 5", "no rationality score"),
    (
        "- Rationality: 7.5\n- Sensibility: 5,5",
        "rationality score '7.5' is not an integer; sensibility score '5,5' is not an integer",
    ),
]


@pytest.mark.parametrize("text, reason", MALFORMED)
def test_malformed_forms_are_unscored_with_their_reason(text, reason):
    got = parse_judge_text(text)
    assert (got["rationality"], got["sensibility"], got[REASON_COLUMN]) == (None, None, reason)


def test_quality_judge_placeholder_echo_is_unscored():
    got = parse_judge_text("- Naturalness: <1-3>\n- Coherence: 2\n- Empathy: [1-3]", QUALITY, 1, 3)
    assert got[REASON_COLUMN] == (
        "naturalness: template placeholder '<1-3>' echoed; empathy: template placeholder '[1-3]' echoed"
    )
    assert got["coherence"] is None  # one bad axis leaves the whole row unscored


@pytest.mark.parametrize(
    "text, r, s",
    [
        ("- Rationality: 8 (asks a relevant question)\n- Sensibility: **5**.", 8, 5),
        ("**Rationality:** 6/10\n**Sensibility:** 9/10", 6, 9),
        ("Rationality: 8, Sensibility: 9", 8, 9),
        ("1. Rationality: 2\n2. Sensibility: 7", 2, 7),
        ("Rationality: 4  \nSensibility: 4", 4, 4),
    ],
)
def test_well_formed_variants_still_parse(text, r, s):
    assert parse_judge_text(text) == {"rationality": r, "sensibility": s, REASON_COLUMN: None}


def test_one_bad_row_does_not_touch_its_neighbours():
    texts = [
        "- Rationality: 8\n- Sensibility: 2",
        "- Rationality: <0-10>\n- Sensibility: 3",
        "- Rationality: 1\n- Sensibility: 9",
    ]
    df = parse_judge_outputs(texts)
    assert df["rationality"].tolist()[0::2] == [8, 1] and df["sensibility"].tolist()[0::2] == [2, 9]
    assert df[REASON_COLUMN].isna().tolist() == [True, False, True]


@pytest.mark.parametrize(
    "values, reason",
    [
        ([True, 3], "rationality score True is not a number"),  # JSON true was read as 1
        ([False, 3], "rationality score False is not a number"),
        (["1e1", 3], "rationality score '1e1' is not a number"),
        (["3-4", 3], "rationality score '3-4' is not a number"),
        ([7.5, 3], "rationality score 7.5 is not an integer"),
        ([None, 3], "no rationality score"),
    ],
)
def test_score_columns_refuse_booleans_and_non_integer_strings(values, reason):
    got = scores_from_columns({"rationality": values, "sensibility": [5, 5]})
    assert got[REASON_COLUMN].tolist() == [reason, None]
    assert got["rationality"].tolist()[1] == 3 and got["sensibility"].isna().tolist() == [True, False]


def test_score_columns_accept_integer_strings_and_whole_floats():
    got = scores_from_columns({"rationality": ["7", " 8 ", 9.0], "sensibility": [1, "2", 3]})
    assert got["rationality"].tolist() == [7, 8, 9] and got[REASON_COLUMN].isna().all()


def test_a_file_with_a_lone_surrogate_is_read_and_only_that_row_is_unscored(tmp_path):
    from empathy_recipes.data import load_ed

    rows = [
        '{"id": 1, "context": ["hi"], "response": "ok", "judge_output": "- Rationality: 3\\n- Sensibility: 5 \\ud800"}',
        '{"id": 2, "context": ["hi"], "response": "ok", "judge_output": "- Rationality: 3\\n- Sensibility: 8"}',
    ]
    path = tmp_path / "judged.jsonl"
    path.write_text("\n".join(rows) + "\n")
    ds = load_ed(path)
    assert len(ds) == 2
    df = parse_judge_outputs(ds["judge_output"])
    assert df[REASON_COLUMN].tolist() == ["judge output holds undecodable text (U+FFFD or a lone surrogate)", None]
    assert (df["rationality"][1], df["sensibility"][1]) == (3, 8)


def _released_outputs() -> list[str]:
    path = SHARED / "ed_valid_scored.jsonl"
    return [json.loads(line)["judge_output"] for line in path.read_text().splitlines()]


@pytest.mark.skipif(not (SHARED / "ed_valid_scored.jsonl").exists(), reason="shared real data absent")
def test_the_released_judge_outputs_all_parse():
    df = parse_judge_outputs(_released_outputs())
    assert len(df) == 5734 and int(df[REASON_COLUMN].notna().sum()) == 0
    counts = count_sets(assign_sets(df, 5))
    assert counts == {"sensibility": 3473, "rationality": 1868, "discard": 393, "unscored": 0}


def test_the_shipped_sample_parses_fully():
    rows = [json.loads(line) for line in (REPO / "data" / "ed_valid_sample.jsonl").read_text().splitlines()]
    df = parse_judge_outputs([r["judge_output"] for r in rows])
    assert len(df) == 400 and int(df[REASON_COLUMN].notna().sum()) == 0
    counts = count_sets(assign_sets(df, 5))
    assert counts == {"sensibility": 246, "rationality": 129, "discard": 25, "unscored": 0}
