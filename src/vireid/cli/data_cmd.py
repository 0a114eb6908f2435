"""`vireid data check`: is this dataset root usable, and what is in it?"""

from __future__ import annotations


def register(subparsers) -> None:
    from vireid.data.datasets import DATASETS

    parser = subparsers.add_parser("data", help="dataset tools (check a dataset root)")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="check a dataset root and print its summary or every problem",
                           description="Check a dataset root: prints a summary table (identities and images per "
                                       "split, modality and camera), or every problem found. Exit status 1 "
                                       "when there are problems.")
    check.add_argument("root")
    check.add_argument("--dataset", required=True, choices=DATASETS.names())
    check.add_argument("--trial", type=int, default=1, help="RegDB trial whose split is summarised (all are checked)")
    check.add_argument("--no-decode", action="store_true", help="skip decoding every image (faster)")
    check.set_defaults(func=run_check)


def run_check(args) -> int:
    from vireid.data.check import check_dataset

    options = {"trial": args.trial} if args.dataset == "regdb" else {}
    report = check_dataset(args.root, args.dataset, decode=not args.no_decode, progress=True, **options)
    print(report.format())
    return 0 if report.ok else 1
