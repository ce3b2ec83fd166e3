"""LLMs whose every answer starts with a given prefix (prefilling), to steer small models into an output format."""

from __future__ import annotations

from typing import Any

from distilabel.models.llms import TransformersLLM, vLLM


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
