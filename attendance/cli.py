"""The ``attendance`` umbrella command: one subcommand per command module of every layer.

The modules follow the protocol of :mod:`common.runner`; this file only lists them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from attendance import __version__
from common.runner import add_common_arguments, execute

log = logging.getLogger("attendance")

# subcommand -> module path. Order is the order of the help listing.
COMMANDS: dict[str, str] = {
    "demo": "attendance.demo",
    "fetch": "attendance.fetch",
    "scan": "scanner.cli",
    "preprocess": "attendance.preprocess_cli",
    "recognize": "recognizer.cli",
    "close-day": "recognizer.close_day_cli",
    "report": "recognizer.report_cli",
    "liveness": "recognizer.liveness_cli",
    "remove": "scanner.remove_cli",
    "embed": "model.embed_cli",
    "evaluate": "model.evaluate_cli",
    "train": "model.train_cli",
    "model": "model.versions_cli",
    "db": "attendance.db_cli",
    "serve": "attendance.serve_cli",
    "user": "attendance.user_cli",
    "token": "attendance.token_cli",
}


def build_parser() -> argparse.ArgumentParser:
    """The umbrella parser with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="attendance",
        description="Face-recognition attendance: scan -> preprocess -> recognize -> report.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_path in COMMANDS.items():
        module = importlib.import_module(module_path)
        child = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.configure(child)
        add_common_arguments(child)
        child.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``attendance``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    return execute(args._module.run, args)


if __name__ == "__main__":
    sys.exit(main())
