"""A public clone works: dependencies pinned, the sample re-cut needs no private data or stops in one line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_every_dependency_and_extra_is_pinned_exactly():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"]) + [s for extra in project["optional-dependencies"].values() for s in extra]
    loose = [s for s in specs if not re.fullmatch(r"[A-Za-z0-9_.-]+(\[[\w,-]+\])?==[\w.]+", s)]
    assert not loose, f"not pinned exactly: {loose}"
    names = {re.split(r"[\[=]", s)[0].lower().replace("_", "-") for s in project["dependencies"]}
    assert {"huggingface-hub", "tabulate", "regex", "safetensors", "tensorboard"} <= names
    assert "sacrebleu" not in names  # never imported


def test_make_sample_without_the_full_data_is_one_error_line(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_sample.py"), "--source", str(tmp_path / "nope"),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env={**os.environ, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ") and "SOURCE=" in done.stderr
    assert not (tmp_path / "out").exists()
