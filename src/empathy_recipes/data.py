"""The data layer: any EmpatheticDialogues source in, one common chat schema out.

Common schema, one row per listener turn::

    id: str            stable example id
    emotion: str       one of ED's 32 emotions ("" when unknown)
    messages: list     [{"role": "user"|"assistant", "content": str}, ...] alternating, the listener reply last
    ...                every other input column is kept (e.g. ``judge_output``, ``situation``)

Sources: a Hub dataset id, a local dataset directory (``save_to_disk`` or a folder of data files), or a local
JSON / JSONL / CSV / parquet file; all through :func:`load_ed`. Formats: the raw per-utterance release
(``conv_id, utterance_idx, context, prompt, speaker_idx, utterance``), the preprocessed context/response form
(context as a list of turns or one ``</s>``-joined string; reply in ``response`` or ``reference``), whole
dialogues in ``conversations`` (the LLM-ready parquet copy ``Estwld/empathetic_dialogues_llm``, :data:`ED_HUB_ID`),
or data already in the common schema. A Hub dataset's config: ``load_ed(repo, config=...)``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, DatasetDict

from empathy_recipes.checks import looks_like_hub_id
from empathy_recipes.errors import EmpathyRecipesError

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
RAW_COLUMNS = ("conv_id", "utterance_idx", "utterance")
REPLY_COLUMNS = ("response", "reference")
TURN_SEPARATOR = "</s>"
CONVERSATIONS_COLUMN = "conversations"
# A public parquet copy of ED on the Hub (dialogue per row; read from its dataset card, not downloaded here):
# splits train / valid / test; columns conv_id, situation, emotion, conversations [{role, content}].
ED_HUB_ID = "Estwld/empathetic_dialogues_llm"


def unescape_ed(text: str) -> str:
    """Undo the raw release's escaping (``_comma_`` stands for a comma) and trim whitespace."""
    return text.replace("_comma_", ",").strip()


def split_turns(context: str | list[str]) -> list[str]:
    """A context as a list of turns: lists are kept, ``</s>``-joined strings are split."""
    if isinstance(context, str):
        turns = context.split(TURN_SEPARATOR)
    else:
        turns = list(context)
    return [t.strip() for t in turns if t and t.strip()]


def turns_to_messages(turns: list[str], reply: str | None) -> list[dict[str, str]]:
    """Chat messages for context ``turns`` plus the listener ``reply``: roles alternate, the reply is the assistant's.

    Roles are given from the end, so the last context turn is always the user's (the speaker's) whatever the count.
    """
    n = len(turns)
    messages = [{"role": "user" if (n - i) % 2 == 1 else "assistant", "content": t} for i, t in enumerate(turns)]
    if reply is not None:
        messages.append({"role": "assistant", "content": reply.strip()})
    return messages


def detect_format(column_names: list[str]) -> str:
    """``"chat"``, ``"raw"``, ``"conversations"`` or ``"context_response"``; raises a one-line error naming what is
    missing."""
    cols = set(column_names)
    if "messages" in cols:
        return "chat"
    if all(c in cols for c in RAW_COLUMNS):
        return "raw"
    if CONVERSATIONS_COLUMN in cols:
        return "conversations"
    if "context" in cols and any(c in cols for c in REPLY_COLUMNS):
        return "context_response"
    raise EmpathyRecipesError(
        f"unrecognised ED format: columns {sorted(cols)}; expected 'messages', or 'context' + 'response'/'reference', "
        f"or the raw release's {', '.join(RAW_COLUMNS)}, or whole dialogues in '{CONVERSATIONS_COLUMN}'"
    )


def _context_response_batch(batch: dict[str, list[Any]], reply_col: str) -> dict[str, list[Any]]:
    messages = [
        turns_to_messages(split_turns(ctx), str(reply)) for ctx, reply in zip(batch["context"], batch[reply_col])
    ]
    return {"messages": messages}


def _from_context_response(ds: Dataset) -> Dataset:
    reply_col = next(c for c in REPLY_COLUMNS if c in ds.column_names)
    bad = [i for i, (c, r) in enumerate(zip(ds["context"], ds[reply_col])) if not split_turns(c or []) or r is None]
    if bad:
        raise EmpathyRecipesError(f"{len(bad)} row(s) have an empty context or no reply (first at row {bad[0]})")
    ds = ds.map(
        _context_response_batch,
        fn_kwargs={"reply_col": reply_col},
        batched=True,
        remove_columns=["context", reply_col],
        desc="ED -> chat",
    )
    return ds


