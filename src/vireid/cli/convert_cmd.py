"""`vireid convert`: a released IDKL or AGW checkpoint as a vireid run (weights only), ready for `vireid eval`."""

from __future__ import annotations

SHOWN = 10  # names listed per category; the counts are always complete


def register(subparsers) -> None:
    p = subparsers.add_parser("convert", help="turn a released IDKL/AGW checkpoint into a vireid run",
                              description="Rename a reference checkpoint's tensors to vireid's (weights only: a "
                                          "file with pickled code is refused), load them into the preset's "
                                          "model and write a checkpoint 'vireid eval' reads. Prints the matched, "
                                          "missing, unused (parts the reference never runs) and unexpected names.")
    p.add_argument("checkpoint", help="the reference's .pth file")
    p.add_argument("--from", dest="kind", required=True, choices=("idkl", "agw"), help="which reference wrote it")
    p.add_argument("--out", required=True, help="run directory, or a .pt file")
    p.add_argument("--config", help="the vireid config the weights go into (default: idkl_sysu / agw_sysu)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.height=288")
    p.set_defaults(func=run_convert)


def run_convert(args) -> int:
    from vireid.app.convert import PRESETS, convert
    from vireid.app.runs import resolve_config

    cfg = resolve_config(args.config or PRESETS[args.kind], args.overrides or ())
    report = convert(args.kind, args.checkpoint, args.out, cfg)
    print(f"matched {len(report['matched'])} tensors ({report['num_classes']} classes), missing "
          f"{len(report['missing'])}, unused reference parts {len(report['unused'])}, "
          f"unexpected {len(report['unexpected'])}")
    for key in ("missing", "unexpected"):
        names = report[key]
        if names:
            more = f" (+{len(names) - SHOWN} more)" if len(names) > SHOWN else ""
            print(f"  {key}: {', '.join(names[:SHOWN])}{more}")
    print(f"wrote {report['path']}")
    return 0
