"""The plumbing every console script shares: common flags, logging, configuration, errors.

Each command lives in its stage's package as a module exposing::

    HELP: str                                   # one line for the command list
    def configure(parser: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace, cfg: Config) -> int

Modules keep TensorFlow imports inside functions, so ``--help`` is instant. The umbrella
``attendance`` command (``attendance.cli``) and each standalone script (:func:`run_single`)
parse and run them the same way.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from common.config import PATH_KEYS, Config, ConfigError, load_config
from common.errors import UserError
from common.quiet import set_verbose

log = logging.getLogger("attendance")


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
    group.add_argument(
        "--store",
        metavar="URL",
        help="shared store postgresql://user@host:port/db for several kiosks "
        "($ATTENDANCE_STORE; default: the workspace's SQLite files)",
    )
    group.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    group.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")


def add_common_arguments_after_action(parser: argparse.ArgumentParser) -> None:
    """Let the common flags follow a subcommand's action too (``attendance db upgrade --store
    URL``, ``attendance user add NAME --workspace DIR``): unset there, they leave what was
    given before the action alone."""
    before = len(parser._actions)
    add_common_arguments(parser)
    for action in parser._actions[before:]:
        action.default = argparse.SUPPRESS


def config_from_args(args: argparse.Namespace, **extra: object) -> Config:
    """The configuration for these parsed arguments (``extra`` are flag-level overrides)."""
    overrides: dict[str, object] = {}
    labels: dict[str, str] = {}  # how each override was typed, for error messages
    for item in getattr(args, "overrides", []) or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set threshold=0.9")
        key, value = key.strip(), value.strip()
        # Paths typed on the command line are relative to where the user stands.
        overrides[key] = _from_cwd(value) if key in PATH_KEYS and value else value
        labels[key] = f"--set {shlex.quote(f'{key}={value}')}"
    if getattr(args, "weights", None):
        overrides["weights"] = _from_cwd(args.weights)
        labels["weights"] = f"--weights {shlex.quote(args.weights)}"
    if getattr(args, "store", None):
        overrides["store"] = args.store
        labels["store"] = "--store"  # never echo the URL: it may carry a password
    for key, value in extra.items():
        if value is not None:
            overrides[key] = value
            labels.pop(key, None)  # the command's own flag wins over --set
    return load_config(getattr(args, "workspace", None), overrides=overrides, labels=labels)


def _from_cwd(value: str) -> str:
    return str(Path(value).expanduser().resolve())


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Plain, timestamped log lines on stderr."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 0 else logging.INFO)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger().setLevel(level)
    set_verbose(verbose > 0)  # -v also shows TensorFlow's start-up lines
    for noisy in ("tensorflow", "absl", "h5py", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def execute(run: Callable[[argparse.Namespace, Config], int], args: argparse.Namespace) -> int:
    """Set up logging, build the configuration and run; a ``UserError`` becomes one line."""
    setup_logging(args.verbose, args.quiet)
    try:
        cfg = config_from_args(args)
        return int(run(args, cfg) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run_single(
    prog: str,
    help: str,
    configure: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace, Config], int],
    argv: Sequence[str] | None = None,
) -> int:
    """Entry point of a standalone console script (``call_preprocess``, ``scanner``, ...).

    The command passes its own ``HELP``, ``configure`` and ``run``, so nothing below the
    application layer ever imports a command by name.
    """
    parser = argparse.ArgumentParser(prog=prog, description=help)
    configure(parser)
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    return execute(run, args)
