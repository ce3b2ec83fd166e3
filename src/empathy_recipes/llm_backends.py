"""One set of CLI flags for every distilabel stage, the LLM behind them, and probability-weighted integer scores.

Backends, chosen by ``--backend`` with the same pipeline code:

- ``transformers`` (CPU or GPU, the default; ``--model`` is a local folder or a Hub id, default the embedded
  SmolLM2-135M-Instruct),
- ``vllm`` (GPU; ``pip install -e '.[vllm]'``),
- ``openai``: any OpenAI-compatible server (a ``vllm serve`` endpoint, a TGI / Inference Endpoint, OpenAI itself):
  ``--base-url`` is required, the key is read from the environment variable named by ``--api-key-env``.

``--ray`` turns the pipeline into a distilabel ``RayPipeline`` (``pip install -e '.[ray]'``; submit with
``ray job submit -- python <script> ...`` on a cluster).

Stage scripts use it like this (read top to bottom)::

    parser = argparse.ArgumentParser()
    add_llm_args(parser)                      # --backend --model --base-url ... --output-dir --limit
    parser.set_defaults(temperature=0.0)      # a stage may change any default
    args = parser.parse_args()
    llm = build_llm(args)                     # or build_scoring_llm(args, axes) for a judge
    with make_pipeline("my-stage", args, args.cache_dir) as pipeline:
        loader, dataset = ed_loader_step(args.dataset, args.batch_size, limit=args.limit)
        loader >> MyTask(llm=llm, input_batch_size=args.batch_size)
    distiset = pipeline.run(use_cache=True)
    save_and_push_distiset(distiset, args)

Probability-weighted ("G-Eval") integer scores
------------------------------------------------
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

    judge = MyJudge(llm=build_scoring_llm(args, MyJudge.axes_spec()), input_batch_size=args.batch_size)

It outputs the raw text (``raw_output_column``), one integer column per axis (``None`` when unreadable),
``<axis>_weighted`` (expected score, float; NaN without probabilities) and ``<axis>_probs`` (the distribution
over ``low..high``; NaNs without probabilities).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distilabel.models.llms import OpenAILLM, TransformersLLM, vLLM
from distilabel.steps import GeneratorStep
from distilabel.steps.tasks import Task
from pydantic import PrivateAttr

from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.judge_scores import parse_judge_text
from empathy_recipes.models import default_model_path, resolve_model_ref

if TYPE_CHECKING:
    from distilabel.distiset import Distiset
    from distilabel.pipeline import Pipeline

BACKENDS = ("transformers", "vllm", "openai")
SCORING_MODES = ("probs", "generate")
TOP_LOGPROBS = 20
_BACKEND_PACKAGES = {"vllm": ("vllm", "vllm"), "openai": ("openai", "openai")}


# ---------------------------------------------------------------------------------------------------------------
# CLI flags
# ---------------------------------------------------------------------------------------------------------------
def add_llm_args(parser: argparse.ArgumentParser, default_model: str | None = None) -> argparse.ArgumentParser:
    """Add the generic LLM / pipeline flags to ``parser`` (one group) and return it.

    Defaults suit generation (temperature 0.7); a judge stage calls ``parser.set_defaults(temperature=0.0)``.
    """
    g = parser.add_argument_group("LLM backend and pipeline")
    g.add_argument("--backend", choices=BACKENDS, default="transformers", help="LLM backend (default transformers)")
    g.add_argument(
        "--model",
        default=str(default_model) if default_model else str(default_model_path()),
        help="Hub id or local folder (transformers/vllm), or the served model name (openai); "
        "default the embedded SmolLM2-135M-Instruct",
    )
    g.add_argument("--base-url", default=None, help="OpenAI-compatible server URL, e.g. http://localhost:8000/v1")
    g.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        help="name of the environment variable holding the API key (openai backend)",
    )
    g.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (0 = greedy)")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--max-new-tokens", type=int, default=256)
    g.add_argument("--batch-size", type=int, default=8, help="rows per distilabel batch (and per LLM call)")
    g.add_argument("--num-generations", type=int, default=1)
    g.add_argument("--device", default=None, help="transformers device: cpu, cuda, cuda:0, mps (default: auto)")
    g.add_argument("--ray", action="store_true", help="run as a distilabel RayPipeline (many nodes)")
    g.add_argument("--hub-repo", default=None, help="push the result to this Hub dataset repo (org/name)")
    g.add_argument("--private", action="store_true", help="make the pushed Hub repo private")
    g.add_argument(
        "--cache-dir", default=None, help="distilabel cache (resume) directory; default ~/.cache/distilabel"
    )
    g.add_argument("--output-dir", default=None, help="where the result is saved")
    g.add_argument("--limit", type=int, default=None, help="only the first N input rows")
    return parser


def validate_llm_args(args: argparse.Namespace) -> None:
    """Check the generic flags and raise a one-line :class:`EmpathyRecipesError` before any model is loaded."""
    if args.backend not in BACKENDS:
        raise EmpathyRecipesError(f"--backend must be one of {', '.join(BACKENDS)}, not {args.backend!r}")
    for name in ("batch_size", "num_generations", "max_new_tokens"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise EmpathyRecipesError(f"--{name.replace('_', '-')} must be >= 1")
    if args.limit is not None and args.limit < 1:
        raise EmpathyRecipesError("--limit must be >= 1")
    if args.temperature < 0:
        raise EmpathyRecipesError("--temperature must be >= 0")
    if not 0 < args.top_p <= 1:
        raise EmpathyRecipesError("--top-p must be in (0, 1]")
    if args.backend == "openai":
        if not args.base_url:
            raise EmpathyRecipesError("--backend openai needs --base-url (e.g. http://localhost:8000/v1)")
        if not os.environ.get(args.api_key_env):
            raise EmpathyRecipesError(
                f"--backend openai reads the API key from ${args.api_key_env}, which is not set "
                f"(a server without auth accepts any value: export {args.api_key_env}=EMPTY)"
            )
    else:
        resolve_model_ref(args.model)
        if args.base_url:
            raise EmpathyRecipesError(f"--base-url only applies to --backend openai, not {args.backend}")
    if args.hub_repo is not None and not re.match(r"^[\w.-]+/[\w.-]+$", args.hub_repo):
        raise EmpathyRecipesError(f"--hub-repo must look like org/name, not {args.hub_repo!r}")


def require_backend_packages(args: argparse.Namespace) -> None:
    """One clear error when the chosen backend (or ``--ray``) needs a package that is not installed."""
    needs = []
    if args.backend in _BACKEND_PACKAGES:
        needs.append(_BACKEND_PACKAGES[args.backend])
    if getattr(args, "ray", False):
        needs.append(("ray", "ray"))
    for module, extra in needs:
        if importlib.util.find_spec(module) is None:
            raise EmpathyRecipesError(f"{module} is not installed: pip install -e '.[{extra}]'")


# ---------------------------------------------------------------------------------------------------------------
# LLMs
# ---------------------------------------------------------------------------------------------------------------
def generation_kwargs_for(args: argparse.Namespace, **overrides: Any) -> dict[str, Any]:
    """The ``generation_kwargs`` distilabel passes to ``generate`` for this backend (overrides win)."""
    kw: dict[str, Any] = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
    }
    kw.update(overrides)
    if args.backend == "transformers":
        if kw.get("temperature", 1.0) == 0:
            # transformers refuses temperature 0; greedy decoding is do_sample=False (temperature then unused).
            kw.update(temperature=1.0, top_p=1.0, do_sample=False)
        else:
            kw.setdefault("do_sample", True)
    return kw


def _transformers_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    device = args.device
    # bf16 matmuls are slow on most CPUs: on CPU load float32, elsewhere keep the checkpoint's dtype.
    on_cpu = device == "cpu" or (device is None and not _cuda_available())
    return {
        "model": args.model,
        "device": device or ("cpu" if on_cpu else None),
        "torch_dtype": "float32" if on_cpu else "auto",
    }


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


def _openai_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"model": args.model, "base_url": args.base_url, "api_key": os.environ.get(args.api_key_env)}


class _ResponsePrefixMixin:
    """Start every answer with ``response_prefix``: it is written after the chat template's generation prompt, as
    the first words of the reply, so the model continues from it (prefilling). It steers small models into an output
    format. The returned generations are the continuations only: the Task puts the prefix back."""

    response_prefix: str = ""

    def prepare_input(self, input: Any) -> str:
        return super().prepare_input(input) + self.response_prefix  # type: ignore[misc]


class PrefilledTransformersLLM(_ResponsePrefixMixin, TransformersLLM):
    """:class:`TransformersLLM` whose answers start with ``response_prefix`` (see :class:`_ResponsePrefixMixin`)."""


class PrefilledVLLM(_ResponsePrefixMixin, vLLM):
    """:class:`vLLM` whose answers start with ``response_prefix`` (see :class:`_ResponsePrefixMixin`)."""


def build_llm(args: argparse.Namespace, response_prefix: str | None = None, **generation_overrides: Any):
    """A distilabel LLM for ``--backend`` (TransformersLLM, vLLM or OpenAILLM), validated, not loaded yet.

    ``response_prefix`` prefills the start of every answer (transformers and vLLM; an OpenAI-compatible chat
    server cannot be prefilled, so there it is an error).
    """
    validate_llm_args(args)
    gen = generation_kwargs_for(args, **generation_overrides)
    if response_prefix and args.backend == "openai":
        raise EmpathyRecipesError(
            "a response prefix needs --backend transformers or vllm (chat servers can't prefill)"
        )
    if args.backend == "transformers":
        if response_prefix:
            return PrefilledTransformersLLM(
                **_transformers_kwargs(args), generation_kwargs=gen, response_prefix=response_prefix
            )
        return TransformersLLM(**_transformers_kwargs(args), generation_kwargs=gen)
    if args.backend == "vllm":
        if response_prefix:
            return PrefilledVLLM(model=args.model, generation_kwargs=gen, response_prefix=response_prefix)
        return vLLM(model=args.model, generation_kwargs=gen)
    return OpenAILLM(**_openai_kwargs(args), generation_kwargs=gen)


@dataclass(frozen=True)
class ScoreAxes:
    """What a judge scores: axis names (lower case, written title-cased in the form) and an integer range."""

    names: tuple[str, ...]
    low: int = 0
    high: int = 10
    line_template: str = "- {Axis}:"
    form_prefix: str = ""

    def __post_init__(self):
        if not self.names:
            raise EmpathyRecipesError("ScoreAxes needs at least one axis")
        if not 0 <= self.low < self.high <= 99:
            raise EmpathyRecipesError(f"score range must satisfy 0 <= low < high <= 99, got {self.low}..{self.high}")

    def line(self, axis: str) -> str:
        return self.line_template.format(Axis=axis.title(), axis=axis)

    def render(self, scores: Mapping[str, int]) -> str:
        """The form text with these scores, e.g. ``- Rationality: 8\\n- Sensibility: 5``."""
        return self.form_prefix + "\n".join(f"{self.line(a)} {scores[a]}" for a in self.names)


def build_scoring_llm(args: argparse.Namespace, axes: ScoreAxes, scoring: str = "probs"):
    """The LLM for a :class:`ScoreFormTask` judge.

    ``scoring="probs"``: transformers -> :class:`TransformersFormScorer`, vllm -> :class:`VLLMFormScorer` (both
    write the form themselves and read each integer from the next-token distribution); openai -> free greedy
    generation with ``logprobs``/``top_logprobs`` (read back by :class:`ScoreFormTask`).
    ``scoring="generate"``: plain greedy generation, parsed as text.
    """
    if scoring not in SCORING_MODES:
        raise EmpathyRecipesError(f"--scoring must be one of {', '.join(SCORING_MODES)}, not {scoring!r}")
    validate_llm_args(args)
    axis_fields = {"score_axes": list(axes.names), "score_low": axes.low, "score_high": axes.high}
    form_fields = {**axis_fields, "line_template": axes.line_template, "form_prefix": axes.form_prefix}
    if scoring == "probs" and args.backend == "transformers":
        return TransformersFormScorer(**_transformers_kwargs(args), **form_fields)
    if scoring == "probs" and args.backend == "vllm":
        return VLLMFormScorer(model=args.model, **form_fields)
    overrides: dict[str, Any] = {"temperature": 0.0}
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


class TransformersFormScorer(TransformersLLM):
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
        return ScoreAxes(tuple(self.score_axes), self.score_low, self.score_high, self.line_template, self.form_prefix)

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


class VLLMFormScorer(vLLM):
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
        return ScoreAxes(tuple(self.score_axes), self.score_low, self.score_high, self.line_template, self.form_prefix)

    def _next_token_probs(self, prompts: list[str]) -> list[dict[str, float]]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=TOP_LOGPROBS)
        outputs = self._model.generate(prompts=prompts, sampling_params=params, use_tqdm=False)
        result = []
        for o in outputs:
            step = o.outputs[0].logprobs[0] if o.outputs and o.outputs[0].logprobs else {}
            result.append({lp.decoded_token: math.exp(lp.logprob) for lp in step.values() if lp.decoded_token})
        return result

    def generate(self, inputs, num_generations: int = 1) -> list[dict]:  # type: ignore[override]
        axes = self.axes
        space = " " if space_is_separate_token(self._tokenizer) else ""
        texts = [self.prepare_input(chat) + axes.form_prefix for chat in inputs]
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

    score_axes: list[str] = ["rationality", "sensibility"]
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
        return ScoreAxes(tuple(self.score_axes), self.score_low, self.score_high, self.line_template, self.form_prefix)

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


# ---------------------------------------------------------------------------------------------------------------
# Pipeline, input step, saving and pushing
# ---------------------------------------------------------------------------------------------------------------
def make_pipeline(name: str, args: argparse.Namespace, cache_dir: str | os.PathLike | None = None) -> Pipeline:
    """A distilabel ``Pipeline`` (or ``RayPipeline`` with ``--ray``) caching under ``cache_dir`` so a rerun
    with the same arguments resumes. Use it as a context manager."""
    from distilabel.pipeline import Pipeline, RayPipeline

    kwargs: dict[str, Any] = {"name": name, "cache_dir": str(cache_dir) if cache_dir else None}
    if getattr(args, "ray", False):
        return RayPipeline(**kwargs, requirements=["empathy-recipes"])
    return Pipeline(**kwargs)


class LoadEDDataset(GeneratorStep):
    """A distilabel root step that reads an ED dataset through :func:`empathy_recipes.data.load_ed` itself.

    Unlike a step built from an in-memory ``Dataset``, it is fully described by its fields (``source``,
    ``split``, ``limit``, ``rename_columns``), so a run rebuilt from distilabel's cached ``pipeline.yaml`` (a rerun
    that resumes, a Ray worker) reloads the same rows. ``fingerprint`` (the rows' hash, set by
    :func:`ed_loader_step`) makes distilabel's cache treat other input data as a different step. On Ray, a local
    ``source`` must be readable from the worker nodes (or use a Hub id).
    """

    source: str
    split: str | None = None
    limit: int | None = None
    rename_columns: dict[str, str] = {}
    skip_ids_file: str | None = None
    columns: list[str] = []
    fingerprint: str = ""

    _dataset: Any = PrivateAttr(default=None)

    def load(self) -> None:
        super().load()
        from empathy_recipes.data import load_ed

        dataset = load_ed(self.source, split=self.split, limit=self.limit)
        if self.rename_columns:
            dataset = dataset.rename_columns(self.rename_columns)
        if self.skip_ids_file:
            skip = set(json.loads(Path(self.skip_ids_file).read_text()))
            dataset = dataset.filter(lambda ids: [str(i) not in skip for i in ids], input_columns="id", batched=True)
        self._dataset = dataset

    @property
    def outputs(self) -> list[str]:
        return list(self.columns)

    def process(self, offset: int = 0):  # type: ignore[override]
        total = len(self._dataset)
        for start in range(offset - offset % self.batch_size, total, self.batch_size):
            batch = self._dataset[start : start + self.batch_size]
            n = len(next(iter(batch.values())))
            yield [{c: batch[c][i] for c in batch} for i in range(n)], start + n >= total


def ed_loader_step(
    source: str,
    batch_size: int,
    split: str | None = None,
    limit: int | None = None,
    rename_columns: Mapping[str, str] | None = None,
    skip_ids_file: str | os.PathLike | None = None,
):
    """``(step, dataset)``: the dataset is loaded once here (so bad input fails before any model loads, and its
    columns and fingerprint are known), and :class:`LoadEDDataset` reloads it in the pipeline's process."""
    from empathy_recipes.data import load_ed

    dataset = load_ed(source, split=split, limit=limit)
    if len(dataset) == 0:
        raise EmpathyRecipesError(f"{source} holds no rows")
    rename = {k: v for k, v in (rename_columns or {}).items() if k in dataset.column_names}
    if rename:
        dataset = dataset.rename_columns(rename)
    fingerprint = getattr(dataset, "_fingerprint", None) or hashlib.sha1(str(source).encode()).hexdigest()
    if skip_ids_file:
        fingerprint += "-skip-" + hashlib.sha1(Path(skip_ids_file).read_bytes()).hexdigest()[:16]
    step = LoadEDDataset(
        source=str(source),
        split=split,
        limit=limit,
        rename_columns=rename,
        skip_ids_file=str(skip_ids_file) if skip_ids_file else None,
        columns=list(dataset.column_names),
        fingerprint=fingerprint,
        batch_size=batch_size,
    )
    return step, dataset


