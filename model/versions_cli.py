"""``attendance model list | use VERSION | use pretrained | remove VERSION``: model versions."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from common.config import Config
from common.errors import UserError

if TYPE_CHECKING:
    from model.thresholds import ThresholdRecord

HELP = (
    "list fine-tuned model versions, choose the active one (use VERSION | use pretrained), "
    "or delete one (remove VERSION)"
)

#: Figures of a version on the people its training never saw, before -> after (versions saved
#: before these were measured show "-").
HEADLINE = (
    ("tar_at_far_1e-3", "TAR@1e-3"),
    ("eer", "EER"),
    ("open_set_accept", "STRANGERS@1%FRR"),
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument(
        "action",
        choices=("list", "use", "remove"),
        help="list versions, use one, or remove one (each takes about 92 MB)",
    )
    parser.add_argument(
        "version",
        nargs="?",
        help="for 'use': a version (v1, v2, ...) or 'pretrained'; for 'remove': a version "
        "that is not active",
    )
    parser.add_argument(
        "-y", "--yes", action="store_true", help="'remove' without asking for confirmation"
    )


def _metric(metrics: dict[str, Any] | None, key: str) -> str:
    value = (metrics or {}).get(key)
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


def _threshold(record: ThresholdRecord | None) -> str:
    """``0.8734 @1e-3`` (calibrated), ``1.0000 in-use`` (recorded when switched away), or -."""
    from model.thresholds import format_far

    if record is None:
        return "-"
    if record.far is not None:
        return f"{record.threshold:.4f} @{format_far(record.far)}"
    return f"{record.threshold:.4f} in-use"


def format_versions(cfg: Config) -> str:
    """The version table: active marker, name, date, model id, threshold, before→after."""
    from model.thresholds import read_thresholds
    from model.versions import PRETRAINED, list_versions
    from model.weights import PRETRAINED_MODEL_ID

    thresholds = read_thresholds(cfg)
    rows = [
        ["", "VERSION", "CREATED", "MODEL ID", "THRESHOLD"]
        + [label for _, label in HEADLINE]
        + ["NOTE"]
    ]
    rows.append(
        ["*" if cfg.model_version == PRETRAINED else "", PRETRAINED, "-", PRETRAINED_MODEL_ID,
         _threshold(thresholds.get(PRETRAINED_MODEL_ID))]
        + ["-"] * len(HEADLINE)
        + [""]
    )  # fmt: skip
    for found in list_versions(cfg):
        metrics = found.meta.get("metrics", {})
        before, after = metrics.get("before"), metrics.get("after")
        cells = [f"{_metric(before, key)}->{_metric(after, key)}" for key, _ in HEADLINE]
        note = "forced (not shown better)" if found.meta.get("forced") else ""
        unseen = found.meta.get("unseen", {}).get("identities")
        if unseen is not None:
            note = f"{unseen} unseen people" + (f"; {note}" if note else "")
        base = found.meta.get("base", {}).get("version")
        if base:
            note = f"from {base}" + (f"; {note}" if note else "")
        rows.append(
            ["*" if cfg.model_version == found.version else "", found.version, found.created,
             found.model_id, _threshold(thresholds.get(found.model_id))] + cells + [note]
        )  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def confirm(question: str) -> bool:
    """Ask a yes/no question on the terminal; anything but y/yes (or end of input) is no."""
    try:
        answer = input(f"{question} [y/N] ").strip().lower()
    except EOFError:
        return False
    return answer in ("y", "yes")


def remove(args: argparse.Namespace, cfg: Config) -> int:
    """``model remove VERSION``: refuse the active one, ask, then delete it atomically."""
    from model.versions import folder_bytes, removable_folder, remove_version

    if not args.version:
        raise UserError("'model remove' needs a version, e.g. `attendance model remove v1`")
    folder = removable_folder(cfg, args.version)  # refuses the active one before asking
    if not args.yes:
        if not (sys.stdin and sys.stdin.isatty()):
            print(f"not removed: no terminal to ask on; pass --yes to remove {args.version}")
            return 1
        size = folder_bytes(folder) / 1e6
        if not confirm(f"Remove model version {args.version} ({size:.1f} MB in {folder})?"):
            print("nothing removed")
            return 1
    freed = remove_version(cfg, args.version)
    print(f"removed model version {args.version} ({freed / 1e6:.1f} MB freed)")
    return 0


def run(args: argparse.Namespace, cfg: Config) -> int:
    """List the versions, switch the active model, or remove a version."""
    from model.versions import PRETRAINED, list_versions, switch_version

    if args.action == "remove":
        return remove(args, cfg)
    if args.yes:
        raise UserError(f"--yes only applies to 'model remove', not to 'model {args.action}'")
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
    switch = switch_version(cfg, args.version)
    if switch.record is not None:
        threshold = f"threshold {switch.record.describe()}"
    else:
        threshold = (
            f"threshold {switch.threshold:.4f} kept (none recorded for this model; run "
            "`attendance evaluate DIR --calibrate`)"
        )
    print(
        f"active model: {args.version} ({switch.model_id}); {threshold}; "
        "the gallery re-embeds on its next sync"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point (``python -m model.versions_cli``)."""
    from common.runner import run_single

    return run_single("attendance model", HELP, configure, run, argv)


if __name__ == "__main__":
    sys.exit(main())
