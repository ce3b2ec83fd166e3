"""Push what a stage made to the Hugging Face Hub, with a card, in the layout ``push_to_hub`` gives.

Every stage writes its local output first, then, with ``--hub-repo org/name [--private]``, pushes it:

- datasets: :func:`push_dataset` takes ``{config: Dataset | DatasetDict}`` and uploads one parquet folder per
  config (``<config>/<split>-00000-of-0000N.parquet``, the names ``datasets``' own ``push_to_hub(config_name=...)``
  writes) with a ``README.md`` whose YAML ``configs:`` block maps every config and split to its files, so
  ``load_dataset(repo, "sensibility", split="train")`` works on the Hub and on a local copy of the same folder
  (:func:`save_dataset_layout` writes that folder; ``empathy_recipes.data.load_ed(folder, config=...)`` reads it);
- model folders: :func:`push_model_folder` uploads a model / adapter folder (``checkpoint-*`` left out) and writes
  a ``README.md`` card into it first when it has none.

Cards say what it is, the command that made it (secrets redacted), its inputs (ids and revisions), the counts and
the licence (EmpatheticDialogues is CC BY-NC 4.0). A push that fails (no token, no network, offline mode, a repo of
another type) is one :class:`EmpathyRecipesError` naming the local output, which is kept.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from empathy_recipes.checks import looks_like_hub_id
from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.outputs import fingerprint
from empathy_recipes.redact import redact_argv

logger = logging.getLogger(__name__)

ED_LICENSE = "cc-by-nc-4.0"
ED_LICENSE_TEXT = (
    "Derived from EmpatheticDialogues (Rashkin et al., 2019), released under CC BY-NC 4.0: non-commercial use, "
    "with attribution."
)
ED_CITATION = (
    "Rashkin et al., *Towards Empathetic Open-domain Conversation Models: a New Benchmark and Dataset*, ACL 2019."
)
MAX_SHARD_BYTES = 500 * 1024 * 1024  # datasets' own default max_shard_size for push_to_hub


# ---- arguments ---------------------------------------------------------------------------------------------------


def hub_repo_id(value: str) -> str:
    """argparse ``type`` for ``--hub-repo``: ``org/name`` or one :class:`EmpathyRecipesError` line; offline mode or
    no token is refused here too, before any work (the push itself comes after the local output)."""
    if not looks_like_hub_id(value) or value.endswith((".", "-")) or ".." in value:
        raise EmpathyRecipesError(f"--hub-repo must look like org/name, not {value!r}")
    check_can_push()
    return value


def add_hub_args(parser: argparse.ArgumentParser, what: str = "the output") -> argparse.ArgumentParser:
    """Add ``--hub-repo org/name`` and ``--private`` (shared by every stage that can push)."""
    group = parser.add_argument_group("Hub")
    group.add_argument(
        "--hub-repo",
        type=hub_repo_id,
        default=None,
        help=f"also push {what}, with a card, to this Hub repo (org/name)",
    )
    group.add_argument("--private", action="store_true", help="create the Hub repo private")
    return parser


# ---- what a card says ----------------------------------------------------------------------------------------------


def redacted_command(argv: Sequence[str] | None = None, program: str | os.PathLike | None = None) -> str:
    """The command line that made an artefact, as one shell-quoted string, with secrets replaced by ``***``.

    ``argv`` defaults to ``sys.argv[1:]``; ``program`` (a script's ``__file__``) to ``sys.argv[0]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    program = _program_name(program)
    return shlex.join([program, *redact_argv(argv)])


def _program_name(program: str | os.PathLike | None) -> str:
    main = program or (sys.argv[0] if sys.argv and sys.argv[0] else "python")
    path = Path(main)
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return path.name


def is_local(ref: str | os.PathLike) -> bool:
    return Path(str(ref)).expanduser().exists()


def input_ref(ref: str | os.PathLike, repo_type: str = "dataset", revision: str | None = None) -> dict[str, str]:
    """``{"id", "revision"}`` of an input: for a Hub id, the given revision or the commit the Hub resolves now
    (``"unresolved"`` when it cannot be asked); for a local path, the content hash of ``outputs.fingerprint``."""
    ref = str(ref)
    if is_local(ref):
        return {"id": ref, "revision": f"local sha256:{fingerprint(ref)['sha256'][:16]}"}
    if revision:
        return {"id": ref, "revision": revision}
    try:
        from huggingface_hub import HfApi

        sha = HfApi().repo_info(ref, repo_type=repo_type, timeout=10).sha
    except Exception:  # noqa: BLE001 - the card then says so; the push itself reports real failures
        sha = None
    return {"id": ref, "revision": sha or "unresolved"}


@dataclass
class CardInfo:
    """What a card says beyond the counts: a title, a paragraph, the command, the inputs, the licence."""

    title: str
    description: str
    command: str | None = None
    inputs: list[dict[str, str]] = field(default_factory=list)
    license: str = ED_LICENSE
    license_text: str = ED_LICENSE_TEXT
    tags: list[str] = field(default_factory=list)
    extra_sections: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.command is None:
            self.command = redacted_command()


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def _common_sections(info: CardInfo) -> list[str]:
    lines: list[str] = []
    if info.inputs:
        lines += ["## Inputs", "", "| input | revision |", "| --- | --- |"]
        lines += [f"| `{i['id']}` | `{i.get('revision', '')}` |" for i in info.inputs]
        lines.append("")
    if info.command:
        lines += ["## Command", "", "```bash", info.command, "```", ""]
    for heading, text in info.extra_sections.items():
        lines += [f"## {heading}", "", text.rstrip(), ""]
    lines += ["## Licence", "", f"`{info.license}`. {info.license_text}", "", ED_CITATION, ""]
    return lines


# ---- datasets ------------------------------------------------------------------------------------------------------


def _as_splits(data: Any) -> dict[str, Any]:
    from datasets import Dataset, DatasetDict

    if isinstance(data, Dataset):
        return {"train": data}
    if isinstance(data, DatasetDict | Mapping):
        return dict(data)
    raise TypeError(f"expected a Dataset or DatasetDict, got {type(data).__name__}")


def dataset_counts(configs: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """``{config: {split: rows}}``."""
    return {name: {split: len(ds) for split, ds in _as_splits(data).items()} for name, data in configs.items()}


def dataset_card_text(configs: Mapping[str, Any], info: CardInfo, repo_id: str | None = None) -> str:
    """The ``README.md`` of a dataset repo: YAML (licence, tags, the ``configs:`` block) then the card body."""
    from huggingface_hub import DatasetCard, DatasetCardData

    counts = dataset_counts(configs)
    total = sum(n for splits in counts.values() for n in splits.values())
    present = {name: [s for s, n in splits.items() if n] for name, splits in counts.items()}
    config_block = [
        {
            "config_name": name,
            **({"default": True} if len(present) == 1 or name == "default" else {}),
            "data_files": [{"split": split, "path": f"{_config_dir(name)}/{split}-*"} for split in splits],
        }
        for name, splits in present.items()
        if splits
    ]
    if not config_block:
        raise EmpathyRecipesError("nothing to push: every split is empty")
    data = DatasetCardData(
        license=info.license,
        language=["en"],
        pretty_name=info.title,
        size_categories=[_size_category(total)],
        task_categories=["text-generation"],
        tags=["empathy-recipes", "empathetic-dialogues", *info.tags],
        configs=config_block,
    )
    target = repo_id or "<this folder or org/name>"
    lines = [f"# {info.title}", "", info.description.rstrip(), "", "## Contents", ""]
    lines += ["| config | split | rows |", "| --- | --- | ---: |"]
    lines += [f"| `{c}` | `{s}` | {n} |" for c, splits in counts.items() for s, n in splits.items()]
    empty = [f"`{c}/{s}`" for c, splits in counts.items() for s, n in splits.items() if not n]
    if empty:
        lines += ["", f"Empty, so not uploaded (`load_dataset` cannot read an empty split): {', '.join(empty)}."]
    first = config_block[0]["config_name"]
    first_split = config_block[0]["data_files"][0]["split"]
    lines += [
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'ds = load_dataset("{target}", "{first}", split="{first_split}")',
        "```",
        "",
    ]
    lines += _common_sections(info)
    return str(DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)))


