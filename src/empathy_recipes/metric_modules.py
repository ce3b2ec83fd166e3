"""The base of the ``evaluation/metrics/ed_*`` Hugging Face ``evaluate`` modules.

Each module there is its maths (``_compute``, on :mod:`empathy_recipes.metrics`) and its words (its docstring: a
title line, then what it computes; citation, what it returns, one example); :class:`EDMetric` turns those into the
``evaluate.MetricInfo`` (description, inputs, the papers' link) once, so the five modules stay short and cannot drift apart in how they describe their inputs. A module
subclasses it through the module (``metric_modules.EDMetric``, never imported by name): ``evaluate.load`` takes the
first ``Metric`` subclass it finds in the module's namespace as the metric.
"""

from __future__ import annotations

import sys
from typing import ClassVar

import datasets
import evaluate

from empathy_recipes import metrics

PAPER_URL = "https://arxiv.org/abs/2407.01937"
_STRING = datasets.Value("string")
PAIRS = datasets.Features({"predictions": _STRING, "references": _STRING})
PREDICTIONS_ONLY = datasets.Features({"predictions": _STRING})
REFERENCES_ARG = "references: list of reference replies (str), one per prediction."


class EDMetric(evaluate.Metric):
    """A metric on (prediction, reference) pairs of EmpatheticDialogues replies; subclasses set the class
    attributes below and write ``score_tokens`` (on the word tokens of :func:`empathy_recipes.metrics.tokenize_corpus`,
    as the papers' scripts tokenize) or, for a metric on raw text, ``_compute``."""

    NAME: ClassVar[str] = ""  # the folder name under evaluation/metrics
    CITATION: ClassVar[str] = ""
    ARGS: ClassVar[tuple[str, ...]] = (REFERENCES_ARG,)  # after "predictions: list of model replies (str)."
    RETURNS: ClassVar[str] = ""
    EXAMPLE: ClassVar[str] = ""  # the arguments of one compute() call
    REFERENCES_OPTIONAL: ClassVar[bool] = False

    @classmethod
    def inputs_description(cls) -> str:
        args = "".join(f"    {a}\n" for a in ("predictions: list of model replies (str).", *cls.ARGS))
        return (
            f"\nArgs:\n{args}Returns:\n    {cls.RETURNS}\nExample:\n"
            f'    >>> m = evaluate.load("evaluation/metrics/{cls.NAME}")\n    >>> m.compute({cls.EXAMPLE})\n'
        )

    @classmethod
    def module_description(cls) -> str:
        """The module docstring after its title line: what the metric computes."""
        doc = sys.modules[cls.__module__].__doc__ or ""
        return doc.split("\n\n", 1)[-1].strip()

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=self.module_description(),
            citation=self.CITATION,
            inputs_description=self.inputs_description(),
            features=[PREDICTIONS_ONLY, PAIRS] if self.REFERENCES_OPTIONAL else PAIRS,
            reference_urls=[PAPER_URL],
        )

    def score_tokens(self, hyps: list[list[str]], refs: list[list[str]] | None) -> dict[str, float]:
        raise NotImplementedError

    def _compute(self, predictions, references=None):
        refs = None if references is None else metrics.tokenize_corpus(references)
        return self.score_tokens(metrics.tokenize_corpus(predictions), refs)
