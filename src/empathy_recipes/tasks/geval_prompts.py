"""Paper-style (G-Eval) judge prompts, offered next to the project's own (``--prompt geval``, or ``--profile paper``).

Efficient-Empathy's sensibility/rationality prompt is not public; its released answers are G-Eval forms
(``Evaluation Form (scores ONLY):\\n- Rationality: 8\\n- Sensibility: 5``). The authors' sibling repository,
Synth-Empathy, judges with G-Eval prompts (``data_evaluation.py``): a system message "You are a helpful assistant.",
then a user message with the task, the criterion with its anchors and the evaluation steps, then a second user message
with ``Conversation History:`` (the ``Speaker:``/``Listener:`` transcript), ``Response:`` and ``Evaluation Form
(scores ONLY):``. The prompts here follow that layout and wording:

- :func:`geval_sensibility_rationality`: both of Efficient-Empathy's axes (0-10) in one form, in the released
  answers' order (Rationality, then Sensibility); the criteria wording is ours (the paper's is unpublished).
- :func:`geval_dialogue_quality`: Synth-Empathy's three criteria (1-3) with its anchors, in one form. The paper asks
  three times, one criterion per call; one call here reads the conversation once for all three (spelling fixed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from empathy_recipes.profiles import PAPER_SYSTEM_PROMPT, transcript

_INTRO = (
    "You will be given a conversation between two individuals. You will then be given one potential response for "
    "the next turn in the conversation. \nYour task is to rate the responses on {what}. \nPlease make sure you read "
    "and understand these instructions carefully. Please keep this document open while reviewing, and refer to it as "
    "needed.\n\n"
)

SR_CRITERIA = """Evaluation Criteria:
Rationality (0-10) Does the response engage with the facts of the situation in a logical, practical way (relevant \
questions, information, analysis, advice or solutions)?
- A score of 0 means the response has no reasoning or substance.
- A score of 5 means the response has some relevant content.
- A score of 10 means the response gives clear, well-reasoned, helpful substance.
Sensibility (0-10) Does the response attend to the speaker's feelings (recognise and validate the emotion, show \
care, sympathy or shared joy)?
- A score of 0 means the response is cold or dismissive of the feelings.
- A score of 5 means the response is polite but generic.
- A score of 10 means the response is warm and closely attuned to the feelings.

Evaluation Steps:
1. Read the conversation history.
2. Read the potential response.
3. Evaluate the rationality and the sensibility of the response based on the conversation history, using the \
provided criteria. The two metrics are independent.
4. Assign a score from 0 to 10 for each metric."""

QUALITY_CRITERIA = """Evaluation Criteria:
Naturalness (1-3) Is the response naturally written?
- A score of 1 (bad) means that the response is unnatural.
- A score of 2 (ok) means the response is strange, but not entirely unnatural.
- A score of 3 (good) means that the response is natural.
Coherence (1-3) Does the response serve as a valid continuation of the conversation history?
- A score of 1 (no) means that the response drastically changes topic or ignores the conversation history.
- A score of 2 (somewhat) means the response refers to the conversation history in a limited capacity (e.g., in a \
generic way) and shifts the conversation topic.
- A score of 3 (yes) means the response is on topic and strongly acknowledges the conversation history.
Empathy (1-3) Does the response demonstrate empathy towards the user's feelings or situation?
- A score of 1 (bad) means the response lacks empathy and does not acknowledge the user's feelings or situation.
- A score of 2 (ok) means the response shows some understanding of the user's feelings or situation but could be \
more empathetic.
- A score of 3 (good) means the response demonstrates a strong sense of empathy towards the user's feelings or \
situation and acknowledges them effectively.

Evaluation Steps:
1. Read the conversation history.
2. Read the potential response.
3. Evaluate the naturalness, the coherence and the empathy of the response based on the conversation history, \
using the provided criteria.
4. Assign a score of 1, 2, or 3 for each metric."""


def _geval(
    messages: Sequence[Mapping[str, str]], what: str, criteria: str, axes: Sequence[str]
) -> list[dict[str, str]]:
    msgs = [m for m in messages if m.get("role") != "system"]
    if msgs and msgs[-1].get("role") == "assistant":
        reply, context = msgs[-1].get("content", ""), msgs[:-1]
    else:
        reply, context = "", msgs
    form = "".join(f"\n- {axis.capitalize()}:" for axis in axes)
    task = {"role": "user", "content": _INTRO.format(what=what) + criteria}
    row = {
        "role": "user",
        "content": f"Conversation History:\n{transcript(context)}\n\nResponse:\n{reply}\n\n"
        f"Evaluation Form (scores ONLY):{form}",
    }
    return [{"role": "system", "content": PAPER_SYSTEM_PROMPT}, task, row]


def geval_sensibility_rationality(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """The paper-style chat prompt for one conversation whose last assistant turn is the reply to rate."""
    return _geval(messages, "two metrics", SR_CRITERIA, ("rationality", "sensibility"))


def geval_dialogue_quality(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """Synth-Empathy's criteria for naturalness, coherence and empathy (1-3), as one paper-style form."""
    return _geval(messages, "three metrics", QUALITY_CRITERIA, ("naturalness", "coherence", "empathy"))
