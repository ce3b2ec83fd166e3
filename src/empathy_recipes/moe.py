"""Building a mergekit-moe MoE from expert models: expert checks, positive prompts, and the mergekit configs.

Everything here is a small typed function the MoE stage (``scripts/build_moe.py``) composes:

- :func:`parse_expert_ref` reads ``model`` or ``base+adapter`` (a LoRA adapter on a base model);
- :func:`check_expert_count`, :func:`check_same_architecture`, :func:`check_same_tokenizer` and
  :func:`check_distinct_experts` turn bad expert lists into one-line :class:`EmpathyRecipesError` before mergekit runs;
- :func:`sample_rows` and :func:`render_prompt` give each expert positive prompts sampled reproducibly from its own
  selected set, as the text mergekit's ``hidden`` / ``cheap_embed`` gate modes tokenize;
- :func:`build_moe_config` / :func:`validate_moe_config` write and check the ``mergekit-moe`` config with mergekit's
  own pydantic ``MoEMergeConfig`` and sanity checks; :func:`build_average_config` / :func:`validate_merge_config` do
  the same for the equal-weight linear ``mergekit-yaml`` average used as the MoE's base.

mergekit's Mixtral output names each decoder block's router ``model.layers.<i>.mlp.gate.weight``, the name
transformers' ``MixtralForCausalLM`` loads; :data:`ROUTER_PARAMETER_REGEX` matches exactly those.
"""

from __future__ import annotations

import hashlib
import io
import logging
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.models import resolve_model_ref

GATE_MODES = ("hidden", "cheap_embed", "random")
PROMPT_GATE_MODES = ("hidden", "cheap_embed")
PROMPT_FORMATS = ("chat", "plain")
# Config keys that must agree for experts to be stacked into one Mixtral (the MLP shapes and what feeds them).
ARCHITECTURE_KEYS = (
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
)
MIXTRAL_SOURCE_TYPES = ("llama", "mistral")
# The router (gate) of every decoder block of a MixtralForCausalLM, and nothing else (not experts.gate_up_proj).
ROUTER_PARAMETER_REGEX = r"^model\.layers\.\d+\.mlp\.gate\.weight$"
ADAPTER_SEPARATOR = "+"


@dataclass(frozen=True)
class ExpertRef:
    """One expert as given on the command line: a model, or a LoRA ``adapter`` on a base ``model``."""

    spec: str
    model: str
    adapter: str | None = None

    @property
    def name(self) -> str:
        """A short, filesystem-safe label (last path parts of model and adapter)."""
        parts = [Path(self.model).name] + ([Path(self.adapter).name] if self.adapter else [])
        return re.sub(r"[^\w.-]+", "_", "_".join(parts))


def parse_expert_ref(spec: str) -> ExpertRef:
    """``model`` or ``base+adapter``; each part a local folder or a Hub id (checked by ``resolve_model_ref``).

    A spec that is itself an existing path is one model even if its name holds a ``+``.
    """
    spec = spec.strip()
    if not spec:
        raise EmpathyRecipesError("empty expert reference")
    if ADAPTER_SEPARATOR not in spec or Path(spec).expanduser().exists():
        return ExpertRef(spec=spec, model=resolve_model_ref(spec))
    base, _, adapter = spec.partition(ADAPTER_SEPARATOR)
    if not base or not adapter:
        raise EmpathyRecipesError(f"expert {spec!r}: write a LoRA expert as base+adapter, both non-empty")
    return ExpertRef(spec=spec, model=resolve_model_ref(base), adapter=resolve_model_ref(adapter))


def check_distinct_refs(experts: Sequence[ExpertRef]) -> None:
    """The same expert (same model and adapter, after resolving local paths) may not be given twice."""
    seen: dict[tuple[str, str | None], str] = {}
    for ref in experts:
        key = tuple(str(Path(p).resolve()) if p and Path(p).exists() else p for p in (ref.model, ref.adapter))
        if key in seen:
            raise EmpathyRecipesError(f"experts {seen[key]} and {ref.spec} are the same model: give distinct experts")
        seen[key] = ref.spec


def check_expert_count(experts: Sequence[Any], experts_per_token: int = 2) -> None:
    """A MoE needs at least two experts, and at least ``experts_per_token`` of them."""
    if len(experts) < 2:
        raise EmpathyRecipesError(f"a MoE needs at least two experts, got {len(experts)}")
    if experts_per_token < 1 or experts_per_token > len(experts):
        raise EmpathyRecipesError(
            f"experts_per_token must be between 1 and the number of experts ({len(experts)}), got {experts_per_token}"
        )