class ResumeStore:
    """Row-level resume on top of distilabel's step cache, robust to a killed run.

    distilabel 1.5.3 writes every finished output batch of a step to ``<cache>/<pipeline>/steps_data/<step>_<sig>/
    batch_N.json``, but resuming through its batch manager can hang after a kill (upstream issue
    argilla-io/distilabel#1065: the manager's snapshot and the batch files disagree). So, before a run,
    :meth:`harvest` moves those finished batches into this store (``<cache>/<pipeline>-resume/<key>/``, ``key``
    = input fingerprint + step signature, i.e. the same arguments) and clears the pipeline's distilabel state;
    the run then covers only the rows not done yet (``skip_ids_file`` of :func:`ed_loader_step`), and
    :meth:`merge` puts old and new rows back in input order. Finished batches are never recomputed.
    """

    def __init__(self, cache_dir: str | os.PathLike, pipeline_name: str, key: str) -> None:
        self.pipeline_dir = Path(cache_dir) / pipeline_name
        self.dir = Path(cache_dir) / f"{pipeline_name}-resume" / key
        self.dir.mkdir(parents=True, exist_ok=True)

    def harvest(self, step: Any) -> int:
        """Move the finished batches of ``step`` (a distilabel step: only those of its current signature) into the
        store, then drop the pipeline's distilabel cache (its possibly inconsistent batch manager).
        Returns the number of batches moved."""
        moved = 0
        steps_data = self.pipeline_dir / "steps_data" / f"{step.name}_{step.signature}"
        for batch_file in sorted(steps_data.glob("batch_*.json")):
            target = self.dir / f"{batch_file.parent.name}-{time.time_ns()}-{batch_file.name}"
            os.replace(batch_file, target)
            moved += 1
        if self.pipeline_dir.exists():
            shutil.rmtree(self.pipeline_dir, ignore_errors=True)
        return moved

    def rows(self) -> list[dict[str, Any]]:
        """Every output row stored so far."""
        out: list[dict[str, Any]] = []
        for batch_file in sorted(self.dir.glob("*.json")):
            if batch_file.name == "skip_ids.json":
                continue
            data = json.loads(batch_file.read_text()).get("data") or [[]]
            out.extend(data[0])
        return out

    def done_ids(self) -> set[str]:
        return {str(r.get("id")) for r in self.rows()}

    def write_skip_ids(self) -> Path | None:
        """The ids already done, as the loader's ``skip_ids_file`` (``None`` when nothing is done)."""
        ids = sorted(self.done_ids())
        if not ids:
            return None
        path = self.dir / "skip_ids.json"
        path.write_text(json.dumps(ids))
        return path

    @staticmethod
    def merge(order: Sequence[str], *row_lists: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows from several runs, one entry per (id, generation), in the input order ``order`` (ids)."""
        position = {str(i): n for n, i in enumerate(order)}
        rows = [r for rows in row_lists for r in rows]
        return sorted(rows, key=lambda r: position.get(str(r.get("id")), len(position)))


def save_and_push_distiset(distiset: Distiset, args: argparse.Namespace) -> dict[str, Path]:
    """Save ``distiset`` under ``--output-dir`` and push it to ``--hub-repo`` when given.

    Layout: ``<output-dir>/distiset/`` reloads with ``Distiset.load_from_disk`` (with ``pipeline.yaml`` and the
    card); ``<output-dir>/<config>.jsonl`` (``default.jsonl`` for a one-leaf pipeline) is a plain JSON Lines file
    of the same rows, readable by anything (and by ``empathy_recipes.data.load_ed``). The Hub push carries
    ``pipeline.yaml`` and the script (``include_script=True``). Returns ``{name: path}`` of what was written.
    """
    written: dict[str, Path] = {}
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        distiset.save_to_disk(out / "distiset", save_card=True, save_pipeline_config=True, save_pipeline_log=True)
        written["distiset"] = out / "distiset"
        for config, dsdict in distiset.items():
            split = dsdict["train"] if "train" in dsdict else next(iter(dsdict.values()))
            path = out / f"{config}.jsonl"
            split.to_json(str(path), lines=True, force_ascii=False)
            written[config] = path
    if args.hub_repo:
        distiset.push_to_hub(args.hub_repo, private=bool(args.private), include_script=True)
    return written
