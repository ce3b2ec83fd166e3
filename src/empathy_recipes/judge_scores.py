"""Judge scores, vectorised: parse judge texts, split by threshold, sweep thresholds, measure judge agreement.

Everything here is pure (no I/O, no model) and works on whole columns at once: the parser runs RE2 regexes
inside Arrow (``pyarrow.compute.extract_regex``), so a million judge outputs parse in about a second.

Judge outputs look like the ones released with Efficient-Empathy::

    Evaluation Form (scores ONLY):
    - Rationality: 8
    - Sensibility: 5

with or without the header, in any order. Only a well-formed form is read. For each axis the text must hold
exactly one form line: at the start of a line (or after ``,`` ``;`` ``|``; list markers and Markdown allowed), the
axis name (case-insensitive; ``**Rationality**`` and ``Rationality score`` are fine), ``:`` or ``=``, then one
integer, optionally bold and written ``8/10``, optionally followed by words (``8 (warm reply)``). Anything else
leaves the row unscored with its reason, never a silent number:

- a template placeholder echoed (``- Rationality: <0-10>``, ``Rationality (0-10): 7``, ``<1-3>``);
- no number after the colon (``Rationality: Sensibility: 8`` gives no rationality score, not 8);
- a number that is not one integer (``7.5``, ``1e1``, ``3-4``, ``3 or 4``) or out of range;
- an axis given twice (``Rationality: 3`` ... ``Rationality: 9``), whatever the values;
- text damaged in transit (U+FFFD, or a lone surrogate, which UTF-8 cannot hold).

A row gets an ``unscored_reason`` (and no scores) when the text is missing or any axis fails; the parser never
raises. The paper's 10,989 released judge outputs (ED valid and test) all parse (a test checks it).

The Efficient-Empathy split at threshold T (R = rationality, S = sensibility):
``sensibility`` = R < T and S > T; ``discard`` = R > T and S < T; ``rationality`` = every other scored row;
``unscored`` = rows without a score on every axis of the judge. Each row lands in exactly one set.

What a judge scores (its axes and range, a :class:`ScoreAxes`) is declared once, by its Task in
``empathy_recipes.tasks`` (``Task.axes_spec()``); everything here takes it as an argument, and the defaults are the
Efficient-Empathy judge's (:func:`default_axes`, read from ``SensibilityRationalityJudge``). :func:`axis_summary` is
the one per-axis summary of judged rows (the judge pipelines, the Synth-Empathy study and the demo report use it).
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from empathy_recipes.errors import EmpathyRecipesError

SET_NAMES: tuple[str, ...] = ("sensibility", "rationality", "discard", "unscored")
REASON_COLUMN = "unscored_reason"
SWEEP_THRESHOLDS: tuple[int, ...] = (3, 4, 5, 6, 7)

# A form line: at the start of a line (or after ``,`` ``;`` ``|``), list markers / Markdown allowed, then the axis
# name, at most 20 characters of label (must be empty, Markdown or "score" to be well-formed), ``:`` or ``=``, and the
# value (rest of the line).
_KEY_PREFIX = r"(?:^|[,;|])[ \t>*_#•-]*(?:[0-9]+[.)][ \t]*)?"
_LABEL_OK = re.compile(r"(?i)^[ \t*_]*(?:score[ \t*_]*)?$")
# Echoed template placeholders: ``<0-10>``, ``<1-3>``, ``(0-10)``, ``[1-3]``.
_PLACEHOLDER = r"<[^<>\n]*>|[(\[][ \t]*[0-9]+[ \t]*[-–][ \t]*[0-9]+[ \t]*[)\]]"
# A range or a choice instead of one number: ``3-4``, ``3 - 4``, ``3 to 4``, ``3 or 4``.
_RANGE = r"^[ \t*_]*[-+]?[0-9]+(?:[.,][0-9]+)?[ \t]*(?:[-–—]|to|or)[ \t]*[0-9]"
_SUSPICIOUS = rf"(?i){_PLACEHOLDER}|{_RANGE}"
_NUMBER_LIKE = re.compile(r"^[ \t*_]*([-+]?[0-9][0-9.,eE+-]*)")
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
_REPLACEMENT = "\ufffd"


@dataclass(frozen=True)
class ScoreAxes:
    """What a judge scores: axis names (lower case, written title-cased in the form) and an integer range, plus how
    its form is written (``line_template`` per axis after ``form_prefix``). A judge Task declares it once
    (``Task.axes_spec()``); the parser, the split, the summaries and the LLM scorers all read it from there."""

    names: tuple[str, ...]
    low: int = 0
    high: int = 10
    line_template: str = "- {Axis}:"
    form_prefix: str = ""

    def __post_init__(self):
        if not self.names:
            raise EmpathyRecipesError("ScoreAxes needs at least one axis")
        if not 0 <= self.low < self.high <= 99:
            raise EmpathyRecipesError(f"score range must satisfy 0 <= low < high <= 99, got {self.low}..{self.high}")

    def line(self, axis: str) -> str:
        return self.line_template.format(Axis=axis.title(), axis=axis)

    def render(self, scores: Mapping[str, Any]) -> str:
        """The form text with these scores, e.g. ``- Rationality: 8\\n- Sensibility: 5``."""
        return self.form_prefix + "\n".join(f"{self.line(a)} {scores[a]}" for a in self.names)

    def parse(self, texts: Iterable[Any]) -> pd.DataFrame:
        """:func:`parse_judge_outputs` for this judge's axes and range."""
        return parse_judge_outputs(texts, self.names, self.low, self.high)

    def from_columns(self, columns: Mapping[str, Any]) -> pd.DataFrame:
        """:func:`scores_from_columns` for this judge's axes and range."""
        return scores_from_columns(columns, self.names, self.low, self.high)


