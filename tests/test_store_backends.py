"""The store contract on both engines: the workspace's SQLite files and a real PostgreSQL.

Every test here runs twice (``backend``): once on SQLite, once on a throwaway PostgreSQL
cluster started by ``tests/pg.py``. What differs between them (shared crops, notifications,
one-transaction removal) is in ``test_pg_store.py``.
"""

from __future__ import annotations

import datetime as dt
import inspect

import numpy as np
import pytest
from test_gallery import FakeEmbedder, enrol

from common.config import Config
from store import interfaces
from store.factory import (
    open_attendance_store,
    open_embedding_store,
    open_pending_writer,
    pending_journal_dir,
    remove_from_stores,
    upgrade_store,
)
from store.gallery import load_gallery, sync_gallery
from store.pending import PendingWriter
from store.records import (
    ABSENT,
    ACTION_ABSENT,
    ACTION_ABSENT_TO_PRESENT,
    ACTION_PRESENT,
    ACTION_SEEN,
    PRESENT,
    AttendanceRow,
    DatabaseUnavailable,
)

DAY = dt.date(2024, 5, 1)


def at(hour: int, minute: int = 0, second: int = 0, day: dt.date = DAY) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute, second))


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, workspace: Config) -> Config:
    """A workspace on the SQLite files, or on a fresh PostgreSQL database (schema applied)."""
    if request.param == "sqlite":
        return workspace.replace(embed_batch=4)
    url = request.getfixturevalue("pg_url")
    cfg = workspace.replace(store=url, embed_batch=4)
    before, applied = upgrade_store(cfg)
    assert before is None and applied
    return cfg


def _public(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(cls).items()
        if callable(member) and not name.startswith("_")
    }


@pytest.mark.parametrize(
    ("protocol", "opener"),
    [
        (interfaces.AttendanceStore, open_attendance_store),
        (interfaces.EmbeddingStore, open_embedding_store),
    ],
)
def test_what_the_factory_builds_implements_the_protocol(backend: Config, protocol, opener):
    with opener(backend) as store:
        for name, expected in _public(protocol).items():
            actual = getattr(type(store), name, None)
            assert actual is not None, f"{type(store).__name__} lacks {name}"
            assert list(inspect.signature(actual).parameters) == list(expected.parameters)


def test_a_day_of_sightings(backend: Config) -> None:
    """First sighting Present, later ones move LastSeen, an earlier late one moves the entry,
    close-day marks the rest Absent, and someone arriving after close-day becomes Present."""
    with open_attendance_store(backend) as db:
        first = db.mark_present("Ada", at(9, 5), 0.41, "camera 0")
        later = db.mark_present("Ada", at(12, 0), 0.39, "camera 1")
        early = db.mark_present("Ada", at(8, 59), 0.5, "camera 2")  # a journal replayed late
        assert (first.action, later.action, early.action) == (
            ACTION_PRESENT,
            ACTION_SEEN,
            ACTION_SEEN,
        )
        assert first.new_present and not later.new_present
        assert db.close_day(DAY, ["Ada", "Bob", "Cy"]) == 2
        assert db.close_day(DAY, ["Ada", "Bob", "Cy"]) == 0  # idempotent
        back = db.mark_present("Bob", at(15, 30), 0.3, "camera 0")
        assert back.action == ACTION_ABSENT_TO_PRESENT
        assert db.rows(DAY) == [
            AttendanceRow("Ada", "2024-05-01", PRESENT, "08:59:00", "12:00:00"),
            AttendanceRow("Bob", "2024-05-01", PRESENT, "15:30:00", "15:30:00"),
            AttendanceRow("Cy", "2024-05-01", ABSENT, None, None),
        ]
        events = db.events()  # close-day's events carry the time it ran
        assert [e.action for e in events].count(ACTION_ABSENT) == 2
        assert [e.id for e in events] == sorted(e.id for e in events)
        assert len(db.events(DAY)) == 4
        assert events[0].distance == pytest.approx(0.41) and events[0].source == "camera 0"
        db.mark_present("Ada", at(9, day=DAY + dt.timedelta(days=1)), 0.4, "camera 0")
        assert [r.date for r in db.rows(name="Ada")] == ["2024-05-01", "2024-05-02"]
        assert len(db.rows(start=DAY, end=DAY)) == 3
        assert len(db.events(start=DAY + dt.timedelta(days=1), end=DAY + dt.timedelta(days=1))) == 1
        assert db.delete_person("Ada") == (2, 4)
        assert db.rows(name="Ada") == [] and db.events(name="Ada") == []


