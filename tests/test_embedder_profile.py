"""The embedder as Synth-Empathy calls it: a named prompt when asked for, remote code only when turned on; and the
``--profile paper`` switch of the embedding stages."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from empathy_recipes.embeddings import check_prompt_name, encode, load_embedder, paired_similarity_x100
from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.profiles import apply_profile, first_line, transcript, transcript_conversation


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return load_embedder(minilm_dir, device="cpu")


def test_a_named_prompt_is_prepended_to_every_text(minilm):
    minilm.prompts["reply"] = "Represent this listener reply: "
    try:
        texts = ["i am so sorry to hear that", "congrats , that is great !"]
        with_prompt = encode(minilm, texts, prompt_name="reply")
        by_hand = encode(minilm, ["Represent this listener reply: " + t for t in texts])
        plain = encode(minilm, texts)
        assert np.allclose(with_prompt, by_hand, atol=1e-5)
        assert not np.allclose(with_prompt, plain, atol=1e-3)
        sims = paired_similarity_x100(minilm, texts, texts[::-1], prompt_name="reply")
        assert sims.shape == (2,) and sims[0] == pytest.approx(sims[1], abs=1e-3)
    finally:
        del minilm.prompts["reply"]


def test_an_unknown_prompt_name_is_one_error_naming_the_known_ones(minilm):
    with pytest.raises(EmpathyRecipesError, match=r"has no prompt named 'nope' \(its prompts: 'document', 'query'\)"):
        check_prompt_name(minilm, "nope", "MiniLM")
    with pytest.raises(EmpathyRecipesError, match="no prompt named 'nope'"):
        paired_similarity_x100(minilm, ["a"], ["b"], prompt_name="nope")


def test_remote_code_is_off_unless_asked_and_warns_when_on(minilm_dir, monkeypatch, caplog):
    import sentence_transformers

    seen = []
    real = sentence_transformers.SentenceTransformer

    def spy(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return real(*args, **kwargs)

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", spy)
    load_embedder(minilm_dir, device="cpu")
    with caplog.at_level(logging.WARNING, logger="empathy_recipes.embeddings"):
        load_embedder(minilm_dir, device="cpu", trust_remote_code=True)
    assert seen == [False, True]
    assert "trust_remote_code is on" in caplog.text


@pytest.mark.slow
def test_diversity_stage_refuses_an_unknown_prompt_in_one_line(repo_root, minilm_dir, tmp_path):
    rows = [
        {"id": str(i), "messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "ok"}]}
        for i in range(3)
    ]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = [sys.executable, str(repo_root / "scripts" / "synth_diversity_select.py"), "--dataset", str(data)]
    cmd += ["--embedder", str(minilm_dir), "--output-dir", str(tmp_path / "out"), "--embedder-prompt-name", "nope"]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no prompt named 'nope'" in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def test_paper_profile_sets_values_but_explicit_flags_win():
    import argparse

    from empathy_recipes.profiles import add_profile_arg

    p = argparse.ArgumentParser()
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--do-sample", action="store_true")
    add_profile_arg(p)
    values = {"max_new_tokens": 512, "do_sample": True}
    argv = ["--profile", "paper", "--max-new-tokens", "32"]
    got = apply_profile(p.parse_args(argv), p, values, argv)
    assert (got.max_new_tokens, got.do_sample) == (32, True)
    argv = ["--max-new-tokens=16"]
    assert vars(apply_profile(p.parse_args(argv), p, values, argv)) == {
        "max_new_tokens": 16,
        "do_sample": False,
        "profile": "project",
    }


def test_transcript_is_the_papers_speaker_listener_form():
    msgs = [
        {"role": "user", "content": "i lost my job ."},
        {"role": "assistant", "content": "oh no , what happened ?"},
        {"role": "user", "content": "they closed the office ."},
    ]
    assert transcript(msgs) == (
        "Speaker: i lost my job .\nListener: oh no , what happened ?\nSpeaker: they closed the office .\nListener: "
    )
    assert transcript_conversation(msgs) == [{"role": "user", "content": transcript(msgs)}]
    assert first_line("  that is sad .\nI hope you find one.\n") == "that is sad ."
    assert first_line(None) == ""
