"""`vireid demo`: synthetic data -> a method and a plain CNN, same wall time -> SYSU evaluation -> report."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the whole pipeline on a synthetic dataset and write a report",
        description="Generate a synthetic SYSU-MM01-layout dataset (210 identities, 42 in the test split), "
                    "train a method (EfficientNet-Lite0 fine-tuned from ImageNet; MBFVRD or IDKL from scratch with "
                    "--method) and a plain two-stem CNN from scratch for the same "
                    "number of seconds on the CPU, evaluate both under the SYSU protocols and write a report "
                    "(side by side, with chance level) with a rank-list picture. data.*/train.* overrides apply "
                    "to both runs, the others to the method.")
    parser.add_argument("--data-root", help="use this SYSU-MM01-layout dataset instead of generating one")
    parser.add_argument("--out", default="vireid-demo", help="output folder (default: ./vireid-demo)")
    parser.add_argument("--ids", type=int, default=None, help="identities of the generated dataset (default 210)")
    parser.add_argument("--seed", type=int, default=None, help="generator seed of the dataset (default 23)")
    parser.add_argument("--method", choices=("imagenet", "mbfvrd", "idkl"), default="imagenet",
                        help="the method trained against the plain CNN: imagenet (default, configs/demo_imagenet.yaml: "
                             "EfficientNet-Lite0 fine-tuned from ImageNet, no download), mbfvrd "
                             "(configs/demo_mbfvrd.yaml; the fastest learner from scratch) or idkl "
                             "(configs/demo_idkl.yaml: IDKL + hetero-center from scratch)")
    parser.add_argument("--no-baseline", action="store_true", help="train the method only")
    parser.add_argument("--sequential", action="store_true",
                        help="train the two runs one after the other (default with 2+ cores: side by side, one "
                             "core each)")
    parser.add_argument("--baseline", action="append", default=[], metavar="key=value",
                        help="a config override for the baseline only (repeatable)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. train.time_budget_s=60 (data.*, train.*: both runs)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from vireid.app.demo import DEMO_IDS, DEMO_SEED, run_demo

    run_demo(args.out, args.data_root, args.overrides, ids=args.ids or DEMO_IDS,
             seed=DEMO_SEED if args.seed is None else args.seed, baseline=not args.no_baseline,
             baseline_overrides=args.baseline, parallel=False if args.sequential else None,
             method=args.method)
    return 0
