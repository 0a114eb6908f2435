"""`vireid protocols`: list the named evaluation protocols and what each one means."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("protocols", help="list the named evaluation protocols")
    parser.add_argument("prefix", nargs="?", default="", help="only names starting with this (e.g. sysu/all)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from vireid.evaluation.protocols import PROTOCOLS

    chosen = [p for name, p in PROTOCOLS.items() if name.startswith(args.prefix)]
    if not chosen:
        raise ValueError(f"no protocol name starts with {args.prefix!r}; run 'vireid protocols' to list them")
    width = max(len(p.name) for p in chosen)
    for protocol in chosen:
        print(f"{protocol.name:<{width}}  {protocol.description}")
    return 0