def test_last_present_is_each_persons_latest_present_day(backend: Config) -> None:
    with open_attendance_store(backend) as db:
        db.mark_present("Ada", at(9), 0.4, "cam")
        db.mark_present("Ada", at(17, 30), 0.4, "cam")
        db.mark_present("Ada", at(8, day=DAY - dt.timedelta(days=3)), 0.4, "cam")
        db.mark_present("Bob", at(8, day=DAY - dt.timedelta(days=1)), 0.4, "cam")
        db.close_day(DAY, ["Ada", "Bob", "Cy"])  # Bob and Cy Absent on DAY
        latest = db.last_present()
    assert latest == {
        "Ada": AttendanceRow("Ada", DAY.isoformat(), PRESENT, "09:00:00", "17:30:00"),
        "Bob": AttendanceRow(
            "Bob", (DAY - dt.timedelta(days=1)).isoformat(), PRESENT, "08:00:00", "08:00:00"
        ),
    }


def test_events_by_day_range_and_newest(backend: Config) -> None:
    with open_attendance_store(backend) as db:
        for day, hour in ((DAY - dt.timedelta(days=1), 23), (DAY, 0), (DAY, 23), (DAY, 12)):
            db.log_event("Ada", at(hour, 59, 59, day=day), 0.5, "cam", "refused")
        db.log_event("Bob", at(8, day=DAY + dt.timedelta(days=1)), 0.5, "cam", "refused")
        assert [e.timestamp[11:13] for e in db.events(date=DAY)] == ["00", "23", "12"]
        assert len(db.events(start=DAY - dt.timedelta(days=1), end=DAY)) == 4
        assert [e.name for e in db.events(start=DAY + dt.timedelta(days=1))] == ["Bob"]
        newest = db.events(start=DAY - dt.timedelta(days=1), limit=2)
        assert [(e.name, e.timestamp[11:13]) for e in newest] == [("Ada", "12"), ("Bob", "08")]
        assert db.events(name="Ada", limit=1)[0].timestamp[11:13] == "12"


def test_audit_events_change_no_rows_and_refuse_attendance_actions(backend: Config) -> None:
    with open_attendance_store(backend) as db:
        event = db.log_event("Ada", at(9), 0.2, "camera 0", "refused:liveness")
        assert event > 0 and db.rows() == []
        assert [e.action for e in db.events()] == ["refused:liveness"]
        with pytest.raises(ValueError, match="action="):
            db.log_event("Ada", at(9), 0.2, "camera 0", ACTION_PRESENT)
        with pytest.raises(ValueError, match="distance="):
            db.mark_present("Ada", at(9), float("nan"), "camera 0")


