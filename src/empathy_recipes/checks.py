"""Checks every stage runs on its arguments before any model loads: each failure is one ``error:`` line, exit 2.

- :func:`check_model_ref`: a local model folder must hold a readable ``config.json`` (or ``adapter_config.json``);
  a Hub id must be shaped ``org/name`` and, offline (``HF_HUB_OFFLINE=1``), already be in the local Hub cache;
- :func:`check_range`: a number inside its interval;
- :func:`check_input_path`: a file or folder named by an argument exists (or is a Hub id).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from empathy_recipes.errors import EmpathyRecipesError

#: The one Hub-id rule (models, datasets, --hub-repo, cards): an optional ``org/`` then a name, each part letters,
#: digits and ``_.-``, starting with a letter or a digit.
_HUB_ID = re.compile(r"(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*")
_TRUE = {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """Whether the Hub must not be contacted (``HF_HUB_OFFLINE``)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in _TRUE


def looks_like_hub_id(ref: str | os.PathLike, namespace: bool = True) -> bool:
    """Whether ``ref`` is shaped like a Hub id: ``org/name`` (with ``namespace=False`` a bare ``name`` too, as
    canonical datasets are named); a local-looking path (``./x``, ``/x``, ``~/x``) never is. Whether a local path
    of that name exists is the caller's question (local paths win)."""
    ref = str(ref)
    return bool(_HUB_ID.fullmatch(ref)) and (not namespace or "/" in ref)


def _in_hub_cache(repo_id: str, repo_type: str = "model") -> bool:
    from huggingface_hub import try_to_load_from_cache

    for name in ("config.json", "adapter_config.json"):
        try:
            found = try_to_load_from_cache(repo_id, name, repo_type=repo_type)
        except Exception:  # noqa: BLE001 - a malformed id or cache: not cached
            return False
        if isinstance(found, str):
            return True
    return False


def check_model_ref(ref: str | os.PathLike, what: str = "--model") -> str:
    """Validate a model reference before anything loads it; returns it unchanged.

    A local folder needs a ``config.json`` (or ``adapter_config.json``) that is valid JSON; a Hub id offline must
    be in the local Hub cache (else one line says so, at once, instead of a long traceback from the loader).
    """
    ref = str(ref)
    path = Path(ref).expanduser()
    if path.exists():
        if not path.is_dir():
            raise EmpathyRecipesError(f"{what} {ref}: not a model folder (a file)")
        config = next((path / n for n in ("config.json", "adapter_config.json") if (path / n).exists()), None)
        if config is None:
            raise EmpathyRecipesError(
                f"{what} {ref} exists but holds no model (no config.json or adapter_config.json)"
            )
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise EmpathyRecipesError(
                f"{what} {ref}: {config.name} is unreadable ({type(err).__name__}: {err})"
            ) from None
        if not isinstance(data, dict):
            raise EmpathyRecipesError(f"{what} {ref}: {config.name} is not a JSON object")
        return ref
    if not looks_like_hub_id(ref):
        raise EmpathyRecipesError(f"{what} {ref!r} is neither an existing local folder nor a Hub id (org/name)")
    if hub_offline() and not _in_hub_cache(ref):
        raise EmpathyRecipesError(
            f"{what} {ref!r}: offline (HF_HUB_OFFLINE=1) and not in the local Hub cache; give a local folder or "
            "download it first"
        )
    return ref


def check_range(
    value: float | None,
    name: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise one line when ``value`` is not a finite number in the interval (``None`` passes: not given)."""
    if value is None:
        return
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    interval = f"{lo}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}{hi}"
    bad = isinstance(value, float) and math.isnan(value)
    if low is not None:
        bad = bad or value < low or (low_open and value == low)
    if high is not None:
        bad = bad or value > high or (high_open and value == high)
    if bad:
        raise EmpathyRecipesError(f"{name} must be in {interval}, not {value:g}")


def check_input_path(ref: str | os.PathLike | None, name: str, hub_ok: bool = True) -> None:
    """Raise one line when an argument names a file or folder that does not exist (a Hub id passes if allowed)."""
    if ref is None:
        return
    if Path(ref).expanduser().exists() or (hub_ok and looks_like_hub_id(ref)):
        return
    raise EmpathyRecipesError(f"{name}: no such file or directory: {ref}")
