"""Judge-output parsing, the three-way split, the sweep, agreement, and the select script."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from empathy_recipes.judge_scores import (
    REASON_COLUMN,
    SET_NAMES,
    assign_sets,
    count_sets,
    judge_agreement,
    parse_judge_outputs,
    parse_judge_text,
    score_histogram,
    scores_from_columns,
    threshold_sweep,
)

REPO = Path(__file__).resolve().parents[1]
REAL_SCORED = REPO.parent / "shared" / "data" / "ed_valid_scored.jsonl"


@pytest.mark.parametrize(
    "text, r, s",
    [
        ("Evaluation Form (scores ONLY):\n- Rationality: 8\n- Sensibility: 5", 8, 5),
        ("- Rationality: 3\n- Sensibility: 9", 3, 9),
        ("- Sensibility: 9\n- Rationality: 3", 3, 9),  # any order
        ("    Evaluation Form (scores ONLY):\n    - Rationality: 2\n    - Sensibility: 8", 2, 8),
        ("**Evaluation Form (scores ONLY):**\n\n- Rationality: 10\n- Sensibility: 0\n   \n", 10, 0),
        ("**Rationality**: 7/10, **Sensibility** = 4", 7, 4),
        ("rationality score: 6\nSENSIBILITY SCORE = 6", 6, 6),
        ("Sure! Here is my evaluation.\nRationality: 1\nSensibility: 10\nThanks.", 1, 10),
    ],
)
def test_parses_real_and_messy_formats(text, r, s):
    got = parse_judge_text(text)
    assert (got["rationality"], got["sensibility"], got[REASON_COLUMN]) == (r, s, None)


@pytest.mark.parametrize(
    "text, reason",
    [
        (None, "no judge output"),
        ("", "no judge output"),
        ("   \n", "no judge output"),
        ("- Rationality: 8", "no sensibility score"),
        ("nothing useful here", "no rationality score; no sensibility score"),
        ("- Rationality: 11\n- Sensibility: 5", "rationality score 11 out of range 0-10"),
        ("- Rationality: -1\n- Sensibility: 5", "rationality score -1 out of range 0-10"),
        ("- Rationality: 7.5\n- Sensibility: 5", "rationality score '7.5' is not an integer"),
        ("- Rationality: high\n- Sensibility: 5", "no rationality score after its colon (it reads 'high')"),
    ],
)
def test_unscored_rows_get_both_scores_missing_and_a_reason(text, reason):
    got = parse_judge_text(text)
    assert got["rationality"] is None and got["sensibility"] is None
    assert got[REASON_COLUMN] == reason


def test_parser_handles_non_strings_and_other_axes():
    df = parse_judge_outputs([3, None, float("nan"), b"bytes", "- Empathy: 2\n- Coherence: 3\n- Naturalness: 1"])
    assert df[REASON_COLUMN].tolist()[:4] == ["no judge output"] * 4
    three = parse_judge_outputs(
        ["- Empathy: 2\n- Coherence: 3\n- Naturalness: 4"], ("naturalness", "coherence", "empathy"), 1, 3
    )
    assert three[REASON_COLUMN][0] == "naturalness score 4 out of range 1-3"


def test_split_rule_at_the_boundaries():
    r = [4, 6, 5, 5, 4, 6, 0, None, 10]
    s = [6, 4, 5, 9, 5, 5, 10, 8, 10]
    assert assign_sets({"rationality": r, "sensibility": s}, 5).tolist() == [
        "sensibility",  # R<5, S>5
        "discard",  # R>5, S<5
        "rationality",  # on the threshold: neither strict rule holds
        "rationality",
        "rationality",
        "rationality",
        "sensibility",
        "unscored",
        "rationality",
    ]
    assert set(count_sets(assign_sets({"rationality": r, "sensibility": s}, 5))) == set(SET_NAMES)


def test_sweep_shares_sum_to_one_and_match_assign_sets():
    rng = np.random.default_rng(0)
    r = rng.integers(0, 11, 500).astype(float)
    s = rng.integers(0, 11, 500).astype(float)
    r[:7] = np.nan
    sweep = threshold_sweep({"rationality": r, "sensibility": s})
    assert sweep["threshold"].tolist() == [3, 4, 5, 6, 7]
    shares = sweep[[f"{k}_share" for k in SET_NAMES]].sum(axis=1)
    assert np.allclose(shares, 1.0)
    row5 = sweep.set_index("threshold").loc[5]
    assert {k: int(row5[k]) for k in SET_NAMES} == count_sets(assign_sets({"rationality": r, "sensibility": s}, 5))
    assert int(row5["unscored"]) == 7


def test_histogram_counts_scored_rows_by_rationality_then_sensibility():
    hist = score_histogram([2, 2, 8, None], [8, 8, 3, 5])
    assert hist.shape == (11, 11)
    assert hist[2, 8] == 2 and hist[8, 3] == 1 and hist.sum() == 3


def test_scores_from_columns_checks_like_the_parser():
    df = scores_from_columns({"rationality": [3, 11, None, 2.5, "7"], "sensibility": [8, 5, 5, 5, 6]})
    assert df["rationality"].tolist()[0] == 3 and df["rationality"].tolist()[4] == 7
    assert df[REASON_COLUMN].tolist() == [
        None,
        "rationality score 11 out of range 0-10",
        "no rationality score",
        "rationality score 2.5 is not an integer",
        None,
    ]


def test_agreement_identity_and_hand_worked_case():
    ref = pd.DataFrame({"rationality": [1, 2, 3, 4], "sensibility": [5, 5, 6, 9]})
    same = judge_agreement(ref, ref)
    assert same["rationality"]["spearman"] == pytest.approx(1.0) and same["rationality"]["exact"] == 1.0
    pred = pd.DataFrame({"rationality": [1, 3, 2, 4], "sensibility": [5, 6, None, 2]})
    got = judge_agreement(pred, ref)
    # ranks differ by a swap of the middle pair: rho = 1 - 6*(1+1)/(4*15) = 0.8; two of four identical.
    assert got["rationality"]["spearman"] == pytest.approx(0.8)
    assert got["rationality"]["exact"] == 0.5
    assert got["rationality"]["mean_abs_diff"] == pytest.approx(0.5)
    # sensibility: the None row is dropped -> pairs (5,5), (6,5), (2,9): exact 1/3.
    assert got["sensibility"]["n"] == 3 and got["sensibility"]["exact"] == pytest.approx(1 / 3)
    # ranks (2,3,1) vs tied (1.5,1.5,3): covariance -1.5 / (sqrt(2) * sqrt(1.5)) = -sqrt(3)/2.
    assert got["sensibility"]["spearman"] == pytest.approx(-math.sqrt(3) / 2)


@pytest.mark.skipif(not REAL_SCORED.exists(), reason="full real data not present")
def test_real_judge_outputs_parse_fully_and_split_as_the_paper():
    rows = [json.loads(line) for line in REAL_SCORED.read_text().splitlines()]
    assert len(rows) == 5734
    df = parse_judge_outputs([r["judge_output"] for r in rows])
    assert df[REASON_COLUMN].isna().all()
    counts = count_sets(assign_sets(df, 5))
    assert counts == {"sensibility": 3473, "rationality": 1868, "discard": 393, "unscored": 0}
    # against the same scores with rationality shifted by one: the ranks agree, no score does exactly
    shifted = df.assign(rationality=df["rationality"] + 1)
    agreement = judge_agreement(shifted, df)
    assert agreement["rationality"]["spearman"] == pytest.approx(1.0)
    assert agreement["rationality"]["exact"] == 0.0
    assert agreement["sensibility"]["exact"] == 1.0


_texts = st.one_of(
    st.none(),
    st.text(max_size=80),
    st.builds(
        lambda a, b, junk, order: (
            (f"- Sensibility: {b}\n- Rationality: {a}" if order else f"Rationality: {a} Sensibility: {b}") + junk
        ),
        st.integers(-20, 30),
        st.integers(-20, 30),
        st.text(max_size=20),
        st.booleans(),
    ),
)


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(_texts, min_size=0, max_size=30), threshold=st.integers(0, 10))
def test_parser_never_raises_and_every_row_lands_in_exactly_one_set(texts, threshold):
    df = parse_judge_outputs(texts)
    assert len(df) == len(texts)
    scored = df["rationality"].notna() & df["sensibility"].notna()
    # a row is either fully scored (both in range, no reason) or unscored with a reason
    assert (scored == df[REASON_COLUMN].isna()).all()
    assert ((df.loc[scored, "rationality"] >= 0) & (df.loc[scored, "rationality"] <= 10)).all()
    labels = assign_sets(df, threshold)
    counts = count_sets(labels)
    assert list(counts) == list(SET_NAMES) and sum(counts.values()) == len(texts)
    assert counts["unscored"] == int((~scored).sum())


def _run_select(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "select_sets.py"), *args], capture_output=True, text=True, env=env
    )


def _plain_count(path, threshold):
    """The split of the paper's judge outputs in ``path`` by a plain per-row loop (no project code)."""
    counts = {"sensibility": 0, "rationality": 0, "discard": 0, "unscored": 0}
    for line in path.read_text().splitlines():
        text = json.loads(line)["judge_output"]
        r, s = (re.search(rf"(?i){axis}\D*?(\d+)", text) for axis in ("rationality", "sensibility"))
        r, s = (int(m.group(1)) if m and int(m.group(1)) <= 10 else None for m in (r, s))
        if r is None or s is None:
            counts["unscored"] += 1
        elif r < threshold and s > threshold:
            counts["sensibility"] += 1
        elif r > threshold and s < threshold:
            counts["discard"] += 1
        else:
            counts["rationality"] += 1
    return counts