@functools.cache
def default_axes() -> ScoreAxes:
    """The Efficient-Empathy judge's form: read from its Task (``tasks/sensibility_rationality.py``), the one place
    its axes and range are written (imported here lazily: the Task imports this module)."""
    from empathy_recipes.tasks.sensibility_rationality import SensibilityRationalityJudge

    return SensibilityRationalityJudge.axes_spec()


def __getattr__(name: str) -> Any:
    if name == "DEFAULT_AXES":  # the Efficient-Empathy judge's axes, derived from its Task
        return default_axes().names
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _resolve(
    axes: Sequence[str] | ScoreAxes | None, low: int | None, high: int | None
) -> tuple[tuple[str, ...], int, int]:
    """``(names, low, high)``: from a :class:`ScoreAxes`, or the names given with the default judge's range."""
    spec = axes if isinstance(axes, ScoreAxes) else default_axes()
    names = spec.names if axes is None or isinstance(axes, ScoreAxes) else tuple(axes)
    return names, spec.low if low is None else low, spec.high if high is None else high


def _escaped(axis: str) -> str:
    return "".join(ch if ch.isalnum() else "\\" + ch for ch in axis)


def _key_pattern(axis: str) -> str:
    return rf"(?im){_KEY_PREFIX}{_escaped(axis)}\b(?P<label>[^:=\n]{{0,20}}?)[:=](?P<value>[^\n]*)"


def _good_value_pattern(high: int) -> str:
    """One integer (optionally Markdown-bold, optionally ``/high``) and then nothing that continues a number."""
    return (
        rf"^[ \t]*(?:\*\*|__)?[ \t]*(?P<v>[-+]?[0-9]+)[ \t]*(?:/[ \t]*{int(high)})?[ \t]*(?:\*\*|__)?"
        r"(?:$|[ \t)\]*!;:]|[.,](?:$|[^0-9]))"
    )


def _to_arrow_strings(texts: Iterable[Any]) -> pa.Array:
    """Any sequence of texts as an Arrow string array; anything that is not a string becomes null. A lone
    surrogate (which UTF-8 cannot hold) becomes U+FFFD, which the parser then reports."""
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
        clean = [_LONE_SURROGATE.sub(_REPLACEMENT, v) if isinstance(v, str) else None for v in texts]
        return pa.array(clean, type=pa.large_string())


