"""Synth-Empathy: parser on hand-written generations, own-response pairing, conservation of rows."""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import jsonl

from empathy_recipes.data import load_ed
from empathy_recipes.synth import (
    conversation_text,
    dialogue_to_examples,
    first_repeated_round,
    generation_prompt,
    parse_json_rounds,
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


# ---- stage scripts: plumbing with the tiny model, conservation, re-thresholding, bad input ---------------------------

REPO = Path(__file__).resolve().parents[1]


def load_script(rel: str):
    path = REPO / rel
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def run_pipeline_script(script: str, argv: list[str], output_dir: Path) -> dict:
    """Run a distilabel pipeline script in a fresh process and return its ``summary.json``.

    distilabel forks its step workers; forking this long-lived pytest process after torch's thread pool has run
    can deadlock, so pipelines never run in-process in the suite."""
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, str(repo / script), *argv], cwd=repo, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads((output_dir / "summary.json").read_text())


def test_postprocess_writes_examples_dialogues_and_rejected(tmp_path):
    synth = load_script("distilabel_pipelines/synthesize_dialogues.py")
    args = synth.parse_args(["--output-dir", str(tmp_path), "--examples-per-dialogue", "all"])
    rows = [
        {"seed_id": "7", "emotion": "sad", "generation": CLEAN, "model_name": "m"},
        {"seed_id": "7", "emotion": "sad", "generation": "no rounds here", "model_name": "m"},
        {"seed_id": "9", "emotion": "proud", "generation": ONE_LINE, "model_name": "m"},
        {"seed_id": "9", "emotion": "proud", "generation": None, "model_name": "m"},
    ]
    summary = synth.postprocess(rows, args)
    assert summary["generations"] == 4 == summary["dialogues"] + summary["rejected"]
    assert (summary["dialogues"], summary["examples"]) == (2, 3 + 4)
    rejected = jsonl(tmp_path / "rejected.jsonl")
    assert [(r["dialogue_id"], r["generation"]) for r in rejected] == [("7_g1", "no rounds here"), ("9_g1", None)]
    assert all(r["reason"] for r in rejected)
    dialogues = {d["dialogue_id"]: d for d in jsonl(tmp_path / "dialogues.jsonl")}
    examples = load_ed(tmp_path / "examples.jsonl")  # the SFT stage's loader takes it as is
    assert set(examples.column_names) >= {"id", "emotion", "messages", "n_rounds", "dialogue_id", "source"}
    for ex in examples:
        rounds = dialogues[ex["dialogue_id"]]["rounds"]
        own = rounds[ex["n_rounds"] - 1]
        assert ex["messages"][-1] == {"role": "assistant", "content": own["response"]}
        assert ex["messages"][-2] == {"role": "user", "content": own["context"]}
        assert ex["source"] == "synthetic"


@pytest.mark.slow
def test_generation_pipeline_with_tiny_model_conserves_rows(tmp_path, tiny_model_dir, ed_valid_path):
    out = tmp_path / "gen"
    summary = run_pipeline_script(
        "distilabel_pipelines/synthesize_dialogues.py",
        [
            "--dataset", str(ed_valid_path), "--limit", "3", "--num-generations", "2", "--max-new-tokens", "12",
            "--model", str(tiny_model_dir), "--device", "cpu", "--batch-size", "3", "--output-dir", str(out),
        ],
        out,
    )  # fmt: skip
    assert summary["generations"] == 6
    assert summary["dialogues"] + summary["rejected"] == 6
    raw = jsonl(out / "default.jsonl")
    assert len(raw) == 6 and all("generation" in r for r in raw)
    rejected = jsonl(out / "rejected.jsonl")
    assert len(rejected) == summary["rejected"] and all(r["reason"] for r in rejected)
    assert len(jsonl(out / "dialogues.jsonl")) == summary["dialogues"]
    assert json.loads((out / "summary.json").read_text()) == summary
    # A rerun with the same arguments resumes from the distilabel cache: the sampled generations come back as is.
    again = run_pipeline_script(
        "distilabel_pipelines/synthesize_dialogues.py",
        [
            "--dataset", str(ed_valid_path), "--limit", "3", "--num-generations", "2", "--max-new-tokens", "12",
            "--model", str(tiny_model_dir), "--device", "cpu", "--batch-size", "3", "--output-dir", str(out),
        ],
        out,
    )  # fmt: skip
    assert again == summary
    assert [r["generation"] for r in jsonl(out / "default.jsonl")] == [r["generation"] for r in raw]


