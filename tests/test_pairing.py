"""Pairwise stages pair by id and never drop or collapse a row silently; CSV sheets cannot carry formulas."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.outputs import spreadsheet_safe
from empathy_recipes.pairing import pair_by_id

REPO = Path(__file__).resolve().parents[1]


def rows(ids, tag="x"):
    return [{"id": i, "context": ["c"], "prediction": f"{tag}{n}"} for n, i in enumerate(ids)]


def test_pair_by_id_refuses_unmatched_and_repeated_ids_in_one_line():
    a = rows([str(i) for i in range(30)])
    b = rows([str(i) for i in range(20)] + ["5"], "y")  # 20 of A's ids and one repeated
    with pytest.raises(EmpathyRecipesError) as err:
        pair_by_id(a, b)
    message = str(err.value)
    assert "\n" not in message
    assert "10 id(s) only in A (20, 21, 22, ...)" in message and "1 id(s) repeated in B (5)" in message
    assert "--on-mismatch keep-aside" in message


def test_pair_by_id_keep_aside_accounts_for_every_row():
    a = rows([str(i) for i in range(30)])
    b = rows([str(i) for i in range(20)] + ["5"], "y")
    pairing = pair_by_id(a, b, "keep-aside")
    assert len(pairing.pairs) == 19 and "5" not in pairing.ids  # the repeated id is not resolved by picking a row
    reasons = sorted((r["side"], r["id"], r["reason"]) for r in pairing.aside)
    assert ("A", "20", "id only in A") in reasons
    assert [r for r in reasons if r[1] == "5"] == [
        ("A", "5", "its partner id is repeated in the other file"),
        ("B", "5", "id repeated 2 times in B"),
        ("B", "5", "id repeated 2 times in B"),
    ]
    assert pairing.rows_in == 51 == sum(pairing.counts().values())


def test_pair_by_id_matches_int_and_string_ids_and_keeps_a_order():
    pairing = pair_by_id(rows([3, 1, 2]), rows(["2", "3", "1"], "y"))
    assert pairing.ids == ["3", "1", "2"] and pairing.aside == []
    assert [b["prediction"] for _, b in pairing.pairs] == ["y1", "y2", "y0"]


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", '=HYPERLINK("http://x")'])
def test_spreadsheet_safe_escapes_formula_leads(cell):
    assert spreadsheet_safe(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["hello", "1", "", " =x", "I'm fine", 5, None])
def test_spreadsheet_safe_leaves_the_rest(cell):
    assert spreadsheet_safe(cell) == cell


def _predictions(path: Path, ids: list[str], replies: list[str]) -> Path:
    path.write_text(
        "".join(
            json.dumps({"id": i, "context": ["I lost my keys."], "prediction": r}) + "\n" for i, r in zip(ids, replies)
        )
    )
    return path


def test_human_export_escapes_cells_and_refuses_or_keeps_aside(tmp_path):
    a = _predictions(tmp_path / "a.jsonl", ["1", "2", "3"], ["=cmd|' /C calc'!A0", "@x", "fine"])
    b = _predictions(tmp_path / "b.jsonl", ["1", "2", "2"], ["-2+3", "ok", "ok again"])
    script = [sys.executable, str(REPO / "evaluation" / "human_eval.py"), "export", "--predictions-a", str(a)]
    script += ["--predictions-b", str(b), "--n", "5", "--annotators", "2", "--output-dir", str(tmp_path / "h")]
    done = subprocess.run(script, capture_output=True, text=True)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: A (") and "Traceback" not in done.stderr
    assert not (tmp_path / "h").exists()
    done = subprocess.run([*script, "--on-mismatch", "keep-aside"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    sheet = list(csv.DictReader((tmp_path / "h" / "sheets" / "annotator_1.csv").open(newline="")))
    assert len(sheet) == 1  # only id 1 pairs cleanly
    cells = {sheet[0]["response_1"], sheet[0]["response_2"]}
    assert cells == {"'=cmd|' /C calc'!A0", "'-2+3"}
    aside = [json.loads(line) for line in (tmp_path / "h" / "aside.jsonl").read_text().splitlines()]
    assert sorted((r["side"], r["id"]) for r in aside) == [("A", "2"), ("A", "3"), ("B", "2"), ("B", "2")]
