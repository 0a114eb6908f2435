"""`vireid demo`: synthetic data -> IDKL training -> SYSU evaluation -> report, on the CPU."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the whole pipeline on a synthetic dataset and write a report",
        description="Generate a synthetic SYSU-MM01-layout dataset, train IDKL with a small backbone on the CPU, "
                    "evaluate under the SYSU protocols and write a report with a rank-list picture.")
    parser.add_argument("--data-root", help="use this SYSU-MM01-layout dataset instead of generating one")
    parser.add_argument("--out", default="vireid-demo", help="output folder (default: ./vireid-demo)")
    parser.add_argument("--ids", type=int, default=None, help="identities of the generated dataset (default 80)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=2")
    parser.set_defaults(func=run)


def run(args) -> int:
    from vireid.app.demo import DEMO_IDS, run_demo

    run_demo(args.out, args.data_root, args.overrides, ids=args.ids or DEMO_IDS)
    return 0
