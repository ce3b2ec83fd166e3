"""Row-level resume of a distilabel stage after a kill (on top of distilabel's step cache)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from empathy_recipes.outputs import write_text

logger = logging.getLogger(__name__)
DAMAGED_SUFFIX = ".damaged"


def read_batch_rows(path: Path) -> list[dict[str, Any]] | None:
    """The rows of one cached distilabel batch file, or ``None`` when it is damaged (a kill mid-write leaves
    truncated JSON): then it is renamed ``<name>.damaged`` with a warning, so its rows are simply done again."""
    try:
        data = json.loads(path.read_text(encoding="utf-8")).get("data") or [[]]
        rows = list(data[0])
        if not all(isinstance(r, dict) for r in rows):
            raise ValueError("rows are not objects")
        return rows
    except (OSError, UnicodeDecodeError, ValueError, AttributeError, TypeError, IndexError, KeyError) as err:
        logger.warning(
            "skipping damaged cache batch %s (%s: %s); its rows will be redone", path, type(err).__name__, err
        )
        with_suffix = path.with_name(path.name + DAMAGED_SUFFIX)
        try:
            os.replace(path, with_suffix)
        except OSError:
            pass
        return None


def _json_is_readable(path: Path) -> bool:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return True


def _parquet_is_readable(path: Path) -> bool:
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(path)
    except Exception:  # noqa: BLE001 - any failure to read the footer means a damaged file
        return False
    return True


def heal_pipeline_cache(cache_dir: str | os.PathLike | None, pipeline_name: str) -> int:
    """Drop, with a warning, every cached execution of ``pipeline_name`` that holds a damaged file (truncated JSON
    batch or state, unreadable parquet), so that distilabel redoes it instead of failing on it with a traceback.
    Returns the number of executions dropped."""
    if cache_dir is None:
        from distilabel import constants, envs

        cache_dir = envs.DISTILABEL_CACHE_DIR or constants.PIPELINES_CACHE_DIR
    root = Path(cache_dir) / pipeline_name
    dropped = 0
    for execution in sorted(root.glob("*/executions/*")):
        if not execution.is_dir():
            continue
        bad = next(
            (
                f
                for f in sorted(execution.rglob("*"))
                if (f.suffix == ".json" and not _json_is_readable(f))
                or (f.suffix == ".parquet" and not _parquet_is_readable(f))
            ),
            None,
        )
        if bad is not None:
            logger.warning(
                "damaged cache file %s: dropping that cached run of %s, it will be redone", bad, pipeline_name
            )
            shutil.rmtree(execution, ignore_errors=True)
            dropped += 1
    return dropped


class ResumeStore:
    """Row-level resume on top of distilabel's step cache, robust to a killed run.

    distilabel 1.5.3 writes every finished output batch of a step to ``<cache>/<pipeline>/steps_data/<step>_<sig>/
    batch_N.json``, but resuming through its batch manager can hang after a kill (upstream issue
    argilla-io/distilabel#1065: the manager's snapshot and the batch files disagree). So, before a run,
    :meth:`harvest` moves those finished batches into this store (``<cache>/<pipeline>-resume/<key>/``, ``key``
    = input fingerprint + step signature, i.e. the same arguments) and clears the pipeline's distilabel state;
    the run then covers only the rows not done yet (``skip_ids_file`` of :func:`ed_loader_step`), and
    :meth:`merge` puts old and new rows back in input order. Finished batches are never recomputed.
    """

    def __init__(self, cache_dir: str | os.PathLike, pipeline_name: str, key: str) -> None:
        self.pipeline_dir = Path(cache_dir) / pipeline_name
        self.dir = Path(cache_dir) / f"{pipeline_name}-resume" / key
        self.dir.mkdir(parents=True, exist_ok=True)

    def harvest(self, step: Any) -> int:
        """Move the finished batches of ``step`` (a distilabel step: only those of its current signature) into the
        store, then drop the pipeline's distilabel cache (its possibly inconsistent batch manager).
        Returns the number of batches moved."""
        moved = 0
        steps_data = self.pipeline_dir / "steps_data" / f"{step.name}_{step.signature}"
        for batch_file in sorted(steps_data.glob("batch_*.json")):
            target = self.dir / f"{batch_file.parent.name}-{time.time_ns()}-{batch_file.name}"
            os.replace(batch_file, target)
            moved += 1
        if self.pipeline_dir.exists():
            shutil.rmtree(self.pipeline_dir, ignore_errors=True)
        return moved

    def rows(self) -> list[dict[str, Any]]:
        """Every output row stored so far."""
        out: list[dict[str, Any]] = []
        for batch_file in sorted(self.dir.glob("*.json")):
            if batch_file.name == "skip_ids.json":
                continue
            rows = read_batch_rows(batch_file)  # None: damaged, set aside with a warning, its rows redone
            out.extend(rows or [])
        return out

    def done_ids(self) -> set[str]:
        return {str(r.get("id")) for r in self.rows()}

    def write_skip_ids(self) -> Path | None:
        """The ids already done, as the loader's ``skip_ids_file`` (``None`` when nothing is done)."""
        ids = sorted(self.done_ids())
        if not ids:
            return None
        path = self.dir / "skip_ids.json"
        write_text(path, json.dumps(ids))
        return path

    @staticmethod
    def merge(order: Sequence[str], *row_lists: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows from several runs, one entry per (id, generation), in the input order ``order`` (ids)."""
        position = {str(i): n for n, i in enumerate(order)}
        rows = [r for rows in row_lists for r in rows]
        return sorted(rows, key=lambda r: position.get(str(r.get("id")), len(position)))
