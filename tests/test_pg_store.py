"""What only a shared PostgreSQL store does: kiosks with empty workspaces, live changes,
concurrency, server restarts, schema versions, least privilege, moving a workspace in.

Runs against a real throwaway server (``tests/pg.py``), one fresh database per test.
"""

from __future__ import annotations

import datetime as dt
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest
from test_gallery import FakeEmbedder, enrol, write_crop

from attendance import cli as attendance_cli
from attendance.db_cli import copy_workspace
from common.config import Config, ConfigError, load_config
from common.runner import add_common_arguments, config_from_args
from store.factory import (
    open_attendance_store,
    open_embedding_store,
    open_pending_writer,
    remove_from_stores,
    store_grants,
    upgrade_store,
    watch_embedding_store,
)
from store.gallery import GalleryWatcher, load_gallery, sync_gallery
from store.pending import PendingWriter
from store.pg_schema import SCHEMA_VERSION
from store.records import (
    CropEmbedding,
    DatabaseUnavailable,
    GalleryError,
    SchemaMismatch,
    StoreError,
)

WHEN = dt.datetime(2024, 5, 1, 9, 0, 0)


def kiosk(tmp_path: Path, name: str, url: str, cache_dir: Path) -> Config:
    """An empty workspace on the shared store ``url``."""
    root = tmp_path / name
    root.mkdir()
    return load_config(
        root, overrides={"store": url, "cache_dir": str(cache_dir), "embed_batch": 4}, env={}
    )


def make_roles(url: str, kiosk: str, admin: str, password: str | None = None) -> None:
    """Create a kiosk and an admin role (roles are cluster-wide: names differ per test) and
    grant them what ``attendance db grants`` prints; ``password``: a suffix of each name."""
    with psycopg.connect(url, autocommit=True) as conn:
        for role in (kiosk, admin):
            secret = f" PASSWORD '{role}{password}'" if password else ""
            conn.execute(f"CREATE ROLE {role} LOGIN{secret}")
        for statement in store_grants(kiosk, admin):
            conn.execute(statement)


@pytest.fixture
def url(pg_url: str, workspace: Config) -> str:
    upgrade_store(workspace.replace(store=pg_url))
    return pg_url


@pytest.fixture
def kiosks(tmp_path: Path, url: str, cache_dir: Path) -> tuple[Config, Config]:
    """Kiosk A (enrols Ada and Alan) and kiosk B (an empty workspace), one store."""
    a = kiosk(tmp_path, "A", url, cache_dir)
    enrol(a, "Ada Lovelace", 4, seed=0)
    enrol(a, "Alan Turing", 3, seed=100)
    with open_embedding_store(a) as store:
        assert sync_gallery(store, a, FakeEmbedder(), progress=False).embedded == 7
    return a, kiosk(tmp_path, "B", url, cache_dir)


# --------------------------------------------------------------------------- empty kiosks
def test_a_kiosk_with_an_empty_workspace_recognises_people_enrolled_elsewhere(kiosks):
    a, b = kiosks
    embedder = FakeEmbedder()
    with open_embedding_store(b) as store:
        labels, vectors = load_gallery(store, b, embedder, progress=False)
        # syncing B's empty folder publishes nothing and removes nobody
        summary = sync_gallery(store, b, embedder, progress=False)
        assert summary.removed == 0 and store.identities() == {"Ada Lovelace": 4, "Alan Turing": 3}
    assert labels == ["Ada Lovelace"] * 4 + ["Alan Turing"] * 3
    assert embedder.embedded == 0  # nothing recomputed: the vectors come from the store
    with open_embedding_store(a) as store:
        np.testing.assert_array_equal(vectors, store.load(embedder.model_id)[1])


def test_a_kiosk_on_another_model_embeds_the_stored_crops(kiosks):
    """The crops live in the store, so a kiosk running a new model needs no photos."""
    _, b = kiosks
    other = FakeEmbedder(model_id="fake-v2", dim=6)
    with open_embedding_store(b) as store:
        labels, vectors = load_gallery(store, b, other, progress=False)
        assert other.embedded == 7 and vectors.shape == (7, 6)
        assert sorted(store.model_ids()) == ["fake-v1", "fake-v2"]  # both kept
        load_gallery(store, b, other, progress=False)
        assert other.embedded == 7  # stored: the next start embeds nothing