def _config_dir(name: str) -> str:
    """The folder of a config's files, as ``push_to_hub(config_name=...)`` names it (``data/`` for ``default``)."""
    return "data" if name == "default" else name


def save_dataset_layout(configs: Mapping[str, Any], folder: str | os.PathLike, info: CardInfo) -> Path:
    """Write ``configs`` (``{config: Dataset | DatasetDict}``) as a Hub dataset repo would hold them:
    ``<config>/<split>-<i>-of-<n>.parquet`` (``data/`` for the ``default`` config) plus the ``README.md`` card with the ``configs:`` block.
    ``datasets.load_dataset(str(folder), config, split=...)`` reads it back."""
    if not configs:
        raise EmpathyRecipesError("nothing to push: no dataset")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in configs.items():
        if not re.fullmatch(r"[\w.-]+", name):
            raise EmpathyRecipesError(f"config name {name!r} must be letters, digits, '_', '-' or '.'")
        for split, ds in _as_splits(data).items():
            if len(ds) == 0:
                continue  # an empty split cannot be loaded back; the card lists it as empty
            shards = max(1, math.ceil((ds.data.nbytes or 0) / MAX_SHARD_BYTES))
            for i in range(shards):
                shard = ds.shard(num_shards=shards, index=i, contiguous=True) if shards > 1 else ds
                shard.to_parquet(str(folder / _config_dir(name) / f"{split}-{i:05d}-of-{shards:05d}.parquet"))
    (folder / "README.md").write_text(dataset_card_text(configs, info))
    return folder


