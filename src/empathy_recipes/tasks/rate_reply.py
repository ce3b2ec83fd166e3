"""The base of the judges that rate one listener reply on a form of integer axes (sensibility/rationality 0-10,
naturalness/coherence/empathy 1-3): the axes, their rubric and their G-Eval criteria are fields of the Task, the
wording around them is in ``templates/rate_reply.jinja2`` (``--prompt project``) or the G-Eval templates
(``--prompt geval``). A judge subclass sets the fields; it overrides only ``inputs`` and, where its rows come in
another shape, :meth:`RateReplyTask.conversation`.

Adding an axis is one change in the judge's module: the name in ``score_axes`` and its line in ``rubric`` and
``geval_criteria``; the parser, the split, the summaries, the study and the report read the axes from the Task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from empathy_recipes.prob_scoring import ScoreFormTask
from empathy_recipes.tasks.geval_prompts import geval_prompt
from empathy_recipes.tasks.prompts import FORM_HEADER, rate_reply_prompt


class RateReplyTask(ScoreFormTask):
    """Rates the last listener reply of a conversation on every axis of ``score_axes``.

    Fields besides :class:`~empathy_recipes.prob_scoring.ScoreFormTask`'s: ``rubric`` (axis -> the line after
    ``<Axis>:`` in the project prompt), ``rubric_note`` (a paragraph after the rubric), ``scales`` (what the axes
    are called: ``independent scales``, ``criteria``), ``system_prompt``; for ``prompt="geval"``,
    ``geval_criteria`` (axis -> the text after ``<Axis> (low-high)``), ``geval_assign`` (step 4) and
    ``geval_steps_note`` (after step 3); ``max_turns`` / ``max_chars`` cut long conversations.
    """

    form_prefix: str = FORM_HEADER
    system_prompt: str = ""
    rubric: dict[str, str] = {}
    rubric_note: str = ""
    scales: str = "scales"
    geval_criteria: dict[str, str] = {}
    geval_assign: str = ""
    geval_steps_note: str = ""
    max_turns: int = 6
    max_chars: int = 600
    prompt: str = "project"  # "geval": the paper-style prompt (empathy_recipes.tasks.geval_prompts)

    def conversation(self, input: dict[str, Any]) -> list[dict[str, str]]:
        """The messages to rate (last assistant turn = the reply) from one input row."""
        return list(input.get("messages") or [])

    def format_input(self, input: dict[str, Any]) -> list[dict[str, str]]:
        messages = self.conversation(input)
        if self.prompt == "geval":
            return geval_prompt(messages, self.axes, self.geval_criteria, self.geval_assign, self.geval_steps_note)
        return rate_reply_prompt(
            self.system_prompt,
            self.axes,
            self.rubric,
            messages,
            input.get("emotion"),
            self.max_turns,
            self.max_chars,
            self.scales,
            self.rubric_note,
        )

    @classmethod
    def geval_for(cls, messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
        """The G-Eval prompt of this Task class (its field defaults) for one conversation."""
        f = cls.model_fields
        return geval_prompt(
            messages,
            cls.axes_spec(),
            f["geval_criteria"].default,
            f["geval_assign"].default,
            f["geval_steps_note"].default,
        )
