"""Benchmark: batched generation (ours) vs one example at a time (the papers' loop) on SmolLM2-135M-Instruct.

Same 64 ED test contexts, same greedy decoding, same ``max_new_tokens``, same loaded model; the only difference is
``generate_replies`` batching length-sorted, left-padded prompts versus one ``generate()`` call per example, as the
papers' evaluation code did. Reports generated tokens per second for both and how many replies agree.
Ends with one line: ``ratio=<one-at-a-time seconds / batched seconds> seconds=<batched>``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FULL_TEST = REPO.parent / "shared" / "data" / "ed_test.jsonl"
SAMPLE = REPO / "data" / "ed_test_sample.jsonl"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--device", default=None)
    args = p.parse_args()

    import torch

    from empathy_recipes.data import load_ed
    from empathy_recipes.generation import generate_replies, load_generation_model
    from empathy_recipes.models import default_model_path

    torch.manual_seed(0)
    source = FULL_TEST if FULL_TEST.exists() else SAMPLE
    ds = load_ed(source, limit=args.n)
    conversations = [m[:-1] for m in ds["messages"]]
    model_ref = args.model or str(default_model_path())
    model, tokenizer = load_generation_model(model_ref, device=args.device)
    print(
        f"{len(conversations)} contexts from {source}; {model_ref} on {model.device}, {model.dtype}; "
        f"greedy, max_new_tokens={args.max_new_tokens}; torch threads {torch.get_num_threads()}"
    )
    generate_replies((model, tokenizer), conversations[:2], batch_size=2, max_new_tokens=4, progress=False)  # warm-up

    def n_tokens(replies):
        return sum(len(ids) for ids in tokenizer(replies, add_special_tokens=False)["input_ids"])

    start = time.perf_counter()
    batched = generate_replies(
        (model, tokenizer),
        conversations,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        progress=False,
    )
    batched_s = time.perf_counter() - start

    start = time.perf_counter()
    single = [
        generate_replies((model, tokenizer), [c], batch_size=1, max_new_tokens=args.max_new_tokens, progress=False)[0]
        for c in conversations
    ]
    single_s = time.perf_counter() - start

    same = sum(a == b for a, b in zip(batched, single))
    print(f"batched (batch {args.batch_size}): {batched_s:7.2f} s  {n_tokens(batched) / batched_s:8.1f} tokens/s")
    print(f"one at a time:         {single_s:7.2f} s  {n_tokens(single) / single_s:8.1f} tokens/s")
    note = "" if same == len(single) else " (the rest differ by float rounding under padding)"
    print(f"identical replies: {same}/{len(single)}{note}")
    print("example:", json.dumps({"context": conversations[0][-1]["content"], "reply": batched[0]}))
    print(f"ratio={single_s / batched_s:.2f} seconds={batched_s:.2f}")


if __name__ == "__main__":
    main()
