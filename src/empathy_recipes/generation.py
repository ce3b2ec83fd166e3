"""Batched chat generation: many conversations in, one assistant reply each out, in input order.

The papers' evaluation code called ``generate()`` once per example. Here prompts are rendered with the
tokenizer's chat template (``add_generation_prompt=True``), sorted by token length so that each batch pads as
little as possible, generated in left-padded batches (greedy by default; a row that has finished its reply leaves
the batch at the next multiple of ``SEGMENT`` new tokens instead of writing padding until the longest reply ends),
and put back in input order. Within a batch the prompts are prefilled in groups of similar length
(``prefill_groups``), so a batch of mixed lengths is not padded to its longest for the whole prefill.
Generation stops at the eos token(s): the tokenizer's eos, the model's ``generation_config.eos_token_id`` and
ChatML's ``<|im_end|>`` when the vocabulary has it.

Three backends, one call: ``transformers`` (CPU or GPU, always available), ``vllm`` (GPU, used only when asked
for and importable; prompts go in as token ids rendered by the chat template, so a template that writes its own BOS,
like Llama-3's, never gets a second one) and ``openai`` (chat completions against any OpenAI-compatible server:
``vllm serve``, ``transformers serve``, TGI; the server applies the chat template). The device/dtype policy and the
tokenizer setup are :mod:`empathy_recipes.llm`'s, shared with every distilabel stage.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from empathy_recipes.device_report import report_device
from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.llm import (
    BACKENDS,
    default_dtype,
    pick_device,
    prepare_generation_tokenizer,
    prompt_token_ids,
)
from empathy_recipes.models import resolve_model_ref

Conversation = list[dict[str, str]]
IM_END = "<|im_end|>"


def vllm_available() -> bool:
    """True when ``import vllm`` would work (checked without importing it)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def load_generation_tokenizer(model_ref: str | os.PathLike):
    """The model's tokenizer set up for batched generation: left padding and a pad token (eos when it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_ref(model_ref))
    if tokenizer.chat_template is None:
        raise EmpathyRecipesError(f"{model_ref}: the tokenizer has no chat template; use an instruct/chat model")
    return prepare_generation_tokenizer(tokenizer)


def load_generation_model(model_ref: str | os.PathLike, device: str | None = None, dtype: str | None = None):
    """``(model, tokenizer)`` in eval mode on ``device``.

    ``dtype`` defaults to the checkpoint's own dtype on an accelerator and float32 on CPU (bf16 matmuls are slow on
    most CPUs). A PEFT adapter folder (``adapter_config.json``) is loaded on its base model and merged.
    """
    import torch
    from transformers import AutoModelForCausalLM

    ref = resolve_model_ref(model_ref)
    device = pick_device(device)
    dtype = default_dtype(device, dtype)
    torch_dtype: Any = dtype if dtype == "auto" else getattr(torch, dtype)
    tokenizer = load_generation_tokenizer(ref)
    if os.path.exists(os.path.join(ref, "adapter_config.json")):
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(ref, dtype=torch_dtype).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(ref, dtype=torch_dtype)
    # A MoE saved after router training keeps output_router_logits=True (the load-balancing loss of training);
    # generation needs no aux loss, and computing it on left-padded batches fails in Mixtral.
    if getattr(model.config, "output_router_logits", False):
        model.config.output_router_logits = False
    model.to(device).eval()
    report_device("generate", model.device)
    return model, tokenizer


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """Every id that ends a reply: the tokenizer's eos, the model's generation eos(s) and ``<|im_end|>``."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    if model is not None:
        gen_eos = getattr(model.generation_config, "eos_token_id", None)
        if gen_eos is not None:
            ids.extend(int(i) for i in (gen_eos if isinstance(gen_eos, list | tuple) else [gen_eos]))
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.append(im_end)
    return sorted(set(ids))


