"""hub.py: the Hub layout (configs, splits, card) round-trips by path; pushes fail as one line, locals kept."""

from __future__ import annotations

import argparse

import pytest
from datasets import Dataset, DatasetDict, load_dataset

from empathy_recipes.data import load_ed
from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.hub import (
    CardInfo,
    add_hub_args,
    card_yaml,
    input_ref,
    model_card_text,
    push_dataset,
    push_model_folder,
    redacted_command,
    save_dataset_layout,
)


def _rows(n: int, tag: str) -> Dataset:
    return Dataset.from_dict(
        {
            "id": [f"{tag}{i}" for i in range(n)],
            "emotion": ["proud"] * n,
            "messages": [
                [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "ok"}] for i in range(n)
            ],
        }
    )


def _info() -> CardInfo:
    return CardInfo(
        title="sets", description="Two sets.", command="x --token ***", inputs=[{"id": "a", "revision": "b"}]
    )


def test_layout_has_one_config_per_set_with_a_train_split(tmp_path):
    configs = {"sensibility": _rows(3, "s"), "rationality": _rows(2, "r")}
    folder = save_dataset_layout(configs, tmp_path / "repo", _info())
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.parquet")) == [
        "rationality/train-00000-of-00001.parquet",
        "sensibility/train-00000-of-00001.parquet",
    ]
    ds = load_dataset(str(folder), "sensibility", split="train")
    assert ds["id"] == ["s0", "s1", "s2"]
    assert ds[0]["messages"][1] == {"role": "assistant", "content": "ok"}
    assert len(load_ed(folder, config="rationality", split="train")) == 2
    meta = card_yaml((folder / "README.md").read_text())
    assert meta["license"] == "cc-by-nc-4.0"
    assert [c["config_name"] for c in meta["configs"]] == ["sensibility", "rationality"]
    card = (folder / "README.md").read_text()
    assert "| `sensibility` | `train` | 3 |" in card and "x --token ***" in card and "| `a` | `b` |" in card


def test_several_splits_of_one_config(tmp_path):
    folder = save_dataset_layout({"default": DatasetDict(train=_rows(2, "a"), test=_rows(1, "b"))}, tmp_path, _info())
    assert load_dataset(str(folder), split="test")["id"] == ["b0"]
    assert len(load_ed(folder, split="train")) == 2


def test_unknown_config_is_one_error(tmp_path):
    folder = save_dataset_layout({"sensibility": _rows(1, "s")}, tmp_path / "r", _info())
    with pytest.raises(EmpathyRecipesError, match="cannot read"):
        load_ed(folder, config="nope")
    with pytest.raises(EmpathyRecipesError, match="no configs"):
        load_ed(folder / "sensibility" / "train-00000-of-00001.parquet", config="x")


def test_push_dataset_writes_the_layout_to_the_local_hub(local_hub):
    url = push_dataset({"sensibility": _rows(2, "s")}, "org/sets", _info(), private=True)
    assert url.endswith("org/sets")
    repo = local_hub / "datasets" / "org" / "sets"
    assert load_dataset(str(repo), "sensibility", split="train").num_rows == 2
    assert 'load_dataset("org/sets", "sensibility", split="train")' in (repo / "README.md").read_text()
    assert (repo / ".private").read_text() == "True"


def test_push_offline_is_one_error_naming_the_local_output(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EmpathyRecipesError, match=r"offline .*kept in out/sets") as err:
        push_dataset({"a": _rows(1, "a")}, "org/sets", _info(), local_output="out/sets")
    assert "\n" not in str(err.value)


def test_push_without_token_is_one_error(monkeypatch, tmp_path):
    from huggingface_hub import HfApi

    def refuse(self, *a, **k):
        raise RuntimeError("Invalid user token.\nmore lines")

    monkeypatch.setattr(HfApi, "create_repo", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(EmpathyRecipesError, match="not logged in") as err:
        push_model_folder(folder, "org/m", card="card")
    assert "\n" not in str(err.value)
    assert (folder / "README.md").read_text() == "card"  # the card is written locally first


def test_model_push_leaves_checkpoints_out(local_hub, tmp_path):
    folder = tmp_path / "expert"
    (folder / "checkpoint-5").mkdir(parents=True)
    (folder / "checkpoint-5" / "x.bin").write_text("x")
    (folder / "adapter_config.json").write_text("{}")
    (folder / "README.md").write_text("existing card")
    push_model_folder(folder, "org/expert", card="other")
    repo = local_hub / "models" / "org" / "expert"
    assert (repo / "adapter_config.json").exists() and not (repo / "checkpoint-5").exists()
    assert (repo / "README.md").read_text() == "existing card"


def test_model_card_names_hub_inputs_only_in_yaml(tmp_path):
    text = model_card_text(_info(), base_model="HuggingFaceTB/SmolLM2-135M-Instruct", datasets=[str(tmp_path), "o/d"])
    meta = card_yaml(text)
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta["datasets"] == ["o/d"]
    assert meta["license"] == "cc-by-nc-4.0"


def test_hub_args_validate_the_repo_id(local_hub):
    parser = add_hub_args(argparse.ArgumentParser())
    assert parser.parse_args(["--hub-repo", "org/name", "--private"]).private
    with pytest.raises(EmpathyRecipesError, match="org/name"):
        parser.parse_args(["--hub-repo", "no-slash"])


def test_hub_args_refuse_offline_or_tokenless_before_any_work(monkeypatch):
    parser = add_hub_args(argparse.ArgumentParser())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EmpathyRecipesError, match="HF_HUB_OFFLINE=1"):
        parser.parse_args(["--hub-repo", "org/name"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(EmpathyRecipesError, match="no Hugging Face token"):
        parser.parse_args(["--hub-repo", "org/name"])
    assert parser.parse_args([]).hub_repo is None


def test_command_is_redacted():
    argv = ["--api-key", "sk-abcdefghijkl", "--hf-token=hf_abcdefghijklmnop", "--model", "hf_zzzzzzzzzzzzzzzzzz"]
    cmd = redacted_command(argv, program="p.py")
    assert "sk-abc" not in cmd and "hf_abc" not in cmd and "hf_zzz" not in cmd
    assert cmd.startswith("p.py --api-key '***'")


def test_input_ref_of_a_local_path_has_a_digest(tmp_path):
    (tmp_path / "a.jsonl").write_text("{}\n")
    ref = input_ref(tmp_path)
    assert ref["id"] == str(tmp_path) and ref["revision"].startswith("local sha256:")
    assert input_ref("org/data", revision="abc") == {"id": "org/data", "revision": "abc"}