def parse_judge_outputs(
    texts: Iterable[Any],
    axes: Sequence[str] | ScoreAxes | None = None,
    low: int | None = None,
    high: int | None = None,
) -> pd.DataFrame:
    """Parse judge texts into one nullable ``Int64`` column per axis plus ``unscored_reason``.

    ``texts`` is any sequence (list, numpy array, pandas Series, Arrow array); non-strings count as missing.
    ``axes`` is a judge's :class:`ScoreAxes` (``Task.axes_spec()``) or axis names; by default the Efficient-Empathy
    judge's (:func:`default_axes`), whose range also fills a ``low`` / ``high`` left out.
    Only a well-formed form is read: for each axis exactly one form line ``<axis>: <integer>`` (see the module
    docstring). A row is scored only when every axis has one integer in ``low..high``; otherwise all its axes are
    ``<NA>`` and ``unscored_reason`` says why, e.g. ``no judge output``, ``no rationality score``, ``rationality
    score 11 out of range 0-10``, ``rationality score '7.5' is not an integer``, ``rationality score '3-4' is not
    one integer``, ``rationality: template placeholder '<0-10>' echoed``, ``rationality given 2 times``; several
    reasons are joined with ``; ``. The parser never raises.
    """
    names, low, high = _resolve(axes, low, high)
    return _scores_frame(*_parse(_to_arrow_strings(texts), names, low, high), names)


#: Below this many texts the per-axis scans run one after the other (a thread pool costs more than it saves).
_THREADS_FROM_ROWS = 4096


def _parse(
    arr: pa.Array, axes: Sequence[str], low: int, high: int
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """``(values per axis, every axis in range, reasons)`` for :func:`parse_judge_outputs` (and one text)."""
    n = len(arr)
    good_pattern = _good_value_pattern(high)

    def scan(axis: str) -> dict[str, Any]:
        key = pc.extract_regex(arr, pattern=_key_pattern(axis))
        label, value = pc.struct_field(key, "label"), pc.struct_field(key, "value")
        good = pc.struct_field(pc.extract_regex(value, pattern=good_pattern), "v")
        return {
            "found": np.asarray(pc.is_valid(key).fill_null(False)),
            "count": np.asarray(pc.count_substring_regex(arr, pattern=_key_pattern(axis)).fill_null(0)),
            "label_ok": np.asarray(pc.match_substring_regex(label, pattern=_LABEL_OK.pattern).fill_null(False)),
            "suspicious": np.asarray(pc.match_substring_regex(value, pattern=_SUSPICIOUS).fill_null(False))
            | np.asarray(pc.match_substring_regex(label, pattern=_SUSPICIOUS).fill_null(False)),
            "num": np.asarray(pc.cast(good, pa.float64(), safe=False).fill_null(np.nan)),
            "label": label,
            "value": value,
        }

    workers = min(len(axes), os.cpu_count() or 1) if n >= _THREADS_FROM_ROWS else 1
    if workers > 1:  # the per-axis RE2 scans run in threads (Arrow releases the GIL): one core per axis
        with ThreadPoolExecutor(max_workers=workers) as pool:
            scans = list(pool.map(scan, axes))
    else:
        scans = [scan(axis) for axis in axes]
    # "no judge output" (null, empty or blank) and damaged text (U+FFFD) are checked where some axis failed.
    missing = np.zeros(n, dtype=bool)
    clean = [s["found"] & (s["count"] == 1) & s["label_ok"] & ~s["suspicious"] & ~np.isnan(s["num"]) for s in scans]
    suspect = np.flatnonzero(~np.logical_and.reduce(clean)) if clean else np.arange(n)
    if len(suspect):
        sub = arr.take(pa.array(suspect))
        missing[suspect] = np.asarray(pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(sub)), 0), True))
    damaged = np.asarray(pc.match_substring(arr, _REPLACEMENT).fill_null(False)) & ~missing
    reasons = np.full(n, None, dtype=object)
    reasons[missing] = "no judge output"
    reasons[damaged] = "judge output holds undecodable text (U+FFFD or a lone surrogate)"
    values: dict[str, np.ndarray] = {}
    readable = ~missing & ~damaged
    ok_all = readable.copy()
    for axis, scan_result, is_clean in zip(axes, scans, clean):
        values[axis] = np.where(is_clean, scan_result["num"], np.nan)
        ok_all &= _in_range(axis, values[axis], readable & is_clean, low, high, reasons)
        malformed = readable & ~is_clean
        if malformed.any():
            idx = np.flatnonzero(malformed)
            found = scan_result["found"][idx]
            counts = scan_result["count"][idx]
            labels = scan_result["label"].take(pa.array(idx)).to_pylist()
            vals = scan_result["value"].take(pa.array(idx)).to_pylist()
            msgs = np.array(
                [_axis_reason(axis, f, c, lab, val) for f, c, lab, val in zip(found, counts, labels, vals)],
                dtype=object,
            )
            _add_reason(reasons, malformed, msgs)
    return values, ok_all, reasons


