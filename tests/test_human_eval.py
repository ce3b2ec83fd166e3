"""Human A/B evaluation: Fleiss' kappa by hand, blind export, unblinding and scoring of filled sheets."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.testing import load_script

H = load_script(Path(__file__).resolve().parents[1] / "evaluation" / "human_eval.py")


def test_fleiss_kappa_hand_worked():
    # 3 items, 3 raters, 2 categories: counts [3,0], [0,3], [2,1].
    # P_i = (sum n_ij^2 - n) / (n(n-1)) = (9-3)/6 = 1, 1, (4+1-3)/6 = 1/3  -> P_bar = (1 + 1 + 1/3) / 3 = 7/9
    # p_j = column totals / (N n) = 5/9, 4/9                                -> P_e = 25/81 + 16/81 = 41/81
    # kappa = (7/9 - 41/81) / (1 - 41/81) = (22/81) / (40/81) = 0.55
    assert H.fleiss_kappa([[3, 0], [0, 3], [2, 1]]) == pytest.approx(0.55)
    # Perfect agreement spread over categories -> 1; one category only -> undefined (nan).
    assert H.fleiss_kappa([[2, 0], [0, 2]]) == pytest.approx(1.0)
    assert math.isnan(H.fleiss_kappa([[3, 0], [3, 0]]))
    # Fleiss (1971) worked example as on Wikipedia: 10 items, 14 raters, 5 categories -> 0.210.
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    assert H.fleiss_kappa(table) == pytest.approx(0.210, abs=5e-4)
    with pytest.raises(EmpathyRecipesError):
        H.fleiss_kappa([[2, 1], [1, 1]])


def test_choices_unblind_and_majority():
    assert [H.parse_choice(v) for v in ("1", " 2 ", "Tie", "0", "", "maybe", None)] == ["1", "2", "tie", "tie"] + [
        None
    ] * 3
    assert H.unblind("1", "A") == "A" and H.unblind("1", "B") == "B" and H.unblind("2", "B") == "A"
    assert H.majority(["A", "A", "B"]) == "A" and H.majority(["A", "B", "tie"]) == "tie"
    assert H.rates(["A", "tie", "B", "A"]) == {"n": 4, "win": 0.5, "tie": 0.25, "loss": 0.25}


def _write_predictions(path: Path, ed_test_path: Path, constant: str | None, model: str) -> None:
    rows = [json.loads(line) for line in ed_test_path.read_text().splitlines()][:30]
    with path.open("w") as f:
        for r in rows:
            pred = constant if constant is not None else r["reference"]
            f.write(
                json.dumps({"id": str(r["id"]), "context": r["context"], "prediction": pred, "model": model}) + "\n"
            )


def test_export_fill_and_score(tmp_path, ed_test_path, repo_root):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _write_predictions(a, ed_test_path, None, "model-a")
    _write_predictions(b, ed_test_path, "ok .", "model-b")
    out = tmp_path / "human"
    script = str(repo_root / "evaluation" / "human_eval.py")
    run = [sys.executable, script, "export", "--predictions-a", str(a), "--predictions-b", str(b)]
    done = subprocess.run(
        run + ["--n", "10", "--annotators", "3", "--output-dir", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    sheets = sorted((out / "sheets").glob("*.csv"))
    assert len(sheets) == 3
    key = list(csv.DictReader((out / "key.csv").open()))
    items = [[r["item"] for r in csv.DictReader(sheet.open())] for sheet in sheets]
    assert len(key) == 10 and all(sorted(i) == sorted(r["item"] for r in key) for i in items)  # a key row per item
    instructions = (out / "INSTRUCTIONS.md").read_text()
    assert all(c in instructions for c in H.CRITERIA)
    header = next(csv.reader(sheets[0].open()))
    assert header == ["item", "context", "response_1", "response_2", *H.CRITERIA]
    assert "model" not in " ".join(header) and "id" not in header  # blind: nothing says which model wrote what
    sides = [r["response_1_is"] for r in csv.DictReader((out / "key.csv").open())]
    assert set(sides) == {"A", "B"}  # both orders occur

    # Fill: annotators 1 and 2 always prefer model A's reply (the one that is not "ok ."); annotator 3 says tie,
    # except one unreadable informativeness cell.
    for k, path in enumerate(sheets, start=1):
        rows = list(csv.DictReader(path.open()))
        for i, row in enumerate(rows):
            a_side = "2" if row["response_1"] == "ok ." else "1"
            for c in H.CRITERIA:
                row[c] = a_side if k < 3 else "tie"
            if k == 3 and i == 0:
                row["informativeness"] = "maybe"
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)

    result_file = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, script, "score", "--sheets", str(out), "--output", str(result_file)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(result_file.read_text())
    emp = result["criteria"]["empathy"]
    # 10 items x 3 annotators: A 20, tie 10. Majority per item: A. Every item [A 2, tie 1, B 0]:
    # P_i = (4 + 1 - 3)/6 = 1/3; p = (2/3, 1/3, 0), P_e = 5/9; kappa = (1/3 - 5/9) / (4/9) = -0.5.
    assert emp["annotations"] == {"n": 30, "win": pytest.approx(2 / 3), "tie": pytest.approx(1 / 3), "loss": 0.0}
    assert emp["majority"]["win"] == 1.0
    assert emp["fleiss_kappa"] == pytest.approx(-0.5) and emp["kappa_items"] == 10
    inf = result["criteria"]["informativeness"]
    assert inf["annotations"]["n"] == 29 and inf["kappa_items"] == 9
    assert result["invalid_cells"] == [
        {"sheet": "annotator_3.csv", "item": result["invalid_cells"][0]["item"], "criterion": "informativeness",
         "value": "maybe", "reason": "not 1, 2 or tie"}
    ]  # fmt: skip
    assert result["model_a"] == "model-a" and (tmp_path / "results.md").read_text().count("|") > 10


def test_score_needs_two_sheets_and_a_key(tmp_path):
    (tmp_path / "one.csv").write_text("item,empathy\n1,1\n")
    with pytest.raises(SystemExit) as exc:
        H.main(["score", "--sheets", str(tmp_path / "one.csv")])
    assert exc.value.code == 2
    (tmp_path / "two.csv").write_text("item,empathy\n1,2\n")
    with pytest.raises(EmpathyRecipesError, match="no key file"):
        H.score_sheets([tmp_path / "one.csv", tmp_path / "two.csv"], tmp_path / "key.csv")
