"""Plot rank-1 against training seconds from scripts/learning_curves.py JSON files (docs/learning.md).

    python scripts/plot_learning.py runs/learning/heldout/curves.json --out docs/learning_curves.png \\
        --chance 0.0238 --title "held-out synthetic set (seed 23, 210 ids)"

Needs matplotlib (``pip install 'vireid[viz]'``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("curves", nargs="+", help="curves.json files")
    parser.add_argument("--out", required=True)
    parser.add_argument("--chance", type=float, default=None, help="chance rank-1 (1 / test identities)")
    parser.add_argument("--title", default="")
    parser.add_argument("--only", default=None, help="comma-separated variant names to plot")
    args = parser.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("plotting needs matplotlib: pip install 'vireid[viz]'") from None
    variants = {}
    for path in args.curves:
        variants.update(json.loads(Path(path).read_text()))
    if args.only:
        wanted = args.only.split(",")
        variants = {k: v for k, v in variants.items() if k in wanted}
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, run in variants.items():
        xs = [0.0] + [p["train_s"] for p in run["points"]]
        ys = [100 * (args.chance or 0.0)] + [100 * p["rank1"] for p in run["points"]]
        ax.plot(xs, ys, marker="o", label=name)
    if args.chance:
        ax.axhline(100 * args.chance, color="grey", linestyle="--", label=f"chance ({100 * args.chance:.1f}%)")
    ax.set_xlabel("training seconds (1 CPU core, 1 torch thread)")
    ax.set_ylabel("rank-1 (%), sysu/all/single/seeded")
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
