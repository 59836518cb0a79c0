"""``attendance train``: fine-tune the active model on ``pre_images/`` with triplet loss.

The run is judged on identities training never sees (the workspace's held-out people and
the reference people of ``--reference DIR``), with 95% intervals from a bootstrap over
identities. The new model is saved as a version (``<workspace>/models/vN``) with its own
calibrated threshold, and made active only if no headline metric may have got worse and one
is shown better; otherwise the numbers are reported, the current model stays, and the command
exits 1. With too few unseen identities nothing is trained (exit 2) unless ``--force``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from common.config import Config

HELP = (
    "fine-tune FaceNet on pre_images/ (triplet loss); activate the result only if it is shown "
    "better on people it never saw"
)

#: (flag destination, configuration key)
_CONFIG_FLAGS = (
    ("epochs", "train_epochs"),
    ("learning_rate", "learning_rate"),
    ("margin", "train_margin"),
    ("identities", "train_identities"),
    ("images", "train_images"),
    ("trainable_from", "trainable_from"),
    ("seed", "seed"),
    ("reference", "reference_dir"),
    ("min_identities", "train_min_identities"),
    ("l2sp", "train_l2sp"),
    ("distill", "train_distill"),
)
#: Figures on the unseen identities: key, label (the FAR target is filled in).
ROWS = (
    ("tar_at_far_1e-3", "TAR @ FAR 1e-3 (pairs)"),
    ("eer", "EER (pairs)"),
    ("open_set_accept", "strangers accepted at 1% false rejection"),
    ("genuine_accept", "genuine accepted at its threshold"),
    ("stranger_accept", "strangers accepted at its threshold"),
)
#: Figures on the held-out photos of the enrolled (trained) people: reported, not decisive.
ENROLLED_ROWS = (
    ("tar_at_far_1e-3", "TAR@1e-3"),
    ("rank1", "rank-1"),
    ("open_set_false_accept", "open-set false accept"),
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
        "--reference",
        metavar="DIR",
        help="photos of people who are NOT enrolled, one folder per person, to judge the "
        "fine-tune on (reference_dir)",
    )
    parser.add_argument(
        "--min-identities",
        type=int,
        metavar="N",
        help="unseen identities needed to judge a run (train_min_identities)",
    )
    parser.add_argument(
        "--l2sp", type=float, metavar="W", help="L2-SP weight: stay near the start (train_l2sp)"
    )
    parser.add_argument(
        "--distill",
        type=float,
        metavar="W",
        help="distillation weight: keep embeddings where they started (train_distill)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="train and save the result as a version even if it is not shown better, or there "
        "are too few unseen people to judge it (it is never activated)",
    )
    parser.add_argument(
        "--no-activate", action="store_true", help="save an improved model without activating it"
    )


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _verdict(change, margin: float) -> str:  # type: ignore[no-untyped-def]
    from model.confidence import GUARDED

    if change.key in dict(GUARDED):  # calibration pins it: only a rise counts
        if change.improvement < -(margin + 1e-12) or change.improvement_high < -1e-12:
            return "rose"
        return f"guard: no rise beyond {margin:.4f}"
    if change.improvement_low > 1e-12:
        return "better"
    if change.improvement_low < -1e-12:
        return "may be worse" if change.improvement_high > 1e-12 else "worse"
    return "same"


def format_unseen(report, far: float) -> list[str]:  # type: ignore[no-untyped-def]
    """The before/after table on the identities training never saw, with intervals."""
    n = report.unseen_identities
    if not report.before:
        if n < 2:
            return [f"people training never saw: {n}; at least 2 are needed to measure anything"]
        return [f"people training never saw: {n}; they could not be measured (see the log)"]
    draws = report.bootstrap_draws
    lines = [
        f"on {n} identities training never saw ({report.counts.get('unseen_images', 0)} photos; "
        f"95% intervals over identities, {draws} resamples; thresholds calibrated at FAR {far:g}):"
    ]
    width = max(len(label) for _, label in ROWS)
    lines.append(
        f"  {'metric'.ljust(width)}  {'before':>8}  {'after':>8}  {'change':>8}  "
        f"{'95% interval of the change':<26}"
    )
    for key, label in ROWS:
        change = report.changes.get(key)
        interval = f"{change.low:+.4f} .. {change.high:+.4f}" if change else "-"
        lines.append(
            f"  {label.ljust(width)}  {_fmt(report.before.get(key)):>8}  "
            f"{_fmt(report.after.get(key)):>8}  "
            f"{_fmt(report.after[key] - report.before[key], True):>8}  {interval:<26}"
            + (f"  {_verdict(change, report.stranger_margin)}" if change else "")
        )
    lines.append(
        f"  {'calibrated threshold'.ljust(width)}  {_fmt(report.before.get('threshold')):>8}  "
        f"{_fmt(report.after.get('threshold')):>8}"
    )
    return lines


def format_report(report, far: float = 1e-3) -> str:  # type: ignore[no-untyped-def]
    """Before/after tables, the decision and what was saved."""
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
    lines += format_unseen(report, far)
    if report.enrolled_before and report.enrolled_after:
        cells = ", ".join(
            f"{label} {report.enrolled_before[key]:.4f} -> {report.enrolled_after[key]:.4f}"
            for key, label in ENROLLED_ROWS
        )
        lines.append(f"held-out photos of the trained people (not decisive): {cells}")
    decision = report.decision
    if report.version is None:
        lines.append(f"not saved: {decision.reason}; the current model stays active")
    elif report.activated:
        lines.append(
            f"saved and activated {report.version.version} ({report.version.model_id}) with "
            f"threshold {_fmt(report.threshold)}: {decision.reason}"
        )
    elif decision.accepted:
        lines.append(
            f"saved {report.version.version} ({decision.reason}); activate it with "
            f"`attendance model use {report.version.version}`"
        )
    else:
        lines.append(
            f"WARNING: saved {report.version.version} although it is not shown better "
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
    print(format_report(report, opts.calibrate_far))
    return 0 if report.decision.accepted else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point (``python -m model.train_cli``)."""
    from common.runner import run_single

    return run_single("attendance train", HELP, configure, run, argv)


if __name__ == "__main__":
    sys.exit(main())
