"""Judge scores, vectorised: parse judge texts, split by threshold, sweep thresholds, measure judge agreement.

Everything here is pure (no I/O, no model) and works on whole columns at once: the parser runs RE2 regexes
inside Arrow (``pyarrow.compute.extract_regex``), so a million judge outputs parse in about a second.

Judge outputs look like the ones released with Efficient-Empathy::

    Evaluation Form (scores ONLY):
    - Rationality: 8
    - Sensibility: 5

with or without the header, in any order, with Markdown (``**Rationality**: 8``), ``8/10``, extra text... For
each axis the first integer written after the axis name on the same line (within 20 characters) is its score.
A row gets an ``unscored_reason`` (and no scores) when the text is missing, an axis is missing, or a score is
not an integer or out of range; the parser never raises.

The Efficient-Empathy split at threshold T (R = rationality, S = sensibility):
``sensibility`` = R < T and S > T; ``discard`` = R > T and S < T; ``rationality`` = every other scored row;
``unscored`` = rows without both scores. Each row lands in exactly one set.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

DEFAULT_AXES: tuple[str, ...] = ("rationality", "sensibility")
SET_NAMES: tuple[str, ...] = ("sensibility", "rationality", "discard", "unscored")
REASON_COLUMN = "unscored_reason"
SWEEP_THRESHOLDS: tuple[int, ...] = (3, 4, 5, 6, 7)


def _axis_pattern(axis: str) -> str:
    escaped = "".join(ch if ch.isalnum() else "\\" + ch for ch in axis)
    return rf"(?i)\b{escaped}\b[^0-9\n]{{0,20}}?(?P<v>[-+]?[0-9]+(?:[.,][0-9]+)?)"


def _to_arrow_strings(texts: Iterable[Any]) -> pa.Array:
    """Any sequence of texts as an Arrow string array; anything that is not a string becomes null."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if isinstance(texts, pa.Array) and (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        return texts
    if isinstance(texts, pd.Series):
        texts = texts.to_numpy(dtype=object, na_value=None)
    if not isinstance(texts, (list, np.ndarray)):
        texts = list(texts)
    try:  # the fast path: a list of str/None converts in C
        return pa.array(texts, type=pa.large_string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeError, TypeError, ValueError):
        clean = [v.encode("utf-8", "replace").decode("utf-8") if isinstance(v, str) else None for v in texts]
        return pa.array(clean, type=pa.large_string())


def parse_judge_outputs(
    texts: Iterable[Any],
    axes: Sequence[str] = DEFAULT_AXES,
    low: int = 0,
    high: int = 10,
) -> pd.DataFrame:
    """Parse judge texts into one nullable ``Int64`` column per axis plus ``unscored_reason``.

    ``texts`` is any sequence (list, numpy array, pandas Series, Arrow array); non-strings count as missing.
    A row is scored only when every axis has an integer in ``low..high``; otherwise all its axes are ``<NA>`` and
    ``unscored_reason`` says why (``no judge output``, ``no rationality score``, ``sensibility score 11 out of
    range 0-10``, ``rationality score 7.5 is not an integer``; several reasons are joined with ``; ``).
    """
    arr = _to_arrow_strings(texts)
    n = len(arr)
    # The per-axis RE2 scans run in threads (Arrow releases the GIL): one core per axis.
    with ThreadPoolExecutor(max_workers=max(1, min(len(axes), os.cpu_count() or 1))) as pool:
        raws = list(pool.map(lambda a: pc.struct_field(pc.extract_regex(arr, pattern=_axis_pattern(a)), "v"), axes))
    nums = [
        np.asarray(pc.cast(pc.replace_substring(raw, ",", "."), pa.float64(), safe=False).fill_null(np.nan))
        for raw in raws
    ]
    # "no judge output" (null, empty or blank) is only checked where some axis is missing: usually few rows.
    missing = np.zeros(n, dtype=bool)
    incomplete = np.flatnonzero(np.logical_or.reduce([np.isnan(num) for num in nums])) if nums else np.arange(n)
    if len(incomplete):
        sub = arr.take(pa.array(incomplete))
        blank = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(sub)), 0), True)
        missing[incomplete] = np.asarray(blank)
    reasons = np.full(n, None, dtype=object)
    reasons[missing] = "no judge output"
    values: dict[str, np.ndarray] = {}
    ok_all = ~missing
    for axis, raw, num in zip(axes, raws, nums):
        found = ~np.isnan(num)
        integral = found & (np.floor(np.where(found, num, 0)) == num)
        in_range = integral & (num >= low) & (num <= high)
        values[axis] = num
        _add_reason(reasons, ~missing & ~found, f"no {axis} score")
        bad_int = ~missing & found & ~integral
        if bad_int.any():
            idx = np.flatnonzero(bad_int)
            raw_np = np.asarray(raw.take(pa.array(idx)).to_pylist(), dtype=object)
            _add_reason(
                reasons, bad_int, np.array([f"{axis} score {v} is not an integer" for v in raw_np], dtype=object)
            )
        bad_range = ~missing & integral & ~in_range
        if bad_range.any():
            idx = np.flatnonzero(bad_range)
            msgs = np.array([f"{axis} score {v:.0f} out of range {low}-{high}" for v in num[idx]], dtype=object)
            _add_reason(reasons, bad_range, msgs)
        ok_all &= in_range
    return _scores_frame(values, ok_all, reasons, axes)