def architecture_signature(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config values (:data:`ARCHITECTURE_KEYS`) that must match across experts."""
    return {key: config.get(key) for key in ARCHITECTURE_KEYS}


def check_same_architecture(names: Sequence[str], configs: Sequence[Mapping[str, Any]]) -> str:
    """Raise on the first architecture key where an expert differs from the first; return the shared model_type.

    Also refuses model types that mergekit's Mixtral output cannot take (it stacks Llama/Mistral MLPs).
    """
    first = architecture_signature(configs[0])
    for name, config in zip(names[1:], configs[1:]):
        sig = architecture_signature(config)
        for key in ARCHITECTURE_KEYS:
            if sig[key] != first[key]:
                raise EmpathyRecipesError(
                    f"experts have different architectures: {names[0]} has {key}={first[key]}, "
                    f"{name} has {key}={sig[key]}"
                )
    model_type = str(first["model_type"])
    if model_type not in MIXTRAL_SOURCE_TYPES:
        raise EmpathyRecipesError(
            f"the Mixtral output takes {' or '.join(MIXTRAL_SOURCE_TYPES)} experts, these are {model_type!r}"
        )
    return model_type


def vocab_fingerprint(vocab: Mapping[str, int]) -> str:
    """A stable hash of a tokenizer vocabulary (token -> id, added tokens included)."""
    digest = hashlib.sha256()
    for token, idx in sorted(vocab.items(), key=lambda kv: (kv[1], kv[0])):
        digest.update(f"{idx}\t{token}\n".encode())
    return digest.hexdigest()


def check_same_tokenizer(names: Sequence[str], vocabs: Sequence[Mapping[str, int]]) -> None:
    """Experts must share one vocabulary: the MoE keeps one embedding matrix and one tokenizer."""
    first = vocab_fingerprint(vocabs[0])
    for name, vocab in zip(names[1:], vocabs[1:]):
        if vocab_fingerprint(vocab) != first:
            only_first = len(set(vocabs[0]) - set(vocab))
            only_other = len(set(vocab) - set(vocabs[0]))
            raise EmpathyRecipesError(
                f"experts have different tokenizers: {names[0]} ({len(vocabs[0])} tokens) vs {name} ({len(vocab)} "
                f"tokens; {only_first} only in the first, {only_other} only in the second, or ids differ)"
            )


def weights_fingerprint(model_dir: str | Path, name_filter: str = ".mlp.") -> str:
    """Hash of the tensors whose names contain ``name_filter`` (names, dtypes, shapes, bytes) in a model folder.

    By default only the MLP weights: they are what the MoE takes from each expert, so two experts with the same
    MLP weights would make the same expert twice even if their attention differs. Reads ``*.safetensors``; falls
    back to the raw bytes of ``*.bin`` checkpoints.
    """
    from safetensors import safe_open

    folder = Path(model_dir)
    digest = hashlib.sha256()
    files = sorted(folder.glob("*.safetensors"))
    if files:
        for file in files:
            with safe_open(str(file), framework="pt") as handle:
                for key in sorted(handle.keys()):
                    if name_filter not in key:
                        continue
                    tensor = handle.get_tensor(key).contiguous()
                    digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
                    digest.update(tensor.view(-1).view(_byte_dtype()).numpy().tobytes())
        return digest.hexdigest()
    bins = sorted(folder.glob("*.bin"))
    if not bins:
        raise EmpathyRecipesError(f"{folder} holds no *.safetensors or *.bin weights")
    for file in bins:
        with open(file, "rb") as handle:
            for chunk in iter(lambda h=handle: h.read(1 << 24), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _byte_dtype():
    import torch

    return torch.uint8


def check_distinct_experts(names: Sequence[str], fingerprints: Sequence[str]) -> None:
    """No two experts may have identical (MLP) weights: the MoE would hold one expert twice."""
    seen: dict[str, str] = {}
    for name, fingerprint in zip(names, fingerprints):
        if fingerprint in seen:
            raise EmpathyRecipesError(
                f"experts {seen[fingerprint]} and {name} have identical MLP weights: the MoE would hold the same "
                "expert twice"
            )
        seen[fingerprint] = name


def sample_rows(n_rows: int, n: int, seed: int) -> list[int]:
    """``min(n, n_rows)`` distinct row indices, the same for the same ``(n_rows, n, seed)``."""
    if n < 1:
        raise EmpathyRecipesError(f"the number of positive prompts must be at least 1, got {n}")
    if n_rows < 1:
        raise EmpathyRecipesError("cannot sample positive prompts from an empty set")
    return random.Random(seed).sample(range(n_rows), min(n, n_rows))


def render_prompt(
    messages: Sequence[Mapping[str, str]],
    prompt_format: str = "chat",
    apply_chat_template: Callable[..., str] | None = None,
    bos_token: str | None = None,
    include_reply: bool = True,
) -> str:
    """One positive prompt for mergekit from a dialogue in the common schema.

    mergekit tokenizes each prompt as ``bos_token + prompt`` without special tokens (``tokenize_prompts`` in
    ``mergekit/moe/router.py``), so a ``chat`` prompt is the chat template's text with its leading BOS removed; a
    ``plain`` prompt is the turns' contents, one per line. ``include_reply`` keeps the listener reply (the part that
    makes the sensibility and rationality sets differ); without it the prompt ends with the generation prompt.
    """
    msgs = [dict(m) for m in messages]
    if not include_reply and msgs and msgs[-1]["role"] == "assistant":
        msgs = msgs[:-1]
    if prompt_format == "plain":
        return "\n".join(m["content"] for m in msgs)
    if prompt_format != "chat":
        raise EmpathyRecipesError(f"prompt format must be one of {PROMPT_FORMATS}, got {prompt_format!r}")
    if apply_chat_template is None:
        raise EmpathyRecipesError("the chat prompt format needs a tokenizer with a chat template")
    text = apply_chat_template(msgs, tokenize=False, add_generation_prompt=not include_reply)
    if bos_token and text.startswith(bos_token):
        text = text[len(bos_token) :]
    return text


def build_moe_config(
    base_model: str,
    experts: Sequence[str],
    positive_prompts: Sequence[Sequence[str]] | None,
    gate_mode: str = "hidden",
    experts_per_token: int = 2,
    dtype: str | None = None,
    architecture: str = "mixtral",
    contrastive: bool = False,
) -> dict[str, Any]:
    """The ``mergekit-moe`` config as a plain dict (what the YAML holds).

    ``positive_prompts`` holds one list per expert; it is required by the prompt-based gate modes and left out of
    the config for ``random`` (which ignores it). With ``contrastive``, each expert's ``negative_prompts`` are the
    other experts' positive prompts: mergekit then starts each router row from the difference between the mean
    hidden state of the expert's prompts and that of the others', instead of from two nearly parallel means.
    """
    if gate_mode not in GATE_MODES:
        raise EmpathyRecipesError(f"gate mode must be one of {GATE_MODES}, got {gate_mode!r}")
    if gate_mode in PROMPT_GATE_MODES:
        if positive_prompts is None or len(positive_prompts) != len(experts):
            got = 0 if positive_prompts is None else len(positive_prompts)
            raise EmpathyRecipesError(
                f"gate mode {gate_mode!r} needs one positive prompt set per expert: {len(experts)} experts, {got} sets"
            )
    config: dict[str, Any] = {
        "base_model": base_model,
        "architecture": architecture,
        "gate_mode": gate_mode,
        "experts_per_token": experts_per_token,
    }
    if dtype:
        config["dtype"] = dtype
    expert_entries = []
    for idx, source in enumerate(experts):
        entry: dict[str, Any] = {"source_model": source}
        if gate_mode in PROMPT_GATE_MODES and positive_prompts is not None:
            entry["positive_prompts"] = list(positive_prompts[idx])
            if contrastive:
                entry["negative_prompts"] = [p for j, ps in enumerate(positive_prompts) if j != idx for p in ps]
        expert_entries.append(entry)
    config["experts"] = expert_entries
    return config


def _mergekit_errors(check: Callable[[], bool]) -> list[str]:
    """Run a mergekit check that reports through ``logging.error``; return what it logged if it failed."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.ERROR)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        failed = check()
    finally:
        root.removeHandler(handler)
    return [line for line in stream.getvalue().splitlines() if line.strip()] if failed else []


