"""``call_preprocess`` / ``attendance preprocess``: bring ``pre_images/`` up to date."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from common.config import ALIGNMENTS, Config

HELP = "detect and align faces: images/<Name>/* -> pre_images/<Name>/*.png (incremental)"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's own flags."""
    parser.add_argument(
        "--name",
        dest="names",
        metavar="NAME",
        action="append",
        help="only this identity (repeatable); other people's crops are left alone",
    )
    parser.add_argument(
        "--alignment",
        choices=ALIGNMENTS,
        help="crop method (default: the alignment config key, 'landmarks')",
    )


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Preprocess the workspace and print the summary."""
    from preprocess.pipeline import run_preprocess

    if args.alignment:
        cfg = cfg.replace(alignment=args.alignment)
    summary = run_preprocess(cfg, names=args.names, progress=not args.quiet)
    for line in summary.lines():
        print(line)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``call_preprocess`` console script."""
    from common.runner import run_single

    return run_single("call_preprocess", HELP, configure, run, argv)


if __name__ == "__main__":
    sys.exit(main())
