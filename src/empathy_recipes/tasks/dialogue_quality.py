"""The Synth-Empathy data-quality judge as a distilabel Task: rate a listener reply, in its conversation, for
naturalness, coherence and empathy (integers 1-3 each).

The paper rates each (history, response) pair with three separate prompts, one per criterion, with 1-3 anchors
(naturalness: unnatural / strange / natural; coherence: ignores the history / generic / on topic and acknowledges
it; empathy: none / some / strong). Here one prompt, our own wording, carries the three criteria and asks for one
form, so a row costs one judge call and the three scores share the same reading of the conversation. The form is
``- Naturalness: n`` / ``- Coherence: n`` / ``- Empathy: n``; with ``--scoring probs``
(:class:`empathy_recipes.prob_scoring.TransformersFormScorer` / ``VLLMFormScorer``) every row gets three integers
and the probability-weighted ``<axis>_weighted`` scores, even from a 135M model.

Input: a conversation whose last assistant turn is the reply to rate, either as ``messages`` (the common schema:
ED rows, synthetic examples, or a context plus a model's prediction) or as ``context`` (list of turns or one
string) plus ``response``. ``emotion`` is optional. :func:`messages_for_rating` builds the messages either way.
"""

from __future__ import annotations

from typing import Any

from empathy_recipes.data import split_turns, turns_to_messages
from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.tasks.prompts import rate_reply_prompt
from empathy_recipes.tasks.rate_reply import RateReplyTask


def messages_for_rating(
    messages: list[dict[str, str]] | None = None,
    context: str | list[str] | None = None,
    response: str | None = None,
) -> list[dict[str, str]]:
    """The conversation to rate, last assistant turn = the reply: ``messages`` as given, or ``context`` (a list of
    turns or a ``</s>``-joined string, speaker turn last) plus ``response``."""
    if messages:
        return list(messages)
    if context is not None and response is not None:
        return turns_to_messages(split_turns(context), str(response))
    raise EmpathyRecipesError("a row to rate needs 'messages', or 'context' and 'response'")


class DialogueQualityJudge(RateReplyTask):
    """Rates the last listener reply of a conversation for naturalness, coherence and empathy (1-3 each). This class
    is the one place the data-quality judge's axes and range are written (``DialogueQualityJudge.axes_spec()``).

    Input columns: ``messages``, or ``context`` + ``response``; ``emotion`` optional. Output columns:
    ``quality_judge_output`` (form text), ``naturalness``, ``coherence``, ``empathy`` (int or None), their
    ``_weighted`` (expected score) and ``_probs`` (distribution over 1..3), ``model_name``.
    """

    score_axes: list[str] = ["naturalness", "coherence", "empathy"]
    score_low: int = 1
    score_high: int = 3
    raw_output_column: str = "quality_judge_output"
    system_prompt: str = (
        "You are a careful annotator of emotional support conversations. You rate one reply of a listener to a "
        "speaker. You answer with the evaluation form only."
    )
    scales: str = "criteria"
    rubric: dict[str, str] = {
        "naturalness": "does the reply read like something a person would naturally say?\n1 = unnatural; "
        "2 = somewhat odd but understandable; 3 = natural.",
        "coherence": "does the reply continue this conversation?\n1 = ignores the conversation or jumps to another "
        "topic; 2 = refers to it only in a generic way; 3 = on topic and clearly builds on what was said.",
        "empathy": "does the reply show understanding of the speaker's feelings or situation?\n1 = no "
        "acknowledgement of the feelings; 2 = some understanding, could be warmer; 3 = clearly recognises and "
        "responds to the feelings.",
    }
    # Synth-Empathy's data_evaluation.py criteria and anchors (spelling fixed), one call for the three.
    geval_criteria: dict[str, str] = {
        "naturalness": "Is the response naturally written?\n- A score of 1 (bad) means that the response is "
        "unnatural.\n- A score of 2 (ok) means the response is strange, but not entirely unnatural.\n- A score of 3 "
        "(good) means that the response is natural.",
        "coherence": "Does the response serve as a valid continuation of the conversation history?\n- A score of 1 "
        "(no) means that the response drastically changes topic or ignores the conversation history.\n- A score of "
        "2 (somewhat) means the response refers to the conversation history in a limited capacity (e.g., in a "
        "generic way) and shifts the conversation topic.\n- A score of 3 (yes) means the response is on topic and "
        "strongly acknowledges the conversation history.",
        "empathy": "Does the response demonstrate empathy towards the user's feelings or situation?\n- A score of 1 "
        "(bad) means the response lacks empathy and does not acknowledge the user's feelings or situation.\n- A "
        "score of 2 (ok) means the response shows some understanding of the user's feelings or situation but could "
        "be more empathetic.\n- A score of 3 (good) means the response demonstrates a strong sense of empathy "
        "towards the user's feelings or situation and acknowledges them effectively.",
    }
    geval_assign: str = "Assign a score of 1, 2, or 3 for each metric."
    max_turns: int = 8
    max_chars: int = 600

    @property
    def inputs(self) -> dict[str, bool]:
        return {"messages": False, "context": False, "response": False, "emotion": False}

    def conversation(self, input: dict[str, Any]) -> list[dict[str, str]]:
        return messages_for_rating(input.get("messages"), input.get("context"), input.get("response"))


def quality_prompt(
    messages: list[dict[str, str]], emotion: str | None = None, max_turns: int = 8, max_chars: int = 600
) -> list[dict[str, str]]:
    """The judge's chat prompt for one conversation (system + user), with the class's rubric."""
    f = DialogueQualityJudge.model_fields
    return rate_reply_prompt(
        f["system_prompt"].default,
        DialogueQualityJudge.axes_spec(),
        f["rubric"].default,
        messages,
        emotion,
        max_turns,
        max_chars,
        f["scales"].default,
        f["rubric_note"].default,
    )