def validate_moe_config(config: Mapping[str, Any]):
    """Parse with mergekit's ``MoEMergeConfig`` and run its ``is_bad_config`` checks; return the parsed config."""
    from mergekit.moe.config import MoEMergeConfig, is_bad_config
    from pydantic import ValidationError

    try:
        parsed = MoEMergeConfig.model_validate(dict(config))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise EmpathyRecipesError(f"mergekit rejects the MoE config at {where}: {first['msg']}") from None
    errors = _mergekit_errors(lambda: is_bad_config(parsed))
    if errors:
        raise EmpathyRecipesError(f"mergekit rejects the MoE config: {errors[0]}")
    return parsed


def build_average_config(models: Sequence[str], dtype: str | None = None) -> dict[str, Any]:
    """A ``mergekit-yaml`` config averaging ``models`` with equal weights (linear merge, normalized)."""
    if len(models) < 2:
        raise EmpathyRecipesError(f"averaging needs at least two models, got {len(models)}")
    config: dict[str, Any] = {
        "merge_method": "linear",
        "models": [{"model": m, "parameters": {"weight": 1.0}} for m in models],
        "parameters": {"normalize": True},
    }
    if dtype:
        config["dtype"] = dtype
    return config


def validate_merge_config(config: Mapping[str, Any]):
    """Parse a ``mergekit-yaml`` config with mergekit's ``MergeConfiguration``; return the parsed config."""
    from mergekit.config import MergeConfiguration
    from pydantic import ValidationError

    try:
        return MergeConfiguration.model_validate(dict(config))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise EmpathyRecipesError(f"mergekit rejects the merge config at {where}: {first['msg']}") from None


def router_parameter_names(parameter_names: Sequence[str]) -> list[str]:
    """The names among ``parameter_names`` that :data:`ROUTER_PARAMETER_REGEX` matches (the routers)."""
    pattern = re.compile(ROUTER_PARAMETER_REGEX)
    return [name for name in parameter_names if pattern.search(name)]
