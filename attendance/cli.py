"""The ``attendance`` umbrella command and the plumbing every console script shares.

Each command lives in its stage's package as a module exposing::

    HELP: str                                   # one line for the command list
    def configure(parser: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace, cfg: Config) -> int

Modules keep TensorFlow imports inside functions, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from attendance import __version__
from attendance.config import PATH_KEYS, Config, ConfigError, load_config
from attendance.errors import UserError

log = logging.getLogger("attendance")

# subcommand -> module path. Order is the order of the help listing.
COMMANDS: dict[str, str] = {
    "demo": "attendance.demo",
    "fetch": "attendance.fetch",
    "scan": "scanner.cli",
    "preprocess": "preprocess.cli",
    "recognize": "recognizer.cli",
    "close-day": "recognizer.close_day_cli",
    "report": "recognizer.report_cli",
    "remove": "scanner.remove_cli",
    "embed": "model.embed_cli",
    "evaluate": "model.evaluate_cli",
    "train": "model.train_cli",
    "model": "model.versions_cli",
}


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags every command takes: workspace, config overrides, verbosity."""
    group = parser.add_argument_group("common options")
    group.add_argument(
        "--workspace",
        metavar="DIR",
        help="workspace root holding images/, pre_images/, attendance.db "
        "(default: $ATTENDANCE_ROOT or the current directory)",
    )
    group.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one configuration key, e.g. --set threshold=0.9 (repeatable)",
    )
    group.add_argument(
        "--weights",
        metavar="FILE",
        help="pretrained weights: facenet_keras.h5 or a converted .npz ($ATTENDANCE_WEIGHTS)",
    )
    group.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    group.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")


def config_from_args(args: argparse.Namespace, **extra: object) -> Config:
    """The configuration for these parsed arguments (``extra`` are flag-level overrides)."""
    overrides: dict[str, object] = {}
    for item in getattr(args, "overrides", []) or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set threshold=0.9")
        key, value = key.strip(), value.strip()
        # Paths typed on the command line are relative to where the user stands.
        overrides[key] = _from_cwd(value) if key in PATH_KEYS and value else value
    if getattr(args, "weights", None):
        overrides["weights"] = _from_cwd(args.weights)
    overrides.update({k: v for k, v in extra.items() if v is not None})
    return load_config(getattr(args, "workspace", None), overrides=overrides)


def _from_cwd(value: str) -> str:
    return str(Path(value).expanduser().resolve())


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Plain, timestamped log lines on stderr."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 0 else logging.INFO)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger().setLevel(level)
    for noisy in ("tensorflow", "absl", "h5py", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _load(module_path: str) -> ModuleType:
    return importlib.import_module(module_path)


def _execute(module: ModuleType, args: argparse.Namespace) -> int:
    setup_logging(args.verbose, args.quiet)
    try:
        cfg = config_from_args(args)
        return int(module.run(args, cfg) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    """The umbrella parser with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="attendance",
        description="Face-recognition attendance: scan -> preprocess -> recognize -> report.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_path in COMMANDS.items():
        module = _load(module_path)
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
    return _execute(args._module, args)


def run_single(module_path: str, prog: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of a standalone console script (``call_preprocess``, ``scanner``, ...)."""
    module = _load(module_path)
    parser = argparse.ArgumentParser(prog=prog, description=module.HELP)
    module.configure(parser)
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    return _execute(module, args)


if __name__ == "__main__":
    sys.exit(main())
