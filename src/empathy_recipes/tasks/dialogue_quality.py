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
from empathy_recipes.prob_scoring import ScoreFormTask
from empathy_recipes.tasks.geval_prompts import geval_dialogue_quality
from empathy_recipes.tasks.sensibility_rationality import render_conversation

QUALITY_AXES = ["naturalness", "coherence", "empathy"]
FORM_HEADER = "Evaluation Form (scores ONLY):\n"

SYSTEM_PROMPT = (
    "You are a careful annotator of emotional support conversations. You rate one reply of a listener to a speaker. "
    "You answer with the evaluation form only."
)

USER_TEMPLATE = """Rate the listener's LAST reply in the conversation below on three criteria, each an integer \
from 1 to 3.

Naturalness: does the reply read like something a person would naturally say?
1 = unnatural; 2 = somewhat odd but understandable; 3 = natural.

Coherence: does the reply continue this conversation?
1 = ignores the conversation or jumps to another topic; 2 = refers to it only in a generic way; \
3 = on topic and clearly builds on what was said.

Empathy: does the reply show understanding of the speaker's feelings or situation?
1 = no acknowledgement of the feelings; 2 = some understanding, could be warmer; \
3 = clearly recognises and responds to the feelings.

Conversation{emotion_note}:
{conversation}

Reply to rate:
Listener: {reply}

Answer exactly in this format:
Evaluation Form (scores ONLY):
- Naturalness: <1-3>
- Coherence: <1-3>
- Empathy: <1-3>"""


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


def quality_prompt(
    messages: list[dict[str, str]], emotion: str | None = None, max_turns: int = 8, max_chars: int = 600
) -> list[dict[str, str]]:
    """The judge's chat prompt for one conversation (system + user)."""
    conversation, reply = render_conversation(messages, max_turns, max_chars)
    emotion = str(emotion or "").strip()
    note = f" (the speaker feels {emotion})" if emotion else ""
    user = USER_TEMPLATE.format(emotion_note=note, conversation=conversation, reply=reply or "(empty reply)")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


class DialogueQualityJudge(ScoreFormTask):
    """Rates the last listener reply of a conversation for naturalness, coherence and empathy (1-3 each).

    Input columns: ``messages``, or ``context`` + ``response``; ``emotion`` optional. Output columns:
    ``quality_judge_output`` (form text), ``naturalness``, ``coherence``, ``empathy`` (int or None), their
    ``_weighted`` (expected score) and ``_probs`` (distribution over 1..3), ``model_name``.
    """

    score_axes: list[str] = QUALITY_AXES
    score_low: int = 1
    score_high: int = 3
    form_prefix: str = FORM_HEADER
    raw_output_column: str = "quality_judge_output"
    max_turns: int = 8
    max_chars: int = 600
    prompt: str = "project"  # "geval": Synth-Empathy's criteria, paper-style (empathy_recipes.tasks.geval_prompts)

    @property
    def inputs(self) -> dict[str, bool]:
        return {"messages": False, "context": False, "response": False, "emotion": False}

    def format_input(self, input: dict[str, Any]) -> list[dict[str, str]]:
        messages = messages_for_rating(input.get("messages"), input.get("context"), input.get("response"))
        if self.prompt == "geval":
            return geval_dialogue_quality(messages)
        return quality_prompt(messages, input.get("emotion"), self.max_turns, self.max_chars)