def test_a_kiosk_role_reads_and_marks_but_cannot_delete(kiosks, url: str, pg_server):
    """The documented grants: a kiosk marks and reads; it keeps vectors of a new model in
    memory, and removal or a purge fails with a message naming the missing grant."""
    a, b = kiosks
    make_roles(url, "kiosk", "admin", password="-pw")
    as_kiosk = b.replace(store=url.replace("postgres@", "kiosk:kiosk-pw@"))
    with open_attendance_store(as_kiosk) as db:
        assert db.mark_present("Ada Lovelace", WHEN, 0.4, "door 1").new_present
        assert db.mark_present("Ada Lovelace", WHEN.replace(hour=10), 0.4, "door 2").action == (
            "seen"
        )
        with pytest.raises(StoreError, match="may not") as caught:
            db.delete_person("Ada Lovelace")
        assert "kiosk-pw" not in str(caught.value)
    other = FakeEmbedder(model_id="fake-v2", dim=6)
    with open_embedding_store(as_kiosk) as store:
        labels, vectors = load_gallery(store, as_kiosk, other, progress=False)
        assert len(labels) == 7 and vectors.shape == (7, 6)  # from memory
        assert store.model_ids() == ["fake-v1"]  # nothing written
    with pytest.raises(StoreError, match="may not"):
        remove_from_stores(as_kiosk, "Ada Lovelace", purge=True)
    as_admin = b.replace(store=url.replace("postgres@", "admin:admin-pw@"))
    assert remove_from_stores(as_admin, "Ada Lovelace", purge=True) == (4, 1, 2)


def test_a_workspace_publishes_only_its_own_folders_and_crops(kiosks, tmp_path, url, cache_dir):
    """Publishing a name without a local folder removes nothing; another workspace enrolling
    the same person adds its crops beside the first one's (same file names included)."""
    a, b = kiosks
    with open_embedding_store(b) as store:
        summary = sync_gallery(store, b, FakeEmbedder(), names=["Ada Lovelace"], progress=False)
        assert summary.removed == 0 and store.identities()["Ada Lovelace"] == 4
    c = kiosk(tmp_path, "C", url, cache_dir)
    enrol(c, "Ada Lovelace", 2, seed=500)  # 0000.png and 0001.png, as at A, other pictures
    with open_embedding_store(c) as store:
        sync_gallery(store, c, FakeEmbedder(), progress=False)
        assert store.identities()["Ada Lovelace"] == 6
        (c.pre_images_dir / "Ada Lovelace" / "0001.png").unlink()  # C drops one of its own
        summary = sync_gallery(store, c, FakeEmbedder(), progress=False)
        assert summary.removed == 1 and store.identities()["Ada Lovelace"] == 5
    with open_embedding_store(a) as store:  # A's are untouched
        assert sync_gallery(store, a, FakeEmbedder(), progress=False).unchanged == 7
    # C discards its shots of Ada (the scanner's undo): C's crops go, A's stay
    shutil.rmtree(c.pre_images_dir / "Ada Lovelace")
    with open_embedding_store(c) as store:
        summary = sync_gallery(store, c, FakeEmbedder(), names=["Ada Lovelace"], progress=False)
        assert summary.removed == 1 and store.identities()["Ada Lovelace"] == 4
    ids = {(ws.root / ".workspace-id").read_text().strip() for ws in (a, c)}
    assert len(ids) == 2  # each publishing workspace has its own id