def _from_raw(ds: Dataset) -> Dataset:
    """Group the per-utterance release by conversation: each listener (even-indexed) turn becomes one example."""
    df = ds.to_pandas()
    df["utterance_idx"] = df["utterance_idx"].astype(int)
    df = df.sort_values(["conv_id", "utterance_idx"], kind="stable")
    rows: dict[str, list[Any]] = {"id": [], "emotion": [], "situation": [], "messages": []}
    for conv_id, conv in df.groupby("conv_id", sort=False):
        utterances = [unescape_ed(str(u)) for u in conv["utterance"]]
        indices = conv["utterance_idx"].tolist()
        emotion = str(conv["context"].iloc[0]) if "context" in conv else ""
        situation = unescape_ed(str(conv["prompt"].iloc[0])) if "prompt" in conv else ""
        for pos, idx in enumerate(indices):
            if idx % 2 == 0 and pos > 0:
                rows["id"].append(f"{conv_id}_{idx}")
                rows["emotion"].append(emotion)
                rows["situation"].append(situation)
                rows["messages"].append(turns_to_messages(utterances[:pos], utterances[pos]))
    if not rows["id"]:
        raise EmpathyRecipesError("the raw ED data has no listener turn (no conversation with two utterances)")
    return Dataset.from_dict(rows)


def _conversations_batch(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Whole dialogues (``conversations``: [{role, content}, ...], the speaker as ``user``) -> one row per
    listener (``assistant``) turn after the first message, with the dialogue so far; other columns repeated."""
    keep = [c for c in batch if c != CONVERSATIONS_COLUMN]
    out: dict[str, list[Any]] = {c: [] for c in keep if c != "id"}
    out.update(id=[], messages=[])
    ids = batch.get("conv_id") or batch.get("id") or [None] * len(batch[CONVERSATIONS_COLUMN])
    for row, (conv_id, turns) in enumerate(zip(ids, batch[CONVERSATIONS_COLUMN])):
        messages = [{"role": str(t["role"]), "content": unescape_ed(str(t["content"]))} for t in turns or []]
        for i, message in enumerate(messages):
            if i == 0 or message["role"] != "assistant":
                continue
            out["id"].append(f"{conv_id}_{i + 1}" if conv_id is not None else f"{row}_{i + 1}")
            out["messages"].append(messages[: i + 1])
            for c in keep:
                if c != "id":
                    value = batch[c][row]
                    out[c].append(unescape_ed(value) if c == "situation" and isinstance(value, str) else value)
    return out


def _from_conversations(ds: Dataset) -> Dataset:
    """The dialogue-per-row layout of ED's LLM-ready parquet copies (e.g. ``Estwld/empathetic_dialogues_llm``:
    ``conv_id, situation, emotion, conversations``): each listener turn becomes one example, as for the raw
    release (``<conv_id>_<turn number>``)."""
    drop = [CONVERSATIONS_COLUMN] + (["id"] if "id" in ds.column_names else [])
    # not from the cache: datasets hashes a module function by reference, so a changed converter would be skipped
    out = ds.map(
        _conversations_batch,
        batched=True,
        remove_columns=drop,
        load_from_cache_file=False,
        desc="ED dialogues -> chat",
    )
    if len(out) == 0:
        raise EmpathyRecipesError("the ED dialogues hold no listener turn (no assistant message after the first)")
    return out


def to_chat_schema(ds: Dataset) -> Dataset:
    """Any supported ED layout to the common schema (``id``, ``emotion``, ``messages`` + kept extra columns)."""
    if len(ds) == 0:
        raise EmpathyRecipesError("the dataset is empty")
    fmt = detect_format(ds.column_names)
    if fmt == "raw":
        return _from_raw(ds)
    if fmt == "conversations":
        ds = _from_conversations(ds)
    if fmt == "context_response":
        ds = _from_context_response(ds)
    if "id" not in ds.column_names:
        ds = ds.add_column("id", [str(i) for i in range(len(ds))])
    elif not (isinstance(ds.features["id"], datasets.Value) and ds.features["id"].dtype == "string"):
        ds = _ids_as_strings(ds)
    if "emotion" not in ds.column_names:
        ds = ds.add_column("emotion", [""] * len(ds))
    first = ["id", "emotion", "messages"]
    return ds.select_columns(first + [c for c in ds.column_names if c not in first])


def _ids_as_strings(ds: Dataset) -> Dataset:
    """The ``id`` column as strings: integers and strings (even mixed) are normalised; any other value (a float, a
    boolean, a missing id, a list) is refused, naming its row."""
    for row, value in enumerate(ds["id"]):
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise EmpathyRecipesError(f"row {row}: id {value!r} is neither a string nor an integer")
    features = datasets.Features({**ds.features, "id": datasets.Value("string")})
    return ds.map(
        lambda ids: {"id": [str(i) for i in ids]}, input_columns="id", batched=True, features=features, desc="ids"
    )


def _pick_split(dd: DatasetDict, split: str | None, source: str) -> Dataset:
    if split is None:
        if len(dd) == 1:
            return next(iter(dd.values()))
        if "train" in dd:
            return dd["train"]
        raise EmpathyRecipesError(f"{source} has splits {sorted(dd)}: say which one with a split")
    if split not in dd:
        raise EmpathyRecipesError(f"{source} has no split {split!r}; it has {sorted(dd)}")
    return dd[split]


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _first_bad_json_line(path: Path) -> str | None:
    """``"line N: <why>"`` for the first line of a JSON Lines file that is not one JSON object, else ``None``."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                return f"line {number}: {type(err).__name__}: {err}"
            if not isinstance(row, dict):
                return f"line {number}: a JSON {type(row).__name__}, not an object"
    return None


