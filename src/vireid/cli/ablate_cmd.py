"""`vireid ablate`: train the rows of an ablation plan under one budget and write a markdown table."""

from __future__ import annotations

import shlex
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "ablate", help="train and evaluate the variants of an ablation plan on synthetic data; write a table",
        description="Train every row of an ablation plan (YAML: synthetic data, protocol, shared budget, rows) "
                    "with identical data, seed and budget, evaluate each under the plan's protocol and write "
                    "OUT/ablation.md (R1, mAP, mINP mean ± std over the trials; wall times). "
                    "Example plan: benchmarks/ablation_round1.yaml.")
    parser.add_argument("plan", help="ablation plan YAML")
    parser.add_argument("--out", required=True, help="output folder (one run folder per row, the table, the data)")
    parser.add_argument("--rows", default=None,
                        help="comma-separated row names to run (default: all rows of the plan)")
    parser.add_argument("--data-root", default=None,
                        help="existing dataset root (default: generate the plan's synthetic data in OUT/data)")
    parser.add_argument("--jobs", type=int, default=2, help="rows trained at once, one torch thread each (2)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto: where rows train and evaluate")
    parser.set_defaults(func=run)


def run(args) -> int:
    from vireid.app.ablation import run_ablation

    rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else None
    command = "vireid " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["ablate"] else ""
    run_ablation(args.plan, args.out, data_root=args.data_root, rows=rows, jobs=args.jobs, command=command,
                 device=args.device)
    return 0