# --------------------------------------------------------------------------- removal
def test_removal_is_one_transaction_and_an_old_workspace_cannot_bring_them_back(kiosks):
    a, b = kiosks
    with open_attendance_store(b) as db:
        db.mark_present("Ada Lovelace", WHEN, 0.4, "door 1")
    assert remove_from_stores(b, "Ada Lovelace", purge=True) == (4, 1, 1)
    with open_embedding_store(a) as store:
        assert store.identities() == {"Alan Turing": 3}
        summary = sync_gallery(store, a, FakeEmbedder(), progress=False)  # A still has her crops
        assert summary.embedded == 0 and store.identities() == {"Alan Turing": 3}
        assert [relpath for relpath, _ in summary.skipped] == ["Ada Lovelace"]
        assert "was removed from" in summary.skipped[0][1]
        # enrolling her again (new crops) is allowed
        time.sleep(0.01)
        write_crop(a.pre_images_dir / "Ada Lovelace" / "0009.png", seed=77)
        sync_gallery(store, a, FakeEmbedder(), names=["Ada Lovelace"], progress=False)
        assert store.identities()["Ada Lovelace"] == 5
    with open_attendance_store(b) as db:
        assert db.rows(name="Ada Lovelace") == [] and db.events(name="Ada Lovelace") == []


def test_a_removal_that_fails_half_way_removes_nothing(kiosks, url):
    """Crops, embeddings, rows and events go in one transaction: when deleting the events
    fails, the crops are still there."""
    _, b = kiosks
    with open_attendance_store(b) as db:
        db.mark_present("Alan Turing", WHEN, 0.4, "door 1")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'events are kept'; END $$"
        )
        conn.execute(
            "CREATE TRIGGER keep BEFORE DELETE ON events FOR EACH ROW EXECUTE FUNCTION refuse()"
        )
    with pytest.raises(StoreError, match="events are kept"):
        remove_from_stores(b, "Alan Turing", purge=True)
    with open_embedding_store(b) as store, open_attendance_store(b) as db:
        assert store.identities()["Alan Turing"] == 3 and len(db.rows()) == 1
        assert store.tombstones(["Alan Turing"]) == {}


def test_a_removal_during_a_publish_wins(kiosks):
    """A publish that started before a removal cannot bring the person back, even when it
    names them: the removal is checked inside each write."""
    a, b = kiosks
    with open_embedding_store(a) as publisher:
        publisher.begin_publish(["Ada Lovelace"])
        remove_from_stores(b, "Ada Lovelace", purge=False)
        write_crop(a.pre_images_dir / "Ada Lovelace" / "0009.png", seed=78)
        sync_gallery(publisher, a, FakeEmbedder(), names=["Ada Lovelace"], progress=False)
        # sync_gallery started a new publish after the removal: enrolling again by name works
        assert publisher.identities()["Ada Lovelace"] == 5
        remove_from_stores(b, "Ada Lovelace", purge=False)
        row = CropEmbedding("0" * 64, "Ada Lovelace/0010.png", "Ada Lovelace", 1, 1, 8, b"\0" * 32,
                            b"png")  # fmt: skip
        publisher.begin_publish(["Ada Lovelace"])
        time.sleep(0.01)
        remove_from_stores(b, "Ada Lovelace", purge=False)  # after this publish started
        assert publisher.insert("fake-v1", [row]) == 0
        assert "Ada Lovelace" not in publisher.identities()


