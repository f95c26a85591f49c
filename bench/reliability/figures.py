"""Shared pieces of the reliability benchmark scripts: the run's arguments and the figures table."""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence


def run_args(description: str, count_flag: str, default: int) -> tuple[int, int]:
    """Parse `--<count_flag> N --seed S` and return the count and the seed (random when unset)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(f"--{count_flag}", dest="count", metavar=count_flag.upper(), type=int,
                        default=default)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    return int(args.count), int(seed)


def print_table(title: str, rows: Sequence[tuple[str, object]]) -> None:
    """Print the heading line and the figures as a two-column Markdown table."""
    print(f"# {title}\n")
    print("| figure | value |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