def test_generation_args_validate_before_loading(capsys):
    synth = load_script("distilabel_pipelines/synthesize_dialogues.py")
    args = synth.parse_args(["--backend", "vllm", "--model", "meta-llama/Meta-Llama-3-70B-Instruct"])
    assert (args.temperature, args.top_p, args.max_new_tokens, args.num_generations) == (0.8, 0.9, 300, 5)
    with pytest.raises(SystemExit) as exc:
        synth.main(["--backend", "openai", "--model", "x"])
    assert exc.value.code == 2 and "--base-url" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        synth.main(["--min-rounds", "0"])
    assert exc.value.code == 2
    if importlib.util.find_spec("ray") is None:
        with pytest.raises(SystemExit) as exc:
            synth.main(["--ray"])
        assert exc.value.code == 2 and "ray is not installed" in capsys.readouterr().err


@pytest.mark.slow
def test_data_quality_judge_with_tiny_model(tmp_path, tiny_model_dir):
    data = tmp_path / "examples.jsonl"
    rounds = parse_rounds(CLEAN).rounds
    rows = [
        {**ex, "quality_keep": i % 2 == 0} for i, ex in enumerate(dialogue_to_examples(rounds, "d", "sad", mode="all"))
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "judged"
    summary = run_pipeline_script(
        "distilabel_pipelines/judge_dialogue_quality.py",
        ["--dataset", str(data), "--model", str(tiny_model_dir), "--device", "cpu", "--group-by", "quality_keep",
         "--output-dir", str(out), "--batch-size", "2"],
        out,
    )  # fmt: skip
    judged = jsonl(out / "default.jsonl")
    assert len(judged) == len(rows) == summary["rows"]
    for r in judged:
        for axis in ("naturalness", "coherence", "empathy"):
            assert r[axis] in (1, 2, 3)
            assert 1.0 <= r[f"{axis}_weighted"] <= 3.0
            assert abs(sum(r[f"{axis}_probs"]) - 1.0) < 1e-4
    assert set(summary["groups"]) == {"True", "False"}
    assert 1.0 <= summary["overall"] <= 3.0


def test_dialogue_quality_inputs():
    from empathy_recipes.errors import EmpathyRecipesError
    from empathy_recipes.tasks.dialogue_quality import messages_for_rating, quality_prompt

    msgs = messages_for_rating(context=["I lost my cat.", "Oh no!", "She came back today."], response="Great news!")
    assert msgs[-1] == {"role": "assistant", "content": "Great news!"} and msgs[-2]["role"] == "user"
    prompt = quality_prompt(msgs, "relieved")[1]["content"]
    assert "Listener: Great news!" in prompt and "Speaker: She came back today." in prompt
    assert "- Naturalness: <1-3>" in prompt and "feels relieved" in prompt
    with pytest.raises(EmpathyRecipesError):
        messages_for_rating()


def test_quality_rethreshold_reuses_scores_without_models(tmp_path):
    quality = load_script("scripts/synth_quality_select.py")
    rows = [
        {"id": str(i), "emotion": "", "messages": [{"role": "user", "content": "c"}, {"role": "assistant", "content": "r"}],
         "quality_score": s}
        for i, s in enumerate([10.0, 59.9, 60.0, 85.5])
    ]  # fmt: skip
    scored = tmp_path / "scored.jsonl"
    scored.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = quality.main(
        ["--dataset", str(scored), "--threshold", "60", "--discriminator", "/no/such/model", "--output-dir",
         str(tmp_path / "q")]
    )  # fmt: skip
    assert (summary["kept"], summary["dropped"]) == (2, 2)
    assert [r["id"] for r in jsonl(tmp_path / "q" / "selected.jsonl")] == ["2", "3"]
    assert [r["quality_keep"] for r in jsonl(tmp_path / "q" / "scored.jsonl")] == [False, False, True, True]
    with pytest.raises(SystemExit) as exc:
        quality.main(["--dataset", str(scored), "--threshold", "120"])
    assert exc.value.code == 2


def test_diversity_recut_from_rank(tmp_path, capsys):
    diversity = load_script("scripts/synth_diversity_select.py")
    rows = [
        {"id": str(i), "emotion": "", "messages": [{"role": "user", "content": "c"}, {"role": "assistant", "content": "r"}],
         "kcenter_rank": k}
        for i, k in enumerate([3, 0, 4, 1, 2])
    ]  # fmt: skip
    ranked = tmp_path / "ranked.jsonl"
    ranked.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = diversity.main(["--dataset", str(ranked), "--ratio", "0.6", "--output-dir", str(tmp_path / "d")])
    assert summary["kept"] == 3
    assert [r["id"] for r in jsonl(tmp_path / "d" / "selected.jsonl")] == ["1", "3", "4"]
    rows[0]["kcenter_rank"] = 0  # not a permutation any more
    ranked.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SystemExit) as exc:
        diversity.main(["--dataset", str(ranked), "--output-dir", str(tmp_path / "d2")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [line for line in err if line.startswith("error")] == [err[-1]] and "kcenter_rank" in err[-1], err


def test_study_sweep_counts_and_prefix_property():
    study = load_script("scripts/synth_study.py")
    rng = np.random.default_rng(0)
    n = 40
    rows = [
        {"quality_score": float(s), "naturalness": 3, "coherence": 2, "empathy": 1, "empathy_weighted": 1.5}
        for s in rng.uniform(0, 100, n)
    ]
    emb = rng.normal(size=(n, 8)).astype(np.float32)
    table = study.sweep(rows, emb, [0, 50], [0.5, 1.0], seed=0)
    passed50 = sum(r["quality_score"] >= 50 for r in rows)
    assert [t["kept"] for t in table] == [20, 40, passed50 // 2, passed50]
    assert all(t["kept"] + t["dropped"] == n for t in table)
    assert table[0]["naturalness"] == 3 and table[0]["empathy"] == 1.5
    assert table[0]["overall"] == pytest.approx((3 + 2 + 1.5) / 3)


def test_study_on_given_scores_and_ratings_runs_no_step(tmp_path, minilm_dir):
    """--judged-synth / --judged-ed (the demo's own outputs): only the sweep runs, on those rows."""
    study = load_script("scripts/synth_study.py")
    exs = dialogue_to_examples(parse_rounds(CLEAN).rounds, "d", "sad", mode="all")
    exs += dialogue_to_examples(parse_rounds(MARKDOWN).rounds, "m", "afraid", mode="all")
    judged = tmp_path / "judged.jsonl"
    rows = [
        {**e, "quality_score": 20.0 * i, "naturalness": 3, "coherence": 2, "empathy": 2} for i, e in enumerate(exs)
    ]
    judged.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ed = tmp_path / "ed.jsonl"
    ed.write_text(json.dumps({"id": "e", "naturalness": 3, "coherence": 3, "empathy": 3}) + "\n")
    out = tmp_path / "study"
    table = study.main(["--examples", str(judged), "--judged-synth", str(judged), "--judged-ed", str(ed),
                        "--embedder", str(minilm_dir), "--thresholds", "0,30", "--ratios", "0.5,1.0",
                        "--output-dir", str(out)])  # fmt: skip
    assert [t["kept"] for t in table[:4]] == [
        len(rows) // 2,
        len(rows),
        sum(r["quality_score"] >= 30 for r in rows) // 2,
        sum(r["quality_score"] >= 30 for r in rows),
    ]
    assert table[-1]["setting"] == "ED" and table[-1]["overall"] == 3
    assert (out / "study.png").exists() and not (out / "quality").exists() and not (out / "judged_synth").exists()
    with pytest.raises(SystemExit) as exc:  # rows without scores: one error line
        study.main(
            ["--examples", str(ed), "--judged-synth", str(ed), "--embedder", str(minilm_dir), "--output-dir", str(out)]
        )
    assert exc.value.code == 2


def test_a_round_that_says_nothing_new_ends_the_dialogue():
    """What SmolLM2 wrote in the demo without a repetition penalty: the same round again, or the context echoed as
    the response. Such rounds end the dialogue (too few new rounds: rejected with the reason)."""
    new = [("I lost my job.", "I'm sorry, that is hard."), ("I have rent due.", "That adds pressure."),
           ("My sister offered help.", "It's good you're not alone.")]  # fmt: skip
    assert first_repeated_round(new) is None
    cases = {
        "response repeats its context": [*new[:1], ("3", "3"), *new[1:]],
        "context repeats an earlier turn": [*new[:1], ("i lost my job", "Still sad."), *new[1:]],
        "response repeats an earlier turn": [*new[:1], ("And now?", "I'm sorry, that is hard!"), *new[1:]],
    }
    for why, rounds in cases.items():
        assert first_repeated_round(rounds) == (2, why)
        text = json.dumps({"rounds": [{"context": c, "response": r} for c, r in rounds]})
        parsed = parse_json_rounds(text, min_rounds=3)
        assert not parsed.ok and parsed.reason == f"round 2: {why} (only 1 new round(s), need 3)"
    late = json.dumps({"rounds": [{"context": c, "response": r} for c, r in [*new, new[0]]]})
    assert parse_json_rounds(late, min_rounds=3).rounds == new  # enough new rounds before the repeat: kept


def test_build_mix_is_loadable_by_sft(tmp_path, ed_valid_path):
    mix_script = load_script("scripts/synth_build_mix.py")
    synthetic = tmp_path / "selected.jsonl"
    exs = dialogue_to_examples(parse_rounds(CLEAN).rounds, "d", "sad", mode="all")
    synthetic.write_text("".join(json.dumps({**e, "quality_score": 70.0}) + "\n" for e in exs))
    mix_script.main(["--synthetic", str(synthetic), "--ed", str(ed_valid_path), "--ed-limit", "5", "--output",
                     str(tmp_path / "mix")])  # fmt: skip
    mix = load_ed(tmp_path / "mix")
    assert len(mix) == 5 + len(exs)
    assert sorted(mix["source"]) == ["ed"] * 5 + ["synthetic"] * len(exs)
    assert len(set(mix["id"])) == len(mix)
    assert set(mix.column_names) == {"id", "emotion", "messages", "source"}


@pytest.mark.integration
def test_smollm2_generate_then_select_conserves_rows(tmp_path, smollm2_dir, minilm_dir, ed_valid_path):
    """SmolLM2 rarely writes the format: assert conservation and schema, not quality. Selection runs on the parsed
    examples when there are any, else on hand-written ones (the discriminator and embedder are real either way)."""
    gen = tmp_path / "gen"
    summary = run_pipeline_script(
        "distilabel_pipelines/synthesize_dialogues.py",
        ["--dataset", str(ed_valid_path), "--limit", "2", "--num-generations", "1", "--max-new-tokens", "64",
         "--model", str(smollm2_dir), "--device", "cpu", "--output-dir", str(gen)],
        gen,
    )  # fmt: skip
    assert summary["generations"] == 2 == summary["dialogues"] + summary["rejected"]
    assert len(jsonl(gen / "rejected.jsonl")) == summary["rejected"]
    examples = gen / "examples.jsonl"
    if summary["examples"] == 0:
        exs = dialogue_to_examples(parse_rounds(CLEAN).rounds, "d", "sad", mode="all")
        exs += dialogue_to_examples(parse_rounds(MARKDOWN).rounds, "m", "afraid", mode="all")
        examples.write_text("".join(json.dumps(e) + "\n" for e in exs))
    n = len(jsonl(examples))

    quality = load_script("scripts/synth_quality_select.py")
    q = quality.main(
        ["--dataset", str(examples), "--discriminator", str(smollm2_dir), "--embedder", str(minilm_dir),
         "--threshold", "30", "--max-new-tokens", "24", "--device", "cpu", "--output-dir", str(tmp_path / "q")]
    )  # fmt: skip
    scored = jsonl(tmp_path / "q" / "scored.jsonl")
    assert len(scored) == n == q["kept"] + q["dropped"]
    assert all(-100 <= r["quality_score"] <= 100 and r["discriminator_reply"] is not None for r in scored)
    assert all(r["quality_keep"] == (r["quality_score"] >= 30) for r in scored)

    diversity = load_script("scripts/synth_diversity_select.py")
    d = diversity.main(
        ["--dataset", str(tmp_path / "q" / "scored.jsonl"), "--embedder", str(minilm_dir), "--ratio", "0.5",
         "--output-dir", str(tmp_path / "d")]
    )  # fmt: skip
    ranked = jsonl(tmp_path / "d" / "ranked.jsonl")
    assert sorted(r["kcenter_rank"] for r in ranked) == list(range(n))
    assert d["kept"] == max(1, n // 2) == len(jsonl(tmp_path / "d" / "selected.jsonl"))
    assert np.load(tmp_path / "d" / "embeddings.npy").shape == (n, 384)


def test_cosine_x100():
    from empathy_recipes.embeddings import cosine_x100
    from empathy_recipes.errors import EmpathyRecipesError

    a = np.array([[1.0, 0.0], [3.0, 4.0], [0.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    b = np.array([[0.0, 2.0], [6.0, 8.0], [1.0, 0.0], [-1.0, -1.0]], dtype=np.float32)
    assert cosine_x100(a, b) == pytest.approx([0.0, 100.0, 0.0, -100.0], abs=1e-4)
    with pytest.raises(EmpathyRecipesError):
        cosine_x100(a, b[:2])


@pytest.mark.integration
def test_paired_similarity_with_minilm(minilm_dir):
    from empathy_recipes.embeddings import encode, load_embedder, paired_similarity_x100

    emb = load_embedder(minilm_dir, device="cpu")
    a = ["I am so sorry about your dog.", "Congratulations on the new job!"]
    b = ["I'm sorry to hear about your dog.", "The weather report says rain."]
    sims = paired_similarity_x100(emb, a, b)
    assert sims[0] > 60 > sims[1]
    assert encode(emb, a).shape == (2, 384)
    assert encode(emb, []).shape == (0, 384)
