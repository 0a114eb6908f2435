"""`vireid configs` (the shipped presets, one line each) and `vireid config show NAME [key=value ...]`."""

from __future__ import annotations


def register(subparsers) -> None:
    listing = subparsers.add_parser("configs", help="list the shipped config presets",
                                    description="List the shipped presets with their first comment line.")
    listing.set_defaults(func=run_list)

    config = subparsers.add_parser("config", help="inspect a config (show the resolved settings)")
    sub = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    show = sub.add_parser("show", help="print the resolved config a run would use",
                          description="Print the config with its _base_ chain merged, defaults filled in and "
                                      "overrides applied: exactly what 'vireid train' would save as config.yaml.")
    show.add_argument("config", help="a config file, or the name of a shipped config (see 'vireid configs')")
    show.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=10")
    show.set_defaults(func=run_show)


def run_list(args) -> int:
    from vireid.app.runs import shipped_configs

    configs = shipped_configs()
    width = max(len(name) for name in configs)
    for name, description in configs.items():
        print(f"{name:<{width}}  {description}")
    return 0


def run_show(args) -> int:
    from vireid.app.runs import resolve_config
    from vireid.config import dump

    print(dump(resolve_config(args.config, args.overrides)), end="")
    return 0