def _check_csv_has_rows(path: Path) -> None:
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        rows = csv.reader(handle)
        if next(rows, None) is not None and next((r for r in rows if any(c.strip() for c in r)), None) is None:
            raise EmpathyRecipesError(f"{path} has a header but no data rows")


def _load_local(path: Path, split: str | None, config: str | None = None) -> Dataset | DatasetDict:
    if path.is_file() and path.suffix.lower() == ".csv" and path.stat().st_size:
        _check_csv_has_rows(path)
    try:
        return _load_local_unchecked(path, config)
    except EmpathyRecipesError:
        raise
    except Exception as err:  # noqa: BLE001 - a corrupt file is the user's to fix: say so in one line
        bad = _first_bad_json_line(path) if path.is_file() and path.suffix.lower() == ".jsonl" else None
        if bad:
            raise EmpathyRecipesError(f"cannot read {path}, {bad}") from None
        raise EmpathyRecipesError(f"cannot read {path}: {_first_line(err)}") from None


def _load_local_unchecked(path: Path, config: str | None = None) -> Dataset | DatasetDict:
    if config is not None and not (path.is_dir() and (path / "README.md").is_file()):
        raise EmpathyRecipesError(f"{path} has no configs (config {config!r} given): only a Hub-layout folder has")
    if path.is_file():
        if path.stat().st_size == 0:
            raise EmpathyRecipesError(f"{path} is empty")
        builder = FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise EmpathyRecipesError(
                f"unknown data file format {path.suffix or '(no suffix)'!r} for {path}; use one of {sorted(FILE_BUILDERS)}"
            )
        try:
            return datasets.load_dataset(builder, data_files=str(path), split="train")
        except Exception:  # noqa: BLE001 - retried once below when lone surrogates are the cause
            clean = _without_lone_surrogates(path) if builder == "json" else None
            if clean is None:
                raise
            try:
                return datasets.load_dataset(builder, data_files=str(clean), split="train")
            finally:
                shutil.rmtree(clean.parent, ignore_errors=True)
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        return datasets.load_from_disk(str(path))
    files = [p for p in sorted(path.rglob("*")) if p.suffix.lower() in FILE_BUILDERS]
    if not files:
        raise EmpathyRecipesError(f"{path} holds no dataset: no save_to_disk files and no JSON/CSV/parquet file")
    # a folder of data files, e.g. a local copy of a Hub dataset repo (README.md `configs:` block, one per set)
    return datasets.load_dataset(str(path), name=config)


