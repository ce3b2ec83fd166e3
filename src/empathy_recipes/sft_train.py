"""The SFT stage's steps that touch data, model, tokenizer and trainer (``scripts/sft.py`` calls them in order).

Pure argument checks live in :mod:`empathy_recipes.sft_args`; these helpers load (datasets, a config, a tokenizer)
or act on a trainer. Heavy libraries are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import json
import logging
import os
from functools import partial
from pathlib import Path
from typing import Any

from trl.scripts.utils import DatasetConfig

from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.hub import CardInfo, input_ref, is_local, push_model_folder
from empathy_recipes.hub import model_card_text as hub_model_card_text
from empathy_recipes.mixture import describe
from empathy_recipes.sft_args import (
    SFTScriptArguments,
    check_chat_rows,
    check_lora_target_modules,
    check_sft_columns,
    global_batch_size,
    normalize_target_modules,
    select_trainable_parameters,
    to_training_example,
)

logger = logging.getLogger(__name__)

# TrainingArguments fields the model card's recipe table lists (besides the script's and the model's own)
CARD_TRAINING_FIELDS = (
    "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "max_length", "packing", "padding_free", "lr_scheduler_type", "warmup_steps", "weight_decay", "adam_beta2", "bf16",
    "gradient_checkpointing", "seed",
)  # fmt: skip
# what a push of the output folder leaves out (checkpoints, the merged model, private files)
PUSH_IGNORE = ("checkpoint-*", "merged/*", "_*")


def keep_hub_token_out_of_checkpoints(training_args: Any) -> None:
    """Move ``hub_token`` into ``HF_TOKEN`` (the Hub client reads it there), so it is never pickled into
    ``training_args.bin``."""
    if training_args.hub_token:
        os.environ["HF_TOKEN"] = training_args.hub_token
        training_args.hub_token = None


# ---- data ----------------------------------------------------------------------------------------------------------


def training_sources(script_args: SFTScriptArguments) -> list[DatasetConfig]:
    """``dataset_name`` (first, in its default split: None means the only one, else train) then the mixture."""
    sources = list(script_args.dataset_mixture or [])
    if script_args.dataset_name:
        first = DatasetConfig(path=script_args.dataset_name, name=script_args.dataset_config)
        first.split = script_args.dataset_split
        sources.insert(0, first)
    return sources


def is_empty_source(source: str, split: str | None, config: str | None = None) -> bool:
    """Whether a dataset reference holds no rows. A ``save_to_disk`` folder of an empty dataset has no data file
    (``state.json``'s ``_data_files`` is empty) and datasets 5.2 cannot load it back, so look before loading."""
    from empathy_recipes.data import load_dataset_any

    path = Path(source)
    if path.is_file():
        return path.stat().st_size == 0
    state = path / "state.json"
    if path.is_dir() and state.is_file():
        return not json.loads(state.read_text()).get("_data_files")
    return len(load_dataset_any(source, split, config)) == 0


def load_sft_data(sources: list, limit: int | None, label: str, seed: int = 42):
    """Load each source (TRL ``DatasetConfig``: path, name, split, columns, fraction) into the common chat schema,
    keep ``messages`` only, take each one's share (``fraction``, TRL's rule), concatenate (a mixture is shuffled
    with ``seed`` so that ``limit`` draws from every source), check it. An empty member of a mixture (say an empty
    discard set) is skipped with a note; an empty first source or an empty total is an error."""
    from datasets import concatenate_datasets

    from empathy_recipes.data import load_dataset_any, to_chat_schema
    from empathy_recipes.mixture import mixture_sizes

    parts, fractions = [], []
    for i, source in enumerate(sources):
        if i > 0 and is_empty_source(source.path, source.split, source.name):
            logger.warning(f"{describe(source)} is empty; the mixture goes on without it")
            continue
        raw = load_dataset_any(source.path, source.split, source.name)
        if source.columns is not None:
            missing = [c for c in source.columns if c not in raw.column_names]
            if missing:
                raise EmpathyRecipesError(f"{describe(source)} has no column(s) {missing}; it has {raw.column_names}")
            raw = raw.select_columns(source.columns)
        ds = to_chat_schema(raw)
        check_sft_columns(ds.column_names, describe(source))
        parts.append(ds.select_columns(["messages"]))
        fractions.append(source.fraction)
    sizes = mixture_sizes([len(p) for p in parts], fractions)
    parts = [p.select(range(n)) if n < len(p) else p for p, n in zip(parts, sizes)]
    ds = concatenate_datasets(parts).shuffle(seed=seed) if len(parts) > 1 else parts[0]
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    check_chat_rows(ds["messages"], label)
    return ds


def load_eval_data(script_args: SFTScriptArguments, training_args: Any):
    """The eval set (``eval_split`` of the training data, or ``eval_dataset_name``), or None; an ``eval_strategy``
    with nothing to evaluate is an error."""
    if script_args.eval_split or script_args.eval_dataset_name:
        source = script_args.eval_dataset_name or script_args.dataset_name
        config = script_args.dataset_config if source == script_args.dataset_name else None
        return load_sft_data(
            [DatasetConfig(path=source, name=config, split=script_args.eval_split)],
            script_args.eval_limit,
            "the eval data",
        )
    if training_args.eval_strategy != "no":
        raise EmpathyRecipesError(f"eval_strategy is {training_args.eval_strategy!r} but no eval_split is set")
    return None


def as_training_examples(dataset, script_args: SFTScriptArguments):
    """The chat rows as the examples the trainer sees: unchanged, or prompt/completion rows when the loss is on the
    last reply only, the context is one transcript message, or a system prompt is added."""
    if dataset is None:
        return None
    if not (script_args.last_reply_only_loss or script_args.prompt_format != "messages" or script_args.system_prompt):
        return dataset
    to_example = partial(
        to_training_example,
        prompt_format=script_args.prompt_format,
        last_reply_only_loss=script_args.last_reply_only_loss,
        system_prompt=script_args.system_prompt,
    )
    return dataset.map(to_example, input_columns="messages", remove_columns="messages")


# ---- model and tokenizer -------------------------------------------------------------------------------------------


def model_structure(model_args, trust_remote_code: bool) -> tuple[list[str], list[str]]:
    """Module and parameter names of the model, built on the meta device from its config: no weights are read."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(
            model_args.model_name_or_path, revision=model_args.model_revision, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise EmpathyRecipesError(
            f"cannot read the config of model {model_args.model_name_or_path!r}: {err}"
        ) from None
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return [n for n, _ in meta.named_modules()], [n for n, _ in meta.named_parameters()]


def check_model_structure(script_args: SFTScriptArguments, training_args: Any, model_args: Any) -> set[str] | None:
    """Resolve the model reference and check the LoRA targets and ``trainable_parameters`` against its structure
    (config only, no weights). Returns the names of the parameters to train, or None (all of them)."""
    from empathy_recipes.models import resolve_model_ref

    model_args.model_name_or_path = resolve_model_ref(model_args.model_name_or_path)
    module_names, parameter_names = model_structure(model_args, training_args.trust_remote_code)
    if model_args.use_peft:
        check_lora_target_modules(model_args.lora_target_modules, module_names)
        model_args.lora_target_modules = normalize_target_modules(model_args.lora_target_modules)
    if not script_args.trainable_parameters:
        return None
    return set(select_trainable_parameters(parameter_names, script_args.trainable_parameters))


def ensure_training_template(tokenizer) -> str | None:
    """Give the tokenizer a chat template with ``{% generation %}`` markers when it has none (needed for
    assistant-only loss). TRL's own patched template for known models first, else ChatML or Llama-3 by the
    tokenizer's special tokens. Returns the original template when it was replaced, else None."""
    from trl.chat_template_utils import (
        get_training_chat_template,
        has_generation_markers,
        llama3_training_chat_template,
    )

    from empathy_recipes.chat_templates import CHATML_TRAINING_TEMPLATE

    original = tokenizer.chat_template
    if original is not None and has_generation_markers(original):
        return None
    template = None
    if original is not None:
        try:
            template = get_training_chat_template(tokenizer)
        except ValueError:
            template = None
    if template is None:
        vocab = tokenizer.get_vocab()
        if "<|im_start|>" in vocab and "<|im_end|>" in vocab:
            template = CHATML_TRAINING_TEMPLATE
        elif "<|start_header_id|>" in vocab and "<|eot_id|>" in vocab:
            template = llama3_training_chat_template
        else:
            raise EmpathyRecipesError(
                "the tokenizer's chat template has no {% generation %} markers and no known training template fits "
                "it: pass chat_template_path (a .jinja file with the markers) or set assistant_only_loss: false"
            )
    tokenizer.chat_template = template
    return original if original is not None else ""


def load_tokenizer(model_args: Any, training_args: Any):
    """The model's tokenizer, with a training chat template when assistant-only loss needs one. Returns it and the
    template it replaced (None when untouched), to be put back before saving."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
    )
    original_template = None
    if training_args.assistant_only_loss and training_args.chat_template_path is None:
        original_template = ensure_training_template(tokenizer)
    return tokenizer, original_template


# ---- trainer -------------------------------------------------------------------------------------------------------


def build_trainer(model_args: Any, training_args: Any, train_dataset, eval_dataset, tokenizer):
    """TRL's ``SFTTrainer`` on the model reference (TRL loads it with the model arguments' revision, dtype, ...)."""
    from trl import SFTTrainer, get_peft_config

    model_init_kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
    }
    model_init_kwargs.update(training_args.model_init_kwargs or {})
    training_args.model_init_kwargs = model_init_kwargs
    return SFTTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )


def freeze_all_but(model, trainable: set[str], gradient_checkpointing: bool) -> tuple[int, int]:
    """Train only the parameters named in ``trainable``; returns (parameters trained, parameters frozen)."""
    frozen = 0
    for name, param in model.named_parameters():
        param.requires_grad = name in trainable
        frozen += 0 if param.requires_grad else param.numel()
    if gradient_checkpointing:
        model.enable_input_require_grads()
    return sum(p.numel() for p in model.parameters() if p.requires_grad), frozen


def log_global_batch(accelerator, training_args: Any) -> None:
    """Log, once (main process), what one optimizer step sees across every process."""
    if not accelerator.is_main_process:
        return
    per_device, accumulation = training_args.per_device_train_batch_size, training_args.gradient_accumulation_steps
    total = global_batch_size(per_device, accelerator.num_processes, accumulation)
    logger.info(
        "global batch = %d per device x %d processes x %d accumulation = %d sequences per optimizer step "
        "(device %s, %s)",
        per_device, accelerator.num_processes, accumulation, total, accelerator.device,
        str(accelerator.distributed_type).rsplit(".", 1)[-1],
    )  # fmt: skip


def train_and_evaluate(trainer, checkpoint: str | None, train_rows: int, eval_rows: int | None) -> dict[str, Any]:
    """Train (resuming from ``checkpoint``), save the state, evaluate when there is an eval set; the metrics."""
    from empathy_recipes.device_report import report_device

    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    report_device("sft", next(trainer.model.parameters()).device)
    metrics = dict(train_result.metrics)
    metrics["train_samples"] = train_rows
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    if eval_rows is not None:
        eval_metrics = trainer.evaluate()
        eval_metrics["eval_samples"] = eval_rows
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    return metrics


def tensorboard_dir(trainer) -> str | None:
    """Where the TensorBoard callback wrote this run's events (None when TensorBoard is not a report target)."""
    from transformers.integrations import TensorBoardCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback):
            return callback.logging_dir
    return None


