"""The Efficient-Empathy judge as a distilabel Task: rate a listener reply for sensibility and rationality (0-10).

The paper's judge prompt is not public; only its answers are (``Evaluation Form (scores ONLY):\\n- Rationality: 8
\\n- Sensibility: 5``). This prompt is ours, written to reproduce what the paper's two sets mean:

- *Rationality*: the reply works with the content of the situation in a logical, practical way (relevant
  questions, information, analysis, advice, solutions): the "rational" listener.
- *Sensibility*: the reply attends to the speaker's feelings (recognises and validates the emotion, shows care,
  sympathy or shared joy): the "sensible", emotionally attuned listener.

Design choices, in order of importance:

1. The two scales are declared independent, with anchors at 0, 5 and 10, so a judge does not collapse them into
   one "quality" score (the paper's data shows a bimodal picture: many replies are high on one axis only).
2. Only the listener's last reply is judged; the conversation is context. The speaker's emotion label (one of
   ED's 32) is given when known, since sensibility is judged relative to it.
3. The answer format is the paper's form, in the paper's order (Rationality first), so outputs are comparable
   line by line with the released ``judge_output`` and parse with the same parser.
4. It is short (about 230 tokens plus the conversation) and static first: a 135M model on CPU must read it for every row. Long
   contexts keep the last ``max_turns`` turns and cut each turn at ``max_chars`` characters.

With ``--scoring probs`` the form is written by the LLM itself (see
:class:`empathy_recipes.prob_scoring.TransformersFormScorer`), so every row gets both scores and the
probability-weighted ``rationality_weighted`` / ``sensibility_weighted``.
"""

from __future__ import annotations

from typing import Any

from empathy_recipes.prob_scoring import ScoreFormTask
from empathy_recipes.tasks.geval_prompts import geval_sensibility_rationality

FORM_HEADER = "Evaluation Form (scores ONLY):\n"

SYSTEM_PROMPT = (
    "You are a careful annotator of empathetic conversations. You rate how a listener replied to a speaker who "
    "shared a personal situation. You answer with the evaluation form only."
)

# The rubric comes first and is the same for every row: backends with prefix caching (vLLM, and
# TransformersFormScorer within a batch) encode it once. The row-specific part follows.
USER_TEMPLATE = """Rate the listener's LAST reply in the conversation below on two independent scales, each an \
integer from 0 to 10.

Rationality: does the reply engage with the facts of the situation in a logical, practical way (relevant \
questions, information, analysis, advice or solutions)?
0 = no reasoning or substance at all; 5 = some relevant content; 10 = clear, well-reasoned, helpful substance.

Sensibility: does the reply attend to the speaker's feelings (recognises and validates the emotion, shows care, \
sympathy or shared joy)?
0 = cold or dismissive of the feelings; 5 = polite but generic; 10 = warm and closely attuned to the feelings.

The scales are independent: a reply can be high on both, low on both, or high on one only. Judge only the \
reply, not the speaker.

Conversation{emotion_note}:
{conversation}

Reply to rate:
Listener: {reply}

Answer exactly in this format:
Evaluation Form (scores ONLY):
- Rationality: <0-10>
- Sensibility: <0-10>"""


def render_conversation(messages: list[dict[str, str]], max_turns: int = 6, max_chars: int = 600) -> tuple[str, str]:
    """``(context lines, reply)`` from common-schema messages: the last assistant turn is the reply to rate;
    earlier turns become ``Speaker:`` / ``Listener:`` lines (the last ``max_turns``, each cut at ``max_chars``)."""

    def cut(text: str) -> str:
        text = " ".join(str(text).split())
        return text if len(text) <= max_chars else text[: max_chars - 3] + "..."

    msgs = [m for m in messages or [] if isinstance(m, dict)]
    reply = ""
    if msgs and msgs[-1].get("role") == "assistant":
        reply = cut(msgs[-1].get("content", ""))
        msgs = msgs[:-1]
    msgs = msgs[-max_turns:]
    lines = [f"{'Speaker' if m.get('role') == 'user' else 'Listener'}: {cut(m.get('content', ''))}" for m in msgs]
    return "\n".join(lines) or "(no earlier turns)", reply


class SensibilityRationalityJudge(ScoreFormTask):
    """Scores the listener's reply (the last ``assistant`` message of ``messages``) for rationality and
    sensibility, integers 0-10, with the prompt documented in this module.

    Input columns: ``messages`` (required), ``emotion`` (optional). Output columns: ``judge_output`` (the form
    text), ``rationality``, ``sensibility`` (int or None), ``rationality_weighted``, ``sensibility_weighted``
    (expected scores when token probabilities are available), ``rationality_probs``, ``sensibility_probs``,
    ``model_name``.
    """

    score_axes: list[str] = ["rationality", "sensibility"]
    score_low: int = 0
    score_high: int = 10
    form_prefix: str = FORM_HEADER
    raw_output_column: str = "judge_output"
    max_turns: int = 6
    max_chars: int = 600
    prompt: str = "project"  # "geval": the paper-style prompt (empathy_recipes.tasks.geval_prompts)

    @property
    def inputs(self) -> dict[str, bool]:
        return {"messages": True, "emotion": False}

    def format_input(self, input: dict[str, Any]) -> list[dict[str, str]]:
        if self.prompt == "geval":
            return geval_sensibility_rationality(input.get("messages") or [])
        conversation, reply = render_conversation(input.get("messages") or [], self.max_turns, self.max_chars)
        emotion = str(input.get("emotion") or "").strip()
        note = f" (the speaker feels {emotion})" if emotion else ""
        user = USER_TEMPLATE.format(emotion_note=note, conversation=conversation, reply=reply or "(empty reply)")
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