def with_system_prompt(conversations: Sequence[Conversation], system_prompt: str | None = None) -> list[Conversation]:
    """Each conversation, with ``system_prompt`` as a first system message when given."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [system + list(conv) for conv in conversations]


def build_prompts(tokenizer, conversations: Sequence[Conversation], system_prompt: str | None = None) -> list[str]:
    """Render each conversation with the chat template and ``add_generation_prompt=True``."""
    return [
        tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        for messages in with_system_prompt(conversations, system_prompt)
    ]


def vllm_prompts(
    tokenizer, conversations: Sequence[Conversation], system_prompt: str | None = None
) -> list[dict[str, list[int]]]:
    """vLLM ``TokensPrompt`` dicts: the chat-templated prompts as token ids, with no special token added on top.

    A text prompt would be tokenized by vLLM with ``add_special_tokens=True``: a Llama-3 template already writes
    ``<|begin_of_text|>``, so the model would see two BOS tokens."""
    return [
        {"prompt_token_ids": ids}
        for ids in prompt_token_ids(tokenizer, build_prompts(tokenizer, conversations, system_prompt))
    ]


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped in batches of ``batch_size``, longest first, so each batch pads to similar lengths.

    Every index appears exactly once; the caller writes results back by index, which restores input order.
    """
    if batch_size < 1:
        raise EmpathyRecipesError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _validate(conversations: Sequence[Conversation], max_new_tokens: int) -> None:
    if max_new_tokens < 1:
        raise EmpathyRecipesError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    for i, conv in enumerate(conversations):
        if not conv or not all(isinstance(m, dict) and "role" in m and "content" in m for m in conv):
            raise EmpathyRecipesError(f"conversation {i} is empty or not a list of {{role, content}} messages")


#: Prompts per ``generate()`` call (transformers backend) and requests in flight (openai), every generating stage's
#: default. 32, not 16: on CPU a decoding step reads all the weights whatever the batch, so a bigger batch spreads
#: that read over more tokens (SmolLM2 on one thread, the first 32 ED test contexts, 64 new tokens: 9.9 CPU ms per
#: token at 32 vs 11.9 at 16); on a GPU an 8B model's KV cache for 32 rows of 576 tokens is about 2.4 GB.
DEFAULT_BATCH_SIZE = 32
# Rows that reached a stop token leave the batch every SEGMENT new tokens (see ``_generate_batch``).
SEGMENT = 8
# A prefill group may pad its prompts to at most this many times their real tokens (see ``prefill_groups``).
PREFILL_PADDING = 1.15


def prefill_groups(lengths: Sequence[int], max_padding: float = PREFILL_PADDING) -> list[list[int]]:
    """Indices of ``lengths`` in groups to prefill together: longest first, each group padded to its longest.

    A group grows while its padded size (its longest length times its rows) stays within ``max_padding`` times its
    real tokens; a batch of similar lengths is one group, a batch of mixed lengths splits where the lengths drop.
    Every index appears exactly once.
    """
    if max_padding < 1:
        raise EmpathyRecipesError(f"max_padding must be >= 1, got {max_padding}")
    groups: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        group = groups[-1] if groups else []
        real = sum(lengths[j] for j in group) + lengths[i]
        if group and lengths[group[0]] * (len(group) + 1) <= max_padding * real:
            group.append(i)
        else:
            groups.append([i])
    return groups


