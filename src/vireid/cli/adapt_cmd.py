"""`vireid adapt`: unsupervised domain adaptation from a labelled source to an unlabelled target (DAN)."""

from __future__ import annotations

from vireid.cli.train_cmd import add_contract_options
from vireid.utils.device import device_arg


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "adapt", help="adapt a method from a labelled source dataset to an unlabelled target (e.g. DAN)",
        description="Train on labelled source data and unlabelled target data of the same layout (target "
                    "labels are not used for training). Re-running the same command resumes the run. "
                    "Evaluate the result on the target with 'vireid eval RUN --data-root TARGET'.")
    parser.add_argument("config", help="a config file, or a shipped config name (e.g. dan_sysu)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. recipe.lambda1=0.5")
    parser.add_argument("--source", required=True, help="labelled source dataset root")
    parser.add_argument("--target", required=True, help="unlabelled target dataset root (same layout)")
    parser.add_argument("--out", required=True, help="run directory (config, logs, checkpoint)")
    parser.add_argument("--resume", help="continue from this checkpoint instead of the run directory's own")
    parser.add_argument("--device", type=device_arg, default="auto", help="auto, cpu or cuda")
    add_contract_options(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from vireid.app.runs import adapt

    path = adapt(args.config, args.source, args.target, args.out, args.overrides, device=args.device,
                 resume=args.resume, allow_changes=args.allow_change, restart=args.restart)
    print(f"finished; checkpoint: {path}")
    return 0
