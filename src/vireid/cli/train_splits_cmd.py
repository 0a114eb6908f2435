"""`vireid train-splits`: RegDB's ten splits, one model each, one table of mean ± std."""

from __future__ import annotations

from vireid.utils.device import device_arg


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train-splits", help="train and evaluate a RegDB config on its ten splits; write one table",
        description="Train one model per RegDB split (data.trial 1-10) into OUT/trial<N>, evaluate each on its "
                    "own regdb/trial<N>/{v2i,i2v} protocols and write OUT/splits.md and OUT/splits.json "
                    "(mean ± std and every trial). Re-running resumes: finished trials are not trained again.")
    parser.add_argument("config", help="a RegDB config file, or the name of a shipped one (e.g. msclnet_regdb)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=10")
    parser.add_argument("--data-root", required=True, help="the RegDB root (Visible/, Thermal/, idx/)")
    parser.add_argument("--out", required=True, help="output folder: one run folder per trial, and the table")
    parser.add_argument("--trials", default=None, help="comma-separated trials to run, e.g. 1,2 (default: 1-10)")
    parser.add_argument("--device", type=device_arg, default="auto", help="auto, cpu or cuda")
    parser.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from vireid.app.splits import format_markdown, parse_trials, train_splits

    summary = train_splits(args.config, args.data_root, args.out, args.overrides or [],
                           trials=parse_trials(args.trials), device=args.device)
    print(format_markdown(summary, f"{Path(str(args.config)).stem}: RegDB splits"), end="")
    print(f"wrote {Path(args.out) / 'splits.md'} and {Path(args.out) / 'splits.json'}")
    return 0
