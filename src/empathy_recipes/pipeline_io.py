"""A stage's distilabel pipeline and its input/output: the pipeline (local or Ray), the input rows, the cache
directory, and saving/pushing the resulting Distiset."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from empathy_recipes import outputs
from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.redact import redact_text

if TYPE_CHECKING:
    from datasets import Dataset
    from distilabel.distiset import Distiset
    from distilabel.pipeline import Pipeline


def make_pipeline(name: str, args: argparse.Namespace, cache_dir: str | os.PathLike | None = None) -> Pipeline:
    """A distilabel ``Pipeline`` (or ``RayPipeline`` with ``--ray``) caching under ``cache_dir`` so a rerun
    with the same arguments resumes. Use it as a context manager; it only builds (``resume.run_pipeline`` runs)."""
    from distilabel.pipeline import Pipeline, RayPipeline

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


def load_rows(
    source: str,
    split: str | None = None,
    limit: int | None = None,
    rename_columns: Mapping[str, str] | None = None,
) -> Dataset:
    """The input rows of a stage, through :func:`empathy_recipes.data.load_ed` (so bad input fails before any model
    loads), with ``rename_columns`` applied where the column exists. They feed the pipeline from memory
    (:func:`empathy_recipes.resume.run_pipeline`)."""
    from empathy_recipes.data import load_ed

    dataset = load_ed(source, split=split, limit=limit)
    if len(dataset) == 0:
        raise EmpathyRecipesError(f"{source} holds no rows")
    rename = {k: v for k, v in (rename_columns or {}).items() if k in dataset.column_names}
    return dataset.rename_columns(rename) if rename else dataset


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
