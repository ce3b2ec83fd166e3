"""Sentence embeddings (sentence-transformers) and the paired cosine similarity x100 used to score replies.

The default embedder is the packaged all-MiniLM-L6-v2 (384-d); any sentence-transformers model, by Hub id or local
folder, works the same way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.models import default_embedder_path, resolve_model_ref


def load_embedder(model_ref: str | os.PathLike | None = None, device: str | None = None):
    """A ``SentenceTransformer`` for ``model_ref`` (default: the packaged all-MiniLM-L6-v2)."""
    from sentence_transformers import SentenceTransformer

    ref = resolve_model_ref(model_ref if model_ref is not None else default_embedder_path())
    return SentenceTransformer(ref, device=device)


def encode(
    embedder,
    texts: Sequence[str],
    batch_size: int = 64,
    normalize: bool = True,
    show_progress: bool = False,
) -> np.ndarray:
    """``(len(texts), dim)`` float32 embeddings, L2-normalised unless ``normalize=False``."""
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
) -> np.ndarray:
    """Cosine x100 between ``texts_a[i]`` and ``texts_b[i]`` for every ``i`` (one encode call for both sides)."""
    if len(texts_a) != len(texts_b):
        raise EmpathyRecipesError(f"need as many texts on both sides, got {len(texts_a)} and {len(texts_b)}")
    emb = encode(embedder, list(texts_a) + list(texts_b), batch_size=batch_size, show_progress=show_progress)
    return cosine_x100(emb[: len(texts_a)], emb[len(texts_a) :])
