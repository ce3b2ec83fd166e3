#!/usr/bin/env python
"""GPU training figures: the paper's LoRA recipe on a random-weight model of Llama-3-8B's architecture, packed vs
padded batches, with tokens/s, peak memory and model FLOPs utilisation (MFU).

    python -m bench.bench_sft_gpu                    # one GPU: --shape llama3-8b (the default when CUDA is seen)
    python -m bench.bench_sft_gpu --shape tiny       # CPU: a scaled-down shape (the default without CUDA)

Recipe (``recipes/llama-3-8b-instruct/sft/config_*.yaml``): LoRA r=8, alpha 32, dropout 0.1 on q/k/v/o/gate/up/down,
bf16 (on CUDA), max length 512, batch 16, gradient checkpointing (llama3-8b shape), loss on the final reply, learning
rate 1e-4; 30 steps, 5 not timed (tiny: 20 and 4). The model is built here with random weights from Llama-3-8B's
config (hidden 4096, 32 layers, 32 heads / 8 KV heads, MLP 14336, vocabulary 128256, rope theta 500000): nothing is
downloaded. Llama-3's tokenizer is not
shipped, so the ED text is tokenized with the embedded SmolLM2 tokenizer (a BPE of similar granularity; its ids fit
the 128256-entry vocabulary); the tiny shape uses a 512-token BPE trained here. ED examples are repeated as needed so
that every timed step is full.

Two modes, each in its own process (clean peak memory), same data, same batch size 16:
``padded`` (the naive way: 16 examples right-padded to the longest) and ``packed`` (``packing: true``: TRL's
best-fit-decreasing packing into 16 rows of 512 tokens, padding-free). The first ``--warmup`` steps are not timed.

Reported per mode: real (non-pad) tokens per second over the timed steps, peak memory (CUDA: peak allocated; CPU:
peak RSS), and MFU = model FLOPs per second / the device's peak. Model FLOPs of a step (no recomputation counted, so
gradient checkpointing does not inflate it):

    FLOPs = tokens x (4 x N_matmul + 2 x N_trainable) + 6 x L x d x sum over sequences of n x (n + 1)

N_matmul: parameters of every matrix multiply (all linear layers with the LoRA A/B matrices and the LM head; not the
embedding lookup); 2 x N per token forward, 2 x N backward for the activation gradients, 2 x N_trainable for the
weight gradients of the LoRA matrices only (the base is frozen). Attention scores and values: 2 x d x n(n+1)/2 each
per layer forward for a causal sequence of n tokens, x3 for forward + backward. Peak: 989 TFLOP/s per device for an
H100 SXM / H200 (dense BF16, NVIDIA's datasheet), 756 for an H100 PCIe, 312 for an A100; ``--peak-tflops`` for
anything else; none on CPU (MFU not reported). Goals on one H100/H200: packed >= 1.5x padded tokens/s, MFU >= 40%.

Ends with ``ratio=<packed over padded tokens/s> seconds=<packed timed seconds>``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAPES = {
    # Llama-3-8B's config.json (meta-llama/Meta-Llama-3-8B-Instruct)
    "llama3-8b": dict(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, max_position_embeddings=8192,
        rms_norm_eps=1e-5, tie_word_embeddings=False,
    ),
    # the same layout scaled down for 2 CPU cores
    "tiny": dict(
        hidden_size=128, intermediate_size=448, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=512, rope_theta=500000.0, max_position_embeddings=1024, rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    ),
}  # fmt: skip
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MODES = ("padded", "packed")


def peak_tflops(device_name: str) -> float | None:
    """Dense BF16 peak of one device from its name (NVIDIA datasheets), or None when unknown."""
    name = device_name.upper()
    if "H200" in name or ("H100" in name and "PCIE" not in name):
        return 989.0
    if "H100" in name:
        return 756.0
    if "A100" in name:
        return 312.0
    return None


def step_flops(tokens: int, seq_sq: int, n_matmul: int, n_trainable: int, layers: int, hidden: int) -> float:
    """Model FLOPs of one training step (formula in the module docstring); ``seq_sq`` = sum of n(n+1)."""
    return tokens * (4 * n_matmul + 2 * n_trainable) + 6 * layers * hidden * seq_sq


def sequence_lengths(input_ids, attention_mask=None, position_ids=None) -> list[int]:
    """Lengths of the real sequences in a batch: padded rows by their mask, packed rows by position-id restarts."""
    if attention_mask is not None and bool((attention_mask == 0).any()):
        return [int(n) for n in attention_mask.sum(-1).tolist()]
    if position_ids is not None:
        lengths = []
        for row in position_ids.tolist():
            starts = [i for i, p in enumerate(row) if p == 0] + [len(row)]
            lengths += [b - a for a, b in zip(starts, starts[1:]) if b > a]
        return lengths
    return [int(input_ids.shape[-1])] * int(input_ids.shape[0])


def build_dataset(args: argparse.Namespace, tokenizer):
    """Prompt/completion rows (loss on the final reply), ED examples repeated until every step can be full."""
    from datasets import Dataset

    from empathy_recipes.data import load_ed
    from empathy_recipes.sft_args import to_last_reply_completion

    ed = load_ed(args.data)
    rows = [to_last_reply_completion(m) for m in ed["messages"]]
    mean_len = sum(
        min(len(tokenizer.apply_chat_template(m, tokenize=True, return_dict=False)), args.max_length)
        for m in ed["messages"][:200]
    ) / min(200, len(ed))
    per_step = args.batch_size if args.worker == "padded" else args.batch_size * args.max_length / mean_len
    needed = int(per_step * (args.steps + 1) * 1.2) + args.batch_size
    return Dataset.from_list([rows[i % len(rows)] for i in range(needed)]), mean_len


def worker(args: argparse.Namespace) -> dict:
    """Train ``--steps`` steps in one mode and return its measurements (runs in a child process)."""
    import torch
    from peft import LoraConfig
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from empathy_recipes.chat_templates import CHATML_TRAINING_TEMPLATE

    cuda = torch.cuda.is_available() and not args.cpu
    torch.manual_seed(0)
    if args.shape == "tiny":
        from empathy_recipes.data import load_ed
        from empathy_recipes.testing import train_tiny_tokenizer

        texts = [t["content"] for m in load_ed(args.data, limit=400)["messages"] for t in m]
        tokenizer = train_tiny_tokenizer(texts, vocab_size=SHAPES["tiny"]["vocab_size"])
    else:
        tokenizer = AutoTokenizer.from_pretrained(REPO / "models" / "SmolLM2-135M-Instruct")
        tokenizer.chat_template = CHATML_TRAINING_TEMPLATE
    shape = dict(SHAPES[args.shape])
    config = LlamaConfig(
        **shape,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    dtype = torch.bfloat16 if cuda else torch.float32
    start = time.perf_counter()
    with torch.device("cuda" if cuda else "cpu"):
        model = LlamaForCausalLM._from_config(config, torch_dtype=dtype, attn_implementation="sdpa")
    build_seconds = time.perf_counter() - start
    dataset, mean_len = build_dataset(args, tokenizer)

    timing = {"tokens": 0, "padded_positions": 0, "seq_sq": 0, "seconds": 0.0, "steps": 0}
    pending: list[tuple[int, int, int]] = []

    def count(module, a, kw):
        ids = kw.get("input_ids", a[0] if a else None)
        lengths = sequence_lengths(ids, kw.get("attention_mask"), kw.get("position_ids"))
        pending.append((sum(lengths), int(ids.numel()), sum(n * (n + 1) for n in lengths)))

    model.register_forward_pre_hook(count, with_kwargs=True)

    class Timer(TrainerCallback):
        def on_step_begin(self, targs, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            pending.clear()
            self.t0 = time.perf_counter()

        def on_step_end(self, targs, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            if state.global_step > args.warmup:
                timing["seconds"] += time.perf_counter() - self.t0
                timing["steps"] += 1
                for tokens, positions, seq_sq in pending:
                    timing["tokens"] += tokens
                    timing["padded_positions"] += positions
                    timing["seq_sq"] += seq_sq

    mode_kwargs = {"packing": True, "packing_strategy": "bfd"} if args.worker == "packed" else {}
    sft_config = SFTConfig(
        output_dir=str(Path(args.tmp) / args.worker),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        max_length=args.max_length,
        learning_rate=1e-4,
        lr_scheduler_type="linear",
        bf16=cuda,
        use_cpu=not cuda,
        gradient_checkpointing=args.gradient_checkpointing,
        report_to="none",
        save_strategy="no",
        logging_steps=10_000,
        disable_tqdm=True,
        seed=42,
        dataloader_num_workers=0,
        **mode_kwargs,
    )
    lora = LoraConfig(r=8, lora_alpha=32, lora_dropout=0.1, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    trainer = SFTTrainer(
        model=model,
        args=sft_config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[Timer()],
    )
    n_matmul = sum(m.weight.numel() for m in trainer.model.modules() if isinstance(m, torch.nn.Linear))
    n_trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in trainer.model.parameters())
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    peak_mb = (
        torch.cuda.max_memory_allocated() / 2**20
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    device_name = torch.cuda.get_device_name() if cuda else "cpu"
    flops = step_flops(
        timing["tokens"], timing["seq_sq"], n_matmul, n_trainable, shape["num_hidden_layers"], shape["hidden_size"]
    )
    peak = args.peak_tflops or (peak_tflops(device_name) if cuda else None)
    seconds = timing["seconds"] or float("nan")
    return {
        "mode": args.worker,
        "device": device_name,
        "params": n_total,
        "trainable": n_trainable,
        "matmul_params": n_matmul,
        "build_seconds": build_seconds,
        "mean_example_tokens": mean_len,
        "timed_steps": timing["steps"],
        "tokens": timing["tokens"],
        "padding_share": 1 - timing["tokens"] / max(1, timing["padded_positions"]),
        "seconds": timing["seconds"],
        "tokens_per_s": timing["tokens"] / seconds,
        "tflops_per_s": flops / seconds / 1e12,
        "peak_tflops": peak,
        "mfu": (flops / seconds / 1e12 / peak) if peak else None,
        "peak_mb": peak_mb,
        "memory": "CUDA peak allocated" if cuda else "peak RSS",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default=None, help="default: llama3-8b on CUDA, else tiny")
    parser.add_argument("--steps", type=int, default=None, help="steps per mode (default 30; 20 with --shape tiny)")
    parser.add_argument("--warmup", type=int, default=None, help="first steps not timed (default 5; 4 with tiny)")
    parser.add_argument("--batch-size", type=int, default=16, help="examples (padded) or rows (packed) per step")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: by name)")
    parser.add_argument("--data", default=str(REPO / "data" / "ed_valid_sample.jsonl"), help="ED source")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when CUDA is there")
    parser.add_argument("--tmp", default=str(REPO / "outputs" / "bench_sft_gpu"))
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.shape is None or args.gradient_checkpointing is None:
        import torch

        cuda = torch.cuda.is_available() and not args.cpu
        args.shape = args.shape or ("llama3-8b" if cuda else "tiny")
    tiny = args.shape == "tiny"
    args.steps = args.steps if args.steps is not None else (20 if tiny else 30)
    args.warmup = args.warmup if args.warmup is not None else (4 if tiny else 5)
    if args.steps <= args.warmup or args.warmup < 0:
        raise SystemExit("error: --steps must exceed --warmup (>= 0)")
    if args.gradient_checkpointing is None:
        args.gradient_checkpointing = args.shape == "llama3-8b"  # as the recipe; 16 x 512 tokens on one GPU

    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return

    results = {}
    for mode in MODES:
        cmd = [sys.executable, "-m", "bench.bench_sft_gpu", "--worker", mode, "--shape", args.shape]
        cmd += ["--steps", str(args.steps)]
        cmd += [
            "--warmup",
            str(args.warmup),
            "--batch-size",
            str(args.batch_size),
            "--max-length",
            str(args.max_length),
        ]
        cmd += ["--data", args.data, "--tmp", args.tmp]
        cmd += ["--gradient-checkpointing" if args.gradient_checkpointing else "--no-gradient-checkpointing"]
        cmd += ["--cpu"] if args.cpu else []
        cmd += ["--peak-tflops", str(args.peak_tflops)] if args.peak_tflops else []
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)  # -m bench...: cwd on sys.path
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if out.returncode != 0 or line is None:
            sys.stderr.write(out.stderr[-3000:])
            raise SystemExit(f"error: the {mode} run failed (exit {out.returncode})")
        r = results[mode] = json.loads(line[len("RESULT ") :])
        mfu = f"MFU {100 * r['mfu']:.1f}% of {r['peak_tflops']:.0f} TFLOP/s" if r["mfu"] is not None else "MFU n/a"
        print(
            f"{mode:>6}: {r['device']}, shape {args.shape} ({r['params'] / 1e6:,.1f}M parameters, "
            f"{r['trainable'] / 1e6:.2f}M LoRA), {r['timed_steps']} timed steps ({args.warmup} warm-up), "
            f"{r['tokens']} tokens ({100 * r['padding_share']:.0f}% padding) in {r['seconds']:.1f} s: "
            f"{r['tokens_per_s']:.0f} tokens/s, {r['tflops_per_s']:.2f} model TFLOP/s, {mfu}, "
            f"{r['memory']} {r['peak_mb'] / 1024:.2f} GiB",
            flush=True,
        )
    ratio = results["packed"]["tokens_per_s"] / results["padded"]["tokens_per_s"]
    mfu = results["packed"]["mfu"]
    print(f"goal: packed >= 1.5x padded tokens/s: {'met' if ratio >= 1.5 else 'MISSED'}")
    if mfu is None:
        print("goal: MFU >= 40% (one H100/H200, llama3-8b shape): not measured here (no known peak for this device)")
    else:
        print(f"goal: MFU >= 40% (packed): {'met' if mfu >= 0.40 else 'MISSED'}")
    print(f"ratio={ratio:.2f} seconds={results['packed']['seconds']:.1f}")


if __name__ == "__main__":
    main()
