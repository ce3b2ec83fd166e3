"""A stage's distilabel pipeline and its input/output: the pipeline (local or Ray), the ED loader step, the cache
directory, and saving/pushing the resulting Distiset."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distilabel.steps import GeneratorStep
from pydantic import PrivateAttr

from empathy_recipes import outputs
from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.procs import bind_children_to_parent
from empathy_recipes.redact import redact_text
from empathy_recipes.resume import heal_pipeline_cache

if TYPE_CHECKING:
    from distilabel.distiset import Distiset
    from distilabel.pipeline import Pipeline


def make_pipeline(name: str, args: argparse.Namespace, cache_dir: str | os.PathLike | None = None) -> Pipeline:
    """A distilabel ``Pipeline`` (or ``RayPipeline`` with ``--ray``) caching under ``cache_dir`` so a rerun
    with the same arguments resumes. Use it as a context manager."""
    from distilabel.pipeline import Pipeline, RayPipeline

    bind_children_to_parent()  # a killed stage takes its distilabel workers with it
    heal_pipeline_cache(cache_dir, name)  # a damaged cached batch is redone, not a JSONDecodeError traceback
    kwargs: dict[str, Any] = {"name": name, "cache_dir": str(cache_dir) if cache_dir else None}
    if getattr(args, "ray", False):
        # distilabel checks each requirement with importlib.util.find_spec(name): the import name, not the
        # distribution's ("empathy-recipes" is never found, and every --ray run stopped there)
        return RayPipeline(**kwargs, requirements=["empathy_recipes"])
    return Pipeline(**kwargs)


def default_cache_dir(args: argparse.Namespace) -> Path:
    """``--cache-dir``, else distilabel's own cache directory (``$DISTILABEL_CACHE_DIR`` or ``~/.cache/distilabel``)."""
    from distilabel import constants, envs

    return Path(args.cache_dir or envs.DISTILABEL_CACHE_DIR or constants.PIPELINES_CACHE_DIR)


class LoadEDDataset(GeneratorStep):
    """A distilabel root step that reads an ED dataset through :func:`empathy_recipes.data.load_ed` itself.

    Unlike a step built from an in-memory ``Dataset``, it is fully described by its fields (``source``,
    ``split``, ``limit``, ``rename_columns``), so a run rebuilt from distilabel's cached ``pipeline.yaml`` (a rerun
    that resumes, a Ray worker) reloads the same rows. ``fingerprint`` (the rows' hash, set by
    :func:`ed_loader_step`) makes distilabel's cache treat other input data as a different step. On Ray, a local
    ``source`` must be readable from the worker nodes (or use a Hub id).
    """

    source: str
    split: str | None = None
    limit: int | None = None
    rename_columns: dict[str, str] = {}
    skip_ids_file: str | None = None
    columns: list[str] = []
    fingerprint: str = ""

    _dataset: Any = PrivateAttr(default=None)

    def load(self) -> None:
        super().load()
        from empathy_recipes.data import load_ed

        dataset = load_ed(self.source, split=self.split, limit=self.limit)
        if self.rename_columns:
            dataset = dataset.rename_columns(self.rename_columns)
        if self.skip_ids_file:
            skip = set(json.loads(Path(self.skip_ids_file).read_text()))
            dataset = dataset.filter(lambda ids: [str(i) not in skip for i in ids], input_columns="id", batched=True)
        self._dataset = dataset

    @property
    def outputs(self) -> list[str]:
        return list(self.columns)

    def process(self, offset: int = 0):  # type: ignore[override]
        total = len(self._dataset)
        for start in range(offset - offset % self.batch_size, total, self.batch_size):
            batch = self._dataset[start : start + self.batch_size]
            n = len(next(iter(batch.values())))
            yield [{c: batch[c][i] for c in batch} for i in range(n)], start + n >= total


def ed_loader_step(
    source: str,
    batch_size: int,
    split: str | None = None,
    limit: int | None = None,
    rename_columns: Mapping[str, str] | None = None,
    skip_ids_file: str | os.PathLike | None = None,
):
    """``(step, dataset)``: the dataset is loaded once here (so bad input fails before any model loads, and its
    columns and fingerprint are known), and :class:`LoadEDDataset` reloads it in the pipeline's process."""
    from empathy_recipes.data import load_ed

    dataset = load_ed(source, split=split, limit=limit)
    if len(dataset) == 0:
        raise EmpathyRecipesError(f"{source} holds no rows")
    rename = {k: v for k, v in (rename_columns or {}).items() if k in dataset.column_names}
    if rename:
        dataset = dataset.rename_columns(rename)
    fingerprint = getattr(dataset, "_fingerprint", None) or hashlib.sha1(str(source).encode()).hexdigest()
    if skip_ids_file:
        fingerprint += "-skip-" + hashlib.sha1(Path(skip_ids_file).read_bytes()).hexdigest()[:16]
    step = LoadEDDataset(
        source=str(source),
        split=split,
        limit=limit,
        rename_columns=rename,
        skip_ids_file=str(skip_ids_file) if skip_ids_file else None,
        columns=list(dataset.column_names),
        fingerprint=fingerprint,
        batch_size=batch_size,
    )
    return step, dataset


