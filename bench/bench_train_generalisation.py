"""Does ``attendance train`` generalise? Fine-tune on some people, judge on others, and check
on yet others that training and judging never saw.

Scenarios (the photos are read from ``../shared/data/faces``; nothing is copied into the repo):

* ``sample``: train on the 5 sample people (their train/ and val/ photos);
* ``sample+att20``: train on the sample people and att s1..s20 (a greyscale camera unlike the
  training photos).

The people who are not trained on (att, bbt and hard24, less att s1..s20 in the second
scenario) are split by a stable hash into two halves: the **judges**, given to ``train`` as
``--reference`` (they decide whether a run is activated), and the **test** people, never shown
to ``train``, on which every run is checked afterwards.

For each training variant (no regulariser, L2-SP, distillation 1 and 10 (the shipped
default), only the last layer, a lower learning rate) it runs the real ``run_training`` with
``--force`` and prints, for the judges and for the test people, before -> after with 95%
intervals from a paired bootstrap over identities: TAR at FAR 1e-3 (pairs), EER (pairs),
strangers accepted at 1% false rejection,
genuine and stranger photos accepted at each model's own calibrated threshold (cross-fitted),
the thresholds, and whether ``train`` would have activated the run.

``--identities-study`` also measures how the intervals narrow with the number of judging
identities (random subsets of all non-trained people; pretrained vs the first variant's model),
which is where ``train_min_identities`` comes from.

Usage: ``python bench/bench_train_generalisation.py [--scenarios sample sample+att20]
[--variants plain l2sp distill distill10 bottleneck low-lr] [--epochs 10] [--draws 1000]
[--workdir DIR] [--data ../shared/data/faces] [--identities-study]``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.config import Config, load_config  # noqa: E402

log = logging.getLogger("bench_train_generalisation")
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "faces"
CACHE_FILE = "reference-crops.npz"  # model.training.reference.CACHE_NAME
#: Training variants: name -> configuration overrides (explicit, so a changed default does not
#: change a variant; "distill10" is the shipped default).
NONE = {"train_l2sp": 0.0, "train_distill": 0.0}
VARIANTS: dict[str, dict[str, object]] = {
    "plain": NONE,
    "l2sp": {**NONE, "train_l2sp": 1.0},
    "distill": {**NONE, "train_distill": 1.0},
    "distill10": {**NONE, "train_distill": 10.0},
    "bottleneck": {**NONE, "trainable_from": "Bottleneck"},
    "low-lr": {**NONE, "learning_rate": 1e-5},
}
ROWS = (
    ("tar_at_far_1e-3", "TAR@1e-3 (pairs)"),
    ("eer", "EER (pairs)"),
    ("open_set_accept", "strangers accepted at 1% FRR"),
    ("genuine_accept", "genuine accepted at its threshold"),
    ("stranger_accept", "strangers accepted at its threshold"),
)


def copy_people(source: Path, names: list[str], dest: Path, prefix: str) -> int:
    """Copy the photos of ``names`` (folders of ``source``) to ``dest/<prefix><name>/``."""
    count = 0
    for name in names:
        target = dest / f"{prefix}{name}"
        target.mkdir(parents=True, exist_ok=True)
        for photo in sorted((source / name).iterdir()):
            if photo.is_file() and not (target / photo.name).exists():
                shutil.copyfile(photo, target / photo.name)
                count += 1
    return count


def att_names(data: Path) -> list[str]:
    return sorted((p.name for p in (data / "att").iterdir()), key=lambda n: int(n[1:]))


def seed_cache(work: Path, models_dir: Path) -> None:
    """Start a models folder with the crops detected so far (photos are detected once)."""
    shared, own = work / CACHE_FILE, models_dir / CACHE_FILE
    if shared.is_file() and not own.is_file():
        own.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared, own)


def keep_cache(work: Path, models_dir: Path) -> None:
    """Merge what ``models_dir``'s cache holds into the shared one (by relative path)."""
    import numpy as np

    own, shared = models_dir / CACHE_FILE, work / CACHE_FILE
    if not own.is_file():
        return
    if not shared.is_file():
        shutil.copyfile(own, shared)
        return
    with np.load(own, allow_pickle=False) as a, np.load(shared, allow_pickle=False) as b:
        if str(a["settings"]) != str(b["settings"]):
            return
        known = set(b["relpaths"].tolist()) | set(b["failed_relpaths"].tolist())
        new = [k for k, rel in enumerate(a["relpaths"].tolist()) if rel not in known]
        newf = [k for k, rel in enumerate(a["failed_relpaths"].tolist()) if rel not in known]
        if not new and not newf:
            return
        merged = {key: b[key] for key in b.files}
        for key in ("relpaths", "fingerprints", "identities", "crops"):
            merged[key] = np.concatenate([b[key], a[key][new]])
        for key in ("failed_relpaths", "failed_fingerprints", "failed_identities",
                    "failed_reasons"):  # fmt: skip
            merged[key] = np.concatenate([b[key], a[key][newf]])
    tmp = shared.with_suffix(".tmp.npz")
    np.savez(tmp, **merged)
    os.replace(tmp, shared)