def save_merged(model_args, training_args, adapter_dir: Path, merged_dir: Path, tokenizer) -> None:
    """Reload the base model, apply the saved adapter, merge it in and save a plain transformers folder."""
    from peft import AutoPeftModelForCausalLM

    model = AutoPeftModelForCausalLM.from_pretrained(
        str(adapter_dir),
        dtype=model_args.dtype if model_args.dtype not in (None, "auto") else "auto",
        trust_remote_code=training_args.trust_remote_code,
    )
    merged = model.merge_and_unload()
    merged.save_pretrained(merged_dir)
    tokenizer.save_pretrained(merged_dir)


# ---- model card and push ---------------------------------------------------------------------------------------


def training_method(script_args: SFTScriptArguments, training_args: Any, model_args: Any, partial_fit: bool) -> str:
    """What was trained and where the loss fell, in one line for the model card."""
    if model_args.use_peft:
        method = (
            f"LoRA (r={model_args.lora_r}, alpha={model_args.lora_alpha}, dropout={model_args.lora_dropout}, "
            f"targets={model_args.lora_target_modules})"
        )
    elif partial_fit:
        method = f"full fine-tuning of the parameters matching {script_args.trainable_parameters!r} (others frozen)"
    else:
        method = "full fine-tuning"
    reply_only = script_args.last_reply_only_loss or script_args.prompt_format == "transcript"
    loss = "the final reply" if reply_only else "assistant turns only"
    if not reply_only and not training_args.assistant_only_loss:
        loss = "every token"
    if script_args.prompt_format == "transcript":
        loss += " (context as one Speaker/Listener transcript message)"
    return f"{method}; loss on {loss}"


