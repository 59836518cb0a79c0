"""The dashboard on a shared PostgreSQL store: sign-in, live Today from notifications, people
with thumbnails from the stored crops, and removal (a real throwaway server, tests/pg.py)."""

from __future__ import annotations

import datetime as dt
import shutil
import time

import pytest
from fastapi.testclient import TestClient
from test_gallery import FakeEmbedder, enrol
from web_support import FakeEnrol, add_user, csrf_of, sign_in

from common.config import Config
from store.factory import open_attendance_store, open_embedding_store, upgrade_store
from store.gallery import sync_gallery
from web.app import create_app


@pytest.fixture
def shared(workspace: Config, pg_url: str) -> Config:
    cfg = workspace.replace(store=pg_url, embed_batch=4)
    upgrade_store(cfg)
    for i, name in enumerate(("Ada Lovelace", "Alan Turing")):
        enrol(cfg, name, 3, seed=100 * i)
    with open_embedding_store(cfg) as store:
        sync_gallery(store, cfg, FakeEmbedder(), progress=False)
    add_user(cfg, "boss", "admin")
    return cfg


def test_the_dashboard_on_a_shared_store(shared: Config, tmp_path) -> None:
    # the dashboard runs in another workspace: crops come from the store, not from files
    from common.config import load_config

    elsewhere = load_config(tmp_path / "hr", overrides={"store": shared.store}, env={})
    app = create_app(elsewhere, enrol=FakeEnrol(), live=True)
    with TestClient(app) as client:
        assert sign_in(client, "boss").status_code == 200
        people = client.get("/api/v1/people").json()
        assert [(p["name"], p["crops"]) for p in people] == [
            ("Ada Lovelace", 3),
            ("Alan Turing", 3),
        ]
        png = client.get("/api/v1/people/Alan Turing/thumbnail.png")
        assert png.status_code == 200
        assert png.content == (shared.pre_images_dir / "Alan Turing" / "0000.png").read_bytes()
        version = app.state.ctx.hub.version
        with open_attendance_store(shared) as db:  # a kiosk elsewhere marks Ada
            db.mark_present("Ada Lovelace", dt.datetime.now(), 0.4, "door")
        deadline = time.monotonic() + 2.0
        while app.state.ctx.hub.version == version and time.monotonic() < deadline:
            time.sleep(0.05)
        today = client.get("/api/v1/today").json()
        assert [p["name"] for p in today["present"]] == ["Ada Lovelace"]
        assert today["absent"] == ["Alan Turing"]
        token = csrf_of(client.get("/").text)
        removed = client.delete("/api/v1/people/Alan Turing", headers={"X-CSRF-Token": token})
        assert removed.status_code == 200 and removed.json()["crops"] == 0
        assert removed.json()["embeddings"] == 3
        assert [p["name"] for p in client.get("/api/v1/people").json()] == ["Ada Lovelace"]
    shutil.rmtree(tmp_path / "hr", ignore_errors=True)


def test_discarding_shots_never_brings_back_someone_removed_elsewhere(shared: Config) -> None:
    """A refused or rolled-back upload syncs the person without reviving them."""
    from scanner.enrol import discard_shots
    from store.factory import remove_from_stores

    remove_from_stores(shared, "Alan Turing", purge=False)  # at another workspace
    photos = shared.images_dir / "Alan Turing"
    photos.mkdir(parents=True)
    shot = photos / "0009.jpg"
    shot.write_bytes(b"not kept")
    discard_shots(shared, "Alan Turing", [shot], FakeEmbedder())
    with open_embedding_store(shared) as store:
        assert "Alan Turing" not in store.identities()
        assert store.tombstones(["Alan Turing"])  # still removed