# --------------------------------------------------------------------------- live changes
def test_running_kiosks_apply_only_the_identities_that_changed(kiosks, url, pg_server):
    a, b = kiosks
    embedder = FakeEmbedder()
    watched = watch_embedding_store(b)
    calls: list[str] = []
    for method in ("load", "load_identities"):
        original = getattr(watched, method)
        setattr(
            watched, method, lambda *a, _f=original, _m=method, **k: calls.append(_m) or _f(*a, **k)
        )
    watcher = GalleryWatcher(watched, embedder.model_id, dim=8, interval=0.0)
    with watcher, open_embedding_store(b) as store:
        watcher.prime(*store.load(embedder.model_id, dim=8))
        assert watcher.poll() is None  # nothing happened
        enrol(a, "Grace Hopper", 2, seed=200)
        with open_embedding_store(a) as publisher:
            sync_gallery(publisher, a, embedder, names=["Grace Hopper"], progress=False)
        started = time.monotonic()
        loaded = None
        while loaded is None and time.monotonic() - started < 2.0:
            loaded = watcher.poll()
            time.sleep(0.02)
        assert loaded is not None, "the enrolment did not arrive within 2 s"
        labels, vectors = loaded
        assert sorted(set(labels)) == ["Ada Lovelace", "Alan Turing", "Grace Hopper"]
        fresh = store.load(embedder.model_id, dim=8)
        order = np.argsort(labels, kind="stable")
        assert [labels[i] for i in order] == fresh[0]
        np.testing.assert_array_equal(vectors[order], fresh[1])
        remove_from_stores(a, "Alan Turing", purge=False)
        time.sleep(0.3)
        labels, _ = watcher.poll()
        assert sorted(set(labels)) == ["Ada Lovelace", "Grace Hopper"]
        assert calls == ["load_identities", "load_identities"]  # no full reload
        # a restart loses notifications: the watcher reloads everything once it reconnects
        pg_server.restart(mode="immediate")
        enrol(a, "Alan Turing", 1, seed=300)
        deadline = time.monotonic() + 20
        result = None
        while result is None and time.monotonic() < deadline:
            try:
                with open_embedding_store(a) as publisher:
                    sync_gallery(publisher, a, embedder, names=["Alan Turing"], progress=False)
            except GalleryError:
                time.sleep(0.2)
                continue
            result = watcher.poll()
            time.sleep(0.2)
        while result is None and time.monotonic() < deadline:
            result = watcher.poll()
            time.sleep(0.2)
        assert result is not None and sorted(set(result[0])) == [
            "Ada Lovelace",
            "Alan Turing",
            "Grace Hopper",
        ]
        assert calls[2] == "load"  # notifications may have been lost: everything reloaded


# --------------------------------------------------------------------------- concurrency
def test_three_kiosks_marking_one_person_at_once_write_one_row(kiosks):
    """Once a day per person across kiosks: concurrent first sightings make one row, the
    earliest entry time wins, and every sighting is in the audit trail."""
    _, b = kiosks
    barrier = threading.Barrier(3)
    results: list[str] = []
    errors: list[BaseException] = []

    def door(minute: int) -> None:
        try:
            with open_attendance_store(b) as db:
                barrier.wait()
                for second in range(10):
                    result = db.mark_present("Ada Lovelace", WHEN.replace(minute=minute,
                                             second=second), 0.4, f"door {minute}")  # fmt: skip
                    results.append(result.action)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=door, args=(m,)) for m in (7, 3, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert results.count("present") == 1 and len(results) == 30
    with open_attendance_store(b) as db:
        (row,) = db.rows()
        assert (row.time, row.last_seen) == ("09:03:00", "09:07:09")
        assert len(db.events()) == 30


# --------------------------------------------------------------------------- faults
def test_sightings_survive_a_server_restart(kiosks, pg_server):
    """Server gone: sightings are journalled and queued, the kiosk goes on; once the server
    is back they are written, each exactly once."""
    _, b = kiosks
    with open_pending_writer(b) as writer:
        writer.retry_interval = 0.0
        writer.mark_present("Ada Lovelace", WHEN, 0.4, "door 1")
        pg_server.stop(mode="immediate")
        try:
            writer.mark_present("Alan Turing", WHEN.replace(minute=1), 0.5, "door 1")
            writer.mark_present("Ada Lovelace", WHEN.replace(minute=2), 0.4, "door 1")
            assert len(writer.pending()) == 2
            assert isinstance(writer.last_error, DatabaseUnavailable)
            assert f"127.0.0.1:{pg_server.port}" in str(writer.last_error)
            assert len(list(writer.journal.folder.glob("*.jsonl"))) == 1
        finally:
            pg_server.start()
        deadline = time.monotonic() + 30
        while writer.pending() and time.monotonic() < deadline:
            writer.flush()
            time.sleep(0.2)
        assert writer.pending() == []
    with open_attendance_store(b) as db:
        assert [(r.name, r.time, r.last_seen) for r in db.rows()] == [
            ("Ada Lovelace", "09:00:00", "09:02:00"),
            ("Alan Turing", "09:01:00", "09:01:00"),
        ]
        assert len(db.events()) == 3


def test_an_unreachable_server_is_one_line_naming_host_and_port(workspace: Config) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = workspace.replace(store=f"postgresql://hr:s3cret-pw@127.0.0.1:{port}/attendance")
    for opener in (open_attendance_store, open_embedding_store):
        with pytest.raises(StoreError) as caught:
            opener(cfg)
        text = str(caught.value)
        assert f"127.0.0.1:{port}" in text and "\n" not in text
        assert "s3cret-pw" not in text


def test_schema_missing_or_newer_is_refused(pg_url: str, workspace: Config) -> None:
    cfg = workspace.replace(store=pg_url)
    with pytest.raises(SchemaMismatch, match="attendance db upgrade"):
        open_attendance_store(cfg)
    assert upgrade_store(cfg)[1]
    assert upgrade_store(cfg) == (SCHEMA_VERSION, [])  # idempotent
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (99, 'future')")
    for opener in (open_attendance_store, open_embedding_store):
        with pytest.raises(SchemaMismatch, match="newer than this program"):
            opener(cfg)
    with pytest.raises(StoreError, match="newer than this program"):
        upgrade_store(cfg)


# --------------------------------------------------------------------------- configuration
def test_the_store_comes_from_env_or_flag_and_its_password_is_never_shown(tmp_path: Path):
    url = "postgresql://hr:s3cret-pw@db.example:5433/attendance"
    cfg = load_config(tmp_path, env={"ATTENDANCE_STORE": url})
    assert cfg.store == url and "s3cret" not in repr(cfg)
    import argparse

    parser = argparse.ArgumentParser()
    add_common_arguments(parser)
    args = parser.parse_args(["--workspace", str(tmp_path), "--store", url])
    assert config_from_args(args).store == url
    bad = "mysql://hr:s3cret-pw@db.example/attendance"
    with pytest.raises(ConfigError) as caught:
        config_from_args(parser.parse_args(["--workspace", str(tmp_path), "--store", bad]))
    assert "s3cret" not in str(caught.value) and "--store" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path, env={"ATTENDANCE_STORE": bad})
    assert "s3cret" not in str(caught.value) and "ATTENDANCE_STORE" in str(caught.value)