def _prefill_cache(model, tokenizer, rows: list[list[int]]):
    """A KV cache of every prompt in ``rows`` but its last token, left-padded to the longest, or ``None``.

    The prompts are run in ``prefill_groups``, each group padded only to its own longest; the caches are then
    left-padded with zeros (masked out by the batch's attention mask) and stacked, so ``generate()`` on the padded
    batch starts from the last prompt token of every row, at the positions a single padded prefill would give it.
    ``None`` (prefill the padded batch as one) when the batch is one group, or when the model's cache is not plain
    full-attention layers (sliding-window, hybrid and linear-attention caches are not padded here).
    """
    import torch
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    prefixes = [ids[:-1] for ids in rows]
    groups = prefill_groups([len(p) for p in prefixes])
    if len(groups) < 2 or min(len(p) for p in prefixes) < 1:
        return None
    longest = max(len(p) for p in prefixes)
    last_logits_only = _last_logits_only(model)
    per_group = []  # each group's (keys, values) per layer, left-padded to ``longest``
    for group in groups:
        inputs = tokenizer.pad({"input_ids": [prefixes[i] for i in group]}, return_tensors="pt").to(model.device)
        positions = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = model(**inputs, position_ids=positions, use_cache=True, **last_logits_only)
        layers = getattr(out.past_key_values, "layers", None)
        if not layers or not all(type(layer) is DynamicLayer for layer in layers):
            return None
        pad = longest - inputs["input_ids"].shape[1]
        per_group.append([(_pad_left(layer.keys, pad), _pad_left(layer.values, pad)) for layer in layers])
    # the groups' rows, stacked in group order, then put back in the order of ``rows``
    back = torch.argsort(torch.tensor([row for group in groups for row in group], device=model.device))
    return DynamicCache(
        [
            (torch.cat([g[layer][0] for g in per_group])[back], torch.cat([g[layer][1] for g in per_group])[back])
            for layer in range(len(per_group[0]))
        ]
    )


def _last_logits_only(model) -> dict[str, int]:
    """``logits_to_keep=1`` where the model's forward takes it: the prefill needs the cache, not the logits."""
    import inspect

    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


def _pad_left(states, n: int):
    """``states`` (batch, heads, tokens, dim) with ``n`` zero tokens in front."""
    import torch

    return torch.nn.functional.pad(states, (0, 0, n, 0))


def _generate_batch(model, tokenizer, rows: list[list[int]], max_new_tokens: int, eos: list[int], sampling) -> list:
    """The new token ids of each prompt in ``rows``, generated as one left-padded batch.

    ``generate()`` alone keeps a finished row in the batch (writing padding) until the longest reply ends. Here
    generation runs in segments of ``SEGMENT`` tokens on one KV cache; after each segment the rows that wrote a stop
    token leave the batch (their cache rows are dropped), so the remaining steps compute only unfinished replies.
    The prompts are prefilled in groups of similar length first (``_prefill_cache``) when the batch mixes lengths.
    A row's tokens are those ``generate()`` would have written for it: the same prompt, cache and decoding rule.
    """
    import torch
    from transformers import DynamicCache

    inputs = tokenizer.pad({"input_ids": rows}, return_tensors="pt").to(model.device)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    stop = torch.tensor(eos, device=ids.device)
    live = list(range(len(rows)))  # positions in ``rows`` of the rows still in the batch
    new: list[list[int]] = [[] for _ in rows]
    left = max_new_tokens
    # one row: nothing to drop; a model that asks for its own cache (static, hybrid): generate() will not take it
    # back as past_key_values. Both: one plain generate() call.
    own_cache = getattr(model.generation_config, "cache_implementation", None) is not None
    batched = len(rows) > 1 and not own_cache
    segment = SEGMENT if batched else max_new_tokens
    cache = _prefill_cache(model, tokenizer, rows) if batched else None
    while live and left > 0:
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                past_key_values=cache,
                max_new_tokens=min(segment, left),
                eos_token_id=eos,
                pad_token_id=tokenizer.pad_token_id,
                return_dict_in_generate=True,
                **sampling,
            )
        fresh = out.sequences[:, ids.shape[1] :]
        left -= fresh.shape[1]
        for row, tokens in zip(live, fresh.tolist()):
            new[row].extend(tokens)
        keep = (~torch.isin(fresh, stop).any(dim=1)).nonzero().flatten()
        if len(keep) == 0:
            break
        ids, mask, cache = out.sequences, torch.cat([mask, torch.ones_like(fresh)], dim=1), out.past_key_values
        # a cache that cannot drop rows keeps them: their tokens after the stop are cut below
        if len(keep) < len(live) and isinstance(cache, DynamicCache):
            live = [live[k] for k in keep.tolist()]
            ids, mask = ids[keep], mask[keep]
            cache.batch_select_indices(keep)
    return [_until_stop(tokens, eos) for tokens in new]


