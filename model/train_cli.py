"""``attendance train``: fine-tune the active model on ``pre_images/`` with triplet loss.

The new model is saved as a version (``<workspace>/models/vN``) and made active only if the
held-out metrics improve; otherwise the numbers are reported and the current model stays.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from common.config import Config

HELP = "fine-tune FaceNet on pre_images/ (triplet loss); keep the result only if it is better"

#: (flag destination, configuration key)
_CONFIG_FLAGS = (
    ("epochs", "train_epochs"),
    ("learning_rate", "learning_rate"),
    ("margin", "train_margin"),
    ("identities", "train_identities"),
    ("images", "train_images"),
    ("trainable_from", "trainable_from"),
    ("seed", "seed"),
)
ROWS = (
    ("tar_at_far_1e-3", "TAR @ FAR 1e-3", "higher"),
    ("open_set_false_accept", "open-set false accept", "lower"),
    ("rank1", "rank-1", "higher"),
    ("tar_at_far_1e-2", "TAR @ FAR 1e-2", "higher"),
    ("auc", "ROC AUC", "higher"),
    ("eer", "EER", "lower"),
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's flags. Flags left out are None: configuration keys then come from the
    configuration, the other options from :class:`~model.training.options.TrainOptions`."""
    parser.add_argument("--epochs", type=int, help="passes over the training images (train_epochs)")
    parser.add_argument(
        "--lr", dest="learning_rate", type=float, help="Adam learning rate (learning_rate)"
    )
    parser.add_argument("--margin", type=float, help="triplet margin on squared distances")
    parser.add_argument(
        "--identities", type=int, metavar="P", help="identities per batch (train_identities)"
    )
    parser.add_argument(
        "--images", type=int, metavar="K", help="images per identity in a batch (train_images)"
    )
    parser.add_argument(
        "--mining",
        choices=("semi-hard", "batch-hard"),
        help="online triplet mining: FaceNet semi-hard negatives (default) or batch-hard",
    )
    parser.add_argument(
        "--trainable-from",
        metavar="BLOCK",
        help="first trainable block, e.g. Block8_1 (default), Mixed_7a, Block17_10, Bottleneck",
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="seed of batches, augmentation, mining and dropout (and of a workspace's first split)",
    )
    parser.add_argument(
        "--augment",
        type=int,
        metavar="N",
        help="cached augmented variants per training image, besides the crop and its mirror (4)",
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="run the frozen layers for every batch (fresh augmentations; much slower)",
    )
    parser.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        help="keep the epoch with the lowest training triplet loss (best, default) or the last",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="save the result as a version even if it is not better (it is not activated)",
    )
    parser.add_argument(
        "--no-activate", action="store_true", help="save an improved model without activating it"
    )


def _fmt(value: float) -> str:
    return f"{value:.4f}"


def format_report(report) -> str:  # type: ignore[no-untyped-def]
    """Before/after table, the decision and what was saved."""
    lines = [
        f"trained {len(report.history)} epoch(s) from {report.base.version} "
        f"({report.base.model_id}); kept epoch {report.best_epoch}"
        + (" (interrupted)" if report.interrupted else ""),
        "split: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report.counts.items()),
    ]
    if report.history:
        last = report.history[-1]
        lines.append(
            f"training triplet loss (all triplets): {report.monitor_before:.4f} -> "
            f"{last.monitor_loss:.4f} at the last epoch"
        )
    width = max(len(label) for _, label, _ in ROWS)
    lines.append(f"{'held-out metric'.ljust(width)}  {'before':>8}  {'after':>8}")
    for key, label, better in ROWS:
        lines.append(
            f"{label.ljust(width)}  {_fmt(report.before[key]):>8}  {_fmt(report.after[key]):>8}"
            f"  ({better} is better)"
        )
    decision = report.decision
    if report.version is None:
        lines.append(f"not saved: {decision.reason}; the current model stays active")
    elif report.activated:
        lines.append(
            f"saved and activated {report.version.version} ({report.version.model_id}): "
            f"{decision.reason}"
        )
    elif decision.accepted:
        lines.append(
            f"saved {report.version.version} ({decision.reason}); activate it with "
            f"`attendance model use {report.version.version}`"
        )
    else:
        lines.append(
            f"WARNING: saved {report.version.version} although it is not better "
            f"({decision.reason}) because of --force; it is NOT active"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Train, print the before/after figures and what happened to the model."""
    from model.training.options import TrainOptions
    from model.training.run import run_training

    changes = {key: getattr(args, dest) for dest, key in _CONFIG_FLAGS}
    changes = {k: v for k, v in changes.items() if v is not None}
    if changes:
        cfg = cfg.replace(**changes)
    opts = TrainOptions.from_config(
        cfg,
        mining=args.mining,
        augment=args.augment,
        cache_features=not args.no_cache,
        checkpoint=args.checkpoint,
        force=args.force,
        activate=not args.no_activate,
        progress=not args.quiet,
    )
    report = run_training(cfg, opts)
    print(format_report(report))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point (``python -m model.train_cli``)."""
    from common.runner import run_single

    return run_single("attendance train", HELP, configure, run, argv)


if __name__ == "__main__":
    sys.exit(main())