def build_scenario(name: str, data: Path, work: Path, cache_dir: Path) -> Config:
    """The shared workspace (preprocessed training people) and reference folder of a scenario."""
    from bench_train import copy_sample  # the sibling script (bench/ is on sys.path)

    from preprocess.pipeline import run_preprocess

    root = work / name
    cfg = load_config(root, overrides={"cache_dir": str(cache_dir)}, env={})
    copy_sample(cfg.images_dir, cache_dir)
    att = att_names(data)
    people = [("bbt", n) for n in sorted(p.name for p in (data / "bbt").iterdir())]
    people += [("hard24", n) for n in sorted(p.name for p in (data / "hard24").iterdir())]
    if name == "sample":
        people += [("att", n) for n in att]
    elif name == "sample+att20":
        copy_people(data / "att", att[:20], cfg.images_dir, "att_")
        people += [("att", n) for n in att[20:]]
    else:
        raise SystemExit(f"unknown scenario {name!r}")
    people.sort(key=lambda p: hashlib.sha256(f"{p[0]}/{p[1]}".encode()).hexdigest())
    for k, (source, person) in enumerate(people):
        copy_people(data / source, [person], root / ("judge" if k % 2 == 0 else "test"),
                    f"{source}_")  # fmt: skip
    seed_cache(work, cfg.models_dir)
    started = time.perf_counter()
    summary = run_preprocess(cfg, progress=False)
    log.info("%s: preprocess %s (%.1f s)", name, summary.lines()[0], time.perf_counter() - started)
    return cfg.replace(reference_dir=str(root / "judge"))


def run_variant(base_cfg: Config, variant: str, epochs: int | None, draws: int, seed: int):  # type: ignore[no-untyped-def]
    """One forced ``run_training`` in its own models folder; the report and its config."""
    from model.training.options import TrainOptions
    from model.training.run import load_active_model, run_training

    root = base_cfg.root / "runs" / variant
    if root.exists():
        shutil.rmtree(root)
    overrides = {
        "cache_dir": str(base_cfg.cache_dir),
        "pre_images_dir": str(base_cfg.pre_images_dir),
        "images_dir": str(base_cfg.images_dir),
        "reference_dir": str(base_cfg.reference_dir),
        "seed": seed,
        **VARIANTS[variant],
    }
    cfg = load_config(root, overrides=overrides, env={})
    work = base_cfg.root.parent
    seed_cache(work, cfg.models_dir)
    opts = TrainOptions.from_config(
        cfg, epochs=epochs, force=True, activate=False, progress=False, bootstrap_draws=draws
    )
    model, base = load_active_model(cfg)
    started = time.perf_counter()
    report = run_training(cfg, opts, model=model, base=base)
    seconds = time.perf_counter() - started
    keep_cache(work, cfg.models_dir)
    return report, cfg, seconds


