"""The distilabel LLM classes behind ``--backend transformers`` and ``--backend vllm``, fixed for GPUs.

- :class:`PlacementSafeTransformersLLM`: distilabel 1.5.3's ``TransformersLLM.load`` runs its CUDA device placement
  (``CudaDevicePlacementMixin.load``, only for ``device="cuda"``) before ``LLM.load`` has created the LLM's logger.
  The placement logs through that logger (``None`` at that point), so the load raises ``AttributeError``; the step
  wrapper then calls ``unload``, which logs through the same ``None`` logger and raises again, outside the wrapper's
  error handling. The worker dies without reporting "load failed", distilabel's error callback calls
  ``Pipeline._stop()``, which waits for the ``_stop_called_lock`` that the main thread holds while it waits for the
  steps to load: a deadlock, and ``--device cuda`` hung forever. Here the logger exists before the placement runs,
  ``unload`` never raises, a placement entry left by a killed run of the same step is dropped (or it would keep the
  GPU "taken"), and without ``pynvml`` (which the placement needs) the placement is switched off rather than failing.
- :class:`ChatVLLM`: distilabel's vLLM renders the chat template to text and lets vLLM tokenize it, which adds a
  second BOS to templates that write their own (Llama-3's ``{{ bos_token }}``). Here the prompt goes to vLLM as
  token ids (:func:`empathy_recipes.llm.prompt_token_ids`: no special tokens added).

Both take ``response_prefix``: every answer starts with it (written after the generation prompt, so the model
continues from it: prefilling); the generations are the continuations only, the Task puts the prefix back.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from distilabel.models.llms import TransformersLLM, vLLM

from empathy_recipes.llm import prompt_token_ids

logger = logging.getLogger(__name__)


def _pynvml_importable() -> bool:
    try:
        import pynvml  # noqa: F401
    except ImportError:
        return False
    return True


class PlacementSafeTransformersLLM(TransformersLLM):
    """:class:`TransformersLLM` whose ``device="cuda"`` load cannot hang (see the module docstring), with an
    optional ``response_prefix`` and an optional ``seed``: set once the model is loaded (``transformers.set_seed``),
    so a sampled run gives the same generations again on the same machine, as distilabel's vLLM does with its own
    ``seed``."""

    response_prefix: str = ""
    seed: int | None = None

    def load(self) -> None:
        if self._logger is None:
            self._logger = logging.getLogger(f"distilabel.llm.{self.model_name}")
        if self.device == "cuda" and not self.disable_cuda_device_placement:
            if not _pynvml_importable():
                self._logger.info(
                    "pynvml is not installed: replicas share the visible GPUs (pip install nvidia-ml-py)"
                )
                self.disable_cuda_device_placement = True
            elif self._llm_identifier:
                with self._device_llm_placement_map() as device_map:
                    device_map.pop(self._llm_identifier, None)  # left by a killed run of this same step
        super().load()
        if self.seed is not None:
            from transformers import set_seed

            set_seed(self.seed)

    def unload(self) -> None:
        if self._logger is None:
            self._logger = logging.getLogger(f"distilabel.llm.{self.model_name}")
        try:
            super().unload()
        except Exception:  # an exception here escapes distilabel's load-error handling and hangs the pipeline
            logger.exception("unloading %s failed", self.model_name)

    def prepare_input(self, input: Any) -> str:
        return super().prepare_input(input) + self.response_prefix


class ChatVLLM(vLLM):
    """:class:`vLLM` fed token ids rendered by the chat template (one BOS, never two), with an optional
    ``response_prefix``."""

    response_prefix: str = ""

    def prompt_text(self, input: Any) -> str:
        """The chat-templated prompt (plus the response prefix) as text."""
        return super().prepare_input(input) + self.response_prefix

    def prepare_input(self, input: Any) -> dict[str, list[int]]:  # type: ignore[override]
        return {"prompt_token_ids": prompt_token_ids(self._tokenizer, [self.prompt_text(input)])[0]}

    def _prepare_batches(self, inputs):  # type: ignore[override]
        """Inputs grouped by their structured-output schema (as distilabel does), without keying a dict by the
        prompt (a token-id prompt is a dict, and two equal prompts would collide)."""
        batches: dict[str, list[dict[str, list[int]]]] = {}
        positions: dict[str, list[int]] = {}
        for i, (instruction, structured_output) in enumerate(inputs):
            key = json.dumps(structured_output)
            batches.setdefault(key, []).append(self.prepare_input(instruction))
            positions.setdefault(key, []).append(i)
        sorted_indices = [i for key in batches for i in positions[key]]
        return [(batch, json.loads(key)) for key, batch in batches.items()], sorted_indices

    def _process_outputs(self, input, outputs, prompt_logprobs, echo: bool = False):  # type: ignore[override]
        if not isinstance(input, dict):
            return super()._process_outputs(input, outputs, prompt_logprobs, echo)
        n_prompt = len(input["prompt_token_ids"])
        texts, outputs_logprobs = [], []
        statistics: dict[str, list[int]] = {"input_tokens": [n_prompt] * len(outputs.outputs), "output_tokens": []}
        prompt = self._tokenizer.decode(input["prompt_token_ids"]) if echo else ""
        for output in outputs.outputs:
            texts.append(prompt + output.text)
            statistics["output_tokens"].append(len(output.token_ids))
            if output.logprobs is not None:
                outputs_logprobs.append(prompt_logprobs + self._get_llm_logprobs(output.logprobs))
        return texts, statistics, outputs_logprobs
