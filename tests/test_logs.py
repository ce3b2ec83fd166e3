"""empathy_recipes.logs: one format, --verbose/--quiet, rank-aware levels, errors untouched."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from empathy_recipes.logs import add_log_args, log_level, process_rank, reset_logging, setup_logging

REPO = Path(__file__).resolve().parents[1]


def test_flags_verbose_quiet_and_their_exclusion():
    parser = add_log_args(argparse.ArgumentParser())
    assert vars(parser.parse_args([])) == {"verbose": False, "quiet": False}
    assert parser.parse_args(["-v"]).verbose and parser.parse_args(["--quiet"]).quiet
    with pytest.raises(SystemExit):
        parser.parse_args(["--verbose", "--quiet"])


@pytest.mark.parametrize(
    "environ, rank", [({}, 0), ({"RANK": "3"}, 3), ({"LOCAL_RANK": "1"}, 1), ({"RANK": "0", "LOCAL_RANK": "2"}, 0)]
)
def test_process_rank(environ, rank):
    assert process_rank(environ) == rank


def test_levels():
    assert log_level() == logging.INFO
    assert log_level(verbose=True) == logging.DEBUG
    assert log_level(quiet=True) == logging.WARNING
    assert log_level(rank=1) == logging.WARNING and log_level(verbose=True, rank=2) == logging.WARNING


def test_one_format_with_the_stage_and_level(capsys):
    setup_logging("quality", argparse.Namespace(verbose=False, quiet=False), "a_script")
    logging.getLogger("a_script").info("kept 3 of 4")
    logging.getLogger("empathy_recipes.resume").warning("damaged batch")
    logging.getLogger("a_script").debug("not shown")
    assert capsys.readouterr().err.splitlines() == ["[quality] INFO kept 3 of 4", "[quality] WARNING damaged batch"]
    setup_logging("quality", None, "a_script", quiet=True)  # a second setup replaces the first
    logging.getLogger("a_script").info("not shown")
    logging.getLogger("a_script").warning("shown once")
    assert capsys.readouterr().err.splitlines() == ["[quality] WARNING shown once"]
    reset_logging()
    assert logging.getLogger("empathy_recipes").propagate and not logging.getLogger("empathy_recipes").handlers


def test_only_rank_zero_logs_info(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    setup_logging("sft", None, "a_script")
    logging.getLogger("a_script").info("rank 1 info")
    logging.getLogger("a_script").warning("rank 1 warning")
    assert capsys.readouterr().err.splitlines() == ["[sft] WARNING rank 1 warning"]


def test_a_stage_logs_on_stderr_and_quiet_silences_it(tmp_path):
    """A real stage logs on stderr in the one format; --quiet leaves only warnings."""
    script = REPO / "scripts" / "synth_build_mix.py"
    ed, synthetic = REPO / "data" / "ed_valid_sample.jsonl", tmp_path / "synthetic.jsonl"
    synthetic.write_text(ed.read_text().splitlines()[0] + "\n")
    argv = [sys.executable, str(script), "--ed", str(ed), "--synthetic", str(synthetic), "--ed-limit", "3"]
    done = subprocess.run([*argv, "--output", str(tmp_path / "a")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert any(line.startswith("[mix] INFO ") for line in done.stderr.splitlines()), done.stderr
    quiet = subprocess.run(
        [*argv, "--output", str(tmp_path / "b"), "--quiet"], capture_output=True, text=True, timeout=120
    )
    assert quiet.returncode == 0 and "[mix] INFO" not in quiet.stderr, quiet.stderr[-2000:]
