#!/usr/bin/env python
"""SFT throughput on ED: packing / padding-free batches vs padded batches, same model, same data, same threads.

ED replies (and most contexts) are short, so a padded batch is mostly padding when one long example sets its
length. The ways to train (each its own ``SFTTrainer``, model and optimizer, all in one process):

- ``padded`` (the naive way): batches of B examples, right-padded to the longest in the batch.
- ``packing`` (ours, the recipes' option ``packing: true``): TRL's best-fit-decreasing packing into rows of
  ``max_length`` tokens, padding-free (sequences kept apart by position_ids: sdpa/eager get a block-diagonal
  mask, flash-attention its varlen kernel). Rows per batch are chosen so a step sees about as many real tokens as
  a padded step.
- ``padding_free`` (``padding_free: true``, no packing; add it with ``--modes``): the same batches of B examples as
  ``padded``, flattened into one row without padding.

Each mode takes its first ``--steps`` batches once (fixed work: the same batches in every window) and runs them as
full optimizer steps (``trainer.training_step`` = forward + backward, then ``optimizer.step``). After one untimed
warm-up window per mode, the modes alternate A B B A for ``--rounds`` rounds (``bench/_timing.py``), on the same
threads (``BENCH_THREADS``, default 1; OpenMP waits passively). The headline is real (non-pad) tokens per CPU
second (the work done, whatever else shares the cores), wall seconds beside, with the load average per window.
Goal: packed >= 1.5x padded.
Ends with one line: ``ratio=<packing over padded tokens per CPU s, median of rounds> seconds=<packing window>``.

    python -m bench.bench_sft_packing                          # SmolLM2-135M-Instruct, 4 steps per window, CPU
    python -m bench.bench_sft_packing --steps 2 --rounds 3     # quicker
"""

from __future__ import annotations

from bench import _timing  # first: sets the thread count and OpenMP wait policy before torch loads

# isort: split

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "ed_valid_scored.jsonl"
MODES = ("padded", "packing", "padding_free")


def default_data() -> str:
    return str(SHARED_DATA if SHARED_DATA.exists() else REPO / "data" / "ed_valid_sample.jsonl")


def build(mode: str, args: argparse.Namespace, ds, tokenizer):
    """An SFTTrainer for ``mode``, its optimizer, and its first ``args.steps`` batches."""
    import torch
    from trl import SFTConfig, SFTTrainer

    kwargs = {"per_device_train_batch_size": args.batch_size, "max_length": args.max_length}
    if mode == "packing":
        kwargs.update(packing=True, packing_strategy="bfd", per_device_train_batch_size=args.packed_rows)
    elif mode == "padding_free":
        kwargs.update(padding_free=True, max_length=None)  # ED examples are far below max_length
    use_cuda = torch.cuda.is_available()
    config = SFTConfig(
        output_dir=str(Path(args.tmp) / mode),
        learning_rate=1e-5,
        bf16=use_cuda,
        use_cpu=not use_cuda,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
        **kwargs,
    )
    torch.manual_seed(0)
    trainer = SFTTrainer(model=args.model, args=config, train_dataset=ds, processing_class=tokenizer)
    trainer.create_optimizer_and_scheduler(num_training_steps=10_000)
    trainer.current_gradient_accumulation_steps = 1  # set by train(); training_step divides the loss by it
    batches = []
    for batch in trainer.get_train_dataloader():
        batches.append(batch)
        if len(batches) == args.steps:
            break
    if len(batches) < args.steps:
        raise SystemExit(f"error: {mode} has only {len(batches)} batches; use more --examples or fewer --steps")
    return trainer, batches


def real_tokens(batch) -> int:
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "models" / "SmolLM2-135M-Instruct"))
    parser.add_argument("--data", default=default_data(), help="ED source (default: full ED valid if present)")
    parser.add_argument("--examples", type=int, default=128, help="examples tokenized (packing packs these)")
    parser.add_argument("--batch-size", type=int, default=8, help="examples per padded / padding-free batch")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--packed-rows", type=int, default=0, help="rows per packed batch (0: same tokens/step)")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per timed window")
    parser.add_argument("--rounds", type=int, default=3, help="A B B A rounds (after one untimed warm-up)")
    parser.add_argument("--modes", default="padded,packing", help=f"comma-separated, from {MODES}")
    parser.add_argument("--goal", type=float, default=1.5)
    parser.add_argument("--tmp", default=str(REPO / "outputs" / "bench_sft_packing"))
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    from empathy_recipes.data import load_ed
    from empathy_recipes.sft_args import to_last_reply_completion

    threads = _timing.limit_threads()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    ed = load_ed(args.data, limit=args.examples)
    lengths = [
        min(len(tokenizer.apply_chat_template(m, tokenize=True, return_dict=False)), args.max_length)
        for m in ed["messages"]
    ]
    mean_len = sum(lengths) / len(lengths)
    if args.packed_rows <= 0:
        args.packed_rows = max(1, round(args.batch_size * mean_len / args.max_length))
    ds = ed.select_columns(["messages"]).map(
        to_last_reply_completion, input_columns="messages", remove_columns="messages"
    )

    modes = args.modes.split(",")
    built = {mode: build(mode, args, ds, tokenizer) for mode in modes}
    totals = {
        mode: sum(len(ids) for ids in trainer.train_dataset["input_ids"]) for mode, (trainer, _) in built.items()
    }
    print(
        f"model={args.model} data={args.data} examples={args.examples} mean_len={mean_len:.0f} tokens; "
        f"padded batch={args.batch_size}, packed rows per batch={args.packed_rows} x {args.max_length}; "
        f"{args.steps} steps per window; threads {threads}; device {'cuda' if torch.cuda.is_available() else 'cpu'}"
    )
    if len(set(totals.values())) != 1:
        raise SystemExit(f"error: the modes tokenized to different token counts: {totals}")
    print(f"every mode trains on the same {next(iter(totals.values()))} tokens of {args.examples} examples")
    for mode, (_, batches) in built.items():
        shape = tuple(batches[0]["input_ids"].shape)
        positions = sum(b["input_ids"].numel() for b in batches)
        tokens = sum(real_tokens(b) for b in batches)
        print(f"{mode:>13}: {tokens} real tokens in {positions} positions per window (first batch {shape})")

    def window(mode: str):
        trainer, batches = built[mode]
        for batch in batches:
            trainer.training_step(trainer.model, batch)
            trainer.optimizer.step()
            trainer.lr_scheduler.step()
            trainer.model.zero_grad(set_to_none=True)
        return sum(real_tokens(b) for b in batches)

    runs = _timing.run_abba(
        {mode: (lambda m: lambda: window(m))(mode) for mode in modes}, rounds=args.rounds, work=lambda m, t: t
    )
    for mode in modes:
        print(
            f"{mode:>13}: best {1 / runs.best(mode, 'cpu'):.1f} tokens per CPU s, "
            f"{1 / runs.best(mode, 'wall'):.1f} tokens per wall s"
        )
    ours = "packing" if "packing" in modes else modes[-1]
    ratio = seconds = float("nan")
    for mode in modes:
        if mode != "padded" and "padded" in modes:
            r, _ = _timing.summary(runs, "padded", mode, "cpu", unit="real token")
            if mode == ours:
                ratio, seconds = r, min(w.cpu for w in runs.of(mode))
    _timing.goal(f"{ours} vs padded, median paired tokens per CPU s", ratio, args.goal)
    print(f"ratio={ratio:.2f} seconds={seconds:.1f}")


if __name__ == "__main__":
    main()