def _in_range(axis: str, num: np.ndarray, valid: np.ndarray, low: int, high: int, reasons: np.ndarray) -> np.ndarray:
    """The range check both parsers share: ``valid`` integer scores inside ``low..high``; the others get their
    ``out of range`` reason."""
    with np.errstate(invalid="ignore"):
        in_range = valid & (num >= low) & (num <= high)
    out_of_range = valid & ~in_range
    if out_of_range.any():
        msgs = np.array([f"{axis} score {v:.0f} out of range {low}-{high}" for v in num[out_of_range]], dtype=object)
        _add_reason(reasons, out_of_range, msgs)
    return in_range


def _axis_reason(axis: str, found: bool, count: int, label: str | None, value: str | None) -> str:
    """Why one axis of one row is not a well-formed form line (only called for the rows that are not)."""
    if not found:
        return f"no {axis} score"
    if count > 1:
        return f"{axis} given {count} times"
    label, value = label or "", value or ""
    placeholder = re.search(_PLACEHOLDER, label + " " + value)
    if placeholder:
        return f"{axis}: template placeholder {placeholder.group(0)!r} echoed"
    if not _LABEL_OK.match(label):
        return f"{axis}: unexpected text {label.strip()!r} before the colon"
    ranged = re.match(_RANGE, value, re.IGNORECASE)
    if ranged:
        return f"{axis} score {value.strip(' *_')[:20]!r} is not one integer"
    number = _NUMBER_LIKE.match(value)
    if number:
        return f"{axis} score {number.group(1).rstrip('.,')!r} is not an integer"
    shown = value.strip()
    return f"no {axis} score after its colon" + (f" (it reads {shown[:30]!r})" if shown else "")


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
    columns: Mapping[str, Any],
    axes: Sequence[str] | ScoreAxes | None = None,
    low: int | None = None,
    high: int | None = None,
) -> pd.DataFrame:
    """Already parsed score columns (``{axis: values}``; numbers, integer strings or missing), checked with the
    same rules as :func:`parse_judge_outputs` and returned in the same layout. A boolean (JSON ``true``) or a
    string that is not one integer (``"1e1"``, ``"3-4"``) is not a score: the row is unscored with the reason."""
    names, low, high = _resolve(axes, low, high)
    n = len(next(iter(columns.values()))) if columns else 0
    reasons = np.full(n, None, dtype=object)
    values: dict[str, np.ndarray] = {}
    ok_all = np.ones(n, dtype=bool)
    for axis in names:
        if axis in columns:
            num, bad_idx, bad_values = _column_scores(columns[axis])
        else:
            num, bad_idx, bad_values = np.full(n, np.nan), np.zeros(0, dtype=np.int64), []
        found = ~np.isnan(num)
        integral = found & (np.floor(np.where(found, num, 0)) == num)
        missing = ~found
        missing[bad_idx] = False
        _add_reason(reasons, missing, f"no {axis} score")
        if len(bad_idx):
            bad = np.zeros(n, dtype=bool)
            bad[bad_idx] = True
            msgs = np.array([f"{axis} score {v!r} is not a number" for v in bad_values], dtype=object)
            _add_reason(reasons, bad, msgs)
        fraction = found & ~integral
        if fraction.any():
            msgs = np.array([f"{axis} score {v:g} is not an integer" for v in num[fraction]], dtype=object)
            _add_reason(reasons, fraction, msgs)
        values[axis] = num
        ok_all &= _in_range(axis, num, integral, low, high, reasons)
    return _scores_frame(values, ok_all, reasons, names)


_INTEGER_STRING = re.compile(r"^\s*[-+]?[0-9]+(?:\.0*)?\s*$")


