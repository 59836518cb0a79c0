"""``attendance model list | use VERSION | use pretrained``: the workspace's model versions."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from common.config import Config
from common.errors import UserError

HELP = "list fine-tuned model versions, or choose the active one (use VERSION | use pretrained)"

HEADLINE = (
    ("tar_at_far_1e-3", "TAR@1e-3"),
    ("rank1", "rank-1"),
    ("open_set_false_accept", "open-FA"),
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("action", choices=("list", "use"), help="list versions, or use one")
    parser.add_argument(
        "version", nargs="?", help="for 'use': a version (v1, v2, ...) or 'pretrained'"
    )


def _metric(metrics: dict[str, Any] | None, key: str) -> str:
    value = (metrics or {}).get(key)
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


def format_versions(cfg: Config) -> str:
    """The version table: active marker, name, date, model id, held-out before→after."""
    from model.versions import PRETRAINED, list_versions
    from model.weights import PRETRAINED_MODEL_ID

    rows = [["", "VERSION", "CREATED", "MODEL ID"] + [label for _, label in HEADLINE] + ["NOTE"]]
    rows.append(
        ["*" if cfg.model_version == PRETRAINED else "", PRETRAINED, "-", PRETRAINED_MODEL_ID]
        + ["-"] * len(HEADLINE)
        + [""]
    )
    for found in list_versions(cfg):
        metrics = found.meta.get("metrics", {})
        before, after = metrics.get("before"), metrics.get("after")
        cells = [f"{_metric(before, key)}->{_metric(after, key)}" for key, _ in HEADLINE]
        note = "forced (not better)" if found.meta.get("forced") else ""
        base = found.meta.get("base", {}).get("version")
        if base:
            note = f"from {base}" + (f"; {note}" if note else "")
        rows.append(
            ["*" if cfg.model_version == found.version else "", found.version, found.created,
             found.model_id] + cells + [note]
        )  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def run(args: argparse.Namespace, cfg: Config) -> int:
    """List the versions or switch the active model."""
    from model.versions import PRETRAINED, list_versions, use_version

    if args.action == "list":
        if args.version:
            raise UserError("'model list' takes no version; did you mean 'model use'?")
        print(format_versions(cfg))
        if cfg.model_version != PRETRAINED and cfg.model_version not in {
            v.version for v in list_versions(cfg)
        }:
            print(f"warning: the active model_version {cfg.model_version!r} is not stored here")
        return 0
    if not args.version:
        raise UserError(
            "'model use' needs a version, e.g. `attendance model use v1` or `pretrained`"
        )
    model_id = use_version(cfg, args.version)
    print(f"active model: {args.version} ({model_id}); the gallery re-embeds on its next sync")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point (``python -m model.versions_cli``)."""
    from common.runner import run_single

    return run_single("attendance model", HELP, configure, run, argv)


if __name__ == "__main__":
    sys.exit(main())
