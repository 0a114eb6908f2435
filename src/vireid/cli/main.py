"""`vireid` console script: argparse subcommands, one module per command.

Each module listed in ``COMMAND_MODULES`` defines ``register(subparsers)``,
which adds its parser and sets ``func`` (called with the parsed namespace).
User mistakes raise ``ValueError``/``FileNotFoundError``/``KeyError`` and are
printed as one line, not a traceback (``VIREID_DEBUG=1`` shows it).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

import vireid

COMMAND_MODULES = [
    "vireid.cli.synth_cmd",
    "vireid.cli.data_cmd",
    "vireid.cli.protocols_cmd",
    "vireid.cli.train_cmd",
    "vireid.cli.demo_cmd",
    "vireid.cli.ablate_cmd",
    "vireid.cli.synth_domain_cmd",
    "vireid.cli.adapt_cmd",
    "vireid.cli.extract_cmd",
    "vireid.cli.index_cmd",
    "vireid.cli.export_cmd",
    "vireid.cli.visualize_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vireid", description="Visible-infrared person re-identification toolkit."
    )
    parser.add_argument("--version", action="version", version=f"vireid {vireid.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from vireid.engine.trainer import TrainingDiverged, TrainingInterrupted

    try:
        return int(args.func(args) or 0)
    except TrainingInterrupted as exc:  # a checkpoint was saved: re-running resumes
        print(f"vireid: {exc}", file=sys.stderr)
        return 130
    except TrainingDiverged as exc:
        print(f"vireid: error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, KeyError, ImportError) as exc:
        if os.environ.get("VIREID_DEBUG"):
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"vireid: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vireid: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
