"""`vireid ablate`: train the rows of an ablation plan under one budget and write a markdown table."""

from __future__ import annotations

import shlex
import sys

from vireid.utils.device import device_arg


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "ablate", help="train and evaluate the variants of an ablation plan on synthetic data; write a table",
        description="Train every row of an ablation plan (YAML: synthetic data, protocol, seeds, shared budget, "
                    "rows) once per training seed with identical data and budget, evaluate each run under the "
                    "plan's protocol and write OUT/ablation.md (R1, mAP, mINP as mean ± std over seeds, the "
                    "gallery-trial std, wall times, and the pairs of rows more than two standard errors apart). "
                    "Plans: benchmarks/ablation_cpu.yaml, benchmarks/ablation_gpu.yaml.")
    parser.add_argument("plan", help="ablation plan YAML")
    parser.add_argument("--out", required=True, help="output folder (one run folder per row, the table, the data)")
    parser.add_argument("--rows", default=None,
                        help="comma-separated row names to run (default: all rows of the plan)")
    parser.add_argument("--data-root", default=None,
                        help="existing dataset root (default: generate the plan's synthetic data in OUT/data)")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at once, one torch thread each (2)")
    parser.add_argument("--device", type=device_arg, default=None,
                        help="cpu, cuda or auto (default: the plan's device, else cpu)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from vireid.app.ablation import run_ablation

    rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else None
    command = "vireid " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["ablate"] else ""
    run_ablation(args.plan, args.out, data_root=args.data_root, rows=rows, jobs=args.jobs, command=command,
                 device=args.device)
    return 0
