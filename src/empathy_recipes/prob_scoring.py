"""Probability-weighted ("G-Eval") integer scores for LLM judges, and the judge Task base.

A judge that must write ``- Axis: <integer>`` lines for some axes (sensibility/rationality 0-10, naturalness/
coherence/empathy 1-3, ...) is described by a :class:`ScoreAxes`. Rather than trusting free text, the score can be
read from the next-token probabilities at the place where the integer goes:

- the pure math is :func:`score_distribution` (token -> probability map at the score position, plus the
  distribution after a leading ``1`` so a two-token ``10`` is counted right) with :func:`expected_score` and
  :func:`argmax_score`; :func:`locate_score_distributions` does the same from the per-position ``top_logprobs``
  that vLLM / OpenAI-compatible servers return for a freely generated text;
- ``--scoring probs`` with ``transformers`` uses :class:`TransformersFormScorer`: the LLM itself writes the form,
  one ``- Axis:`` line at a time, and puts the most likely integer after each colon (so 100% of rows get
  valid scores, even from a 135M model); the whole distribution is kept for the weighted score. With ``vllm``,
  :class:`VLLMFormScorer` does the same with one-token generations and ``logprobs``. With ``openai`` the judge
  writes freely with ``logprobs``/``top_logprobs`` and the probabilities are read at the score tokens it wrote;
- ``--scoring generate`` is plain generation (what the papers did with a strong judge), parsed as text.

Any judge Task reuses all of it by subclassing :class:`ScoreFormTask` and writing only its prompt
(``format_input``)::

    class MyJudge(ScoreFormTask):
        score_axes: list[str] = ["naturalness", "coherence", "empathy"]
        score_low: int = 1
        score_high: int = 3
        raw_output_column: str = "quality_judge_output"
        def format_input(self, input): return [{"role": "user", "content": ...}]

    judge = judge_step(MyJudge, args)  # inside a pipeline: the scoring LLM for MyJudge.axes_spec(), batch, resources

(The project's reply judges subclass :class:`empathy_recipes.tasks.rate_reply.RateReplyTask`, which writes the
prompt from the Task's per-axis rubric and a template.) The Task's fields are the one source of its axes: the
parser, the split and the summaries of :mod:`empathy_recipes.judge_scores` take ``MyJudge.axes_spec()``.

It outputs the raw text (``raw_output_column``), one integer column per axis (``None`` when unreadable),
``<axis>_weighted`` (expected score, float; NaN without probabilities) and ``<axis>_probs`` (the distribution
over ``low..high``; NaNs without probabilities).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from distilabel.steps.tasks import Task
from pydantic import PrivateAttr

from empathy_recipes.backends import ChatVLLM, PlacementSafeTransformersLLM
from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.judge_scores import ScoreAxes, parse_judge_text
from empathy_recipes.llm import (
    add_llm_args,
    build_llm,
    llm_step_resources,
    prompt_token_ids,
    transformers_llm_kwargs,
    validate_llm_args,
    vllm_llm_kwargs,
)

SCORING_MODES = ("probs", "generate")
TOP_LOGPROBS = 20


def form_of(obj: Any) -> ScoreAxes:
    """The :class:`ScoreAxes` of a scorer LLM or judge Task (their ``score_axes``, ``score_low``, ``score_high``,
    ``line_template`` and ``form_prefix`` fields)."""
    return ScoreAxes(tuple(obj.score_axes), obj.score_low, obj.score_high, obj.line_template, obj.form_prefix)


def build_scoring_llm(args: argparse.Namespace, axes: ScoreAxes, scoring: str = "probs"):
    """The LLM for a :class:`ScoreFormTask` judge.

    ``scoring="probs"``: transformers -> :class:`TransformersFormScorer`, vllm -> :class:`VLLMFormScorer` (both
    write the form themselves and read each integer from the next-token distribution); openai -> free greedy
    generation with ``logprobs``/``top_logprobs`` (read back by :class:`ScoreFormTask`).
    ``scoring="generate"``: greedy generation, parsed as text; with transformers and vllm the decoder is held to
    the form (:func:`empathy_recipes.structured.score_form_regex`), so the form always parses.
    """
    if scoring not in SCORING_MODES:
        raise EmpathyRecipesError(f"--scoring must be one of {', '.join(SCORING_MODES)}, not {scoring!r}")
    validate_llm_args(args)
    axis_fields = {"score_axes": list(axes.names), "score_low": axes.low, "score_high": axes.high}
    form_fields = {**axis_fields, "line_template": axes.line_template, "form_prefix": axes.form_prefix}
    if scoring == "probs" and args.backend == "transformers":
        return TransformersFormScorer(**transformers_llm_kwargs(args), **form_fields)
    if scoring == "probs" and args.backend == "vllm":
        return VLLMFormScorer(**vllm_llm_kwargs(args), **form_fields)
    overrides: dict[str, Any] = {"temperature": 0.0}
    if scoring == "generate" and args.backend in ("transformers", "vllm"):
        from empathy_recipes.structured import build_structured_llm, score_form_regex

        regex = score_form_regex(axes.names, axes.low, axes.high, axes.line_template, axes.form_prefix)
        return build_structured_llm(args, regex=regex, **overrides, repetition_penalty=1.0)
    if scoring == "probs":  # openai
        overrides.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
    return build_llm(args, **overrides)


# ---------------------------------------------------------------------------------------------------------------
# Pure math: token probabilities -> integer score distribution
# ---------------------------------------------------------------------------------------------------------------
def probs_from_logprobs(candidates: Sequence[Mapping[str, Any]] | None) -> dict[str, float]:
    """``[{"token": " 8", "logprob": -0.1}, ...]`` (distilabel's Logprob list) -> ``{" 8": 0.905, ...}``."""
    out: dict[str, float] = {}
    for c in candidates or ():
        tok, lp = c.get("token"), c.get("logprob")
        if isinstance(tok, str) and isinstance(lp, (int, float)) and not math.isnan(lp):
            out[tok] = out.get(tok, 0.0) + math.exp(lp)
    return out


def _digit_probs(token_probs: Mapping[str, float] | None, strip: bool = True) -> dict[str, float]:
    """Merge the probability of tokens that are digit strings once whitespace is stripped (``" 8"`` + ``"8"``)."""
    merged: dict[str, float] = {}
    for tok, p in (token_probs or {}).items():
        key = tok.strip() if strip else tok
        if key.isascii() and key.isdigit() and p > 0:
            merged[key] = merged.get(key, 0.0) + float(p)
    return merged


def score_distribution(
    token_probs: Mapping[str, float],
    low: int,
    high: int,
    continuations: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[int, float]:
    """The probability of each integer score ``low..high`` at a score position, normalised to sum to 1.

    ``token_probs`` maps tokens to their probabilities at the position where the score starts (whitespace around a
    token is ignored; non-digit tokens are ignored; ``{"8": .6, " 8": .1}`` counts .7 for 8). A token that is a
    whole number (``"7"``, or ``"10"`` in tokenizers with multi-digit tokens) counts for that number.

    Two-token numbers: ``continuations[d]`` is the distribution of the NEXT token after the digit token ``d``
    (e.g. after ``"1"``). Then P(1d') = P(d) * P(d' | d) for every digit d' glued to it, and P(d) keeps only the
    mass that does not continue with a digit (so ``"11"`` out of range is not counted as 1). Without a
    continuation for ``"1"``, all of P("1") goes to the score 1 (scores of 10 are then never seen).
    Numbers outside ``low..high`` are dropped. Returns ``{}`` when no probability lands in range.
    """
    firsts = _digit_probs(token_probs)
    scores: dict[int, float] = {}
    for tok, p in firsts.items():
        cont = None if continuations is None else continuations.get(tok)
        if cont is not None and len(tok) == 1:
            glued = _digit_probs(cont, strip=False)  # " 0" after "1" starts a new number: not glued
            for nxt, q in glued.items():
                value = int(tok + nxt)
                if low <= value <= high:
                    scores[value] = scores.get(value, 0.0) + p * q
            p *= max(0.0, 1.0 - sum(glued.values()))
        value = int(tok)
        if low <= value <= high and p > 0:
            scores[value] = scores.get(value, 0.0) + p
    total = sum(scores.values())
    if total <= 0:
        return {}
    return {v: scores.get(v, 0.0) / total for v in range(low, high + 1)}


def expected_score(distribution: Mapping[int, float]) -> float | None:
    """The probability-weighted score (G-Eval): sum of score * probability; ``None`` for an empty distribution."""
    total = sum(distribution.values())
    if not distribution or total <= 0:
        return None
    return sum(v * p for v, p in distribution.items()) / total


def argmax_score(distribution: Mapping[int, float]) -> int | None:
    """The most likely score (the lowest one on a tie); ``None`` for an empty distribution."""
    if not distribution or max(distribution.values()) <= 0:
        return None
    return min(distribution, key=lambda v: (-distribution[v], v))


def locate_score_distributions(
    text: str,
    position_candidates: Sequence[Sequence[Mapping[str, Any]] | None],
    axes: ScoreAxes,
) -> dict[str, dict[int, float]]:
    """Score distributions read from a freely generated ``text`` and its per-position ``top_logprobs``.

    ``position_candidates[i]`` is the list of ``{"token", "logprob"}`` alternatives at generated position ``i``
    (what distilabel's vLLM and OpenAILLM return). The sampled token is not marked there, so the text is
    re-aligned: at each position the candidate that matches the text at the current offset is taken (the most
    likely one when several match). For each axis, the position whose token holds the first digit written after
    ``<Axis>:`` gives the distribution (and the next position the continuation after a ``1``). An axis that cannot
    be aligned is left out; the text parse still holds.
    """
    spans: list[tuple[int, int, str]] = []  # (start, end, token) per aligned position
    offset = 0
    for cands in position_candidates:
        best = None
        for c in cands or ():
            tok = c.get("token")
            if isinstance(tok, str) and tok and text.startswith(tok, offset):
                if best is None or c.get("logprob", -math.inf) > best.get("logprob", -math.inf):
                    best = c
        if best is None:
            break
        spans.append((offset, offset + len(best["token"]), best["token"]))
        offset += len(best["token"])
    out: dict[str, dict[int, float]] = {}
    for axis in axes.names:
        m = re.search(rf"(?i)\b{re.escape(axis)}\b[^0-9\n]{{0,20}}?(\d)", text)
        if not m:
            continue
        digit_at = m.start(1)
        idx = next((i for i, (s, e, _) in enumerate(spans) if s <= digit_at < e), None)
        if idx is None:
            continue
        first = probs_from_logprobs(position_candidates[idx])
        tok = spans[idx][2].strip()
        continuations = None
        if tok == "1" and idx + 1 < len(spans):
            continuations = {"1": probs_from_logprobs(position_candidates[idx + 1])}
        dist = score_distribution(first, axes.low, axes.high, continuations)
        if dist:
            out[axis] = dist
    return out


# ---------------------------------------------------------------------------------------------------------------
# LLMs that write the score form themselves and read each integer from the next-token distribution
# ---------------------------------------------------------------------------------------------------------------
def space_is_separate_token(tokenizer: Any) -> bool:
    """True when the tokenizer writes ``" 8"`` as a space token then ``"8"`` (SmolLM2, Llama-3): the score
    prompt must then end with the space, or the next token is the space rather than the digit."""
    ids = tokenizer.encode(" 8", add_special_tokens=False)
    return len(ids) > 1


def _form_outputs(axes: ScoreAxes, dists: list[dict[str, dict[int, float]]], num_generations: int) -> list[dict]:
    results = []
    for per_axis in dists:
        chosen = {a: argmax_score(per_axis.get(a, {})) for a in axes.names}
        text = axes.render({a: ("" if v is None else v) for a, v in chosen.items()})
        results.append(
            {
                "generations": [text] * num_generations,
                "statistics": {"input_tokens": [0] * num_generations, "output_tokens": [0] * num_generations},
                "score_distributions": [per_axis] * num_generations,
            }
        )
    return results


class TransformersFormScorer(PlacementSafeTransformersLLM):
    """A TransformersLLM that answers a score form by probabilities (works on CPU with SmolLM2).

    For each row: the chat prompt, then for each axis ``- <Axis>:`` is appended and one forward pass gives the
    next-token distribution over the integer tokens; when the range reaches 10+, one more token (``1``) is fed to
    get the continuation for two-digit numbers. The most likely integer is written after the colon and the next
    axis follows, reusing the KV cache (rows are run one at a time: no padding, the prompt is encoded once). The
    generated text is the form (``- Rationality: 8\\n- Sensibility: 5``); the distributions travel as the extra
    output ``score_distributions`` that :class:`ScoreFormTask` turns into weighted scores.
    """

    score_axes: list[str]
    score_low: int = 0
    score_high: int = 10
    line_template: str = "- {Axis}:"
    form_prefix: str = ""

    _candidates: dict[str, int] = PrivateAttr(default_factory=dict)
    _space_in_prompt: bool = PrivateAttr(default=False)

    def load(self) -> None:
        super().load()
        tok = self._pipeline.tokenizer
        cands: dict[str, int] = {}
        for s in {str(n) for n in range(self.score_low, self.score_high + 1)} | {str(d) for d in range(10)}:
            for variant in (s, " " + s):
                ids = tok.encode(variant, add_special_tokens=False)
                if len(ids) == 1:
                    cands[variant] = ids[0]
        if not any(t.strip().isdigit() for t in cands):
            raise EmpathyRecipesError(f"{self.model}: the tokenizer has no single-token digits to score with")
        self._candidates = cands
        self._space_in_prompt = space_is_separate_token(tok)

    @property
    def axes(self) -> ScoreAxes:
        return form_of(self)

    def _probs(self, logits) -> dict[str, float]:
        import torch

        probs = torch.softmax(logits.float(), dim=-1)
        return {t: float(probs[i]) for t, i in self._candidates.items()}

    def generate(self, inputs, num_generations: int = 1) -> list[dict]:  # type: ignore[override]
        import torch

        model, tok = self._pipeline.model, self._pipeline.tokenizer
        axes = self.axes
        space = " " if self._space_in_prompt else ""
        one_id = self._candidates.get("1" if space else " 1") if axes.high >= 10 else None

        def forward(ids: list[int], cache):
            t = torch.tensor([ids], device=model.device)
            return model(input_ids=t, past_key_values=cache, use_cache=True, logits_to_keep=1)

        first_ids = [
            tok.encode(
                self.prepare_input(chat) + axes.form_prefix + axes.line(axes.names[0]) + space,
                add_special_tokens=False,
            )
            for chat in inputs
        ]
        all_dists = []
        with torch.inference_mode():
            # Prefix caching: the prompt part shared by the whole batch (system prompt, rubric) is encoded once.
            shared = common_prefix_length(first_ids)
            cache = forward(first_ids[0][:shared], None).past_key_values if shared >= 8 else None
            shared = shared if cache is not None else 0
            for ids in first_ids:
                dists: dict[str, dict[int, float]] = {}
                todo, pending = ids[shared:], ""
                for k, axis in enumerate(axes.names):
                    if k:
                        todo = tok.encode(f"{pending}\n{axes.line(axis)}{space}", add_special_tokens=False)
                    out = forward(todo, cache)
                    cache = out.past_key_values
                    first = self._probs(out.logits[0, -1])
                    continuations = None
                    if one_id is not None:
                        probe = forward([one_id], cache)
                        continuations = {"1": self._probs(probe.logits[0, -1])}
                        cache.crop(-1)  # drop the probe token (negative = number of tokens to remove)
                    dists[axis] = score_distribution(first, axes.low, axes.high, continuations)
                    best = argmax_score(dists[axis])
                    pending = f"{'' if space else ' '}{'' if best is None else best}"
                all_dists.append(dists)
                extra = cache.get_seq_length() - shared if cache is not None else 0
                if shared and extra > 0:
                    cache.crop(-extra)  # back to the shared prefix for the next row
                elif not shared:
                    cache = None
        return _form_outputs(axes, all_dists, num_generations)


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of token-id lists, kept below the shortest (each keeps >= 1 token)."""
    if not sequences:
        return 0
    shortest = min(len(s) for s in sequences)
    n = 0
    first = sequences[0]
    while n < shortest - 1 and all(s[n] == first[n] for s in sequences):
        n += 1
    return n


class VLLMFormScorer(ChatVLLM):
    """The vLLM twin of :class:`TransformersFormScorer` (GPU): per axis, one-token generations with ``logprobs``.

    Prompts grow by one form line per axis (vLLM's prefix caching makes the repeated prompt cheap); for ranges
    reaching 10+, a second one-token call after ``1`` gives the continuation for two-digit numbers.
    """

    score_axes: list[str]
    score_low: int = 0
    score_high: int = 10
    line_template: str = "- {Axis}:"
    form_prefix: str = ""

    @property
    def axes(self) -> ScoreAxes:
        return form_of(self)

    def _next_token_probs(self, prompts: list[str]) -> list[dict[str, float]]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=TOP_LOGPROBS)
        token_prompts = [{"prompt_token_ids": ids} for ids in prompt_token_ids(self._tokenizer, prompts)]
        outputs = self._model.generate(prompts=token_prompts, sampling_params=params, use_tqdm=False)
        result = []
        for o in outputs:
            step = o.outputs[0].logprobs[0] if o.outputs and o.outputs[0].logprobs else {}
            result.append({lp.decoded_token: math.exp(lp.logprob) for lp in step.values() if lp.decoded_token})
        return result

    def generate(self, inputs, num_generations: int = 1) -> list[dict]:  # type: ignore[override]
        axes = self.axes
        space = " " if space_is_separate_token(self._tokenizer) else ""
        texts = [self.prompt_text(chat) + axes.form_prefix for chat in inputs]
        all_dists: list[dict[str, dict[int, float]]] = [{} for _ in inputs]
        for axis in axes.names:
            prompts = [t + axes.line(axis) + space for t in texts]
            firsts = self._next_token_probs(prompts)
            probe = "1" if space else " 1"
            after_one = self._next_token_probs([p + probe for p in prompts]) if axes.high >= 10 else None
            for i, first in enumerate(firsts):
                cont = {"1": after_one[i]} if after_one is not None else None
                all_dists[i][axis] = score_distribution(first, axes.low, axes.high, cont)
                best = argmax_score(all_dists[i][axis])
                texts[i] = prompts[i] + f"{'' if space else ' '}{'' if best is None else best}\n"
        return _form_outputs(axes, all_dists, num_generations)


# ---------------------------------------------------------------------------------------------------------------
# The reusable judge Task base
# ---------------------------------------------------------------------------------------------------------------
class ScoreFormTask(Task):
    """Base for judge Tasks whose answer is a form of ``- <Axis>: <integer>`` lines. Subclasses set the axes,
    the range, the raw text column, and write ``format_input`` (the prompt).

    Outputs: ``<raw_output_column>`` (the judge's text), ``<axis>`` (int or None), ``<axis>_weighted`` (float: the
    expected score when token probabilities exist, else NaN) and ``<axis>_probs`` (list over low..high, NaNs
    without probabilities; NaN rather than None keeps one Arrow type across distilabel's cached batches).
    A row's integer scores are all ``None`` unless every axis parses in range (the row is then "unscored" for
    ``empathy_recipes.judge_scores``); the weighted scores are reported for whatever axes have probabilities.
    Probabilities come from :class:`TransformersFormScorer` / :class:`VLLMFormScorer` (``score_distributions``)
    or from an LLM called with ``logprobs`` (``logprobs``, aligned by :func:`locate_score_distributions`).
    """

    score_axes: list[str]
    score_low: int = 0
    score_high: int = 10
    line_template: str = "- {Axis}:"
    form_prefix: str = ""
    raw_output_column: str = "judge_output"

    @classmethod
    def axes_spec(cls) -> ScoreAxes:
        """The :class:`ScoreAxes` of this Task class (its field defaults), for :func:`build_scoring_llm`."""
        f = cls.model_fields
        return ScoreAxes(
            tuple(f["score_axes"].default),
            f["score_low"].default,
            f["score_high"].default,
            f["line_template"].default,
            f["form_prefix"].default,
        )

    @property
    def axes(self) -> ScoreAxes:
        return form_of(self)

    @property
    def outputs(self) -> list[str]:
        cols = [self.raw_output_column, *self.score_axes]
        cols += [f"{a}_weighted" for a in self.score_axes] + [f"{a}_probs" for a in self.score_axes]
        return [*cols, "model_name"]

    def format_output(self, output: str | None, input: dict[str, Any] | None = None) -> dict[str, Any]:
        parsed = parse_judge_text(output, self.score_axes, self.score_low, self.score_high)
        row: dict[str, Any] = {self.raw_output_column: output}
        for a in self.score_axes:
            row[a] = parsed[a]
            row[f"{a}_weighted"] = math.nan
            row[f"{a}_probs"] = [math.nan] * (self.score_high - self.score_low + 1)
        return row

    def _format_outputs(self, outputs, input=None):  # type: ignore[override]
        outputs = dict(outputs)
        dists = outputs.pop("score_distributions", None)
        logprobs = outputs.pop("logprobs", None)
        generations = outputs.get("generations") or []
        if dists is None and logprobs is not None:
            dists = [
                locate_score_distributions(text or "", lp or [], self.axes) for text, lp in zip(generations, logprobs)
            ]
        formatted = super()._format_outputs(outputs, input)
        if dists is None:
            return formatted
        for row, per_axis in zip(formatted, dists):
            for a in self.score_axes:
                dist = (per_axis or {}).get(a) or {}
                if dist:
                    row[f"{a}_weighted"] = expected_score(dist)
                    row[f"{a}_probs"] = [dist[v] for v in range(self.score_low, self.score_high + 1)]
        return formatted


def add_judge_args(
    parser: argparse.ArgumentParser, max_new_tokens: int = 64, prompt: bool = True
) -> argparse.ArgumentParser:
    """A judge stage's flags: ``--scoring``, the LLM flags (greedy, ``max_new_tokens``), with ``prompt`` the
    ``--prompt`` / ``--profile`` pair, and ``--verbose`` / ``--quiet``."""
    from empathy_recipes.logs import add_log_args
    from empathy_recipes.profiles import add_judge_prompt_arg, add_profile_arg

    parser.add_argument("--scoring", choices=SCORING_MODES, default="probs", help="probs (G-Eval) or generate")
    add_llm_args(parser)
    parser.set_defaults(temperature=0.0, max_new_tokens=max_new_tokens)
    if prompt:
        add_judge_prompt_arg(parser)
        add_profile_arg(parser)
    add_log_args(parser)
    return parser


def parse_judge_args(
    parser: argparse.ArgumentParser, argv: list[str] | None, results: str | None = "scores"
) -> argparse.Namespace:
    """Parse a judge stage's command line (:func:`add_judge_args`): the paper profile applied, the LLM flags
    validated and, unless ``results`` is None, ``--output-dir`` or ``--hub-repo`` required for them."""
    from empathy_recipes.profiles import PAPER_JUDGE, apply_profile

    args = apply_profile(parser.parse_args(argv), parser, PAPER_JUDGE, argv)
    if results and not args.output_dir and not args.hub_repo:
        raise EmpathyRecipesError(f"give --output-dir and/or --hub-repo: the {results} must go somewhere")
    validate_llm_args(args)
    return args


def judge_step(
    task_cls: type[ScoreFormTask], args: argparse.Namespace, name: str = "judge", num_generations: int = 1, **fields
) -> ScoreFormTask:
    """A stage's judge step (build it inside the stage's pipeline): ``task_cls`` with the scoring LLM its axes need
    (:func:`build_scoring_llm`, from ``--scoring`` / ``--backend`` / ...), ``--batch-size`` rows per batch, the
    step resources of ``--replicas`` / ``--tensor-parallel-size``, and no raw input/output columns. ``fields`` are
    the Task's own (``prompt=``, ``score_axes=`` for a judge whose axes are chosen at run time)."""
    axes = task_cls.axes_spec()
    if "score_axes" in fields:
        axes = dataclasses.replace(axes, names=tuple(fields["score_axes"]))
    return task_cls(
        name=name,
        llm=build_scoring_llm(args, axes, args.scoring),
        input_batch_size=args.batch_size,
        num_generations=num_generations,
        resources=llm_step_resources(args),
        add_raw_output=False,
        add_raw_input=False,
        **fields,
    )
