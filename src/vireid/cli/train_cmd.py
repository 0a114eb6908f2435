"""`vireid train` and `vireid eval`."""

from __future__ import annotations

import argparse

from vireid.utils.device import device_arg


def register(subparsers) -> None:
    train = subparsers.add_parser("train", help="train a method from a YAML config",
                                  description="Train a method. Re-running the same command resumes the run.")
    train.add_argument("config", help="a config file, or the name of a shipped config (e.g. idkl_sysu)")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=10")
    train.add_argument("--data-root", required=True, help="dataset root in its distributed layout")
    train.add_argument("--out", required=True, help="run directory (config, logs, checkpoint)")
    train.add_argument("--resume", help="continue from this checkpoint instead of the run directory's own")
    train.add_argument("--device", type=device_arg, default="auto", help="auto, cpu or cuda")
    add_contract_options(train)
    train.add_argument("--strict", action="store_true",
                       help="refuse a dataset with unreadable images instead of skipping and listing them")
    train.set_defaults(func=run_train)

    ev = subparsers.add_parser("eval", help="evaluate a trained run under a named protocol")
    ev.add_argument("run", help="run directory or checkpoint file")
    ev.add_argument("--data-root", required=True)
    ev.add_argument("--protocol", help="e.g. sysu/all/single/official (see 'vireid protocols'); "
                    "default: the run config's eval.protocol")
    ev.add_argument("--rerank", action=argparse.BooleanOptionalAction, default=None,
                    help="k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3), labelled [re-ranked]; "
                    "default: the run config's eval.rerank")
    ev.add_argument("--transductive", action=argparse.BooleanOptionalAction, default=None,
                    help="the method's transductive step (e.g. NFormer's neighbour transformer) on each trial's "
                    "query + gallery features together, labelled [transductive]; methods without one are refused; "
                    "default: the run config's eval.transductive")
    ev.add_argument("--json", help="also write the result as JSON to this file")
    ev.add_argument("--device", type=device_arg, default="auto")
    ev.add_argument("--ranklist", type=int, metavar="N",
                    help="also draw N queries of trial 0 with their top-10 gallery images (modality tagged, "
                         "green = same identity, red = another)")
    ev.add_argument("--ranklist-out", default="ranklist.png", help="where --ranklist writes (default ranklist.png)")
    ev.set_defaults(func=run_eval)


def run_train(args) -> int:
    from vireid.app.runs import train

    path = train(args.config, args.data_root, args.out, args.overrides, device=args.device, resume=args.resume,
                 allow_changes=args.allow_change, restart=args.restart, strict=args.strict)
    print(f"finished; checkpoint: {path}")
    return 0


def add_contract_options(parser) -> None:
    """--allow-change / --restart: what a re-run of a run directory with other settings may do."""
    parser.add_argument("--allow-change", action="append", default=[], metavar="KEY",
                        help="a config key a resume may change (repeat, or comma-separate), e.g. train.epochs to "
                             "train longer; other changed keys are refused")
    parser.add_argument("--restart", action="store_true",
                        help="start a new run in --out even though it holds one (the old run's files are moved "
                             "into --out/replaced-<time>/)")


def run_eval(args) -> int:
    from vireid.app.runs import evaluate_run
    from vireid.utils.outputs import output_file

    output_file(args.json, "--json")
    if args.ranklist:
        output_file(args.ranklist_out, "--ranklist-out")
    result = evaluate_run(args.run, args.data_root, args.protocol, rerank=args.rerank, device=args.device,
                          transductive=args.transductive)
    print(result.format_table())
    if args.json:
        result.write_json(args.json)
        print(f"wrote {args.json}")
    if args.ranklist:
        from vireid.deploy.pictures import run_rank_list

        path = run_rank_list(args.run, args.data_root, args.ranklist_out, args.ranklist, result.protocol,
                             rerank=bool(result.rerank), transductive=result.transductive,
                             device="cpu" if args.device == "auto" else args.device)
        print(f"wrote {path}")
    return 0
