"""Pairwise LLM judge: which of two listener replies is better, per criterion, with position swapping.

Each pair is judged twice, once as (Response 1 = A, Response 2 = B) and once swapped. The judge answers a form,
one line per criterion, ``- Empathy: 1`` (Response 1 is better), ``2`` (Response 2 is better) or ``0`` (tie);
with ``--scoring probs`` the digit is read from the judge's next-token probabilities, so even a small model
always answers. A model wins a pair only when both orders name it; any disagreement (order bias) or a tie in
either order is a tie. :func:`combine_orders` and :func:`win_rates` are the pure arithmetic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from empathy_recipes.judge_scores import ScoreAxes
from empathy_recipes.prob_scoring import ScoreFormTask
from empathy_recipes.tasks.prompts import blank_form, cut, emotion_note, render_conversation, template

PAIRWISE_CRITERIA = ["empathy", "coherence", "overall"]
ORDERS = ("AB", "BA")
FORM_HEADER = "Verdict (ONLY):\n"
CRITERIA_TEXT = {
    "empathy": "which reply better understands and responds to the speaker's feelings",
    "coherence": "which reply better follows from and fits the conversation",
    "informativeness": "which reply adds more relevant content (questions, information, suggestions)",
    "naturalness": "which reply sounds more like something a person would say",
    "overall": "which reply is the better response overall, as an empathetic listener",
}

SYSTEM_PROMPT = (
    "You are a fair judge of empathetic conversations. You compare two candidate replies of a listener. "
    "The order of the replies is random: do not prefer a reply for its position or its length. "
    "You answer with the verdict form only."
)


def pairwise_axes(criteria: Sequence[str] = PAIRWISE_CRITERIA) -> ScoreAxes:
    """The verdict form: one line per criterion, integers 0 (tie), 1, 2."""
    return ScoreAxes(tuple(criteria), 0, 2, "- {Axis}:", FORM_HEADER)


def pairwise_prompt(
    context: list[dict[str, str]],
    response_1: str,
    response_2: str,
    criteria: Sequence[str] = PAIRWISE_CRITERIA,
    emotion: str | None = None,
    max_turns: int = 8,
    max_chars: int = 600,
) -> list[dict[str, str]]:
    """System + user prompt (``templates/pairwise.jinja2``) comparing two replies to ``context`` (messages ending
    with the speaker's turn)."""
    conversation, _ = render_conversation([*context, {"role": "assistant", "content": ""}], max_turns, max_chars)
    user = template("pairwise").render(
        criteria=[(c.title(), CRITERIA_TEXT.get(c, c)) for c in criteria],
        emotion_note=emotion_note(emotion),
        conversation=conversation,
        response_1=cut(response_1 or "", max_chars) or "(empty reply)",
        response_2=cut(response_2 or "", max_chars) or "(empty reply)",
        form=blank_form(pairwise_axes(criteria), "<0, 1 or 2>"),
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def verdict_winner(verdict: int | None, order: str) -> str | None:
    """A verdict (1, 2, 0 = tie) given with ``order`` ``"AB"`` (Response 1 = A) or ``"BA"`` -> ``"A"``, ``"B"``,
    ``"tie"``; None for a missing or out-of-range verdict."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if verdict == 0:
        return "tie"
    if verdict in (1, 2):
        return order[verdict - 1]
    return None


def combine_orders(winner_ab: str | None, winner_ba: str | None) -> str | None:
    """One outcome from the two orders: a win only when both name the same model, otherwise a tie; None when
    either verdict is missing."""
    if winner_ab is None or winner_ba is None:
        return None
    return winner_ab if winner_ab == winner_ba and winner_ab in ("A", "B") else "tie"


def win_rates(outcomes: Sequence[str | None], consistent: Sequence[bool] | None = None) -> dict[str, Any]:
    """Model A's win / tie / loss rates over the readable outcomes, plus how many were unreadable and, when given,
    the share of pairs whose two orders agreed (position consistency)."""
    c = Counter(o for o in outcomes if o is not None)
    n = sum(c.values())
    result: dict[str, Any] = {
        "pairs": n,
        "unreadable": sum(o is None for o in outcomes),
        "win": c["A"] / n if n else None,
        "tie": c["tie"] / n if n else None,
        "loss": c["B"] / n if n else None,
    }
    if consistent is not None:
        flags = [f for f, o in zip(consistent, outcomes) if o is not None]
        result["position_consistency"] = sum(flags) / len(flags) if flags else None
    return result


class PairwiseJudge(ScoreFormTask):
    """Compares ``response_1`` and ``response_2`` to the conversation ``messages`` (ending with the speaker's
    turn), per criterion: 1, 2 or 0 (tie).

    Input columns: ``messages``, ``response_1``, ``response_2``; ``emotion`` optional. Output columns:
    ``pairwise_judge_output`` (form text), one int column per criterion (None when unreadable), ``<criterion>_weighted``
    and ``<criterion>_probs`` (over 0, 1, 2), ``model_name``. Build its LLM with
    ``build_scoring_llm(args, pairwise_axes(criteria))`` and pass the same ``score_axes=criteria``.
    """

    score_axes: list[str] = PAIRWISE_CRITERIA
    score_low: int = 0
    score_high: int = 2
    form_prefix: str = FORM_HEADER
    raw_output_column: str = "pairwise_judge_output"
    max_turns: int = 8
    max_chars: int = 600

    @property
    def inputs(self) -> dict[str, bool]:
        return {"messages": True, "response_1": True, "response_2": True, "emotion": False}

    def format_input(self, input: dict[str, Any]) -> list[dict[str, str]]:
        return pairwise_prompt(
            list(input.get("messages") or []),
            input.get("response_1") or "",
            input.get("response_2") or "",
            self.score_axes,
            input.get("emotion"),
            self.max_turns,
            self.max_chars,
        )
