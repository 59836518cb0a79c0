"""``call_preprocess`` / ``attendance preprocess``: bring ``pre_images/`` up to date and, with a
shared store, publish the workspace's people there.

Preprocessing itself is :mod:`preprocess.cli`. With ``store`` set to a PostgreSQL URL, the
crops of this workspace's people and their embeddings are then written to that store
(:func:`store.gallery.sync_gallery`), so every kiosk sharing it recognises them. With the
default SQLite files nothing more happens: the recogniser syncs its own gallery.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from common.config import Config
from preprocess import cli as preprocess_cli
from store.factory import is_shared

HELP = preprocess_cli.HELP + "; with a shared store, publish the crops and embeddings"
configure = preprocess_cli.configure


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Preprocess, then publish to a shared store; print both summaries."""
    status = preprocess_cli.run(args, cfg)
    if status == 0 and is_shared(cfg):
        print(publish(cfg, args.names, progress=not args.quiet))
    return status


def publish(cfg: Config, names: Sequence[str] | None, progress: bool) -> str:
    """Write the crops and embeddings of ``names`` (default: every person of this workspace)
    to the shared store; return the sync summary line."""
    from model.embedder import Embedder
    from store.factory import open_embedding_store
    from store.gallery import sync_gallery

    embedder = Embedder.from_config(cfg)
    with open_embedding_store(cfg) as store:
        summary = sync_gallery(store, cfg, embedder, names=names, progress=progress)
        # which model these embeddings come from, and the threshold it is used with here
        if summary.embedded or summary.reused or summary.unchanged:  # published something
            meta = {"version": cfg.model_version, "dim": embedder.dim}
            store.record_model(embedder.model_id, cfg.threshold, json.dumps(meta))  # type: ignore[attr-defined]
        where = store.describe()
    for relpath, reason in summary.skipped:
        print(f"not published: {relpath}: {reason}")
    return f"published to {where}: {summary}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``call_preprocess`` console script."""
    from common.runner import run_single

    return run_single("call_preprocess", HELP, configure, run, argv)


if __name__ == "__main__":
    sys.exit(main())
