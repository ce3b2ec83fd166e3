"""The ``paper`` profile: every stage's settings as the papers' released code has them, chosen by one switch.

``--profile paper`` on a stage script (``make <target> PROFILE=paper``; for SFT also ``profile: paper`` in a recipe)
replaces the project's defaults by the values below, item by item; anything given explicitly on the command line
still wins. ``--profile project`` (the default) keeps the project's own defaults. docs/fidelity.md has the table:
stage, the paper's file, the project's default, the paper profile, and the measured effect.

Sources: ``Aurora-slz/Efficient-Empathy`` (EE) and ``Aurora-slz/Synth-Empathy`` (SE) on GitHub.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from empathy_recipes.errors import EmpathyRecipesError

PROFILES: tuple[str, ...] = ("project", "paper")
PAPER_SYSTEM_PROMPT = "You are a helpful assistant."

# SE quality_data_score.py: the discriminator answers one user message holding the flattened transcript, after the
# system prompt, sampled with vLLM SamplingParams(temperature=0.8, top_p=0.9, max_tokens=128); gte-Qwen2 embeds
# both texts with prompt_name="query" (SentenceTransformer(..., trust_remote_code=True)).
PAPER_QUALITY_SELECT: dict[str, Any] = {
    "max_new_tokens": 128,
    "do_sample": True,
    "temperature": 0.8,
    "top_p": 0.9,
    "system_prompt": PAPER_SYSTEM_PROMPT,
    "prompt_format": "transcript",
    "embedder_prompt_name": "query",
}
# EE empathy/test_response_llama3.py: greedy generate(max_new_tokens=512), no system prompt, the chat messages;
# empathy/response_eval.py reads back only the line starting "Greedy:", i.e. the first line of each reply.
PAPER_GENERATE: dict[str, Any] = {"max_new_tokens": 512, "do_sample": False, "first_line": True}
# SE data_evaluation.py: G-Eval style forms ("You will be given a conversation ... Evaluation Form (scores ONLY)").
PAPER_JUDGE: dict[str, Any] = {"prompt": "geval"}


def add_profile_arg(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--profile {project,paper}`` (default project), with one help text everywhere."""
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default="project",
        help="paper: the papers' code's settings for this stage (docs/fidelity.md); explicit flags still win",
    )
    return parser


JUDGE_PROMPTS = ("project", "geval")


def add_judge_prompt_arg(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--prompt``: the judge prompt, ours (default) or geval (paper-style, Synth-Empathy ``data_evaluation.py``)."""
    parser.add_argument(
        "--prompt",
        choices=JUDGE_PROMPTS,
        default="project",
        help="the judge prompt: ours, or geval (paper-style, Synth-Empathy data_evaluation.py)",
    )
    return parser


def apply_profile(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    values: Mapping[str, Any],
    argv: Sequence[str] | None = None,
) -> argparse.Namespace:
    """With ``args.profile == "paper"``: set each of ``values`` on ``args`` unless its flag was given in ``argv``.

    Only keys that are ``parser`` destinations are set (a typo in ``values`` is a programming error and raises).
    """
    if getattr(args, "profile", "project") != "paper":
        return args
    import sys

    given = set(_given_dests(parser, list(sys.argv[1:] if argv is None else argv)))
    dests = {a.dest for a in parser._actions}
    for key, value in values.items():
        if key not in dests:
            raise KeyError(f"profile key {key!r} is not an argument of this parser")
        if key not in given:
            setattr(args, key, value)
    return args


def _given_dests(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    by_flag = {flag: a.dest for a in parser._actions for flag in a.option_strings}
    return [by_flag[tok.split("=", 1)[0]] for tok in argv if tok.split("=", 1)[0] in by_flag]


def transcript(messages: Sequence[Mapping[str, str]], end_with_listener: bool = True) -> str:
    """The papers' flattened conversation: one ``Speaker: ...`` / ``Listener: ...`` line per turn (user turns are
    the speaker's, assistant turns the listener's), each ending in a newline, then ``Listener: `` (EE
    ``data/split_sensible_rational.py`` ``get_llama3_data``, SE ``sample_turn.py``)."""
    lines = []
    for m in messages:
        role = m.get("role")
        if role == "system":
            continue
        if role not in ("user", "assistant"):
            raise EmpathyRecipesError(
                f"cannot flatten a message with role {role!r} into a Speaker/Listener transcript"
            )
        lines.append(f"{'Speaker' if role == 'user' else 'Listener'}: {m.get('content', '')}\n")
    return "".join(lines) + ("Listener: " if end_with_listener else "")


def transcript_conversation(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """The context ``messages`` as the papers feed them to Llama-3: one user message holding the transcript."""
    return [{"role": "user", "content": transcript(messages)}]


def first_line(text: str | None) -> str:
    """The first line of a reply, as EE's ``response_eval.py`` reads it back (``"Greedy:" + reply`` lines)."""
    return (text or "").strip().split("\n", 1)[0].strip()