def _until_stop(tokens: list[int], stop: Sequence[int]) -> list[int]:
    """``tokens`` up to and including the first stop token (what follows it is padding or a finished row's extra)."""
    ends = [tokens.index(t) for t in stop if t in tokens]
    return tokens[: min(ends) + 1] if ends else tokens


def _generate_transformers(
    model,
    tokenizer,
    prompts: list[str],
    batch_size: int,
    max_new_tokens: int,
    do_sample: bool,
    temperature: float,
    top_p: float,
    progress: bool,
) -> list[str]:
    from tqdm.auto import tqdm

    encoded = prompt_token_ids(tokenizer, prompts)
    batches = length_sorted_batches([len(ids) for ids in encoded], batch_size)
    eos = stop_token_ids(tokenizer, model)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if do_sample else {"do_sample": False}
    replies: list[str] = [""] * len(prompts)
    bar = tqdm(total=len(prompts), desc="generate", unit="ex", disable=not progress)
    for batch in batches:
        new_tokens = _generate_batch(model, tokenizer, [encoded[i] for i in batch], max_new_tokens, eos, sampling)
        for i, text in zip(batch, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
            replies[i] = text.strip()
        bar.update(len(batch))
    bar.close()
    return replies


def _generate_vllm(
    model_ref: str,
    prompts: list[dict[str, list[int]]],
    stop_ids: list[int],
    max_new_tokens: int,
    do_sample: bool,
    temperature: float,
    top_p: float,
    progress: bool,
    seed: int | None,
    engine_kwargs: Mapping[str, Any],
) -> list[str]:  # pragma: no cover - needs a GPU and vllm
    from vllm import LLM, SamplingParams

    llm = LLM(model=model_ref, seed=seed or 0, **engine_kwargs)
    params = SamplingParams(
        max_tokens=max_new_tokens,
        temperature=temperature if do_sample else 0.0,
        top_p=top_p if do_sample else 1.0,
        stop_token_ids=stop_ids,
        skip_special_tokens=True,
    )
    # vLLM schedules and batches by itself; output order follows input order.
    outputs = llm.generate(prompts, params, use_tqdm=progress)
    return [o.outputs[0].text.strip() for o in outputs]


def _generate_openai(
    model: str,
    conversations: list[Conversation],
    base_url: str,
    api_key: str | None,
    max_new_tokens: int,
    do_sample: bool,
    temperature: float,
    top_p: float,
    seed: int | None,
    concurrency: int,
    progress: bool,
) -> list[str]:
    """Chat completions, ``concurrency`` requests in flight, replies in input order."""
    import openai
    from tqdm.auto import tqdm

    client = openai.OpenAI(base_url=base_url, api_key=api_key or "EMPTY", max_retries=3, timeout=600)
    sampling: dict[str, Any] = {"temperature": temperature, "top_p": top_p} if do_sample else {"temperature": 0.0}
    if seed is not None and do_sample:  # greedy needs no seed (and some servers take none)
        sampling["seed"] = seed

    def reply(messages: Conversation) -> str:
        completion = client.chat.completions.create(
            model=model, messages=messages, max_tokens=max_new_tokens, **sampling
        )
        return (completion.choices[0].message.content or "").strip()

    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            bar = tqdm(pool.map(reply, conversations), total=len(conversations), desc="generate", disable=not progress)
            return list(bar)
    except openai.APIConnectionError as err:
        raise EmpathyRecipesError(f"--base-url {base_url}: {err}") from None
    except openai.APIStatusError as err:
        raise EmpathyRecipesError(f"--base-url {base_url} answered {err.status_code}: {err.message}") from None


#: The generate_replies() settings a generating stage takes from its command line, under the same names.
GENERATION_ARGS = (
    "batch_size", "max_new_tokens", "do_sample", "temperature", "top_p", "device", "backend", "system_prompt", "seed",
)  # fmt: skip


def generation_kwargs(args: Any) -> dict[str, Any]:
    """``generate_replies`` keyword arguments (:data:`GENERATION_ARGS`) from a stage's parsed arguments."""
    return {k: getattr(args, k) for k in GENERATION_ARGS}


def generate_replies(
    model_ref: str | os.PathLike | tuple[Any, Any],
    conversations: Sequence[Conversation],
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    device: str | None = None,
    progress: bool = True,
    backend: str = "transformers",
    system_prompt: str | None = None,
    seed: int | None = None,
    dtype: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    engine_kwargs: Mapping[str, Any] | None = None,
) -> list[str]:
    """One assistant reply per conversation, in input order.

    Args:
        model_ref: a Hub id or local folder, or an already loaded ``(model, tokenizer)`` pair (its tokenizer should
            pad on the left; it is switched to left padding here).
        conversations: each a list of ``{"role", "content"}`` messages ending with the turn to answer.
        batch_size: prompts per ``generate()`` call (transformers), requests in flight (openai); vLLM batches by
            itself.
        max_new_tokens: reply length cap in tokens.
        do_sample: ``False`` is greedy decoding; ``temperature`` and ``top_p`` apply only when sampling.
        device: ``cuda``/``cpu``/...; default picks the accelerator when there is one.
        progress: show a tqdm bar.
        backend: ``"transformers"``, ``"vllm"`` (needs ``pip install vllm`` and a GPU) or ``"openai"`` (chat
            completions; ``model_ref`` is the served model name).
        system_prompt: an optional system message prepended to every conversation.
        seed: seeds torch (and vLLM, and the server's sampler where it takes one) for reproducible sampling.
        dtype: weights dtype (``float32``/``float16``/``bfloat16``/``auto``); default: the device/dtype policy.
        base_url, api_key: the OpenAI-compatible server (``openai`` backend).
        engine_kwargs: extra ``vllm.LLM`` arguments (``tensor_parallel_size``, ``gpu_memory_utilization``,
            ``max_model_len``, ``dtype``).
    """
    if backend not in BACKENDS:
        raise EmpathyRecipesError(f"unknown backend {backend!r}; use one of {BACKENDS}")
    _validate(conversations, max_new_tokens)
    if not conversations:
        return []
    if backend == "openai":
        if not base_url:
            raise EmpathyRecipesError("the openai backend needs base_url (e.g. http://localhost:8000/v1)")
        if isinstance(model_ref, tuple):
            raise EmpathyRecipesError("the openai backend takes the served model name, not a loaded model")
        return _generate_openai(
            str(model_ref),
            with_system_prompt(conversations, system_prompt),
            base_url,
            api_key,
            max_new_tokens,
            do_sample,
            temperature,
            top_p,
            seed,
            batch_size,
            progress,
        )
    if seed is not None:
        from transformers import set_seed

        set_seed(seed)
    if backend == "vllm":
        if isinstance(model_ref, tuple):
            raise EmpathyRecipesError("the vllm backend takes a model id or path, not a loaded model")
        if not vllm_available():
            raise EmpathyRecipesError("backend 'vllm' asked for but vllm is not installed (pip install '.[vllm]')")
        ref = resolve_model_ref(model_ref)
        tokenizer = load_generation_tokenizer(ref)
        prompts = vllm_prompts(tokenizer, conversations, system_prompt)
        engine = {"dtype": dtype or "auto", **(engine_kwargs or {})}
        return _generate_vllm(
            ref,
            prompts,
            stop_token_ids(tokenizer),
            max_new_tokens,
            do_sample,
            temperature,
            top_p,
            progress,
            seed,
            engine,
        )
    if isinstance(model_ref, tuple):
        model, tokenizer = model_ref
        prepare_generation_tokenizer(tokenizer)
    else:
        model, tokenizer = load_generation_model(model_ref, device=device, dtype=dtype)
    prompts = build_prompts(tokenizer, conversations, system_prompt)
    return _generate_transformers(
        model, tokenizer, prompts, batch_size, max_new_tokens, do_sample, temperature, top_p, progress
    )