def _column_scores(values: Any) -> tuple[np.ndarray, np.ndarray, list]:
    """(float scores with NaN for missing or bad, indices of bad values, the bad values): booleans and strings
    that are not one integer are bad; numbers pass (their range and integrality are checked by the caller)."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        values = values.to_pylist()
    series = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    if series.dtype == bool:
        return np.full(len(series), np.nan), np.arange(len(series)), series.tolist()
    if series.dtype.kind in "iuf":
        return series.to_numpy(dtype=np.float64, na_value=np.nan), np.zeros(0, dtype=np.int64), []
    obj = series.to_numpy(dtype=object)
    bad = np.fromiter(
        (
            isinstance(v, (bool, np.bool_))
            or (isinstance(v, str) and v.strip() != "" and not _INTEGER_STRING.match(v))
            for v in obj
        ),
        dtype=bool,
        count=len(obj),
    )
    num = pd.to_numeric(pd.Series(np.where(bad, None, obj), dtype=object), errors="coerce")
    num = num.to_numpy(dtype=np.float64, na_value=np.nan)
    bad_idx = np.flatnonzero(bad)
    return num, bad_idx, obj[bad_idx].tolist()


def parse_judge_text(
    text: Any, axes: Sequence[str] | ScoreAxes | None = None, low: int | None = None, high: int | None = None
) -> dict[str, int | str | None]:
    """One judge text -> ``{axis: int or None, ..., "unscored_reason": str or None}`` (same rules as above; no
    DataFrame and no thread pool for one string: a judge Task parses each answer with it)."""
    names, low, high = _resolve(axes, low, high)
    values, ok_all, reasons = _parse(_to_arrow_strings([text]), names, low, high)
    result: dict[str, int | str | None] = {a: int(values[a][0]) if ok_all[0] else None for a in names}
    result[REASON_COLUMN] = reasons[0]
    return result


def _as_float(values: Any) -> np.ndarray:
    return pd.to_numeric(
        pd.Series(values, dtype=object) if not isinstance(values, pd.Series) else values, errors="coerce"
    ).to_numpy(dtype=np.float64, na_value=np.nan)


#: The two axes the Efficient-Empathy split rule reads (the sets are named after them).
SPLIT_AXES: tuple[str, str] = ("rationality", "sensibility")


def set_codes(
    scores: Mapping[str, Any] | pd.DataFrame, threshold: float = 5, axes: Sequence[str] | ScoreAxes | None = None
) -> np.ndarray:
    """Like :func:`assign_sets` but as int8 indices into ``SET_NAMES`` (cheaper to count and filter)."""
    names, _, _ = _resolve(axes, None, None)
    missing = [a for a in (*SPLIT_AXES, *names) if a not in scores]
    if missing:
        raise EmpathyRecipesError(f"the split needs a score column per judge axis; missing: {', '.join(missing)}")
    r, s = (_as_float(scores[a]) for a in SPLIT_AXES)
    scored = np.logical_and.reduce([~np.isnan(_as_float(scores[a])) for a in dict.fromkeys((*SPLIT_AXES, *names))])
    with np.errstate(invalid="ignore"):
        sens = scored & (r < threshold) & (s > threshold)
        disc = scored & (r > threshold) & (s < threshold)
    codes = np.full(len(r), SET_NAMES.index("rationality"), dtype=np.int8)
    codes[sens] = SET_NAMES.index("sensibility")
    codes[disc] = SET_NAMES.index("discard")
    codes[~scored] = SET_NAMES.index("unscored")
    return codes


_SET_NAME_ARRAY = np.array(SET_NAMES, dtype=object)


def assign_sets(
    scores: Mapping[str, Any] | pd.DataFrame, threshold: float = 5, axes: Sequence[str] | ScoreAxes | None = None
) -> np.ndarray:
    """The set of each row (``SET_NAMES``) at ``threshold``. ``scores`` holds one column per axis of the judge
    (``axes``, default the Efficient-Empathy judge's); a row missing any of them is ``unscored``; the split itself
    reads rationality and sensibility (:data:`SPLIT_AXES`)."""
    return _SET_NAME_ARRAY[set_codes(scores, threshold, axes)]


def count_sets(labels: np.ndarray) -> dict[str, int]:
    """``{set: count}`` with exactly the keys of ``SET_NAMES`` (from set names, or from :func:`set_codes`)."""
    labels = np.asarray(labels)
    if labels.dtype.kind in "iu":
        counts = np.bincount(labels, minlength=len(SET_NAMES))
        return {name: int(counts[i]) for i, name in enumerate(SET_NAMES)}
    return {name: int(np.count_nonzero(labels == name)) for name in SET_NAMES}


def threshold_sweep(
    scores: Mapping[str, Any] | pd.DataFrame,
    thresholds: Iterable[float] = SWEEP_THRESHOLDS,
    axes: Sequence[str] | ScoreAxes | None = None,
) -> pd.DataFrame:
    """One row per threshold: the count and the share (of all rows) of each set."""
    names, _, _ = _resolve(axes, None, None)
    floats = {a: _as_float(scores[a]) for a in dict.fromkeys((*SPLIT_AXES, *names)) if a in scores}
    total = max(1, len(next(iter(floats.values()))) if floats else 0)
    rows = []
    for t in thresholds:
        counts = count_sets(set_codes(floats, t, names))
        rows.append({"threshold": t, **counts, **{f"{k}_share": counts[k] / total for k in SET_NAMES}})
    return pd.DataFrame(rows)


def score_histogram(rationality: Any, sensibility: Any, low: int | None = None, high: int | None = None) -> np.ndarray:
    """Counts ``H[r - low, s - low]`` of scored rows: rows are rationality, columns sensibility (Fig. 4); the range
    is the Efficient-Empathy judge's unless given."""
    _, low, high = _resolve(None, low, high)
    r, s = _as_float(rationality), _as_float(sensibility)
    ok = ~np.isnan(r) & ~np.isnan(s) & (r >= low) & (r <= high) & (s >= low) & (s <= high)
    size = high - low + 1
    flat = (r[ok].astype(np.int64) - low) * size + (s[ok].astype(np.int64) - low)
    return np.bincount(flat, minlength=size * size).reshape(size, size)


def _number(value: Any) -> float | None:
    """A score as a float, or None when missing (None, NaN, not a number)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _mean(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def axis_summary(rows: pd.DataFrame | Sequence[Mapping[str, Any]], axes: Sequence[str] | ScoreAxes) -> dict[str, Any]:
    """The per-axis summary of judged rows (the one the judge pipelines, the study and the report use).

    ``rows`` are a judge Task's output rows (a DataFrame or a list of dicts), with ``<axis>`` (integer or None) and,
    when the judge gave probabilities, ``<axis>_weighted``. Returns ``rows``, ``scored_all`` (rows with every axis
    scored) and per axis ``{"mean": mean integer score, "mean_weighted": mean weighted score, "scored": rows with an
    integer score, "score": mean of each row's weighted score, or its integer score where it has no weighted one}``,
    plus ``overall``: the mean of the axes' ``score`` (None when an axis has none). Missing values (None, NaN) are
    skipped, never counted as 0.
    """
    names = axes.names if isinstance(axes, ScoreAxes) else tuple(axes)
    records = rows.to_dict("records") if isinstance(rows, pd.DataFrame) else list(rows)
    out: dict[str, Any] = {"rows": len(records)}
    scored_all = 0
    for r in records:
        scored_all += all(_number(r.get(a)) is not None for a in names)
    out["scored_all"] = scored_all
    for a in names:
        plain = [_number(r.get(a)) for r in records]
        weighted = [_number(r.get(f"{a}_weighted")) for r in records]
        out[a] = {
            "mean": _mean(plain),
            "mean_weighted": _mean(weighted),
            "scored": sum(v is not None for v in plain),
            "score": _mean(w if w is not None else p for p, w in zip(plain, weighted)),
        }
    scores = [out[a]["score"] for a in names]
    out["overall"] = _mean(scores) if all(s is not None for s in scores) else None
    return out


def judge_agreement(
    predicted: Mapping[str, Any] | pd.DataFrame,
    reference: Mapping[str, Any] | pd.DataFrame,
    axes: Sequence[str] | ScoreAxes | None = None,
) -> dict[str, dict[str, float | int | None]]:
    """Per axis: ``n`` (rows with both scores), ``spearman`` (rank correlation, ``None`` when undefined),
    ``exact`` (share of identical scores), ``within_1`` and ``mean_abs_diff``."""
    from scipy.stats import spearmanr

    result: dict[str, dict[str, float | int | None]] = {}
    for axis in _resolve(axes, None, None)[0]:
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
