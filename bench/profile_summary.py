"""Summarise py-spy's collapsed stacks (--format raw): top functions by self and by total samples.

usage: python bench/profile_summary.py bench/results/<run>/profile-F3-ours-0.txt [--top 25]
"""

from __future__ import annotations

import argparse
import collections
import re


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    with open(args.path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            samples += n
            frames = [re.sub(r":\d+\)$", ")", fr) for fr in stack.split(";")]
            own[frames[-1]] += n
            for fr in set(frames):
                total[fr] += n
    print(f"{samples} samples (idle not sampled: py-spy records only active threads without --idle)")
    print("\nself %   function")
    for fr, n in own.most_common(args.top):
        print(f"{100 * n / samples:6.1f}  {fr}")
    print("\ntotal %  function")
    for fr, n in total.most_common(args.top):
        print(f"{100 * n / samples:6.1f}  {fr}")


if __name__ == "__main__":
    main()
