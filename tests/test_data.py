"""The data layer: every supported ED layout and source, and one clear error for every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from datasets import Dataset, DatasetDict

from empathy_recipes.data import load_ed, save_dataset, split_turns, to_chat_schema, turns_to_messages
from empathy_recipes.errors import EmpathyRecipesError

RAW_ROWS = [  # two conversations of the raw per-utterance release, deliberately out of order
    {
        "conv_id": "hit:1_conv:2",
        "utterance_idx": 2,
        "context": "sentimental",
        "prompt": "i remember going_comma_ once",
        "speaker_idx": 0,
        "utterance": "was this a friend you were in love with_comma_ or just a best friend?",
    },
    {
        "conv_id": "hit:1_conv:2",
        "utterance_idx": 1,
        "context": "sentimental",
        "prompt": "i remember going_comma_ once",
        "speaker_idx": 1,
        "utterance": "i remember going to see the fireworks with my best friend.",
    },
    {
        "conv_id": "hit:1_conv:2",
        "utterance_idx": 3,
        "context": "sentimental",
        "prompt": "i remember going_comma_ once",
        "speaker_idx": 1,
        "utterance": "this was a best friend. i miss her.",
    },
    {
        "conv_id": "hit:1_conv:2",
        "utterance_idx": 4,
        "context": "sentimental",
        "prompt": "i remember going_comma_ once",
        "speaker_idx": 0,
        "utterance": "where has she gone?",
    },
    {
        "conv_id": "hit:2_conv:4",
        "utterance_idx": 1,
        "context": "afraid",
        "prompt": "storm",
        "speaker_idx": 5,
        "utterance": "the storm was loud_comma_ really loud.",
    },
    {
        "conv_id": "hit:2_conv:4",
        "utterance_idx": 2,
        "context": "afraid",
        "prompt": "storm",
        "speaker_idx": 6,
        "utterance": "that sounds scary!",
    },
    {
        "conv_id": "hit:2_conv:4",
        "utterance_idx": 3,
        "context": "afraid",
        "prompt": "storm",
        "speaker_idx": 5,
        "utterance": "it was.",
    },
]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _write(path, text):
    path.write_text(text)
    return path


def _assert_chat(row):
    roles = [m["role"] for m in row["messages"]]
    assert roles[-1] == "assistant" and roles[-2] == "user"
    assert all(a != b for a, b in zip(roles, roles[1:])), roles


def test_preprocessed_jsonl_keeps_extra_columns(ed_valid_path):
    ds = load_ed(ed_valid_path)
    src = [json.loads(line) for line in ed_valid_path.read_text().splitlines()]
    assert len(ds) == len(src) == 400
    assert ds.column_names[:3] == ["id", "emotion", "messages"] and "judge_output" in ds.column_names
    for row, raw in zip(ds, src):
        _assert_chat(row)
        assert row["id"] == str(raw["id"]) and row["emotion"] == raw["emotion"]
        assert [m["content"] for m in row["messages"]] == raw["context"] + [raw["response"]]
        assert row["judge_output"] == raw["judge_output"]


def test_test_split_reference_is_last_assistant_turn(ed_test_path):
    ds = load_ed(ed_test_path)
    first = json.loads(ed_test_path.read_text().splitlines()[0])
    assert ds[0]["messages"][-1] == {"role": "assistant", "content": first["reference"]}
    assert "reference" not in ds.column_names


def test_separator_joined_context_strings_from_csv(tmp_path):
    path = tmp_path / "ed.csv"
    Dataset.from_dict(
        {"context": ["i lost my dog . </s> oh no ! </s> he ran away ."], "response": ["i am so sorry ."]}
    ).to_csv(str(path))
    row = load_ed(path)[0]
    assert [m["content"] for m in row["messages"]] == [
        "i lost my dog .",
        "oh no !",
        "he ran away .",
        "i am so sorry .",
    ]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant", "user", "assistant"]
    assert row["id"] == "0" and row["emotion"] == ""


def test_raw_release_groups_listener_turns_and_unescapes_commas(tmp_path):
    ds = load_ed(_write_jsonl(tmp_path / "raw.jsonl", RAW_ROWS))
    assert len(ds) == 3  # listener turns: conv 2 -> idx 2 and 4; conv 4 -> idx 2
    by_id = {r["id"]: r for r in ds}
    long = by_id["hit:1_conv:2_4"]["messages"]
    assert [m["content"] for m in long] == [
        "i remember going to see the fireworks with my best friend.",
        "was this a friend you were in love with, or just a best friend?",
        "this was a best friend. i miss her.",
        "where has she gone?",
    ]
    for row in ds:
        _assert_chat(row)
    assert by_id["hit:2_conv:4_2"]["messages"][0]["content"] == "the storm was loud, really loud."
    assert by_id["hit:1_conv:2_2"]["emotion"] == "sentimental"
    assert by_id["hit:1_conv:2_2"]["situation"] == "i remember going, once"


@pytest.mark.parametrize("fmt", ["json", "parquet", "disk", "dir_of_files", "dict"])
def test_every_local_source_gives_the_same_rows(tmp_path, ed_valid_path, fmt):
    base = load_ed(ed_valid_path)
    raw = Dataset.from_json(str(ed_valid_path))
    split = None
    if fmt == "json":
        path = tmp_path / "ed.json"
        raw.to_json(str(path), lines=True)
    elif fmt == "parquet":
        path = tmp_path / "ed.parquet"
        raw.to_parquet(str(path))
    elif fmt == "disk":
        path = tmp_path / "disk"
        raw.save_to_disk(str(path))
    elif fmt == "dir_of_files":
        path = tmp_path / "files"
        path.mkdir()
        raw.to_parquet(str(path / "train.parquet"))
    else:
        path, split = tmp_path / "dict", "validation"
        DatasetDict({"validation": raw, "test": raw.select(range(3))}).save_to_disk(str(path))
    got = load_ed(path, split=split)
    assert got["messages"] == base["messages"] and got["id"] == base["id"]


def test_common_schema_passes_through(ed_valid_path):
    once = load_ed(ed_valid_path)
    assert to_chat_schema(once)["messages"] == once["messages"]


def test_save_and_reload_round_trip(tmp_path, ed_valid_path):
    ds = load_ed(ed_valid_path, limit=10)
    for name in ["out.jsonl", "out.parquet", "out_dir"]:
        assert load_ed(save_dataset(ds, tmp_path / name))["messages"] == ds["messages"]


def test_helpers():
    assert split_turns("a </s> b </s>  ") == ["a", "b"]
    assert [m["role"] for m in turns_to_messages(["a", "b"], "c")] == ["assistant", "user", "assistant"]


@pytest.mark.parametrize(
    "make_source, message",
    [
        (lambda p: _write(p / "ed.txt", "hello"), "unknown data file format '.txt'"),
        (lambda p: _write_jsonl(p / "cols.jsonl", [{"text": "hi", "label": 1}]), "unrecognised ED format"),
        (lambda p: _write(p / "empty.jsonl", ""), "is empty"),
        (lambda p: _write_jsonl(p / "e.jsonl", [{"context": [], "response": "x"}]), "empty context"),
        (lambda p: _write(p / "bad.jsonl", "{not json\n"), "cannot read"),
        (lambda p: p / "missing.jsonl", "no such file or directory"),
        (lambda p: p, "holds no dataset"),
        (lambda p: "not a valid id!", "neither an existing local path nor a valid Hub dataset id"),
        (lambda p: "someone/empathetic_dialogues_parquet", "offline"),
    ],
    ids=[
        "unknown-format",
        "missing-columns",
        "empty-file",
        "empty-context",
        "corrupt",
        "missing-path",
        "empty-dir",
        "bad-id",
        "hub-offline",
    ],
)
def test_bad_input_gives_one_clear_error(tmp_path, monkeypatch, make_source, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(EmpathyRecipesError) as info:
        load_ed(make_source(tmp_path))
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert time.monotonic() - start < 30  # offline Hub ids fail at once, never the 48 s network hang


def test_cli_prints_one_line_and_exits_2(tmp_path):
    code = (
        "from empathy_recipes.errors import exit_on_user_error\n"
        "from empathy_recipes.data import load_ed\n"
        f"exit_on_user_error(load_ed)({str(tmp_path / 'nope.jsonl')!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: no such file or directory: {tmp_path / 'nope.jsonl'}"]


def test_the_public_parquet_copy_layout_loads_one_row_per_listener_turn(tmp_path):
    """ED_HUB_ID's layout as its dataset card describes it (dialogue per row; splits train/valid/test under data/,
    a configs block), built locally: nothing is downloaded."""
    from datasets import Dataset

    from empathy_recipes.data import ED_HUB_ID, load_ed

    assert ED_HUB_ID == "Estwld/empathetic_dialogues_llm"
    rows = {
        "conv_id": ["hit:0_conv:1", "hit:1_conv:2"],
        "situation": ["I got a new job_comma_ finally.", "My dog ran away."],
        "emotion": ["excited", "sad"],
        "conversations": [
            [{"role": "user", "content": "I got the job!"}, {"role": "assistant", "content": "Congrats_comma_ great!"},
             {"role": "user", "content": "Thanks."}, {"role": "assistant", "content": "When do you start?"}],
            [{"role": "user", "content": "My dog ran away."}, {"role": "assistant", "content": "Oh no."}],
        ],
    }  # fmt: skip
    (tmp_path / "data").mkdir()
    for split in ("train", "valid", "test"):
        Dataset.from_dict(rows).to_parquet(str(tmp_path / "data" / f"{split}-00000-of-00001.parquet"))
    (tmp_path / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n"
        + "".join(f"  - split: {s}\n    path: data/{s}-*\n" for s in ("train", "valid", "test"))
        + "---\n"
    )
    ds = load_ed(tmp_path, split="valid")
    assert list(ds["id"]) == ["hit:0_conv:1_2", "hit:0_conv:1_4", "hit:1_conv:2_2"]
    assert list(ds["emotion"]) == ["excited", "excited", "sad"] and ds[0]["situation"] == "I got a new job, finally."
    assert ds[1]["messages"][-1] == {"role": "assistant", "content": "When do you start?"}
    assert len(ds[1]["messages"]) == 4 and ds[0]["messages"][-1]["content"] == "Congrats, great!"