# --------------------------------------------------------------------------- moving in
def test_db_copy_moves_a_workspace_and_is_safe_to_rerun(
    workspace: Config, url: str, capsys
) -> None:
    source = workspace.replace(embed_batch=4)
    enrol(source, "Ada Lovelace", 3, seed=0)
    enrol(source, "Alan Turing", 2, seed=100)
    with open_embedding_store(source) as store:
        sync_gallery(store, source, FakeEmbedder(), progress=False)
    with open_attendance_store(source) as db:
        db.mark_present("Ada Lovelace", WHEN, 0.4, "camera 0")
        db.mark_present("Ada Lovelace", WHEN.replace(hour=11), 0.4, "camera 0")
        db.log_event("Alan Turing", WHEN, 0.7, "camera 0", "refused:liveness")
        db.log_event("Alan Turing", WHEN, 0.7, "camera 0", "refused:liveness")  # identical
        db.close_day(WHEN.date(), ["Ada Lovelace", "Alan Turing"])
    target = source.replace(store=url)
    for _ in range(2):  # the second run copies nothing new and still verifies
        report = copy_workspace(source, target)
        assert report.verified, report.lines()
        assert [(c.table, c.source, c.found) for c in report.checks] == [
            ("gallery fake-v1", 5, 5),
            ("model versions", 0, 0),
            ("attendance", 2, 2),
            ("events", 5, 5),
        ]
    with open_attendance_store(target) as db:
        assert len(db.events()) == 5 and len(db.rows()) == 2
    with open_embedding_store(target) as store:
        assert store.identities() == {"Ada Lovelace": 3, "Alan Turing": 2}
        np.testing.assert_array_equal(
            store.load("fake-v1")[1], open_embedding_store(source).load("fake-v1")[1]
        )
    code = attendance_cli.main(["db", "copy", "--from", str(source.root), "--to", url])
    out = capsys.readouterr().out
    assert code == 0 and "verified: every source row" in out and "postgres@" in out
    # a crop changed after it was embedded is not copied: the copy is not verified
    write_crop(source.pre_images_dir / "Alan Turing" / "0001.png", seed=999)
    report = copy_workspace(source, target)
    assert not report.verified
    assert [p.split(":")[0] for p in report.problems] == ["Alan Turing/0001.png"]
    assert attendance_cli.main(["db", "copy", "--from", str(source.root), "--to", url]) == 1
    assert "NOT verified" in capsys.readouterr().out
    # a crop path leading out of its identity folder (a symbolic link) is not read
    shutil.rmtree(source.pre_images_dir / "Alan Turing")
    (source.pre_images_dir / "Alan Turing").symlink_to(source.pre_images_dir / "Ada Lovelace")
    report = copy_workspace(source, target)
    assert {p.split(":")[0] for p in report.problems} == {
        "Alan Turing/0000.png",
        "Alan Turing/0001.png",
    }
    # someone removed from the store is not brought back by copying again
    (source.pre_images_dir / "Alan Turing").unlink()
    remove_from_stores(target, "Ada Lovelace", purge=True)
    report = copy_workspace(source, target)
    assert any(line.startswith("Ada Lovelace: removed") for line in report.excluded)
    with open_embedding_store(target) as store, open_attendance_store(target) as db:
        assert "Ada Lovelace" not in store.identities()
        assert db.rows(name="Ada Lovelace") == [] and db.events(name="Ada Lovelace") == []


