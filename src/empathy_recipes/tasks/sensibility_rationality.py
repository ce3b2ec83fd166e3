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

from empathy_recipes.tasks.rate_reply import RateReplyTask


class SensibilityRationalityJudge(RateReplyTask):
    """Scores the listener's reply (the last ``assistant`` message of ``messages``) for rationality and
    sensibility, integers 0-10, with the prompt documented in this module. This class is the one place the
    Efficient-Empathy judge's axes and range are written (``SensibilityRationalityJudge.axes_spec()``).

    Input columns: ``messages`` (required), ``emotion`` (optional). Output columns: ``judge_output`` (the form
    text), ``rationality``, ``sensibility`` (int or None), ``rationality_weighted``, ``sensibility_weighted``
    (expected scores when token probabilities are available), ``rationality_probs``, ``sensibility_probs``,
    ``model_name``.
    """

    score_axes: list[str] = ["rationality", "sensibility"]
    score_low: int = 0
    score_high: int = 10
    raw_output_column: str = "judge_output"
    system_prompt: str = (
        "You are a careful annotator of empathetic conversations. You rate how a listener replied to a speaker who "
        "shared a personal situation. You answer with the evaluation form only."
    )
    # The rubric comes first and is the same for every row: backends with prefix caching (vLLM, and
    # TransformersFormScorer within a batch) encode it once. The row-specific part follows.
    scales: str = "independent scales"
    rubric: dict[str, str] = {
        "rationality": "does the reply engage with the facts of the situation in a logical, practical way (relevant "
        "questions, information, analysis, advice or solutions)?\n0 = no reasoning or substance at all; 5 = some "
        "relevant content; 10 = clear, well-reasoned, helpful substance.",
        "sensibility": "does the reply attend to the speaker's feelings (recognises and validates the emotion, shows "
        "care, sympathy or shared joy)?\n0 = cold or dismissive of the feelings; 5 = polite but generic; 10 = warm "
        "and closely attuned to the feelings.",
    }
    rubric_note: str = (
        "The scales are independent: a reply can be high on both, low on both, or high on one only. Judge only the "
        "reply, not the speaker."
    )
    geval_criteria: dict[str, str] = {
        "rationality": "Does the response engage with the facts of the situation in a logical, practical way "
        "(relevant questions, information, analysis, advice or solutions)?\n- A score of 0 means the response has no "
        "reasoning or substance.\n- A score of 5 means the response has some relevant content.\n- A score of 10 "
        "means the response gives clear, well-reasoned, helpful substance.",
        "sensibility": "Does the response attend to the speaker's feelings (recognise and validate the emotion, show "
        "care, sympathy or shared joy)?\n- A score of 0 means the response is cold or dismissive of the feelings.\n"
        "- A score of 5 means the response is polite but generic.\n- A score of 10 means the response is warm and "
        "closely attuned to the feelings.",
    }
    geval_assign: str = "Assign a score from 0 to 10 for each metric."
    geval_steps_note: str = " The two metrics are independent."
    max_turns: int = 6
    max_chars: int = 600

    @property
    def inputs(self) -> dict[str, bool]:
        return {"messages": True, "emotion": False}