def test_gallery_sync_load_and_removal(backend: Config) -> None:
    enrol(backend, "Ada Lovelace", 5, seed=0)
    enrol(backend, "Alan Turing", 3, seed=100)
    embedder = FakeEmbedder()
    with open_embedding_store(backend) as store:
        summary = sync_gallery(store, backend, embedder, progress=False)
        assert summary.embedded == 8 and embedder.embedded == 8
        again = sync_gallery(store, backend, embedder, progress=False)
        assert again.unchanged == 8 and again.embedded == 0 and embedder.embedded == 8
        labels, vectors = load_gallery(store, backend, embedder, progress=False)
        assert labels == ["Ada Lovelace"] * 5 + ["Alan Turing"] * 3
        assert vectors.shape == (8, embedder.dim) and vectors.dtype == np.float32
        assert store.identities() == {"Ada Lovelace": 5, "Alan Turing": 3}
        assert store.model_ids() == [embedder.model_id]
        # a second model's embeddings of the same crops do not count them twice
        sync_gallery(store, backend, FakeEmbedder(model_id="fake-v2"), progress=False)
        assert store.identities() == {"Ada Lovelace": 5, "Alan Turing": 3}
        sync_gallery(store, backend, embedder, progress=False)
        # a shared store holds the crop images; SQLite leaves them in pre_images/
        first = (backend.pre_images_dir / "Ada Lovelace" / "0000.png").read_bytes()
        assert store.thumbnail("Ada Lovelace") == (first if backend.store else None)
        assert store.thumbnail("Nobody") is None
        relpaths, own = store.load_identity(embedder.model_id, "Alan Turing")
        assert relpaths == [f"Alan Turing/{i:04d}.png" for i in range(3)]
        np.testing.assert_allclose(own, vectors[5:])
        # a crop deleted from the folder leaves the store at the next sync of that person
        (backend.pre_images_dir / "Alan Turing" / "0002.png").unlink()
        summary = sync_gallery(store, backend, embedder, names=["Alan Turing"], progress=False)
        assert summary.removed == 1 and store.identities()["Alan Turing"] == 2
    remove_from_stores(backend, "Ada Lovelace", purge=False)
    with open_embedding_store(backend) as store:
        assert "Ada Lovelace" not in store.identities()


def test_a_sighting_journalled_before_a_kill_is_saved_once(backend: Config) -> None:
    """The pending journal works on both engines: a writer that stopped without saving is
    replayed by the next one, and an entry already saved is not written twice."""
    with open_pending_writer(backend) as writer:
        writer.mark_present("Ada", at(9), 0.4, "camera 0")
    journal = pending_journal_dir(backend)
    journal.mkdir(parents=True, exist_ok=True)
    line = (
        '{"v": 1, "id": "0123456789abcdef0123456789abcdef", "name": "Bob", '
        '"when": "2024-05-01T09:30:00", "distance": 0.5, "source": "camera 1", "action": null}\n'
    )
    (journal / "dead-writer.jsonl").write_text(line)
    with open_pending_writer(backend) as writer:
        assert writer.replayed == 1
    journal.mkdir(parents=True, exist_ok=True)  # the writer removed the empty folder
    (journal / "dead-writer-2.jsonl").write_text(line)  # the same entry again: already saved
    with open_pending_writer(backend) as writer:
        assert writer.duplicates == 1
    with open_attendance_store(backend) as db:
        assert [(r.name, r.time) for r in db.rows()] == [("Ada", "09:00:00"), ("Bob", "09:30:00")]
        assert len(db.events()) == 2


class LostReply:
    """A store whose first ``mark_present`` commits and then reports the connection lost
    (the server went away after COMMIT, before its reply)."""

    def __init__(self, store) -> None:
        self.store, self.lost = store, False

    def mark_present(self, *args):
        result = self.store.mark_present(*args)
        if not self.lost:
            self.lost = True
            raise DatabaseUnavailable("lost the connection to the store; it is retried")
        return result

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_a_retried_sighting_that_had_committed_is_not_written_twice(backend: Config) -> None:
    with PendingWriter(LostReply(open_attendance_store(backend)), retry_interval=0.0) as writer:
        writer.mark_present("Ada", at(9), 0.4, "camera 0")
        assert len(writer.pending()) == 1  # the writer cannot know it was saved
        writer.flush()
        assert writer.pending() == [] and writer.duplicates == 1
    with open_attendance_store(backend) as db:
        assert [e.action for e in db.events()] == [ACTION_PRESENT]
