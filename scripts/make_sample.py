"""Cut the shipped ED sample in data/ from the full files in ../shared/data, reproducibly (fixed seed).

python scripts/make_sample.py --source ../shared/data --valid 400 --test 300 --seed 2407

``--source`` holds ``ed_valid_scored.jsonl`` (ED valid with the paper's judge outputs) and ``ed_test.jsonl`` (ED test
with references). A public clone has no ``../shared/data``: the shipped ``data/`` sample is already cut, and a missing
source is one ``error:`` line naming what to pass (``make sample-data SOURCE=<dir>``).
"""

import argparse
import json
import logging
import random
from pathlib import Path

from empathy_recipes.errors import EmpathyRecipesError, exit_on_user_error
from empathy_recipes.logs import add_log_args, setup_logging

logger = logging.getLogger(__name__)

FILES = {"valid": "ed_valid_scored.jsonl", "test": "ed_test.jsonl"}


def cut(src: Path, dst: Path, n: int, seed: int) -> None:
    rows = src.read_text().splitlines()
    if n > len(rows):
        raise EmpathyRecipesError(f"{src} has {len(rows)} rows, fewer than the {n} asked for")
    picked = sorted(random.Random(seed).sample(range(len(rows)), n))  # file order kept
    try:
        text = "".join(json.dumps(json.loads(rows[i]), ensure_ascii=False) + "\n" for i in picked)
    except json.JSONDecodeError as err:
        raise EmpathyRecipesError(f"{src} is not JSON Lines: {err}") from None
    dst.write_text(text)
    logger.info("%s: %d of %d rows from %s", dst, n, len(rows), src)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("data"))
    parser.add_argument("--valid", type=int, default=400)
    parser.add_argument("--test", type=int, default=300)
    parser.add_argument("--seed", type=int, default=2407)
    add_log_args(parser)
    args = parser.parse_args(argv)
    setup_logging("sample", args, __name__)
    missing = [name for name in FILES.values() if not (args.source / name).is_file()]
    if missing:
        raise EmpathyRecipesError(
            f"{args.source} lacks {', '.join(missing)}: pass the folder holding the full ED files "
            f"(make sample-data SOURCE=<dir>, or --source <dir>); the shipped sample in data/ needs no re-cut"
        )
    if min(args.valid, args.test) < 1:
        raise EmpathyRecipesError("--valid and --test must be >= 1")
    args.out.mkdir(parents=True, exist_ok=True)
    cut(args.source / FILES["valid"], args.out / "ed_valid_sample.jsonl", args.valid, args.seed)
    cut(args.source / FILES["test"], args.out / "ed_test_sample.jsonl", args.test, args.seed)


if __name__ == "__main__":
    main()
