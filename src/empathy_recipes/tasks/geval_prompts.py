"""Paper-style (G-Eval) judge prompts, offered next to the project's own (``--prompt geval``, or ``--profile paper``).

Efficient-Empathy's sensibility/rationality prompt is not public; its released answers are G-Eval forms
(``Evaluation Form (scores ONLY):\\n- Rationality: 8\\n- Sensibility: 5``). The authors' sibling repository,
Synth-Empathy, judges with G-Eval prompts (``data_evaluation.py``): a system message "You are a helpful assistant.",
then a user message with the task, the criterion with its anchors and the evaluation steps, then a second user message
with ``Conversation History:`` (the ``Speaker:``/``Listener:`` transcript), ``Response:`` and ``Evaluation Form
(scores ONLY):``. :func:`geval_prompt` follows that layout and wording (``templates/geval_task.jinja2`` and
``templates/geval_row.jinja2``); each judge Task gives its criteria, one per axis:

- ``SensibilityRationalityJudge``: both of Efficient-Empathy's axes (0-10) in one form, in the released answers'
  order (Rationality, then Sensibility); the criteria wording is ours (the paper's is unpublished).
- ``DialogueQualityJudge``: Synth-Empathy's three criteria (1-3) with its anchors, in one form. The paper asks three
  times, one criterion per call; one call here reads the conversation once for all three (spelling fixed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from empathy_recipes.judge_scores import ScoreAxes
from empathy_recipes.profiles import PAPER_SYSTEM_PROMPT, transcript
from empathy_recipes.tasks.prompts import FORM_HEADER, number_word, template, titled


def _the_axes(names: Sequence[str]) -> str:
    """``the a``, ``the a and the b``, ``the a, the b and the c``."""
    items = [f"the {n}" for n in names]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def geval_prompt(
    messages: Sequence[Mapping[str, str]],
    axes: ScoreAxes,
    criteria: Mapping[str, str],
    assign: str,
    steps_note: str = "",
) -> list[dict[str, str]]:
    """The paper-style chat prompt for one conversation whose last assistant turn is the reply to rate: the task
    with ``criteria`` (one per axis of ``axes``) and the steps, then the row with the empty form."""
    msgs = [m for m in messages if m.get("role") != "system"]
    if msgs and msgs[-1].get("role") == "assistant":
        reply, context = msgs[-1].get("content", ""), msgs[:-1]
    else:
        reply, context = "", msgs
    task = template("geval_task").render(
        metrics=f"{number_word(len(axes.names))} metrics",
        criteria=titled(axes.names, criteria, "G-Eval criterion"),
        low=axes.low,
        high=axes.high,
        evaluated=_the_axes(axes.names),
        steps_note=steps_note,
        assign=assign,
    )
    form = FORM_HEADER.rstrip("\n") + "".join(f"\n{axes.line(a)}" for a in axes.names)
    row = template("geval_row").render(conversation=transcript(context), reply=reply, form=form)
    return [
        {"role": "system", "content": PAPER_SYSTEM_PROMPT},
        {"role": "user", "content": task},
        {"role": "user", "content": row},
    ]


def geval_sensibility_rationality(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """The paper-style prompt of ``SensibilityRationalityJudge`` (its axes and criteria) for one conversation."""
    from empathy_recipes.tasks.sensibility_rationality import SensibilityRationalityJudge

    return SensibilityRationalityJudge.geval_for(messages)


def geval_dialogue_quality(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """The paper-style prompt of ``DialogueQualityJudge`` (Synth-Empathy's criteria, 1-3) for one conversation."""
    from empathy_recipes.tasks.dialogue_quality import DialogueQualityJudge

    return DialogueQualityJudge.geval_for(messages)
