"""`vireid` console script: argparse subcommands, one module per command.

Each module listed in ``COMMAND_MODULES`` defines ``register(subparsers)``,
which adds its parser and sets ``func`` (called with the parsed namespace).
User mistakes raise ``ValueError``/``FileNotFoundError``/``KeyError`` and are
printed as one line, not a traceback (``VIREID_DEBUG=1`` shows it); so is any
other ``OSError`` (a full disk, a permission), naming the path it concerns.
"""

from __future__ import annotations

import argparse
import importlib
import logging
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
    "vireid.cli.config_cmd",
    "vireid.cli.extract_cmd",
    "vireid.cli.index_cmd",
    "vireid.cli.export_cmd",
    "vireid.cli.visualize_cmd",
    "vireid.cli.train_splits_cmd",
    "vireid.cli.convert_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vireid", description="Visible-infrared person re-identification toolkit."
    )
    parser.add_argument("--version", action="version", version=f"vireid {vireid.__version__}")
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    noise.add_argument("-v", "--verbose", action="store_true", help="debug messages too")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def configure_logging(quiet: bool = False, verbose: bool = False) -> None:
    """The library logs through ``logging.getLogger("vireid...")``; the command line shows those messages.

    INFO by default (progress notes such as 'resuming at epoch 3'), WARNING
    with ``--quiet``, DEBUG with ``--verbose``. Progress bars are tqdm's and
    are not affected. A program importing vireid configures logging itself.
    """
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logger = logging.getLogger("vireid")
    logger.setLevel(level)
    if not any(getattr(h, "_vireid_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._vireid_cli = True
        logger.addHandler(handler)


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, letting ``key=value`` overrides sit anywhere on the line, before or after the options.

    argparse stops filling a ``nargs="*"`` positional at the first option, so
    ``train CFG --out o a.b=1`` would leave ``a.b=1`` unrecognised. Such
    leftovers are appended, in order, to the command's ``overrides``; anything
    else left over is still an error.
    """
    args, extra = parser.parse_known_args(argv)
    overrides = [e for e in extra if "=" in e and not e.startswith("-")]
    unknown = [e for e in extra if e not in overrides]
    if overrides and not hasattr(args, "overrides"):
        unknown = extra
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if overrides:
        args.overrides = list(args.overrides or []) + overrides
    return args


def worker_message(exc: BaseException) -> str:
    """The original message of an error a DataLoader worker re-raised (torch wraps it with the worker's traceback)."""
    text = str(exc)
    if not text.startswith("Caught ") or "\nOriginal Traceback" not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    marker = f"{type(exc).__name__}: "
    return last.split(marker, 1)[1] if marker in last else last


def os_error_line(exc: OSError) -> str:
    """'cannot write /x/y: Read-only file system' style: what failed, on which path(s)."""
    paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    reason = exc.strerror or str(exc)
    return f"{paths}: {reason}" if paths else reason


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    configure_logging(args.quiet, args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from vireid.engine.run_lock import RunDirectoryBusy
    from vireid.engine.trainer import TrainingDiverged, TrainingInterrupted

    try:
        return int(args.func(args) or 0)
    except TrainingInterrupted as exc:  # a checkpoint was saved: re-running resumes
        print(f"vireid: {exc}", file=sys.stderr)
        return 130
    except TrainingDiverged as exc:
        print(f"vireid: error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, KeyError, ImportError, RunDirectoryBusy) as exc:
        if os.environ.get("VIREID_DEBUG"):
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else worker_message(exc)
        print(f"vireid: error: {msg}", file=sys.stderr)
        return 2
    except OSError as exc:
        if os.environ.get("VIREID_DEBUG"):
            raise
        print(f"vireid: error: {os_error_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vireid: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