def test_db_upgrade_and_grants_commands(pg_url: str, tmp_path: Path, capsys) -> None:
    code = attendance_cli.main(["db", "upgrade", "--workspace", str(tmp_path), "--store", pg_url])
    assert code == 0 and "applied 1: people" in capsys.readouterr().out
    assert (
        attendance_cli.main(["db", "upgrade", "--workspace", str(tmp_path), "--store", pg_url]) == 0
    )
    assert f"up to date (version {SCHEMA_VERSION})" in capsys.readouterr().out
    assert attendance_cli.main(["db", "grants", "--kiosk", "door_kiosk"]) == 0
    out = capsys.readouterr().out
    assert (
        'GRANT SELECT, INSERT, UPDATE (Status, Time, LastSeen) ON attendance TO "door_kiosk"' in out
    )
    assert "DELETE" not in "".join(
        line for line in out.splitlines() if "door_kiosk" in line and "attendance_admin" not in line
    )
    assert attendance_cli.main(["db", "grants", "--kiosk", "x; DROP TABLE people"]) == 2
    assert "role name 'x; DROP TABLE people'" in capsys.readouterr().err
    for role in ("public", "pg_read_all_data"):  # would grant every role, or a built-in one
        assert attendance_cli.main(["db", "grants", "--kiosk", role]) == 2
        assert f"role name {role!r}" in capsys.readouterr().err


def test_close_day_at_an_empty_kiosk_knows_everyone_in_the_store(kiosks, url, capsys) -> None:
    _, b = kiosks
    code = attendance_cli.main(["close-day", "--workspace", str(b.root), "--store", url])
    assert code == 0
    assert "2 newly marked Absent" in capsys.readouterr().out


def test_a_kiosk_on_another_model_keeps_up_with_changes(kiosks, url) -> None:
    """A kiosk whose role may not store vectors, running another model: a person enrolled
    or changed elsewhere is embedded from the stored crops when the change arrives, and
    people it embedded before stay (from memory, each crop embedded once)."""
    from store.gallery import embed_stored_crops

    a, b = kiosks
    make_roles(url, "door_kiosk", "door_admin")
    as_kiosk = b.replace(store=url.replace("postgres@", "door_kiosk@"))
    other = FakeEmbedder(model_id="fake-v2", dim=6)
    cache: dict = {}

    def fill(store, names):
        return embed_stored_crops(store, as_kiosk, other, False, names=names, cache=cache)

    watcher = GalleryWatcher(
        watch_embedding_store(as_kiosk), "fake-v2", dim=6, interval=0.0, fill=fill
    )
    with watcher, open_embedding_store(as_kiosk) as store:
        watcher.prime(*load_gallery(store, as_kiosk, other, progress=False, cache=cache))
        assert other.embedded == 7
        write_crop(a.pre_images_dir / "Ada Lovelace" / "0009.png", seed=79)
        enrol(a, "Grace Hopper", 2, seed=200)
        with open_embedding_store(a) as publisher:
            sync_gallery(publisher, a, FakeEmbedder(), progress=False)
        deadline, loaded = time.monotonic() + 5, None
        while loaded is None and time.monotonic() < deadline:
            loaded = watcher.poll()
            time.sleep(0.05)
    assert loaded is not None
    counts = {name: loaded[0].count(name) for name in set(loaded[0])}
    assert counts == {"Ada Lovelace": 5, "Alan Turing": 3, "Grace Hopper": 2}
    assert loaded[1].shape == (10, 6)
    assert other.embedded == 7 + 3  # only the new crops; Ada's four came from the cache