def push_dataset(
    configs: Mapping[str, Any],
    repo_id: str,
    info: CardInfo,
    *,
    private: bool = False,
    local_output: str | None = None,
    extra_files: Mapping[str, str | os.PathLike] | None = None,
) -> str:
    """Upload ``configs`` with their card to the Hub dataset repo ``repo_id``; returns its URL. ``extra_files``
    (``{path in repo: local file}``, e.g. a distilabel ``pipeline.yaml``) go along.

    Call it after the local output is written: a failure raises one :class:`EmpathyRecipesError` that names
    ``local_output`` as kept."""
    with tempfile.TemporaryDirectory(prefix="hub-push-") as tmp:
        folder = save_dataset_layout(configs, Path(tmp) / "repo", info)
        (folder / "README.md").write_text(dataset_card_text(configs, info, repo_id))
        for name, src in (extra_files or {}).items():
            if Path(src).is_file():
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                (folder / name).write_bytes(Path(src).read_bytes())
        return _upload(folder, repo_id, "dataset", private, local_output, f"Upload {info.title}")


# ---- models --------------------------------------------------------------------------------------------------------


def model_card_text(
    info: CardInfo,
    *,
    base_model: str | Sequence[str] | None = None,
    datasets: Sequence[str] = (),
    library_name: str = "transformers",
    pipeline_tag: str = "text-generation",
) -> str:
    """A ``README.md`` for a model folder (ModelCard): YAML front matter, then what it is, inputs, command, licence."""
    from huggingface_hub import ModelCard, ModelCardData

    hub_datasets = [d for d in datasets if not is_local(d) and looks_like_hub_id(d)]
    hub_bases = [b for b in ([base_model] if isinstance(base_model, str) else list(base_model or [])) if b]
    hub_bases = [b for b in hub_bases if not is_local(b) and looks_like_hub_id(b)]
    data = ModelCardData(
        base_model=(hub_bases[0] if len(hub_bases) == 1 else hub_bases) or None,
        datasets=hub_datasets or None,
        license=info.license,
        library_name=library_name,
        pipeline_tag=pipeline_tag,
        tags=["empathy-recipes", "empathetic-dialogues", *info.tags],
    )
    lines = [f"# {info.title}", "", info.description.rstrip(), ""]
    lines += _common_sections(info)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)))


