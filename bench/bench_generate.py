"""Benchmark: batched generation (ours) vs one example at a time (the papers' loop) on SmolLM2-135M-Instruct.

Same ED test contexts, the generate stage's defaults on both sides (greedy, ``--batch-size``
``generation.DEFAULT_BATCH_SIZE`` = 32, ``--max-new-tokens 64``, float32 on CPU), the same loaded model, the same
threads (``BENCH_THREADS``, default 1). Ours is ``generate_replies``: length-sorted, left-padded batches whose
prompts are prefilled in groups of similar length, finished rows leaving the batch every ``generation.SEGMENT``
tokens. The baseline is one plain ``generate()`` call per example, as the papers' evaluation code did
(``generate_replies`` with ``batch_size=1`` does exactly that). After an untimed warm-up of both ways, the two ways
alternate A B B A for ``--rounds`` rounds (``bench/_timing.py``); the headline is CPU seconds per generated token
(the batched and the single replies are counted separately), wall seconds beside. Every reply is compared:
the batched replies must equal the one-at-a-time replies (``--allow-mismatch N`` tolerates N that differ by float
rounding under padding, all printed). Goal (issue 7): >= 5x. Ends with one line:
``ratio=<one-at-a-time / batched CPU s per token> seconds=<batched window, CPU>``.

    python -m bench.bench_generate                 # 64 contexts, the stage's defaults (about 30 min on one thread)
    python -m bench.bench_generate --n 32          # what make bench-check runs: one batch of 32 (about 15 min)
"""

from __future__ import annotations

from bench import _timing  # first: sets the thread count and OpenMP wait policy before torch loads

# isort: split

import argparse
import json
from pathlib import Path

from empathy_recipes.generation import DEFAULT_BATCH_SIZE

REPO = Path(__file__).resolve().parents[1]
FULL_TEST = REPO.parent / "shared" / "data" / "ed_test.jsonl"
SAMPLE = REPO / "data" / "ed_test_sample.jsonl"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--n", type=int, default=64, help="the first N ED test contexts")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="the generate stage's default")
    p.add_argument("--max-new-tokens", type=int, default=64, help="the generate stage's default")
    p.add_argument("--rounds", type=int, default=3, help="A B B A rounds (after one untimed warm-up)")
    p.add_argument("--allow-mismatch", type=int, default=0, help="replies allowed to differ (float rounding)")
    p.add_argument("--device", default=None)
    p.add_argument("--goal", type=float, default=5.0)
    args = p.parse_args()

    import torch

    from empathy_recipes.data import load_ed
    from empathy_recipes.generation import generate_replies, load_generation_model
    from empathy_recipes.models import default_model_path

    threads = _timing.limit_threads()
    torch.manual_seed(0)
    source = FULL_TEST if FULL_TEST.exists() else SAMPLE
    ds = load_ed(source, limit=args.n)
    conversations = [m[:-1] for m in ds["messages"]]
    model_ref = args.model or str(default_model_path())
    model, tokenizer = load_generation_model(model_ref, device=args.device)
    print(
        f"{len(conversations)} contexts from {source}; {model_ref} on {model.device}, {model.dtype}; "
        f"greedy, max_new_tokens={args.max_new_tokens}; threads {threads}"
    )

    def batched():
        return generate_replies(
            (model, tokenizer), conversations, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
            progress=False,
        )  # fmt: skip

    def single():
        return [
            generate_replies(
                (model, tokenizer), [c], batch_size=1, max_new_tokens=args.max_new_tokens, progress=False
            )[0]
            for c in conversations
        ]

    def n_tokens(mode, replies):
        n = sum(len(ids) for ids in tokenizer(replies, add_special_tokens=False)["input_ids"])
        if n == 0:
            raise SystemExit(f"error: {mode} generated no tokens at all (a model that only writes '')")
        return n

    runs = _timing.run_abba({"one_at_a_time": single, "batched": batched}, rounds=args.rounds, work=n_tokens)
    b, s = runs.outputs["batched"], runs.outputs["one_at_a_time"]
    differ = [i for i, (x, y) in enumerate(zip(b, s)) if x != y]
    empty = sum(not r.strip() for r in b)
    capped = sum(len(ids) >= args.max_new_tokens for ids in tokenizer(b, add_special_tokens=False)["input_ids"])
    print(
        f"identical replies: {len(b) - len(differ)}/{len(b)}; empty replies: {empty}; "
        f"replies cut at max_new_tokens (no <|im_end|> before): {capped}/{len(b)}"
    )
    for i in differ:
        print("DIFFER:", json.dumps({"i": i, "batched": b[i], "one_at_a_time": s[i]}))
    print("example:", json.dumps({"context": conversations[0][-1]["content"], "reply": b[0]}))
    for mode in ("one_at_a_time", "batched"):
        w = runs.of(mode)[0]
        print(f"{mode:>14}: {w.work:.0f} tokens per window, best {1 / runs.best(mode, 'wall'):.1f} tokens/s wall")
    ratio, _ = _timing.summary(runs, "one_at_a_time", "batched", "cpu", unit="token")
    seconds = min(w.cpu for w in runs.of("batched"))
    _timing.goal("batched vs one at a time, median paired CPU ratio per token", ratio, args.goal)
    print(f"ratio={ratio:.2f} seconds={seconds:.2f}")
    if len(differ) > args.allow_mismatch:
        raise SystemExit(f"error: {len(differ)} replies differ (allowed: {args.allow_mismatch})")


if __name__ == "__main__":
    main()