_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _without_lone_surrogates(path: Path) -> Path | None:
    """A copy of the JSON Lines file ``path`` in which lone surrogates (valid JSON escapes that UTF-8 cannot hold,
    so Arrow refuses the whole file) became U+FFFD, or None when the file has none (or is not JSON Lines).
    The rows stay; whatever reads the damaged text sees U+FFFD (the judge parser reports such rows)."""
    import logging
    import tempfile

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return _LONE_SURROGATE.sub("\ufffd", value)
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {clean(k): clean(v) for k, v in value.items()}
        return value

    rows, damaged = [], []
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                return None
            if _LONE_SURROGATE.search(json.dumps(row, ensure_ascii=False)):
                damaged.append(number)
                row = clean(row)
            rows.append(row)
    if not damaged:
        return None
    logging.getLogger(__name__).warning(
        "%s: %d line(s) hold lone surrogates (first: line %d), replaced by U+FFFD", path, len(damaged), damaged[0]
    )
    out = Path(tempfile.mkdtemp(prefix="empathy-recipes-")) / path.name
    out.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return out


def _load_hub(repo_id: str, split: str | None, config: str | None = None) -> Dataset | DatasetDict:
    if not looks_like_hub_id(repo_id, namespace=False):
        raise EmpathyRecipesError(f"{repo_id!r} is neither an existing local path nor a valid Hub dataset id")
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"} or os.environ.get(
        "HF_DATASETS_OFFLINE", "0"
    ).lower() in {"1", "true", "yes"}
    if not offline:
        from huggingface_hub import HfApi

        try:
            HfApi().dataset_info(repo_id, timeout=10)
        except Exception as err:  # noqa: BLE001 - any failure here means "cannot use this id"
            raise EmpathyRecipesError(
                f"cannot reach Hub dataset {repo_id!r} ({type(err).__name__}); check the id, your network and login"
            ) from None
    try:
        return datasets.load_dataset(repo_id, name=config, split=split)
    except Exception as err:  # noqa: BLE001
        reason = "offline (HF_HUB_OFFLINE=1) and not in the local cache" if offline else type(err).__name__
        raise EmpathyRecipesError(f"cannot load Hub dataset {repo_id!r}: {reason}") from None


def load_dataset_any(source: str | os.PathLike, split: str | None = None, config: str | None = None) -> Dataset:
    """Load a dataset as-is from a Hub id, a local dataset directory or a JSON/JSONL/CSV/parquet file; ``config``
    names one configuration of a Hub dataset or of a local folder in the Hub's layout."""
    source = str(source)
    path = Path(source).expanduser()
    if path.exists():
        loaded = _load_local(path, split, config)
    else:
        looks_local = source.startswith((".", "/", "~")) or Path(source).suffix.lower() in FILE_BUILDERS
        if looks_local:
            raise EmpathyRecipesError(f"no such file or directory: {source}")
        loaded = _load_hub(source, split, config)
    if isinstance(loaded, DatasetDict):
        loaded = _pick_split(loaded, split, source)
    return loaded


def split_config_ref(ref: str) -> tuple[str, str | None]:
    """``"source:config"`` -> ``(source, config)`` for a Hub dataset (or a Hub-layout folder) named with one of its
    configs, e.g. ``org/ed-efficient-empathy-split:sensibility``; anything else -> ``(ref, None)``."""
    source, sep, config = str(ref).rpartition(":")
    if not sep or Path(ref).exists() or not re.fullmatch(r"[\w.-]+", config) or not source:
        return str(ref), None
    return source, config


def load_ed(
    source: str | os.PathLike, split: str | None = None, limit: int | None = None, config: str | None = None
) -> Dataset:
    """Load ED (or any dataset of its shape) from ``source`` into the common chat schema.

    Args:
        source: Hub dataset id, local dataset directory, or local JSON/JSONL/CSV/parquet file.
        split: which split, when the source has several (default: the only one, else ``train``).
        limit: keep only the first ``limit`` examples (after conversion).
        config: a configuration of a Hub dataset (or of a local folder in the Hub's layout), e.g. ``sensibility``.
    """
    ds = to_chat_schema(load_dataset_any(source, split, config))
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return ds


def save_dataset(ds: Dataset | DatasetDict, output: str | os.PathLike) -> Path:
    """Save to ``output``: a ``.jsonl``/``.json``/``.csv``/``.parquet`` file by suffix, else a ``save_to_disk`` dir."""
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    if isinstance(ds, DatasetDict) and suffix in FILE_BUILDERS:
        raise EmpathyRecipesError(f"{out}: a dataset with several splits is saved to a directory, not a {suffix} file")
    if suffix in (".json", ".jsonl"):
        ds.to_json(str(out), lines=True, force_ascii=False)
    elif suffix == ".csv":
        ds.to_csv(str(out))
    elif suffix == ".parquet":
        ds.to_parquet(str(out))
    else:
        ds.save_to_disk(str(out))
    return out
