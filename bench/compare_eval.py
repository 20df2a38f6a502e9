"""Paired comparison of two eval_bench.py result files over the same queries: per set and
mode, MRR@10 of each and the mean difference (B - A) with its 95% paired bootstrap
interval (codequarry.evaluation.paired_difference: 2,000 resamples, seed 0).

    python bench/compare_eval.py bench/results/eval-vector.json bench/results/eval.json \
        [--modes semantic hybrid]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from codequarry.evaluation import paired_difference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="eval_bench.py JSON (the baseline, A)")
    parser.add_argument("b", type=Path, help="eval_bench.py JSON (B)")
    parser.add_argument("--modes", nargs="+", default=["lexical", "semantic", "hybrid"])
    args = parser.parse_args()
    a, b = (json.loads(path.read_text())["figures"]["sets"] for path in (args.a, args.b))
    for name in sorted(a.keys() & b.keys()):
        for mode in args.modes:
            ra, rb = a[name]["reciprocal_ranks"].get(mode), b[name]["reciprocal_ranks"].get(mode)
            if ra is None or rb is None:
                continue
            d = paired_difference(rb, ra)
            print(f"{name:24s} {mode:9s} {sum(ra) / len(ra):.3f} -> {sum(rb) / len(rb):.3f}  "
                  f"{d['mean']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]")


if __name__ == "__main__":
    main()
