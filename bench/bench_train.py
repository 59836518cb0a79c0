"""Benchmark of ``attendance train`` on the sample data (5 people), with the real weights.

Prints:

* the time per epoch with the cached frozen features and without them (the frozen layers
  run again for every batch), and the one-off cost of filling the cache;
* figures on the held-out photos of the trained people before and after fine-tuning on the
  sample's own split (``val/`` photos are the probes, one identity is held out entirely), and
  the decision: always a refusal here, since one unseen identity cannot judge a run
  (``bench_train_generalisation.py`` measures that on people the training never saw).

Usage: ``python bench/bench_train.py [--epochs 10] [--workspace DIR] [--lr 1e-4]``.
The sample photos are cropped with the preprocess pipeline into the workspace (default: a
temporary folder; pass ``--workspace`` to reuse the crops between runs).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common.config import Config, load_config  # noqa: E402
from common.sdist import ensure_sample_data  # noqa: E402

log = logging.getLogger("bench_train")
KEYS = (
    "tar_at_far_1e-3",
    "open_set_false_accept",
    "rank1",
    "tar_at_far_1e-2",
    "auc",
    "eer",
    "best_accuracy",
)


def copy_sample(images_dir: Path, cache_dir: Path) -> None:
    """Copy the sample photos into ``images_dir/<Name>/`` with train_/val_ prefixes."""
    sample = ensure_sample_data(cache_dir)
    for part in ("train", "val"):
        for person in sorted((sample / part).iterdir()):
            dest = images_dir / person.name
            dest.mkdir(parents=True, exist_ok=True)
            for photo in sorted(person.glob("*.jpg")):
                target = dest / f"{part}_{photo.name}"
                if not target.exists():
                    shutil.copyfile(photo, target)


def prepare_workspace(root: Path, cache_dir: Path) -> Config:
    """Copy the sample photos into ``root/images`` (train_/val_ prefixes) and crop them."""
    from preprocess.pipeline import run_preprocess

    cfg = load_config(root, overrides={"cache_dir": str(cache_dir)}, env={})
    copy_sample(cfg.images_dir, cache_dir)
    started = time.perf_counter()
    summary = run_preprocess(cfg, progress=False)
    log.info("preprocess: %s (%.1f s)", summary.lines()[0], time.perf_counter() - started)
    return cfg


def write_sample_split(cfg: Config, seed: int) -> Path:
    """The sample's own split: ``val_*`` crops are held out (halved into evaluation gallery
    and probes); one identity is held out entirely (its photos halved the same way)."""
    from model.training.data import load_crops
    from model.training.split import (
        GALLERY,
        HOLDOUT,
        HOLDOUT_IDENTITY_FRACTION,
        HOLDOUT_IMAGE_FRACTION,
        PROBE,
        SPLIT_FORMAT,
        SPLIT_NAME,
        TRAIN,
        assign_images,
        choose_holdout_identities,
        unit_hash,
    )

    crops = load_crops(cfg.pre_images_dir)
    names = sorted(set(crops.labels))
    held = choose_holdout_identities(names, HOLDOUT_IDENTITY_FRACTION, seed)
    images: dict[str, str] = {}
    for name in names:
        files = [p for p, label in zip(crops.paths, crops.labels, strict=True) if label == name]
        if name in held:
            images.update(assign_images(files, HOLDOUT_IMAGE_FRACTION, seed, HOLDOUT))
            continue
        val = sorted(
            (p for p in files if p.split("/", 1)[1].startswith("val_")),
            key=lambda p: unit_hash(seed, "image", p),
        )
        images.update({p: TRAIN for p in files})
        images.update({p: GALLERY if k < len(val) // 2 else PROBE for k, p in enumerate(val)})
    split = {
        "format": SPLIT_FORMAT,
        "seed": seed,
        "holdout_image_fraction": HOLDOUT_IMAGE_FRACTION,
        "holdout_identity_fraction": HOLDOUT_IDENTITY_FRACTION,
        "identities": {n: HOLDOUT if n in held else TRAIN for n in names},
        "images": images,
    }
    path = cfg.models_dir / SPLIT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(split, indent=2), encoding="utf-8")
    return path


def time_epochs(cfg: Config, model, cache: bool, epochs: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Seconds per epoch (after one warm-up epoch) with or without the feature cache."""
    from model.training.data import load_crops
    from model.training.options import TrainOptions
    from model.training.split import SPLIT_NAME, update_split
    from model.training.trainer import FineTuner

    opts = TrainOptions.from_config(cfg, cache_features=cache, progress=False, epochs=epochs)
    crops = load_crops(cfg.pre_images_dir)
    split = update_split(cfg.models_dir / SPLIT_NAME, crops, opts.seed)
    tuner = FineTuner(model, crops, split, opts)
    prep = tuner.prepare()
    sampler = tuner.sampler()
    tuner.train_epoch(0, sampler)  # warm-up: traces the compiled step
    stats = [tuner.train_epoch(i + 1, sampler) for i in range(epochs)]
    tuner.restore_initial()
    return {
        "cache_fill_s": prep,
        "epoch_s": sum(s.seconds for s in stats) / len(stats),
        "steps_s": sum(s.step_seconds for s in stats) / len(stats),
        "batches": tuner.batches_per_epoch(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, help="reuse this workspace (default: temp)")
    parser.add_argument("--epochs", type=int, default=None, help="default: train_epochs")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--mining", default=None, choices=("semi-hard", "batch-hard"))
    parser.add_argument("--trainable-from", default=None)
    parser.add_argument("--timing-epochs", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("tensorflow", "absl", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from model.training.options import TrainOptions
    from model.training.run import load_active_model, run_training

    env = {k: v for k, v in os.environ.items() if k == "ATTENDANCE_CACHE_DIR"}
    cache_dir = load_config("/", env=env).cache_dir
    tmp = None
    if args.workspace is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-train-")
        root = Path(tmp.name)
    else:
        root = args.workspace
        root.mkdir(parents=True, exist_ok=True)
    try:
        cfg = prepare_workspace(root, cache_dir)
        overrides = {
            "learning_rate": args.lr,
            "trainable_from": args.trainable_from,
            "model_version": "pretrained",  # always start from the pretrained weights
        }
        cfg = cfg.replace(**{k: v for k, v in overrides.items() if v is not None})
        for version_dir in cfg.models_dir.glob("v*"):
            shutil.rmtree(version_dir)
        write_sample_split(cfg, cfg.seed)
        model, base = load_active_model(cfg)
        print(
            f"# bench_train: sample data, {os.cpu_count()} CPU(s), trainable from "
            f"{cfg.trainable_from}"
        )
        cached = time_epochs(cfg, model, True, args.timing_epochs)
        live = time_epochs(cfg, model, False, max(1, args.timing_epochs // 2))
        print(
            f"batches per epoch (P={cfg.train_identities} x K={cfg.train_images}): "
            f"{cached['batches']}"
        )
        print(
            f"cache fill (frozen layers over every image and variant): "
            f"{cached['cache_fill_s']:.1f} s"
        )
        print(
            f"epoch with cached features:    {cached['epoch_s']:.2f} s "
            f"(training steps {cached['steps_s']:.2f} s)"
        )
        print(
            f"epoch without cached features: {live['epoch_s']:.2f} s "
            f"(training steps {live['steps_s']:.2f} s)"
        )
        print(f"speed-up of the training steps: {live['steps_s'] / cached['steps_s']:.1f}x")

        # force: the sample has 1 identity training never sees, far too few to judge a
        # run (train refuses without --force); this bench measures speed and the held-out
        # photos of the trained people, bench_train_generalisation.py judges generalisation
        opts = TrainOptions.from_config(
            cfg, epochs=args.epochs, mining=args.mining, progress=False, activate=False,
            force=True,
        )  # fmt: skip
        started = time.perf_counter()
        report = run_training(cfg, opts, model=model, base=base)
        total = time.perf_counter() - started
        print(
            f"\nfine-tuning: {len(report.history)} epochs, {opts.mining}, "
            f"lr {opts.learning_rate:g}, margin {opts.margin:g}: {total:.1f} s in total"
        )
        print("split: " + ", ".join(f"{k} {v}" for k, v in report.counts.items()))
        print(
            f"training batch-all triplet loss: {report.monitor_before:.4f} -> "
            f"{report.history[-1].monitor_loss:.4f} (kept epoch {report.best_epoch})"
        )
        print(f"{'trained people, held-out photos':<32}{'before':>9}{'after':>9}")
        for key in KEYS:
            before, after = report.enrolled_before[key], report.enrolled_after[key]
            print(f"{key:<32}{before:>9.4f}{after:>9.4f}")
        saved = f"{report.version.version} saved (--force)" if report.version else "nothing saved"
        print(
            f"decision: {'ACCEPT' if report.decision.accepted else 'REJECT'} "
            f"({report.decision.reason}); {saved}"
        )
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