def load_people(base_cfg: Config, folder: Path):  # type: ignore[no-untyped-def]
    """Crops of a folder of people, detected once (through the shared cache)."""
    from model.training.reference import load_reference

    cfg = load_config(folder.parent / f".cache-{folder.name}", overrides={
        "cache_dir": str(base_cfg.cache_dir)}, env={})  # fmt: skip
    work = base_cfg.root.parent
    seed_cache(work, cfg.models_dir)
    people = load_reference(cfg, folder, 160, progress=False)
    keep_cache(work, cfg.models_dir)
    return people


def people_scores(crops, embeddings, seed: int):  # type: ignore[no-untyped-def]
    """Identity-tagged scores of one model on people (first half of each one's photos =
    gallery, the rest probes, as ``train`` splits reference people)."""
    import numpy as np

    from model.confidence import identity_scores

    labels = np.asarray(crops.identities)
    gallery, probes = [], []
    for name in sorted(set(labels)):
        rows = np.flatnonzero(labels == name)
        half = (len(rows) + 1) // 2
        gallery += rows[:half].tolist()
        probes += rows[half:].tolist()
    return identity_scores(
        embeddings[gallery], labels[gallery].tolist(), embeddings[probes],
        labels[probes].tolist(), mode="template", seed=seed,
    )  # fmt: skip


def table(title: str, changes) -> list[str]:  # type: ignore[no-untyped-def]
    lines = [title, "| metric | before | after | change | 95% interval |", "|---|---|---|---|---|"]
    for key, label in ROWS:
        change = changes.get(key)
        if change is not None:
            lines.append(
                f"| {label} | {change.before:.4f} | {change.after:.4f} | "
                f"{change.after - change.before:+.4f} | {change.low:+.4f} .. {change.high:+.4f} |"
            )
    return lines


def format_variant(scenario: str, variant: str, report, seconds: float, test) -> list[str]:  # type: ignore[no-untyped-def]
    lines = [
        f"## {scenario} / {variant} ({VARIANTS[variant] or 'defaults'}): "
        f"{report.counts.get('train_identities')} trained identities, {len(report.history)} "
        f"epochs, {seconds:.0f} s",
    ]
    lines += table(f"judges ({report.unseen_identities} people, given to train):", report.changes)
    lines.append(
        f"| threshold (calibrated) | {report.before.get('threshold', float('nan')):.4f} | "
        f"{report.after.get('threshold', float('nan')):.4f} | | |"
    )
    if test is not None:
        n, changes = test
        lines += table(f"test people ({n}, never shown to train):", changes)
    if report.enrolled_before and report.enrolled_after:
        key = "tar_at_far_1e-3"
        lines.append(
            f"trained people's held-out photos: TAR@1e-3 {report.enrolled_before[key]:.4f}"
            f" -> {report.enrolled_after[key]:.4f}"
        )
    verdict = "ACTIVATE" if report.decision.accepted else "refuse"
    lines.append(f"decision: {verdict}: {report.decision.reason}")
    return lines


