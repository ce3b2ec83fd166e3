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

import logging
from pathlib import Path

from empathy_recipes.errors import exit_on_user_error
from empathy_recipes.hub import check_can_push, push_model_folder, redacted_command
from empathy_recipes.logs import setup_logging
from empathy_recipes.mixture import describe
from empathy_recipes.sft_args import last_checkpoint, model_card_text, parse_sft_args
from empathy_recipes.sft_train import (
    PUSH_IGNORE,
    as_training_examples,
    build_trainer,
    card_recipe,
    check_model_structure,
    freeze_all_but,
    keep_hub_token_out_of_checkpoints,
    load_eval_data,
    load_sft_data,
    load_tokenizer,
    log_global_batch,
    push_merged,
    save_merged,
    tensorboard_dir,
    train_and_evaluate,
    training_method,
    training_sources,
    write_model_card,
)

logger = logging.getLogger(__name__)


@exit_on_user_error
def main(script_args, training_args, model_args) -> None:
    setup_logging("sft", script_args, __name__)  # rank-aware: only rank 0 logs INFO
    keep_hub_token_out_of_checkpoints(training_args)
    if training_args.push_to_hub:
        check_can_push("push_to_hub")

    # ---- data (cheap, so its errors come before any model) ----
    sources = training_sources(script_args)
    train_dataset = load_sft_data(sources, script_args.dataset_limit, "the training data", seed=training_args.seed)
    eval_dataset = as_training_examples(load_eval_data(script_args, training_args), script_args)
    train_dataset = as_training_examples(train_dataset, script_args)

    # ---- model structure (config only, no weights), tokenizer ----
    trainable = check_model_structure(script_args, training_args, model_args)
    tokenizer, original_template = load_tokenizer(model_args, training_args)

    # ---- train, resuming from the newest checkpoint in output_dir ----
    trainer = build_trainer(model_args, training_args, train_dataset, eval_dataset, tokenizer)
    if trainable is not None:
        kept, frozen = freeze_all_but(trainer.model, trainable, training_args.gradient_checkpointing)
        logger.info(
            f"trainable_parameters={script_args.trainable_parameters!r}: {len(trainable)} tensors, {kept:,} "
            f"parameters trained, {frozen:,} frozen"
        )
    log_global_batch(trainer.accelerator, training_args)
    checkpoint = training_args.resume_from_checkpoint or last_checkpoint(training_args.output_dir)
    if checkpoint:
        logger.info(f"resuming from {checkpoint}")
    eval_rows = None if eval_dataset is None else len(eval_dataset)
    metrics = train_and_evaluate(trainer, checkpoint, len(train_dataset), eval_rows)

    # ---- save: model or adapter, tokenizer (with its own template back), merged model, model card ----
    if original_template is not None:
        tokenizer.chat_template = original_template or None
    trainer.save_model(training_args.output_dir)
    output_dir = Path(training_args.output_dir)
    title = script_args.model_card_title or output_dir.name
    merged_dir = output_dir / "merged" if model_args.use_peft and script_args.merge_lora else None
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(output_dir)
        if merged_dir is not None:
            save_merged(model_args, training_args, output_dir, merged_dir, tokenizer)
            logger.info(f"merged model saved to {merged_dir}")
        card = model_card_text(
            title=title,
            base_model=model_args.model_name_or_path,
            datasets=[describe(s) for s in sources],
            recipe=card_recipe(script_args, training_args, model_args),
            metrics=metrics,
            method=training_method(script_args, training_args, model_args, partial_fit=trainable is not None),
            command=redacted_command(None, __file__),
            merged_dir="merged/" if merged_dir else None,
        )
        write_model_card(trainer, card, title, sources, output_dir)
        logger.info(f"model and card saved to {output_dir}")
        logs = tensorboard_dir(trainer)
        if logs:
            logger.info(f"TensorBoard logs in {logs} (tensorboard --logdir {logs})")

    # ---- push: the adapter or model folder, then the merged model next to it ----
    if training_args.push_to_hub and trainer.accelerator.is_main_process:
        repo = trainer.hub_model_id or training_args.hub_model_id or output_dir.name
        private = bool(training_args.hub_private_repo)
        logger.info(f"pushed to {push_model_folder(output_dir, repo, private=private, ignore_patterns=PUSH_IGNORE)}")
        if merged_dir is not None:
            command = redacted_command(None, __file__)
            url = push_merged(merged_dir, repo, title, model_args.model_name_or_path, sources, command, private)
            logger.info(f"pushed the merged model to {url}")
    trainer.accelerator.wait_for_everyone()


if __name__ == "__main__":
    script_args, training_args, model_args = exit_on_user_error(parse_sft_args)()
    main(script_args, training_args, model_args)
