"""Command line: ``python -m fracture <command>``.

Each command lives in its own module under ``fracture.cli`` and exposes
``register(subparsers)``, which adds a sub-parser whose ``func`` default takes
the parsed arguments and returns an exit code. Typed core errors become a
one-line message and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from fracture.errors import FractureError

# Modules under fracture.cli that define commands, in help order.
COMMAND_MODULES = (
    "demo",
    "data",
    "models",
    "train",
    "evaluate",
    "calibrate",
    "predict",
    "explain",
    "shortcuts",
    "batch",
    "export",
    "runs",
    "cache",
    "importer",
    "reader_study",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fracture",
        description="Fracture Lab: fracture and abnormality detection in radiographs.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"fracture.cli.{name}")
        except ModuleNotFoundError as exc:  # a command not built yet
            if exc.name != f"fracture.cli.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (FractureError, FileNotFoundError, PermissionError, IsADirectoryError, ValueError) as exc:
        # Bad input: one clear line, no traceback (unless --debug).
        if args.debug:
            raise
        message = str(exc) if isinstance(exc, FractureError) else f"{type(exc).__name__}: {exc}"
        print(f"error: {message}", file=sys.stderr)
        return 2