def identities_study(
    people, embeddings, far: float, min_gain: float, draws: int, seed: int
) -> list[str]:  # type: ignore[no-untyped-def]
    """How many judging identities are needed: on random subsets of n people, the median 95%
    interval width of each change (pretrained -> the first variant's model), how often the
    loss of TAR@1e-3 is shown (the interval excludes zero), and how often the rule would have
    activated that model."""
    import numpy as np

    from model.confidence import compare
    from model.training.decision import decide
    from model.training.reference import ReferenceCrops

    labels = np.asarray(people.identities)
    names = sorted(set(labels))
    rng = np.random.default_rng(seed)
    subsets = 20
    lines = [
        f"## judging identities: median 95% interval width over {subsets} random subsets "
        f"({draws} resamples each), TAR@1e-3 loss shown, and the model activated",
        "| identities | "
        + " | ".join(label for _, label in ROWS)
        + " | TAR loss shown | activated |",
        "|---|" + "---|" * (len(ROWS) + 2),
    ]
    for n in (5, 10, 15, 20, 30, 45, len(names)):
        if n > len(names):
            continue
        widths: dict[str, list[float]] = {key: [] for key, _ in ROWS}
        shown = accepted = runs = 0
        for _ in range(subsets if n < len(names) else 1):
            chosen = set(rng.choice(names, size=n, replace=False).tolist())
            rows = np.flatnonzero(np.isin(labels, list(chosen)))
            relpaths = [people.relpaths[r] for r in rows]
            sub = ReferenceCrops(
                people.root, labels[rows].tolist(), relpaths, people.crops[rows], []
            )
            scores = {tag: people_scores(sub, emb[rows], seed) for tag, emb in embeddings.items()}
            try:
                changes = compare(scores["before"], scores["after"], far, draws, seed)
            except ValueError:  # too few to resample: nothing measured
                continue
            runs += 1
            for key, _ in ROWS:
                widths[key].append(changes[key].high - changes[key].low)
            shown += changes["tar_at_far_1e-3"].high < 0
            margin = max(far, 2 / len(scores["after"].stranger))
            accepted += decide(changes, n, 2, min_gain, margin).accepted
        lines.append(
            f"| {n} | "
            + " | ".join(f"{np.median(widths[key]):.4f}" for key, _ in ROWS)
            + f" | {shown}/{runs} | {accepted}/{runs} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-train-generalisation"))
    parser.add_argument("--scenarios", nargs="+", default=["sample", "sample+att20"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=None, help="default: train_epochs")
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--identities-study", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("tensorflow", "absl", "h5py", "model", "preprocess", "common"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not args.data.is_dir():
        raise SystemExit(f"{args.data}: no such folder; pass --data ../shared/data/faces")

    import numpy as np

    from model.confidence import compare
    from model.embedder import Embedder
    from model.training.reference import ReferenceCrops

    env = {k: v for k, v in os.environ.items() if k == "ATTENDANCE_CACHE_DIR"}
    cache_dir = load_config(Path("/"), env=env).cache_dir
    print(f"# bench_train_generalisation: {os.cpu_count()} CPU(s), seed {args.seed}")
    for scenario in args.scenarios:
        cfg = build_scenario(scenario, args.data, args.workdir, cache_dir)
        test = load_people(cfg, cfg.root / "test")
        pretrained = Embedder.from_config(cfg.replace(model_version="pretrained"))
        test_before = people_scores(test, pretrained.embed(test.crops), args.seed)
        first = None
        for variant in args.variants:
            report, run_cfg, seconds = run_variant(cfg, variant, args.epochs, args.draws, args.seed)
            checked = None
            if report.version is not None:
                version_cfg = run_cfg.replace(model_version=report.version.version)
                tuned = Embedder.from_config(version_cfg)
                after = people_scores(test, tuned.embed(test.crops), args.seed)
                checked = (len(test.names), compare(test_before, after, cfg.calibrate_far,
                                                    args.draws, args.seed))  # fmt: skip
                first = first or tuned
            lines = format_variant(scenario, variant, report, seconds, checked)
            print("\n".join(lines), flush=True)
        if args.identities_study and first is not None:
            judges = load_people(cfg, cfg.root / "judge")
            people = ReferenceCrops(
                cfg.root, judges.identities + test.identities, judges.relpaths + test.relpaths,
                np.concatenate([judges.crops, test.crops]), [],
            )  # fmt: skip
            embeddings = {
                "before": pretrained.embed(people.crops),
                "after": first.embed(people.crops),
            }
            study = identities_study(people, embeddings, cfg.calibrate_far, cfg.train_min_gain,
                                     args.draws, args.seed)  # fmt: skip
            print("\n".join(study), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
