"""Cut the shipped ED sample in data/ from the full files in ../shared/data, reproducibly (fixed seed).

python scripts/make_sample.py --source ../shared/data --valid 400 --test 300 --seed 2407
"""

import argparse
import json
import random
from pathlib import Path


def cut(src: Path, dst: Path, n: int, seed: int) -> None:
    rows = src.read_text().splitlines()
    picked = sorted(random.Random(seed).sample(range(len(rows)), n))  # file order kept
    dst.write_text("".join(json.dumps(json.loads(rows[i]), ensure_ascii=False) + "\n" for i in picked))
    print(f"{dst}: {n} of {len(rows)} rows from {src}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("data"))
    parser.add_argument("--valid", type=int, default=400)
    parser.add_argument("--test", type=int, default=300)
    parser.add_argument("--seed", type=int, default=2407)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cut(args.source / "ed_valid_scored.jsonl", args.out / "ed_valid_sample.jsonl", args.valid, args.seed)
    cut(args.source / "ed_test.jsonl", args.out / "ed_test_sample.jsonl", args.test, args.seed)


if __name__ == "__main__":
    main()
