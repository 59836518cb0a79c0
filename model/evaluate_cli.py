"""``attendance evaluate DIR``: verification, identification and open-set figures on a folder.

``DIR`` holds identity subfolders, or ``train/`` + ``val/`` splits of them (gallery = train,
probes = val; otherwise the first half of each identity's sorted photos is the gallery).
Prints a table (or JSON) and a line on the recogniser's decisions at the configured threshold,
saves ``roc.png`` and ``distances.png`` into ``--out-dir``, and with ``--calibrate`` writes into
the workspace's attendance.toml the largest threshold at which at most ``--far`` (default: the
``calibrate_far`` setting) of strangers (each identity left out of the gallery in turn) would be
accepted, measured on the distances the recogniser compares in the configured ``match_mode`` (not
on image pairs), and records it for the active model (restored by ``attendance model use``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from common.config import Config
from common.errors import UserError

HELP = "evaluate the model on a folder of identity subfolders (ROC, EER, rank-1, open-set)"


def _far(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number, e.g. 1e-3") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a rate in (0, 1), e.g. 1e-3")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's own arguments."""
    parser.add_argument("folder", metavar="DIR", help="folder of identity subfolders")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--out-dir",
        metavar="D",
        help="where roc.png and distances.png go (default: <workspace>/evaluation)",
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="write the largest threshold whose stranger accept rate (in the configured "
        "match_mode) is at most --far into the workspace configuration",
    )
    parser.add_argument(
        "--far",
        type=_far,
        default=None,
        help="target stranger accept rate of --calibrate (default: the calibrate_far setting, "
        "1e-3 unless configured)",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also evaluate the other alignment and flip averaging setting",
    )


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Evaluate and print the report."""
    from model.embedder import Embedder
    from model.evaluation.run import evaluate_folder
    from preprocess.detectors import make_detector

    folder = Path(args.folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder; give a folder of identity subfolders")
    out_dir = Path(args.out_dir) if args.out_dir else cfg.root / "evaluation"
    far = args.far if args.far is not None else cfg.calibrate_far
    report = evaluate_folder(
        folder,
        cfg,
        make_detector(cfg),
        Embedder.from_config(cfg),
        compare=args.compare,
        out_dir=out_dir,
        calibrate_far=far if args.calibrate else None,
        progress=False if args.quiet else None,
    )
    print(report.to_json() if args.json else report.to_text())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m model.evaluate_cli``."""
    from common.runner import run_single

    return run_single("attendance evaluate", HELP, configure, run, argv)


if __name__ == "__main__":
    sys.exit(main())
