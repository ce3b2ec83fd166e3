#!/usr/bin/env python
"""SFT throughput on ED: packing / padding-free batches vs padded batches, same model, same data, one run.

ED replies (and most contexts) are short, so a padded batch is mostly padding when one long example sets its
length. Three ways to train one epoch over the same N examples, each in its own process (clean peak memory):

- ``padded`` (the naive way): batches of B examples, right-padded to the longest in the batch.
- ``packing`` (ours, the recipes' option ``packing: true``): TRL's best-fit-decreasing packing into rows of
  ``max_length`` tokens, padding-free (sequences kept apart by position_ids: sdpa/eager get a block-diagonal
  mask, flash-attention its varlen kernel). Rows per batch are chosen so a step sees about as many real tokens as
  a padded step.
- ``padding_free`` (``padding_free: true``, no packing): the same batches of B examples as ``padded``, flattened
  into one row without padding.

Reported per mode: real (non-pad) tokens per second of training, the process's CPU seconds and peak memory (RSS
on CPU; peak allocated on CUDA). On a machine shared with other work, wall time follows the others' load; with
``--threads 1`` the CPU seconds are a cleaner measure of the work done (with several threads they also count
OpenMP threads spinning while they wait for a core). The tokens are counted from the tokenized training set, so every mode trains on exactly the same tokens.
Ends with one line: ``ratio=<packing tokens/s over padded tokens/s> seconds=<packing train seconds>``.

    python bench/bench_sft_packing.py                       # SmolLM2-135M-Instruct, 64 ED examples, CPU
    python bench/bench_sft_packing.py --examples 512 --batch-size 16   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "ed_valid_scored.jsonl"
MODES = ("padded", "packing", "padding_free")


def default_data() -> str:
    return str(SHARED_DATA if SHARED_DATA.exists() else REPO / "data" / "ed_valid_sample.jsonl")


def worker(args: argparse.Namespace) -> dict:
    """Train one epoch in one mode and return its measurements (runs in a child process)."""
    import torch
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from empathy_recipes.data import load_ed
    from empathy_recipes.sft_args import to_last_reply_completion

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = load_ed(args.data, limit=args.examples).select_columns(["messages"])
    ds = ds.map(to_last_reply_completion, input_columns="messages", remove_columns="messages")
    mode = args.worker
    kwargs = {"per_device_train_batch_size": args.batch_size, "max_length": args.max_length}
    if mode == "packing":
        kwargs.update(packing=True, packing_strategy="bfd", per_device_train_batch_size=args.packed_rows)
    elif mode == "padding_free":
        kwargs.update(padding_free=True, max_length=None)  # ED examples are far below max_length
    use_cuda = torch.cuda.is_available()
    config = SFTConfig(
        output_dir=str(Path(args.tmp) / mode),
        num_train_epochs=1,
        learning_rate=1e-5,
        bf16=use_cuda,
        use_cpu=not use_cuda,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        logging_steps=10_000,
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
        **kwargs,
    )
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    trainer = SFTTrainer(
        model=args.model,
        args=config,
        train_dataset=ds,
        processing_class=tokenizer,
        # sdpa: the attention CPU runs have; packed rows get a block-diagonal mask built from position_ids
    )
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    rows = len(trainer.train_dataset)
    if use_cuda:
        torch.cuda.reset_peak_memory_stats()
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.train()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak_mb = (
        torch.cuda.max_memory_allocated() / 2**20
        if use_cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "mode": mode,
        "tokens": tokens,
        "rows": rows,
        "steps": trainer.state.global_step,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "cpu_seconds": cpu_seconds,
        "peak_mb": peak_mb,
        "memory": "cuda peak allocated" if use_cuda else "peak RSS",
    }


def padded_positions(args: argparse.Namespace) -> tuple[int, int, float]:
    """Tokens, padded positions of the padded baseline (batches in order), and mean example length."""
    from transformers import AutoTokenizer

    from empathy_recipes.data import load_ed

    tok = AutoTokenizer.from_pretrained(args.model)
    ds = load_ed(args.data, limit=args.examples)
    lengths = [
        min(len(tok.apply_chat_template(m, tokenize=True, return_dict=False)), args.max_length) for m in ds["messages"]
    ]
    padded = sum(
        max(lengths[i : i + args.batch_size]) * len(lengths[i : i + args.batch_size])
        for i in range(0, len(lengths), args.batch_size)
    )
    return sum(lengths), padded, sum(lengths) / len(lengths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "models" / "SmolLM2-135M-Instruct"))
    parser.add_argument("--data", default=default_data(), help="ED source (default: full ED valid if present)")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8, help="examples per padded / padding-free batch")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--packed-rows", type=int, default=0, help="rows per packed batch (0: same tokens/step)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: torch's default)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--tmp", default=str(REPO / "outputs" / "bench_sft_packing"))
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return

    tokens, padded, mean_len = padded_positions(args)
    if args.packed_rows <= 0:
        args.packed_rows = max(1, round(args.batch_size * mean_len / args.max_length))
    print(
        f"model={args.model} data={args.data} examples={args.examples} batch={args.batch_size} "
        f"mean_len={mean_len:.0f} tokens; padded batches are {100 * (1 - tokens / padded):.0f}% padding; "
        f"packed rows per batch={args.packed_rows} x {args.max_length}"
    )
    results = {}
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for mode in args.modes.split(","):
        cmd = [sys.executable, __file__, "--worker", mode, "--model", args.model, "--data", args.data]
        cmd += ["--examples", str(args.examples), "--batch-size", str(args.batch_size)]
        cmd += ["--max-length", str(args.max_length), "--packed-rows", str(args.packed_rows)]
        cmd += ["--threads", str(args.threads), "--tmp", args.tmp]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if out.returncode != 0 or line is None:
            sys.stderr.write(out.stderr[-3000:])
            raise SystemExit(f"error: the {mode} run failed (exit {out.returncode})")
        r = json.loads(line[len("RESULT ") :])
        results[mode] = r
        print(
            f"{mode:>13}: {r['tokens']} tokens in {r['rows']} rows, {r['steps']} steps, {r['seconds']:.1f} s "
            f"({r['cpu_seconds']:.0f} CPU s), {r['tokens_per_s']:.1f} tokens/s, {r['memory']} {r['peak_mb']:.0f} MB",
            flush=True,
        )
    if len({r["tokens"] for r in results.values()}) != 1:
        print("note: the modes tokenized to different token counts (truncation differs)")
    base = results.get("padded")
    for mode, r in results.items():
        if base and mode != "padded":
            print(
                f"{mode} / padded: {r['tokens_per_s'] / base['tokens_per_s']:.2f}x tokens/s, "
                f"{base['cpu_seconds'] / r['cpu_seconds']:.2f}x tokens per CPU-second, "
                f"{r['peak_mb'] / base['peak_mb']:.2f}x peak memory"
            )
    ours = results.get("packing") or next(iter(results.values()))
    ratio = ours["tokens_per_s"] / base["tokens_per_s"] if base else math.nan
    print(f"ratio={ratio:.2f} seconds={ours['seconds']:.1f}")


if __name__ == "__main__":
    main()
