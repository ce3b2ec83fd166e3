"""Row-level resume of a distilabel stage after a kill (on top of distilabel's step cache).

Every distilabel stage runs its one LLM step through :func:`run_pipeline`::

    rows = load_ed(args.dataset, ...)                      # the input, in memory, validated before any model loads
    pipeline = build_distilabel_pipeline(args, cache_dir)  # the stage's pure builder: one Task, no generator
    run = run_pipeline(pipeline, rows, cache_dir, args.batch_size)
    save_and_push_distiset(run.distiset, args)             # every row once, in input order


A killed run, rerun with the same arguments (same rows, same step settings), keeps every batch the first run
finished and sends only the other rows through the LLM.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datasets import Dataset
    from distilabel.distiset import Distiset
    from distilabel.pipeline import Pipeline

logger = logging.getLogger(__name__)
DAMAGED_SUFFIX = ".damaged"

#: The input position of each row, added for the run (the resume key: unique even where ids repeat) and dropped after.
ROW_KEY = "_resume_row"
#: The step's resources (flattened as distilabel's signature flattens them), kept out of the signature.
RESOURCE_SIGNATURE_KEYS = {f"resources_{k}" for k in ("replicas", "cpus", "gpus", "memory", "resources")}


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
    the run then covers only the rows not done yet (:func:`run_pipeline`), and
    :meth:`merge` puts old and new rows back in input order. Finished batches are never recomputed.
    """

    def __init__(self, cache_dir: str | os.PathLike, pipeline_name: str, key: str, key_column: str = "id") -> None:
        self.key_column = key_column
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
            rows = read_batch_rows(batch_file)  # None: damaged, set aside with a warning, its rows redone
            out.extend(rows or [])
        return out

    def done_ids(self) -> set[str]:
        return {str(r.get(self.key_column)) for r in self.rows()}

    @staticmethod
    def merge(
        order: Sequence[str], *row_lists: Sequence[dict[str, Any]], key_column: str = "id"
    ) -> list[dict[str, Any]]:
        """Rows from several runs, one entry per (key, generation), in the input order ``order`` (keys)."""
        position = {str(i): n for n, i in enumerate(order)}
        rows = [r for rows in row_lists for r in rows]
        return sorted(rows, key=lambda r: position.get(str(r.get(key_column)), len(position)))


@dataclass
class ResumedRun:
    """What :func:`run_pipeline` returns: the Distiset of every row (input order), how many input rows came from
    the store (finished by an earlier, killed run) and how many went through the LLM now."""

    distiset: Distiset
    resumed_rows: int
    new_rows: int


def run_pipeline(pipeline: Pipeline, dataset: Dataset, cache_dir: str | os.PathLike, batch_size: int) -> ResumedRun:
    """Run ``dataset`` through ``pipeline`` (as a stage's ``build_distilabel_pipeline()`` returns it: one LLM step,
    no generator), resuming what a killed run finished.

    The rows get their input position (:data:`ROW_KEY`) as the resume key; the store key is the rows' fingerprint
    plus the step's signature, so other rows or other step settings never reuse stored batches. Rows already in the
    store are not sent again; the others feed the step from memory in ``batch_size`` batches. The result holds
    every output row once per (input row, generation), in input order, without the key column; its
    ``pipeline_path`` is the last run's ``pipeline.yaml`` (kept in the store for a rerun with nothing left to do).
    """
    from datasets import Dataset, DatasetDict
    from distilabel.constants import STEP_ATTR_NAME
    from distilabel.distiset import Distiset
    from distilabel.steps import make_generator_step

    from empathy_recipes.procs import bind_children_to_parent

    steps = [pipeline.dag.get_step(name)[STEP_ATTR_NAME] for name in pipeline.dag]
    if len(steps) != 1:
        raise ValueError(f"run_pipeline runs a pipeline of one LLM step, not {len(steps)} steps")
    task = steps[0]
    bind_children_to_parent()  # a killed stage takes its distilabel workers with it
    heal_pipeline_cache(cache_dir, pipeline.name)  # a damaged cached batch is redone, not a JSONDecodeError traceback
    keyed = dataset.add_column(ROW_KEY, list(range(len(dataset))))
    order = [str(i) for i in range(len(dataset))]
    # Resume across a change of --replicas / --tensor-parallel-size: where the step runs is not what it computes.
    task.exclude_from_signature = set(task.exclude_from_signature) | RESOURCE_SIGNATURE_KEYS
    key = hashlib.sha1(f"{dataset._fingerprint}-{task.signature}".encode()).hexdigest()[:20]
    store = ResumeStore(cache_dir, pipeline.name, key, key_column=ROW_KEY)
    moved = store.harvest(task)
    stored = store.rows()  # read once: the run below writes to distilabel's cache, not to the store
    done = {str(r.get(ROW_KEY)) for r in stored} & set(order)
    todo = keyed.filter(lambda ks: [str(k) not in done for k in ks], input_columns=ROW_KEY, batched=True)
    if done:
        logger.info(f"resuming: {len(done)} of {len(order)} rows already done ({moved} new cached batches)")

    new_rows: list[dict[str, Any]] = []
    pipeline_yaml = None
    if len(todo):
        # the loader's name carries the rows' fingerprint, so distilabel's own cache never serves other rows
        label = f"{pipeline.name}@{todo._fingerprint[:16]}:{len(todo)}"
        make_generator_step(todo, pipeline=pipeline, batch_size=batch_size, repo_id=label) >> task
        run = pipeline.run(use_cache=True)
        new_rows, pipeline_yaml = run["default"]["train"].to_list(), run.pipeline_path
    stored = [r for r in stored if str(r.get(ROW_KEY)) in done]
    rows = ResumeStore.merge(order, stored, new_rows, key_column=ROW_KEY)
    for row in rows:
        row.pop(ROW_KEY, None)
    distiset = Distiset({"default": DatasetDict({"train": Dataset.from_list(rows)})})
    kept_yaml = store.dir / "pipeline.yaml"
    if pipeline_yaml is not None and Path(pipeline_yaml).exists():
        shutil.copyfile(pipeline_yaml, kept_yaml)
    if kept_yaml.exists():
        distiset.pipeline_path = kept_yaml
    return ResumedRun(distiset=distiset, resumed_rows=len(done), new_rows=len(todo))
