"""What the judge Tasks share to write their prompts: the Jinja templates in ``templates/`` (as distilabel's own
tasks keep theirs), the conversation transcript, and the G-Eval form header.

The templates hold the layout and the fixed wording; what each judge rates (its axes, their rubric lines, its range)
comes from the judge's Task, so adding an axis to a judge is one change in its Task module.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path

from jinja2 import Environment, StrictUndefined, Template

from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.judge_scores import ScoreAxes

TEMPLATES_DIR = Path(__file__).parent / "templates"
#: The header of a G-Eval answer form, as in Efficient-Empathy's released judge outputs.
FORM_HEADER = "Evaluation Form (scores ONLY):\n"
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


@functools.cache
def template(name: str) -> Template:
    """The Jinja template ``templates/<name>.jinja2`` (read once)."""
    env = Environment(trim_blocks=True, lstrip_blocks=True, undefined=StrictUndefined, autoescape=False)
    return env.from_string((TEMPLATES_DIR / f"{name}.jinja2").read_text(encoding="utf-8"))


def number_word(n: int) -> str:
    """``2`` -> ``"two"`` (digits from 11 on)."""
    return _NUMBER_WORDS[n] if 0 <= n < len(_NUMBER_WORDS) else str(n)


def titled(axes: Sequence[str], texts: Mapping[str, str], what: str) -> list[tuple[str, str]]:
    """``[(Axis, text), ...]`` for a template, one per axis in order; an axis without a text is one error line."""
    missing = [a for a in axes if a not in texts]
    if missing:
        raise EmpathyRecipesError(f"no {what} for the axis {', '.join(missing)}: give one in the judge Task")
    return [(a.title(), texts[a]) for a in axes]


def blank_form(axes: ScoreAxes, placeholder: str = "<{low}-{high}>") -> str:
    """The form a judge is asked to fill: ``form_prefix`` then ``- <Axis>: <low-high>`` per axis."""
    blank = placeholder.format(low=axes.low, high=axes.high)
    return axes.form_prefix + "\n".join(f"{axes.line(a)} {blank}" for a in axes.names)


def cut(text: str, max_chars: int) -> str:
    """One line of at most ``max_chars`` characters (whitespace collapsed, ``...`` where cut)."""
    text = " ".join(str(text).split())
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def render_conversation(messages: list[dict[str, str]], max_turns: int = 6, max_chars: int = 600) -> tuple[str, str]:
    """``(context lines, reply)`` from common-schema messages: the last assistant turn is the reply to rate;
    earlier turns become ``Speaker:`` / ``Listener:`` lines (the last ``max_turns``, each cut at ``max_chars``)."""
    msgs = [m for m in messages or [] if isinstance(m, dict)]
    reply = ""
    if msgs and msgs[-1].get("role") == "assistant":
        reply = cut(msgs[-1].get("content", ""), max_chars)
        msgs = msgs[:-1]
    msgs = msgs[-max_turns:]
    lines = [
        f"{'Speaker' if m.get('role') == 'user' else 'Listener'}: {cut(m.get('content', ''), max_chars)}" for m in msgs
    ]
    return "\n".join(lines) or "(no earlier turns)", reply


def emotion_note(emotion: str | None) -> str:
    """`` (the speaker feels sad)`` after ``Conversation`` when the emotion is known, else nothing."""
    emotion = str(emotion or "").strip()
    return f" (the speaker feels {emotion})" if emotion else ""


def rate_reply_prompt(
    system_prompt: str,
    axes: ScoreAxes,
    rubric: Mapping[str, str],
    messages: list[dict[str, str]],
    emotion: str | None = None,
    max_turns: int = 6,
    max_chars: int = 600,
    scales: str = "scales",
    rubric_note: str = "",
) -> list[dict[str, str]]:
    """System + user prompt (``templates/rate_reply.jinja2``) rating the last listener reply of ``messages`` on
    every axis of ``axes``, with one rubric entry per axis."""
    conversation, reply = render_conversation(messages, max_turns, max_chars)
    user = template("rate_reply").render(
        scales=f"{number_word(len(axes.names))} {scales}",
        low=axes.low,
        high=axes.high,
        rubric=titled(axes.names, rubric, "rubric"),
        rubric_note=rubric_note,
        emotion_note=emotion_note(emotion),
        conversation=conversation,
        reply=reply or "(empty reply)",
        form=blank_form(axes),
    )
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": user}]
