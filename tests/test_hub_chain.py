"""Hub id in, Hub id out: each stage pushes into a local Hub folder (``local_hub``) and the next reads it by path.

judge -> select -> sft -> moe -> generate -> eval-metrics, and synth -> synth-select -> synth-mix -> sft, on tiny
models. Nothing reaches the network (``HfApi`` is patched to write the very files it would upload).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from datasets import load_dataset

from empathy_recipes.hub import card_yaml

REPO = Path(__file__).resolve().parents[1]


def _script(relpath: str):
    path = REPO / relpath
    spec = importlib.util.spec_from_file_location(path.stem + "_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_select_pushes_one_config_per_set_each_with_train(local_hub, ed_valid_path, tmp_path):
    select = _script("scripts/select_sets.py")
    stats = select.main(["--dataset", str(ed_valid_path), "--output-dir", str(tmp_path / "sets"), "--limit", "60",
                         "--hub-repo", "org/ed-sets", "--private"])  # fmt: skip
    repo = local_hub / "datasets" / "org" / "ed-sets"
    assert stats["counts"]["unscored"] == 0  # an empty set is listed in the card, not uploaded
    for name, n in stats["counts"].items():
        if n:
            assert load_dataset(str(repo), name, split="train").num_rows == n
    card = (repo / "README.md").read_text()
    meta = card_yaml(card)
    assert meta["license"] == "cc-by-nc-4.0"
    assert sorted(c["config_name"] for c in meta["configs"]) == sorted(k for k, n in stats["counts"].items() if n)
    assert "| `unscored` | `train` | 0 |" in card
    assert "--hub-repo org/ed-sets" in card and str(ed_valid_path) in card
    assert (tmp_path / "sets" / "stats.json").exists()