def test_remove_command_at_an_empty_kiosk_removes_everywhere(kiosks, url, capsys) -> None:
    a, b = kiosks
    with open_attendance_store(b) as db:
        db.mark_present("Ada Lovelace", WHEN, 0.4, "door 1")
    args = ["remove", "Ada Lovelace", "--purge", "--yes", "--workspace", str(b.root)]
    assert attendance_cli.main([*args, "--store", url]) == 0
    out = capsys.readouterr().out
    assert "4 embedding(s), 1 attendance row(s) and 1 event(s)" in out
    with open_embedding_store(a) as store, open_attendance_store(a) as db:
        assert "Ada Lovelace" not in store.identities() and db.rows() == []
    assert attendance_cli.main([*args, "--store", url]) == 2  # nobody left under that name


def test_reconnection_backs_off_and_waits_at_most_a_short_timeout(monkeypatch) -> None:
    """After a failed connection the next attempt waits 0.5 s, then 1 s, 2 s ... (at most
    15 s), calls in between fail at once with the same message, and a reconnection (not the
    first connection) waits at most 2 s for the server."""
    from store import pg_connection

    now = [100.0]
    attempts: list[int] = []

    def refuse(url, **kwargs):
        attempts.append(kwargs["connect_timeout"])
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(psycopg, "connect", refuse)
    db = pg_connection.PgConnection(
        "postgresql://u:pw@127.0.0.1:9/x",
        10.0,
        error=StoreError,
        unavailable=DatabaseUnavailable,
        clock=lambda: now[0],
    )
    messages = set()
    for step in (0.0, 0.1, 0.5, 0.1, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0):
        now[0] += step
        with pytest.raises(DatabaseUnavailable) as caught:
            db.conn  # noqa: B018
        if step == 0.1:  # within the back-off: no attempt, the same words
            messages.add(str(caught.value))
    assert len(attempts) == 8  # at 0, 0.5 (+0.1), 1.0, 2.0, 4.0, 8.0, 15.0, 15.0 later
    assert attempts == [10] * 8  # never connected yet: the full timeout
    assert len(messages) == 1 and "pw" not in messages.pop()
    db.connections = 1  # once connected, a reconnection waits at most RECONNECT_TIMEOUT
    now[0] += 60
    with pytest.raises(DatabaseUnavailable):
        db.conn  # noqa: B018
    assert attempts[-1] == pg_connection.RECONNECT_TIMEOUT


def test_queued_sightings_are_retried_without_waiting_for_the_next_one(kiosks, pg_server):
    _, b = kiosks
    now = [0.0]
    store = open_attendance_store(b)
    with PendingWriter(store, retry_interval=5.0, clock=lambda: now[0]) as writer:
        pg_server.stop(mode="immediate")
        try:
            writer.mark_present("Ada Lovelace", WHEN, 0.4, "door 1")
            assert len(writer.pending()) == 1
        finally:
            pg_server.start()
        writer.retry()  # not due yet: nothing tried
        assert len(writer.pending()) == 1
        deadline = time.monotonic() + 30
        while writer.pending() and time.monotonic() < deadline:
            now[0] += 20.0  # past the retry interval and the store's back-off
            store.db._next_attempt = 0.0  # the store's back-off runs on the real clock
            writer.retry()
            time.sleep(0.1)
        assert writer.pending() == []


