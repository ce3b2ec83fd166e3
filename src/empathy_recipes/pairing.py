"""Pair two prediction files by example id, never silently: unmatched and duplicate ids are reported.

A pairwise stage (LLM win rate, human A/B sheets) compares model A's and model B's reply to the same example.
:func:`pair_by_id` matches the rows by ``id``; an id only one side has, or an id a side has more than once, is
either refused (the default: one error line naming them) or kept aside with its reason (``--on-mismatch
keep-aside``), so ``rows in A + rows in B = 2 x pairs + rows aside`` always holds.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from empathy_recipes.errors import EmpathyRecipesError

ON_MISMATCH = ("refuse", "keep-aside")


def add_mismatch_arg(parser: argparse.ArgumentParser) -> None:
    """``--on-mismatch refuse|keep-aside`` (default refuse)."""
    parser.add_argument(
        "--on-mismatch",
        choices=ON_MISMATCH,
        default="refuse",
        help="ids only one file has, or that a file repeats: refuse (default, one error line) or keep-aside "
        "(compare the clean pairs, write the others to aside.jsonl with the reason)",
    )


@dataclass
class Pairing:
    """The outcome of :func:`pair_by_id`: ``pairs`` as ``(row_a, row_b)`` in A's order, and the rows set aside."""

    pairs: list[tuple[Mapping[str, Any], Mapping[str, Any]]] = field(default_factory=list)
    aside: list[dict[str, Any]] = field(default_factory=list)
    rows_in: int = 0

    @property
    def ids(self) -> list[str]:
        return [str(a["id"]) for a, _ in self.pairs]

    def counts(self) -> dict[str, int]:
        """Rows out, for ``check_rows``: both rows of every pair, and the rows set aside."""
        return {"paired": 2 * len(self.pairs), "aside": len(self.aside)}


def _examples(ids: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (", ..." if len(ids) > limit else "")


def pair_by_id(
    rows_a: Sequence[Mapping[str, Any]],
    rows_b: Sequence[Mapping[str, Any]],
    on_mismatch: str = "refuse",
    names: tuple[str, str] = ("A", "B"),
) -> Pairing:
    """Match ``rows_a`` and ``rows_b`` by ``str(row["id"])``.

    ``refuse``: any id only one side has, or repeated on a side, raises one line naming the counts and the first
    ids. ``keep-aside``: those rows are returned in ``aside`` (``side`` A or B, ``id``, ``reason``, ``row``) and only
    ids present exactly once on each side are paired (a repeated id is never resolved by picking one of its rows).
    """
    if on_mismatch not in ON_MISMATCH:
        raise EmpathyRecipesError(f"--on-mismatch must be one of {ON_MISMATCH}, not {on_mismatch!r}")
    ids_a = [str(r["id"]) for r in rows_a]
    ids_b = [str(r["id"]) for r in rows_b]
    count_a, count_b = Counter(ids_a), Counter(ids_b)
    dup_a = [i for i, n in count_a.items() if n > 1]
    dup_b = [i for i, n in count_b.items() if n > 1]
    only_a = [i for i in count_a if i not in count_b]
    only_b = [i for i in count_b if i not in count_a]
    problems = []
    for ids, what in (
        (only_a, f"only in {names[0]}"),
        (only_b, f"only in {names[1]}"),
        (dup_a, f"repeated in {names[0]}"),
        (dup_b, f"repeated in {names[1]}"),
    ):
        if ids:
            problems.append(f"{len(ids)} id(s) {what} ({_examples(ids)})")
    if problems and on_mismatch == "refuse":
        raise EmpathyRecipesError(
            f"{names[0]} and {names[1]} do not pair up by id: {'; '.join(problems)}; fix the files or pass "
            "--on-mismatch keep-aside"
        )
    result = Pairing(rows_in=len(rows_a) + len(rows_b))
    by_id_b = {str(r["id"]): r for r in rows_b if count_b[str(r["id"])] == 1}
    for side, name, rows, counts, other in (
        ("A", names[0], rows_a, count_a, count_b),
        ("B", names[1], rows_b, count_b, count_a),
    ):
        for row in rows:
            i = str(row["id"])
            if counts[i] > 1:
                reason = f"id repeated {counts[i]} times in {name}"
            elif i not in other:
                reason = f"id only in {name}"
            elif other[i] > 1:
                reason = "its partner id is repeated in the other file"
            else:
                continue
            result.aside.append({"side": side, "id": i, "reason": reason, "row": dict(row)})
    for row in rows_a:
        i = str(row["id"])
        if count_a[i] == 1 and i in by_id_b:
            result.pairs.append((row, by_id_b[i]))
    if not result.pairs:
        raise EmpathyRecipesError(f"{names[0]} and {names[1]} share no example id that each has exactly once")
    return result