def card_recipe(script_args: SFTScriptArguments, training_args: Any, model_args: Any) -> dict[str, Any]:
    """The settings the model card's recipe table lists."""
    recipe = {k: v for k, v in vars(script_args).items() if v is not None and k not in ("verbose", "quiet")}
    recipe.update({k: getattr(model_args, k) for k in ("model_name_or_path", "dtype", "use_peft")})
    recipe.update({k: getattr(training_args, k) for k in CARD_TRAINING_FIELDS})
    recipe["world_size"] = training_args.world_size
    return recipe


def write_model_card(trainer, card: str, title: str, sources: list[DatasetConfig], output_dir: Path) -> None:
    """TRL's own card (base model, trainer, framework versions, citations) through its public
    ``create_model_card``, then ours appended (data, method, command, recipe, metrics, licence)."""
    from empathy_recipes.hub import extend_model_card

    hub_datasets = [s.path for s in sources if not is_local(s.path)]
    trainer.create_model_card(
        model_name=title,
        dataset_name=hub_datasets[0] if hub_datasets else None,
        tags=["empathy-recipes", "empathetic-dialogues"],
    )
    extend_model_card(output_dir / "README.md", card)


def push_merged(merged_dir: Path, repo: str, title: str, base_model: str, sources, command: str, private: bool) -> str:
    """Push the merged model next to the adapter (``<repo>-merged``) with a card pointing back at it; the URL."""
    card = hub_model_card_text(
        CardInfo(
            title=f"{title} (merged)",
            description=(
                f"`{base_model}` with the LoRA adapter [`{repo}`](https://huggingface.co/"
                f"{repo}) merged in (peft `merge_and_unload`): a plain transformers model, e.g. an expert "
                "for `make moe`. How it was trained: the adapter's card."
            ),
            command=command,
            inputs=[input_ref(base_model, "model"), {"id": repo, "revision": "this push"}],
        ),
        base_model=base_model,
        datasets=[s.path for s in sources if not is_local(s.path)],
    )
    return push_model_folder(merged_dir, f"{repo}-merged", private=private, card=card)
