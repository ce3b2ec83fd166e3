#!/usr/bin/env python
"""Supervised fine-tuning of an empathy expert (or a full model, or only some of its parameters) with TRL.

A YAML recipe gives the defaults and any field can be overridden on the command line:

    accelerate launch --config_file accelerate_configs/single.yaml scripts/sft.py \\
        --config recipes/smollm2-135m-instruct/sft/config_sensibility.yaml --max_steps 5

(``make sft RECIPE=... ACCELERATE=... ARGS="..."`` runs exactly that.) Fields: this script's own
``SFTScriptArguments`` (``empathy_recipes.sft_args``), TRL's ``SFTConfig`` and TRL's ``ModelConfig``.

Outputs in ``output_dir``: the model (or the LoRA adapter), the tokenizer, ``checkpoint-*`` folders (a rerun with
the same ``output_dir`` resumes from the newest one), ``README.md`` (model card), ``*_results.json``; for LoRA runs
also ``merged/`` (the base model merged with the adapter, a plain transformers folder).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from functools import partial
from pathlib import Path

from trl.scripts.utils import DatasetConfig

from empathy_recipes.device_report import report_device
from empathy_recipes.errors import EmpathyRecipesError, exit_on_user_error
from empathy_recipes.hub import (
    CardInfo,
    check_can_push,
    extend_model_card,
    input_ref,
    is_local,
    push_model_folder,
    redacted_command,
)
from empathy_recipes.hub import model_card_text as model_card_text_hub
from empathy_recipes.logs import setup_logging
from empathy_recipes.mixture import describe
from empathy_recipes.sft_args import (
    check_chat_rows,
    check_lora_target_modules,
    check_sft_columns,
    global_batch_size,
    last_checkpoint,
    model_card_text,
    normalize_target_modules,
    parse_sft_args,
    select_trainable_parameters,
    to_training_example,
)

logger = logging.getLogger(__name__)


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


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    script_args, training_args, model_args = parse_sft_args(argv)
    setup_logging("sft", script_args, __name__)  # rank-aware: only rank 0 logs INFO
    argv = list(sys.argv[1:] if argv is None else argv)
    if training_args.hub_token:  # never pickled into training_args.bin: the Hub client reads it from HF_TOKEN
        os.environ["HF_TOKEN"] = training_args.hub_token
        training_args.hub_token = None

    if training_args.push_to_hub:
        check_can_push("push_to_hub")
    # ---- data (cheap, so its errors come before any model) ----
    train_sources = list(script_args.dataset_mixture or [])
    if script_args.dataset_name:  # first, in its default split (None: the only one, else train)
        first = DatasetConfig(path=script_args.dataset_name, name=script_args.dataset_config)
        first.split = script_args.dataset_split
        train_sources.insert(0, first)
    train_dataset = load_sft_data(
        train_sources, script_args.dataset_limit, "the training data", seed=training_args.seed
    )
    eval_dataset = None
    if script_args.eval_split or script_args.eval_dataset_name:
        eval_source = script_args.eval_dataset_name or script_args.dataset_name
        eval_config = script_args.dataset_config if eval_source == script_args.dataset_name else None
        eval_dataset = load_sft_data(
            [DatasetConfig(path=eval_source, name=eval_config, split=script_args.eval_split)],
            script_args.eval_limit,
            "the eval data",
        )
    elif training_args.eval_strategy != "no":
        raise EmpathyRecipesError(f"eval_strategy is {training_args.eval_strategy!r} but no eval_split is set")
    if script_args.last_reply_only_loss or script_args.prompt_format != "messages" or script_args.system_prompt:
        to_example = partial(
            to_training_example,
            prompt_format=script_args.prompt_format,
            last_reply_only_loss=script_args.last_reply_only_loss,
            system_prompt=script_args.system_prompt,
        )
        train_dataset = train_dataset.map(to_example, input_columns="messages", remove_columns="messages")
        if eval_dataset is not None:
            eval_dataset = eval_dataset.map(to_example, input_columns="messages", remove_columns="messages")

    # ---- model structure (config only, no weights) ----
    from empathy_recipes.models import resolve_model_ref

    model_args.model_name_or_path = resolve_model_ref(model_args.model_name_or_path)
    module_names, parameter_names = model_structure(model_args, training_args.trust_remote_code)
    if model_args.use_peft:
        check_lora_target_modules(model_args.lora_target_modules, module_names)
        model_args.lora_target_modules = normalize_target_modules(model_args.lora_target_modules)
    trainable = None
    if script_args.trainable_parameters:
        trainable = set(select_trainable_parameters(parameter_names, script_args.trainable_parameters))

    # ---- tokenizer: a training chat template when assistant-only loss needs one ----
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
    )
    original_template = None
    if training_args.assistant_only_loss and training_args.chat_template_path is None:
        original_template = ensure_training_template(tokenizer)

    # ---- trainer ----
    from trl import SFTTrainer, get_peft_config

    model_init_kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
    }
    model_init_kwargs.update(training_args.model_init_kwargs or {})
    training_args.model_init_kwargs = model_init_kwargs
    trainer = SFTTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    if trainable is not None:
        frozen = 0
        for name, param in trainer.model.named_parameters():
            param.requires_grad = name in trainable
            frozen += 0 if param.requires_grad else param.numel()
        if training_args.gradient_checkpointing:
            trainer.model.enable_input_require_grads()
        kept = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        logger.info(
            f"trainable_parameters={script_args.trainable_parameters!r}: {len(trainable)} tensors, {kept:,} "
            f"parameters trained, {frozen:,} frozen"
        )

    # ---- the global batch: what one optimizer step sees across every process ----
    accelerator = trainer.accelerator
    if accelerator.is_main_process:
        per_device, accumulation = training_args.per_device_train_batch_size, training_args.gradient_accumulation_steps
        total = global_batch_size(per_device, accelerator.num_processes, accumulation)
        logger.info(
            "global batch = %d per device x %d processes x %d accumulation = %d sequences per optimizer step "
            "(device %s, %s)",
            per_device, accelerator.num_processes, accumulation, total, accelerator.device,
            str(accelerator.distributed_type).rsplit(".", 1)[-1],
        )  # fmt: skip

    # ---- train, resuming from the newest checkpoint in output_dir ----
    checkpoint = training_args.resume_from_checkpoint or last_checkpoint(training_args.output_dir)
    if checkpoint:
        logger.info(f"resuming from {checkpoint}")
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    report_device("sft", next(trainer.model.parameters()).device)
    metrics = dict(train_result.metrics)
    metrics["train_samples"] = len(train_dataset)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    if eval_dataset is not None:
        eval_metrics = trainer.evaluate()
        eval_metrics["eval_samples"] = len(eval_dataset)
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)

    # ---- save: model or adapter, tokenizer (with its own template back), merged model, model card ----
    if original_template is not None:
        tokenizer.chat_template = original_template or None
    trainer.save_model(training_args.output_dir)
    output_dir = Path(training_args.output_dir)
    merged_dir = None
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(output_dir)
        if model_args.use_peft and script_args.merge_lora:
            merged_dir = output_dir / "merged"
            save_merged(model_args, training_args, output_dir, merged_dir, tokenizer)
            logger.info(f"merged model saved to {merged_dir}")
        method = (
            f"LoRA (r={model_args.lora_r}, alpha={model_args.lora_alpha}, dropout={model_args.lora_dropout}, "
            f"targets={model_args.lora_target_modules})"
            if model_args.use_peft
            else (
                f"full fine-tuning of the parameters matching {script_args.trainable_parameters!r} (others frozen)"
                if trainable is not None
                else "full fine-tuning"
            )
        )
        reply_only = script_args.last_reply_only_loss or script_args.prompt_format == "transcript"
        loss = "the final reply" if reply_only else "assistant turns only"
        if not reply_only and not training_args.assistant_only_loss:
            loss = "every token"
        if script_args.prompt_format == "transcript":
            loss += " (context as one Speaker/Listener transcript message)"
        recipe = {k: v for k, v in vars(script_args).items() if v is not None and k not in ("verbose", "quiet")}
        recipe.update({k: getattr(model_args, k) for k in ("model_name_or_path", "dtype", "use_peft")})
        for key in (
            "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
            "gradient_accumulation_steps", "max_length", "packing", "padding_free", "lr_scheduler_type",
            "warmup_steps", "weight_decay", "adam_beta2", "bf16", "gradient_checkpointing", "seed",
        ):  # fmt: skip
            recipe[key] = getattr(training_args, key)
        recipe["world_size"] = training_args.world_size
        card = model_card_text(
            title=script_args.model_card_title or output_dir.name,
            base_model=model_args.model_name_or_path,
            datasets=[describe(s) for s in train_sources],
            recipe=recipe,
            metrics=metrics,
            method=f"{method}; loss on {loss}",
            command=redacted_command(argv, __file__),
            merged_dir="merged/" if merged_dir else None,
        )
        # TRL's own card (base model, trainer, framework versions, citations), then ours appended: data, method,
        # command, recipe, metrics, licence.
        hub_datasets = [s.path for s in train_sources if not is_local(s.path)]
        trainer.create_model_card(
            model_name=script_args.model_card_title or output_dir.name,
            dataset_name=hub_datasets[0] if hub_datasets else None,
            tags=["empathy-recipes", "empathetic-dialogues"],
        )
        extend_model_card(output_dir / "README.md", card)
        logger.info(f"model and card saved to {output_dir}")
        logs = tensorboard_dir(trainer)
        if logs:
            logger.info(f"TensorBoard logs in {logs} (tensorboard --logdir {logs})")

    if training_args.push_to_hub and trainer.accelerator.is_main_process:
        repo = trainer.hub_model_id or training_args.hub_model_id or output_dir.name
        private = bool(training_args.hub_private_repo)
        keep_out = ("checkpoint-*", "merged/*", "_*")
        logger.info(f"pushed to {push_model_folder(output_dir, repo, private=private, ignore_patterns=keep_out)}")
        if merged_dir is not None:
            merged_card = model_card_text_hub(
                CardInfo(
                    title=f"{script_args.model_card_title or output_dir.name} (merged)",
                    description=(
                        f"`{model_args.model_name_or_path}` with the LoRA adapter [`{repo}`](https://huggingface.co/"
                        f"{repo}) merged in (peft `merge_and_unload`): a plain transformers model, e.g. an expert "
                        "for `make moe`. How it was trained: the adapter's card."
                    ),
                    command=redacted_command(argv, __file__),
                    inputs=[input_ref(model_args.model_name_or_path, "model"), {"id": repo, "revision": "this push"}],
                ),
                base_model=model_args.model_name_or_path,
                datasets=hub_datasets,
            )
            url = push_model_folder(merged_dir, f"{repo}-merged", private=private, card=merged_card)
            logger.info(f"pushed the merged model to {url}")
    trainer.accelerator.wait_for_everyone()


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


if __name__ == "__main__":
    main()