def _add_reason(reasons: np.ndarray, mask: np.ndarray, message: str | np.ndarray) -> None:
    if not mask.any():
        return
    idx = np.flatnonzero(mask)
    msgs = np.full(len(idx), message, dtype=object) if isinstance(message, str) else message
    prev = reasons[idx]
    has_prev = np.array([p is not None for p in prev], dtype=bool)
    joined = msgs.copy()
    if has_prev.any():
        joined[has_prev] = prev[has_prev] + "; " + msgs[has_prev]
    reasons[idx] = joined


def _scores_frame(
    values: Mapping[str, np.ndarray], ok_all: np.ndarray, reasons: np.ndarray, axes: Sequence[str]
) -> pd.DataFrame:
    """Integer (nullable) score columns, NA wherever any axis failed, plus the reason column."""
    out = {}
    for axis in axes:
        col = pd.array(np.where(ok_all, values[axis], 0).astype(np.int64), dtype="Int64")
        col[~ok_all] = pd.NA
        out[axis] = col
    out[REASON_COLUMN] = pd.Series(reasons, dtype=object)
    return pd.DataFrame(out)


def scores_from_columns(
    columns: Mapping[str, Any], axes: Sequence[str] = DEFAULT_AXES, low: int = 0, high: int = 10
) -> pd.DataFrame:
    """Already parsed score columns (``{axis: values}``; numbers, numeric strings or missing), checked with the
    same rules as :func:`parse_judge_outputs` and returned in the same layout."""
    n = len(next(iter(columns.values()))) if columns else 0
    reasons = np.full(n, None, dtype=object)
    values: dict[str, np.ndarray] = {}
    ok_all = np.ones(n, dtype=bool)
    for axis in axes:
        num = _as_float(columns[axis]) if axis in columns else np.full(n, np.nan)
        found = ~np.isnan(num)
        integral = found & (np.floor(np.where(found, num, 0)) == num)
        in_range = integral & (num >= low) & (num <= high)
        _add_reason(reasons, ~found, f"no {axis} score")
        for mask, fmt in (
            (found & ~integral, "{axis} score {v:g} is not an integer"),
            (integral & ~in_range, "{axis} score {v:.0f} out of range {low}-{high}"),
        ):
            if mask.any():
                msgs = np.array([fmt.format(axis=axis, v=v, low=low, high=high) for v in num[mask]], dtype=object)
                _add_reason(reasons, mask, msgs)
        values[axis] = num
        ok_all &= in_range
    return _scores_frame(values, ok_all, reasons, axes)


def parse_judge_text(
    text: Any, axes: Sequence[str] = DEFAULT_AXES, low: int = 0, high: int = 10
) -> dict[str, int | str | None]:
    """One judge text -> ``{axis: int or None, ..., "unscored_reason": str or None}`` (same rules as above)."""
    row = parse_judge_outputs([text], axes, low, high).iloc[0]
    result: dict[str, int | str | None] = {a: (None if pd.isna(row[a]) else int(row[a])) for a in axes}
    result[REASON_COLUMN] = row[REASON_COLUMN]
    return result


def _as_float(values: Any) -> np.ndarray:
    return pd.to_numeric(
        pd.Series(values, dtype=object) if not isinstance(values, pd.Series) else values, errors="coerce"
    ).to_numpy(dtype=np.float64, na_value=np.nan)