_INPUT_ARGS = ("dataset", "predictions", "predictions_a", "predictions_b", "model")


def distiset_name(distiset: Distiset) -> str:
    """The pipeline name behind ``distiset`` (from its ``pipeline.yaml``), or ``"pipeline"``."""
    path = getattr(distiset, "pipeline_path", None)
    try:
        import yaml

        return str(yaml.safe_load(Path(path).read_text())["pipeline"]["name"]) if path else "pipeline"
    except Exception:  # noqa: BLE001 - a name for the manifest only
        return "pipeline"


def save_and_push_distiset(
    distiset: Distiset, args: argparse.Namespace, counts: Mapping[str, Any] | None = None, card: Any = None
) -> dict[str, Path]:
    """Save ``distiset`` under ``--output-dir`` and push it to ``--hub-repo`` when given.

    Layout: ``<output-dir>/distiset/`` reloads with ``Distiset.load_from_disk`` (with ``pipeline.yaml`` and the
    card); ``<output-dir>/<config>.jsonl`` (``default.jsonl`` for a one-leaf pipeline) is a plain JSON Lines file
    of the same rows, readable by anything (and by ``empathy_recipes.data.load_ed``). Every file is written
    atomically (``distiset/`` swapped in whole), tokens and keys are redacted from ``pipeline.yaml`` /
    ``pipeline.log``, and ``manifest.yaml`` records the inputs, arguments and row counts. The Hub push (after the
    local save) goes through ``empathy_recipes.hub.push_dataset``: one config per leaf step, split ``train``, the
    card (``card``, a ``hub.CardInfo``, or a default naming the script, its inputs and command), the redacted
    ``pipeline.yaml`` and the script. Returns ``{name: path}`` of what was written.
    """
    written: dict[str, Path] = {}
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        with outputs.atomic_dir(out / "distiset") as tmp:
            distiset.save_to_disk(tmp, save_card=True, save_pipeline_config=True, save_pipeline_log=True)
            for text_file in ("pipeline.yaml", "pipeline.log", "README.md"):  # no token or key ever lands in a file
                if (tmp / text_file).is_file():
                    text = (tmp / text_file).read_text(encoding="utf-8", errors="replace")
                    (tmp / text_file).write_text(redact_text(text), encoding="utf-8")
        written["distiset"] = out / "distiset"
        rows: dict[str, int] = {}
        for config, dsdict in distiset.items():
            split = dsdict["train"] if "train" in dsdict else next(iter(dsdict.values()))
            path = out / f"{config}.jsonl"
            outputs.save_dataset(split, path)
            written[config] = path
            rows[config] = len(split)
        inputs = {k: getattr(args, k) for k in _INPUT_ARGS if getattr(args, k, None)}
        outputs.write_manifest(
            out, f"distilabel:{distiset_name(distiset)}", inputs, args, {"rows": rows, **(counts or {})}, written,
            path=out / outputs.MANIFEST_NAME,
        )  # fmt: skip
    if args.hub_repo:
        push_distiset(distiset, args, card)
    return written


def push_distiset(distiset: Distiset, args: argparse.Namespace, card: Any = None) -> str:
    """Push a Distiset's configs (split ``train`` each) with a card, its ``pipeline.yaml`` and the script."""
    import sys

    from empathy_recipes.hub import CardInfo, input_ref, push_dataset, redacted_command

    script = Path(sys.argv[0]) if sys.argv and sys.argv[0].endswith(".py") else None
    if card is None:
        name = script.stem if script else "distilabel pipeline"
        sources = [getattr(args, k, None) for k in ("dataset", "predictions", "predictions_a", "predictions_b")]
        model = getattr(args, "model", None)
        card = CardInfo(
            title=f"{name.replace('_', ' ')}: distilabel output",
            description=(
                f"Rows written by the empathy-recipes distilabel pipeline `{name}` with the LLM "
                f"`{model}` (backend `{getattr(args, 'backend', None)}`): one config per "
                "leaf step of the pipeline, split `train`; `pipeline.yaml` reruns it."
            ),
            command=redacted_command(),
            inputs=[input_ref(s) for s in sources if s] + ([input_ref(model, "model")] if model else []),
            tags=["distilabel", "synthetic"],
        )
    configs = {config: dsdict for config, dsdict in distiset.items()}
    with tempfile.TemporaryDirectory(prefix="distiset-push-") as tmp:
        extra: dict[str, Path] = {}
        pipeline_yaml = getattr(distiset, "pipeline_path", None)
        if pipeline_yaml and Path(pipeline_yaml).is_file():  # redacted, as the local copy
            extra["pipeline.yaml"] = Path(tmp) / "pipeline.yaml"
            extra["pipeline.yaml"].write_text(redact_text(Path(pipeline_yaml).read_text(errors="replace")))
        if script is not None and script.is_file():
            extra[script.name] = script
        return push_dataset(
            configs, args.hub_repo, card, private=bool(args.private), local_output=args.output_dir, extra_files=extra
        )
