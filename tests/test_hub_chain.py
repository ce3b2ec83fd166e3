"""Hub id in, Hub id out: each stage pushes into a local Hub folder (``local_hub``) and the next reads it by path.

judge -> select -> sft -> moe -> generate -> eval-metrics, and synth -> synth-select -> synth-mix -> sft, on tiny
models. Nothing reaches the network (``HfApi`` is patched to write the very files it would upload).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from datasets import load_dataset

from empathy_recipes.hub import card_yaml
from empathy_recipes.sft_args import parse_sft_args

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


def test_efficient_empathy_chain_through_the_hub(
    local_hub, tiny_model_dir, ed_valid_path, ed_test_path, tmp_path, capsys
):
    """select -> sft (two experts, from the pushed configs) -> moe (from the pushed merged experts and sets) ->
    generate (from the pushed MoE) -> eval-metrics (from the pushed predictions), every link by a local Hub path."""
    import json

    datasets_root, models_root = local_hub / "datasets", local_hub / "models"
    select = _script("scripts/select_sets.py")
    select.main(["--dataset", str(ed_valid_path), "--output-dir", str(tmp_path / "sets"), "--hub-repo", "org/split"])
    split_repo = datasets_root / "org" / "split"

    sft = _script("scripts/sft.py")
    for name in ("sensibility", "rationality"):
        sft.main(*parse_sft_args([
            "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(split_repo),
            "--dataset_config", name, "--dataset_split", "train", "--output_dir", str(tmp_path / f"exp-{name}"),
            "--max_steps", "2", "--per_device_train_batch_size", "4", "--max_length", "128", "--learning_rate", "1e-2",
            "--use_peft", "--lora_r", "4", "--lora_target_modules", "up_proj", "down_proj", "--report_to", "tensorboard",
            "--save_strategy", "no", "--logging_steps", "1", "--push_to_hub", "--hub_model_id", f"org/exp-{name}", "--hub_private_repo", "true",
        ]))  # fmt: skip
        assert f"TensorBoard logs in {tmp_path / f'exp-{name}' / 'runs'}" in capsys.readouterr().err  # make sft logs
        adapter = models_root / "org" / f"exp-{name}"
        assert (adapter / "adapter_config.json").exists() and not (adapter / "merged").exists()
        assert list((adapter / "runs").rglob("events.out.tfevents.*")), "TensorBoard logs travel with the adapter"
        card = (adapter / "README.md").read_text()
        assert "It has been trained using [TRL]" in card and "## Recipe (effective values)" in card
        assert card_yaml(card)["license"] == "cc-by-nc-4.0"
        assert (models_root / "org" / f"exp-{name}-merged" / "config.json").exists()
    # the demo report's loss plot reads the TensorBoard events: the same losses the trainer logged

    logged = json.loads((tmp_path / "exp-rationality" / "trainer_state.json").read_text())["log_history"]
    expected = [(e["step"], e["loss"]) for e in logged if "loss" in e]
    from_events = _script("scripts/demo_report.py").tensorboard_losses(tmp_path / "exp-rationality")
    assert [s for s, _ in from_events] == [s for s, _ in expected] == [1, 2]
    assert all(abs(a - b) < 1e-4 for (_, a), (_, b) in zip(from_events, expected))

    build_moe = _script("scripts/build_moe.py")
    build_moe.main([
        "--experts", *(str(models_root / "org" / f"exp-{n}-merged") for n in ("sensibility", "rationality")),
        "--prompt-sets", f"{split_repo}:sensibility", f"{split_repo}:rationality", "--num-prompts", "4",
        "--output-dir", str(tmp_path / "moe"), "--hub-repo", "org/moe",
    ])  # fmt: skip
    moe_repo = models_root / "org" / "moe"
    assert "```yaml" in (moe_repo / "README.md").read_text() and "gate_mode" in (moe_repo / "README.md").read_text()

    generate = _script("evaluation/generate.py")
    generate.main(["--model", str(moe_repo), "--dataset", str(ed_test_path), "--limit", "6", "--max-new-tokens", "4",
                   "--output", str(tmp_path / "preds.jsonl"), "--hub-repo", "org/preds"])  # fmt: skip
    preds_repo = datasets_root / "org" / "preds"
    assert load_dataset(str(preds_repo), split="train").num_rows == 6

    metrics = _script("evaluation/compute_metrics.py")
    metrics.main(["--predictions", str(preds_repo), "--output", str(tmp_path / "metrics.json")])
    assert json.loads((tmp_path / "metrics.json").read_text())["n"] == 6


@pytest.mark.slow
def test_judge_pushes_and_select_reads_the_pushed_repo(local_hub, tiny_model_dir, ed_valid_path, tmp_path):
    """The judge runs in a fresh process (distilabel): a sitecustomize points its pushes at the same local Hub."""
    import os
    import subprocess

    from empathy_recipes.testing import FOLDER_HUB_ENV, folder_hub_sitecustomize, prepend_site

    site = folder_hub_sitecustomize(tmp_path / "site")
    env = dict(os.environ, PYTHONPATH=prepend_site(site), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env[FOLDER_HUB_ENV] = str(local_hub)
    cmd = [sys.executable, str(REPO / "distilabel_pipelines" / "judge_sensibility_rationality.py"),
           "--dataset", str(ed_valid_path), "--limit", "6", "--batch-size", "3", "--model", str(tiny_model_dir),
           "--device", "cpu", "--output-dir", str(tmp_path / "judged"), "--cache-dir", str(tmp_path / "cache"),
           "--hub-repo", "org/judged"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    repo = local_hub / "datasets" / "org" / "judged"
    assert load_dataset(str(repo), "default", split="train").num_rows == 6
    assert (repo / "pipeline.yaml").exists() and (repo / "judge_sensibility_rationality.py").exists()
    card = (repo / "README.md").read_text()
    assert card_yaml(card)["license"] == "cc-by-nc-4.0" and "--hub-repo org/judged" in card

    select = _script("scripts/select_sets.py")
    stats = select.main(["--dataset", str(repo), "--output-dir", str(tmp_path / "sets")])
    assert stats["rows"] == 6 and stats["score_source"].startswith("columns")
