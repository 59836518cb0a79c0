"""``attendance embed DIR --out FILE.npz``: unit-norm embeddings of every photo in a folder.

``DIR`` holds identity subfolders (``DIR/<identity>/*.jpg``, or ``train/`` and ``val/`` split
folders of them). Each photo's largest face is detected and aligned as preprocessing does
(``cfg.alignment``). The npz (read with ``allow_pickle=False``) holds ``paths`` (relative to
``DIR``), ``identities``, ``embeddings`` (float32, unit norm), ``boxes`` (x, y, w, h),
``scores``, ``failed_paths`` / ``failed_reasons`` for photos without a usable face, and
``model_id``, ``alignment``, ``flip_average``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from common.config import ALIGNMENTS, Config

HELP = "embed every photo of a folder of identity subfolders into an .npz file"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's own arguments."""
    parser.add_argument("folder", metavar="DIR", help="folder of identity subfolders")
    parser.add_argument("--out", metavar="FILE.npz", required=True, help="the npz file to write")
    parser.add_argument(
        "--alignment",
        choices=ALIGNMENTS,
        help="crop method (default: the alignment config key)",
    )


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Embed the folder and write the npz atomically."""
    from model.embedder import Embedder
    from model.evaluation.embedded import embed_folder
    from preprocess.detectors import make_detector

    if args.alignment:
        cfg = cfg.replace(alignment=args.alignment)
    embedder = Embedder.from_config(cfg)
    detector = make_detector(cfg)
    result = embed_folder(
        Path(args.folder), cfg, detector, embedder, progress=False if args.quiet else None
    )
    out = result.save(Path(args.out))
    print(
        f"wrote {out}: {len(result.paths)} embeddings of {len(set(result.identities))} "
        f"identities ({result.model_id}, alignment={result.alignment}); "
        f"{len(result.failed_paths)} photos without a usable face"
    )
    for reason in result.failed_reasons:
        print(f"  {reason}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m model.embed_cli``."""
    from common.runner import run_single

    return run_single("attendance embed", HELP, configure, run, argv)


if __name__ == "__main__":
    sys.exit(main())
