"""Sentence embeddings (sentence-transformers) and the paired cosine similarity x100 used to score replies.

The default embedder is the packaged all-MiniLM-L6-v2 (384-d); any sentence-transformers model, by Hub id or local
folder, works the same way. A model's named prompt (``prompt_name``, e.g. ``"query"`` for gte-Qwen2-7B-instruct, as
Synth-Empathy encodes) is applied when asked for and must exist in the model's ``prompts``; a model's own code runs
only with ``trust_remote_code=True`` (off by default; a warning is logged when on).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.models import default_embedder_path, resolve_model_ref

logger = logging.getLogger(__name__)


def load_embedder(
    model_ref: str | os.PathLike | None = None,
    device: str | None = None,
    trust_remote_code: bool = False,
    prompt_name: str | None = None,
):
    """A ``SentenceTransformer`` for ``model_ref`` (default: the packaged all-MiniLM-L6-v2).

    ``trust_remote_code`` runs the model repository's own code (gte-Qwen2 needs it); ``prompt_name``, when given, is
    checked against the model's prompts here, so a wrong name fails before any encoding.
    """
    from sentence_transformers import SentenceTransformer

    ref = resolve_model_ref(model_ref if model_ref is not None else default_embedder_path())
    if trust_remote_code:
        logger.warning("trust_remote_code is on: the code shipped with embedder %s will run on this machine", ref)
    embedder = SentenceTransformer(ref, device=device, trust_remote_code=trust_remote_code)
    check_prompt_name(embedder, prompt_name, str(ref))
    return embedder


def check_prompt_name(embedder, prompt_name: str | None, name: str = "the embedder") -> None:
    """Raise (one line) when ``prompt_name`` is given but the model defines no prompt of that name."""
    if prompt_name is None:
        return
    prompts = dict(getattr(embedder, "prompts", None) or {})
    if prompt_name not in prompts:
        known = ", ".join(repr(k) for k in sorted(prompts)) or "none"
        raise EmpathyRecipesError(f"embedder {name} has no prompt named {prompt_name!r} (its prompts: {known})")


def encode(
    embedder,
    texts: Sequence[str],
    batch_size: int = 64,
    normalize: bool = True,
    show_progress: bool = False,
    prompt_name: str | None = None,
) -> np.ndarray:
    """``(len(texts), dim)`` float32 embeddings, L2-normalised unless ``normalize=False``; ``prompt_name`` picks one
    of the model's named prompts (prepended to every text by sentence-transformers)."""
    texts = ["" if t is None else str(t) for t in texts]
    if not texts:
        dim = embedder.get_sentence_embedding_dimension() or 0
        return np.zeros((0, dim), dtype=np.float32)
    emb = embedder.encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=normalize,
        convert_to_numpy=True,
        show_progress_bar=show_progress,
        **({"prompt_name": prompt_name} if prompt_name is not None else {}),
    )
    return np.asarray(emb, dtype=np.float32)


def cosine_x100(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of paired embeddings, times 100 (float32; 0 where a row is all zeros)."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.shape != b.shape or a.ndim != 2:
        raise EmpathyRecipesError(f"paired embeddings must have the same 2-D shape, got {a.shape} and {b.shape}")
    dots = np.einsum("ij,ij->i", a, b)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    out = np.zeros(len(a), dtype=np.float32)
    np.divide(dots, norms, out=out, where=norms > 0)
    return np.clip(out, -1.0, 1.0) * 100.0


def paired_similarity_x100(
    embedder,
    texts_a: Sequence[str],
    texts_b: Sequence[str],
    batch_size: int = 64,
    show_progress: bool = False,
    prompt_name: str | None = None,
) -> np.ndarray:
    """Cosine x100 between ``texts_a[i]`` and ``texts_b[i]`` for every ``i`` (one encode call for both sides, both
    with ``prompt_name`` when given, as Synth-Empathy encodes)."""
    if len(texts_a) != len(texts_b):
        raise EmpathyRecipesError(f"need as many texts on both sides, got {len(texts_a)} and {len(texts_b)}")
    check_prompt_name(embedder, prompt_name)
    emb = encode(
        embedder,
        list(texts_a) + list(texts_b),
        batch_size=batch_size,
        show_progress=show_progress,
        prompt_name=prompt_name,
    )
    return cosine_x100(emb[: len(texts_a)], emb[len(texts_a) :])