def set_codes(rationality: Any, sensibility: Any, threshold: float = 5) -> np.ndarray:
    """Like :func:`assign_sets` but as int8 indices into ``SET_NAMES`` (cheaper to count and filter)."""
    r, s = _as_float(rationality), _as_float(sensibility)
    scored = ~np.isnan(r) & ~np.isnan(s)
    with np.errstate(invalid="ignore"):
        sens = scored & (r < threshold) & (s > threshold)
        disc = scored & (r > threshold) & (s < threshold)
    codes = np.full(len(r), SET_NAMES.index("rationality"), dtype=np.int8)
    codes[sens] = SET_NAMES.index("sensibility")
    codes[disc] = SET_NAMES.index("discard")
    codes[~scored] = SET_NAMES.index("unscored")
    return codes


_SET_NAME_ARRAY = np.array(SET_NAMES, dtype=object)


def assign_sets(rationality: Any, sensibility: Any, threshold: float = 5) -> np.ndarray:
    """The set of each row (``SET_NAMES``) at ``threshold``: missing scores -> ``unscored``."""
    return _SET_NAME_ARRAY[set_codes(rationality, sensibility, threshold)]


def count_sets(labels: np.ndarray) -> dict[str, int]:
    """``{set: count}`` with exactly the keys of ``SET_NAMES`` (from set names, or from :func:`set_codes`)."""
    labels = np.asarray(labels)
    if labels.dtype.kind in "iu":
        counts = np.bincount(labels, minlength=len(SET_NAMES))
        return {name: int(counts[i]) for i, name in enumerate(SET_NAMES)}
    return {name: int(np.count_nonzero(labels == name)) for name in SET_NAMES}


def threshold_sweep(
    rationality: Any, sensibility: Any, thresholds: Iterable[float] = SWEEP_THRESHOLDS
) -> pd.DataFrame:
    """One row per threshold: the count and the share (of all rows) of each set."""
    r, s = _as_float(rationality), _as_float(sensibility)
    rows = []
    for t in thresholds:
        counts = count_sets(set_codes(r, s, t))
        total = max(1, len(r))
        rows.append({"threshold": t, **counts, **{f"{k}_share": counts[k] / total for k in SET_NAMES}})
    return pd.DataFrame(rows)


def score_histogram(rationality: Any, sensibility: Any, low: int = 0, high: int = 10) -> np.ndarray:
    """Counts ``H[r - low, s - low]`` of scored rows: rows are rationality, columns sensibility (Fig. 4)."""
    r, s = _as_float(rationality), _as_float(sensibility)
    ok = ~np.isnan(r) & ~np.isnan(s) & (r >= low) & (r <= high) & (s >= low) & (s <= high)
    size = high - low + 1
    flat = (r[ok].astype(np.int64) - low) * size + (s[ok].astype(np.int64) - low)
    return np.bincount(flat, minlength=size * size).reshape(size, size)


def judge_agreement(
    predicted: Mapping[str, Any] | pd.DataFrame,
    reference: Mapping[str, Any] | pd.DataFrame,
    axes: Sequence[str] = DEFAULT_AXES,
) -> dict[str, dict[str, float | int | None]]:
    """Per axis: ``n`` (rows with both scores), ``spearman`` (rank correlation, ``None`` when undefined),
    ``exact`` (share of identical scores), ``within_1`` and ``mean_abs_diff``."""
    from scipy.stats import spearmanr

    result: dict[str, dict[str, float | int | None]] = {}
    for axis in axes:
        p, r = _as_float(predicted[axis]), _as_float(reference[axis])
        if len(p) != len(r):
            raise ValueError(f"{axis}: {len(p)} predicted scores vs {len(r)} reference scores")
        ok = ~np.isnan(p) & ~np.isnan(r)
        n = int(ok.sum())
        entry: dict[str, float | int | None] = {"n": n, "spearman": None, "exact": None, "within_1": None}
        entry["mean_abs_diff"] = None
        if n:
            diff = np.abs(p[ok] - r[ok])
            entry["exact"] = float(np.mean(diff == 0))
            entry["within_1"] = float(np.mean(diff <= 1))
            entry["mean_abs_diff"] = float(diff.mean())
            if n > 1 and np.ptp(p[ok]) > 0 and np.ptp(r[ok]) > 0:
                entry["spearman"] = float(spearmanr(p[ok], r[ok]).statistic)
        result[axis] = entry
    return result