def test_upgrading_a_version_1_store_keeps_its_crops(pg_url: str, workspace: Config) -> None:
    """Migrations run in order on a store made by an older program: crops stored at version 1
    keep working (origin unknown) and the upgrade is reported and recorded."""
    from store.pg_schema import MIGRATIONS, SCHEMA_VERSION, upgrade

    with psycopg.connect(pg_url, autocommit=True) as conn:
        upgrade(conn, MIGRATIONS[:1])
        conn.execute("INSERT INTO people (identity) VALUES ('Ada Lovelace')")
        conn.execute(
            "INSERT INTO crops (relpath, identity, sha256, size, mtime_ns, png) "
            "VALUES ('Ada Lovelace/0000.png', 'Ada Lovelace', 'abc', 1, 1, 'png')"
        )
        conn.execute(
            "INSERT INTO embeddings (model_id, sha256, dim, vector) VALUES ('m', 'abc', 1, %s)",
            (np.float32(1).tobytes(),),
        )
    cfg = workspace.replace(store=pg_url)
    with pytest.raises(SchemaMismatch, match=f"has schema 1, this program needs {SCHEMA_VERSION}"):
        open_embedding_store(cfg)
    assert upgrade_store(cfg) == (1, [f"{m.version}: {m.name}" for m in MIGRATIONS[1:]])
    with open_embedding_store(cfg) as store:
        labels, vectors = store.load("m")
    assert labels == ["Ada Lovelace"] and vectors.tolist() == [[1.0]]
    with psycopg.connect(pg_url) as conn:
        versions = conn.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
    assert [v for (v,) in versions] == [m.version for m in MIGRATIONS]


def test_a_notification_not_naming_a_person_is_ignored(kiosks, url) -> None:
    """Any role may NOTIFY: a payload that is not a person's name changes nothing and
    does not stop the watcher."""
    _, b = kiosks
    watcher = GalleryWatcher(watch_embedding_store(b), "fake-v1", dim=8, interval=0.0)
    with watcher, open_embedding_store(b) as store, psycopg.connect(url, autocommit=True) as conn:
        watcher.prime(*store.load("fake-v1", dim=8))
        for payload in ("", "../x", "Alan Turing"):
            conn.execute("SELECT pg_notify('attendance_gallery', %s)", (payload,))
        time.sleep(0.3)
        labels, _ = watcher.poll()
    assert sorted(set(labels)) == ["Ada Lovelace", "Alan Turing"]


def test_a_password_with_url_delimiters_is_never_shown(workspace: Config) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for secret in ("se#cret?pw", "pw%2Fwith%2Fslash"):
        cfg = workspace.replace(store=f"postgresql://hr:{secret}@127.0.0.1:{port}/attendance")
        with pytest.raises(StoreError) as caught:
            open_embedding_store(cfg)
        assert "se#cret" not in str(caught.value) and "with" not in str(caught.value)
    from common.urls import redact_url

    assert redact_url("postgresql://kiosk:se#cret?x@db/att") == "postgresql://kiosk:***@db/att"
    cfg = workspace.replace(store=f"postgresql://hr@127.0.0.1:{port}/x?password=s3cret")
    with pytest.raises(StoreError) as caught:
        open_attendance_store(cfg)
    assert "s3cret" not in str(caught.value)


def test_sightings_arriving_after_a_removal_keep_it(kiosks) -> None:
    """An offline kiosk's journal replayed after a removal: with --purge nothing of the
    person comes back; without it, sightings from before the removal are history and are
    kept, later ones are not recorded."""
    _, b = kiosks
    before = dt.datetime.now() - dt.timedelta(minutes=5)
    remove_from_stores(b, "Alan Turing", purge=False)
    remove_from_stores(b, "Ada Lovelace", purge=True)
    with open_attendance_store(b) as db:
        assert db.mark_present("Alan Turing", before, 0.4, "door 1").action == "present"
        late = db.mark_present("Alan Turing", dt.datetime.now() + dt.timedelta(seconds=1), 0.4,
                               "door 1")  # fmt: skip
        assert late.action == "removed" and not late.new_present
        assert db.mark_present("Ada Lovelace", before, 0.4, "door 1").action == "removed"
        assert db.log_event("Ada Lovelace", before, 0.4, "door 1", "refused:liveness") == 0
        assert [r.name for r in db.rows()] == ["Alan Turing"]
        assert [e.name for e in db.events()] == ["Alan Turing"]