def push_model_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    card: str | None = None,
    ignore_patterns: Sequence[str] = ("checkpoint-*", "checkpoint-*/**"),
) -> str:
    """Upload a model / adapter folder to the Hub model repo ``repo_id``; returns its URL. ``card`` (text) is
    written to ``<folder>/README.md`` first when the folder has no card yet. Failures: one EmpathyRecipesError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EmpathyRecipesError(f"nothing to push: {folder} is not a folder")
    readme = folder / "README.md"
    if card is not None and not readme.exists():
        readme.write_text(card)
    return _upload(folder, repo_id, "model", private, str(folder), "Upload model", list(ignore_patterns))


def extend_model_card(readme: str | os.PathLike, extra: str, *, license: str = ED_LICENSE) -> str:
    """Append ``extra`` (a card whose YAML front matter is merged in: datasets, tags, ...) to the card in
    ``readme`` (e.g. the one TRL's ``create_model_card`` wrote), set the licence, save; returns the new text."""
    from huggingface_hub import ModelCard

    path = Path(readme)
    card = ModelCard(path.read_text()) if path.is_file() else ModelCard("---\n---\n")
    meta = card_yaml(extra)
    body = extra.split("---", 2)[2].lstrip("\n") if meta else extra
    for key, value in meta.items():
        if key == "base_model" and isinstance(value, str) and (is_local(value) or not looks_like_hub_id(value)):
            continue  # a local base model is no Hub reference
        current = getattr(card.data, key, None)
        if isinstance(current, list) and isinstance(value, list):
            setattr(card.data, key, list(dict.fromkeys([*current, *value])))
        elif current in (None, [], ""):
            setattr(card.data, key, value)
    card.data.license = license
    card.text = card.text.rstrip() + "\n\n" + body
    text = str(card)
    path.write_text(text)
    return text


def check_can_push(what: str = "--hub-repo") -> None:
    """Before any work: offline mode or no token cannot push; say so in one line now rather than after training."""
    if _offline():
        raise EmpathyRecipesError(f"{what}: cannot push to the Hub with HF_HUB_OFFLINE=1 (unset it, or drop the push)")
    from huggingface_hub import get_token

    if not get_token():
        raise EmpathyRecipesError(f"{what}: no Hugging Face token (run `hf auth login` or set HF_TOKEN) to push with")


# ---- the upload itself ---------------------------------------------------------------------------------------------


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def _upload(
    folder: Path,
    repo_id: str,
    repo_type: str,
    private: bool,
    local_output: str | None,
    message: str,
    ignore_patterns: list[str] | None = None,
) -> str:
    from huggingface_hub import HfApi

    kept = f"; the local output is kept in {local_output}" if local_output else ""
    try:
        api = HfApi()
        url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type=repo_type,
            commit_message=message,
            ignore_patterns=ignore_patterns,
        )
    except Exception as err:  # noqa: BLE001 - any push failure is one line; the local output stays
        raise EmpathyRecipesError(
            f"push to Hub {repo_type} repo {repo_id!r} failed: {_push_reason(err)}{kept}"
        ) from None
    link = str(getattr(url, "url", url) or f"https://huggingface.co/{repo_id}")
    logger.info("pushed %s to %s", folder, link)
    return link


def _push_reason(err: Exception) -> str:
    name = type(err).__name__
    text = (str(err).strip().splitlines() or [""])[0]
    if name == "OfflineModeIsEnabled" or _offline():
        return "offline (HF_HUB_OFFLINE=1): unset it to push"
    status = getattr(getattr(err, "response", None), "status_code", None)
    if status == 401 or "token" in text.lower() and ("invalid" in text.lower() or "not" in text.lower()):
        return "not logged in or the token cannot write (run `hf auth login` or set HF_TOKEN)"
    if status == 403:
        return "the token has no write access to this repo or organisation"
    if status == 409:
        return "a repo of that name exists with another type or cannot be created"
    return f"{name}: {text}" if text else name


def card_yaml(text: str) -> dict[str, Any]:
    """The YAML front matter of a card as a mapping ({} when it has none)."""
    if not text.startswith("---"):
        return {}
    return yaml.safe_load(text.split("---", 2)[1]) or {}