def test_select_script_on_the_shipped_sample(ed_valid_path, tmp_path):
    from empathy_recipes.data import load_ed

    out = tmp_path / "sets"
    proc = _run_select(["--dataset", str(ed_valid_path), "--output-dir", str(out), "--threshold", "5"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = json.loads((out / "stats.json").read_text())
    assert list(stats["counts"]) == list(SET_NAMES)
    assert sum(stats["counts"].values()) == stats["rows"] == 400
    # counted independently of the parser (a plain regex per row, T=5): 246 / 129 / 25 / 0
    assert stats["counts"] == _plain_count(ed_valid_path, 5)
    assert stats["counts"] == {"sensibility": 246, "rationality": 129, "discard": 25, "unscored": 0}
    assert (out / "score_histogram.png").stat().st_size > 10_000
    sweep = pd.read_csv(out / "threshold_sweep.csv")
    assert sweep["threshold"].tolist() == [3, 4, 5, 6, 7]
    sens = load_ed(str(out / "sensibility"))
    assert len(sens) == stats["counts"]["sensibility"]
    assert {"id", "emotion", "messages", "rationality", "sensibility"} <= set(sens.column_names)
    assert all(r < 5 and s > 5 for r, s in zip(sens["rationality"], sens["sensibility"]))


def test_select_reads_parsed_columns_and_keeps_unparseable_rows_aside(tmp_path):
    import datasets

    rows = [
        {"context": ["i lost my job"], "response": "oh no , what happened ?", "rationality": 3, "sensibility": 8},
        {"context": ["i won !"], "response": "great", "rationality": 8, "sensibility": 2},
        {"context": ["i am sad"], "response": "why ?", "rationality": None, "sensibility": 7},
        {"context": ["i am sad"], "response": "why ?", "rationality": 12, "sensibility": 7},
        {"context": ["hi"], "response": "hello", "rationality": 5, "sensibility": 5},
    ]
    src = tmp_path / "judged.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "sets"
    proc = _run_select(["--dataset", str(src), "--output-dir", str(out)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["counts"] == {"sensibility": 1, "rationality": 1, "discard": 1, "unscored": 2}
    assert stats["score_source"].startswith("columns")
    unscored = datasets.load_from_disk(str(out / "unscored"))
    assert sorted(unscored["unscored_reason"]) == ["no rationality score", "rationality score 12 out of range 0-10"]


@pytest.mark.slow
def test_select_script_rejects_bad_input_in_one_line(tmp_path):
    src = tmp_path / "plain.jsonl"
    src.write_text(json.dumps({"context": ["hi"], "response": "hello"}) + "\n")
    proc = _run_select(["--dataset", str(src), "--output-dir", str(tmp_path / "o")])
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: no scores in the input")
    proc = _run_select(["--dataset", str(src), "--output-dir", str(tmp_path / "o"), "--threshold", "12"])
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: --threshold")


def test_nan_scores_count_as_missing():
    assert assign_sets({"rationality": [math.nan, 3], "sensibility": [8, 8]}, 5).tolist() == [
        "unscored",
        "sensibility",
    ]
