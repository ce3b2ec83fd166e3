"""Training-data mixtures the TRL way: each entry is TRL's ``DatasetConfig`` (``path``, ``name``, ``split``,
``columns``, ``fraction``), read through ``empathy_recipes.data`` so every ED layout and local path works.

A recipe writes, as for ``trl sft`` (``DatasetMixtureConfig.datasets``)::

    dataset_mixture:
      - path: your-org/ed-efficient-empathy-split   # a Hub id or a local path (file, dir, Hub-layout folder)
        name: rationality                          # the config (``load_dataset(path, name)``)
        split: train
        columns: [messages]                        # keep only these source columns (optional)
        fraction: 0.5                              # share of the mixture (all entries or none)

A bare string stands for ``{path: <string>}``. ``fraction`` follows TRL's rule (``trl.scripts.utils.get_dataset``):
the shares are normalised, and the mixture is as large as it can be without repeating a row; each source gives its
first ``round(share * total)`` rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from trl.scripts.utils import DatasetConfig

from empathy_recipes.errors import EmpathyRecipesError

FIELDS = tuple(f.name for f in dataclasses.fields(DatasetConfig))


def to_dataset_config(entry: Any, where: str = "dataset_mixture") -> DatasetConfig:
    """A mixture entry (TRL ``DatasetConfig``, mapping of its fields, or a bare path) as a ``DatasetConfig``."""
    if isinstance(entry, DatasetConfig):
        config = entry
    elif isinstance(entry, str):
        config = DatasetConfig(path=entry)
    elif isinstance(entry, dict):
        unknown = sorted(set(entry) - set(FIELDS))
        if unknown:
            raise EmpathyRecipesError(f"{where}: unknown key(s) {unknown}; an entry takes {', '.join(FIELDS)}")
        if not entry.get("path"):
            raise EmpathyRecipesError(f"{where}: every entry needs a path (a Hub id or a local path): {entry}")
        config = DatasetConfig(**entry)
    else:
        raise EmpathyRecipesError(f"{where}: an entry is a path or a mapping of {', '.join(FIELDS)}, not {entry!r}")
    if config.data_dir is not None or config.data_files is not None:
        raise EmpathyRecipesError(
            f"{where}: data_dir/data_files are not supported here: give the file or folder as path"
        )
    if config.columns is not None and (isinstance(config.columns, str) or not config.columns):
        raise EmpathyRecipesError(f"{where}: columns must be a non-empty list of column names, not {config.columns!r}")
    if config.fraction is not None and not config.fraction >= 0:
        raise EmpathyRecipesError(f"{where}: fraction must be >= 0, not {config.fraction!r}")
    return config


def parse_mixture(entries: Sequence[Any] | None, where: str = "dataset_mixture") -> list[DatasetConfig]:
    """Every entry as a ``DatasetConfig``; ``fraction`` set on all entries or none (TRL's rule), not all zero."""
    configs = [to_dataset_config(e, f"{where}[{i}]") for i, e in enumerate(entries or [])]
    fractions = [c.fraction for c in configs]
    if any(f is not None for f in fractions):
        if any(f is None for f in fractions):
            raise EmpathyRecipesError(f"{where}: fraction must be set on every entry or on none")
        if sum(fractions) <= 0:
            raise EmpathyRecipesError(f"{where}: the fractions sum to 0")
    return configs


def mixture_sizes(lengths: Sequence[int], fractions: Sequence[float | None]) -> list[int]:
    """Rows to take from each source: all of them without fractions, else TRL's rule (no source oversampled)."""
    if all(f is None for f in fractions):
        return list(lengths)
    weights = [f / sum(fractions) for f in fractions]
    total = min(n / w for n, w in zip(lengths, weights) if w > 0)
    return [min(n, round(w * total)) for n, w in zip(lengths, weights)]


def describe(config: DatasetConfig) -> str:
    """``path[:name][@split]`` for logs and cards."""
    text = config.path + (f":{config.name}" if config.name else "")
    return text + (f"@{config.split}" if config.split else "")
