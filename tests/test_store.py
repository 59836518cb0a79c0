"""The store seam: the factory, the protocols, audit-only events and change tokens."""

from __future__ import annotations

import datetime as dt
import inspect
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from common.config import Config
from store import interfaces
from store.factory import (
    attendance_store_exists,
    embedding_store_exists,
    open_attendance_store,
    open_embedding_store,
    open_pending_writer,
)
from store.records import ACTION_PRESENT, CropEmbedding, DatabaseError, DatabaseLocked

WHEN = dt.datetime(2024, 5, 1, 9, 0, 0)


def _public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(cls).items()
        if callable(member) and (not name.startswith("_") or name in ("__enter__", "__exit__"))
    }


@pytest.mark.parametrize(
    ("protocol", "opener"),
    [
        (interfaces.AttendanceStore, open_attendance_store),
        (interfaces.EmbeddingStore, open_embedding_store),
    ],
)
def test_factory_builds_stores_that_implement_their_protocol(
    workspace: Config, protocol: type, opener
) -> None:
    """Every method of the protocol exists on what the factory builds, with the same
    parameter names, so callers written against the protocol work with it."""
    with opener(workspace) as store:
        for name, expected in _public_methods(protocol).items():
            actual = getattr(type(store), name, None)
            assert actual is not None, f"{type(store).__name__} lacks {name}"
            if not name.startswith("__"):
                params = list(inspect.signature(actual).parameters)
                assert params == list(expected.parameters), name


def test_exists_checks_do_not_create_stores(workspace: Config) -> None:
    assert not attendance_store_exists(workspace) and not embedding_store_exists(workspace)
    assert not Path(workspace.db_path).exists() and not Path(workspace.gallery_path).exists()
    with pytest.raises(DatabaseError, match="does not exist"):
        open_attendance_store(workspace, create=False)
    assert not attendance_store_exists(workspace)
    with open_attendance_store(workspace), open_embedding_store(workspace):
        pass
    assert attendance_store_exists(workspace) and embedding_store_exists(workspace)


def test_log_event_adds_an_audit_event_and_no_attendance_row(workspace: Config) -> None:
    with open_attendance_store(workspace) as db:
        event_id = db.log_event("Ada Lovelace", WHEN, 0.42, "camera 0", "refused")
        assert db.rows() == []
        (event,) = db.events()
        assert (event.id, event.name, event.distance, event.source, event.action) == (
            event_id, "Ada Lovelace", 0.42, "camera 0", "refused",
        )  # fmt: skip
        for action in ("", "present", "absent"):  # audit-only: never an attendance action
            with pytest.raises(ValueError, match="action"):
                db.log_event("Ada Lovelace", WHEN, 0.42, "camera 0", action)
        assert db.rows() == [] and len(db.events()) == 1


def test_pending_writer_keeps_audit_events_in_order_while_the_store_is_locked(
    workspace: Config,
) -> None:
    with open_attendance_store(workspace):
        pass  # create the file, so another connection can lock it
    writer = open_pending_writer(workspace.replace(db_timeout_seconds=0.05))
    writer.retry_interval = 0.0
    locker = sqlite3.connect(str(workspace.db_path), isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        assert writer.log_event("Ada Lovelace", WHEN, 0.5, "cam", "refused") is False
        assert writer.mark_present("Ada Lovelace", WHEN, 0.4, "cam") is None
        assert writer.backlog == 2 and isinstance(writer.last_error, DatabaseLocked)
    finally:
        locker.execute("COMMIT")
        locker.close()
    saved = writer.flush()
    assert [(r.name, r.action) for r in saved] == [("Ada Lovelace", ACTION_PRESENT)]
    writer.close()
    with open_attendance_store(workspace, create=False) as db:
        assert [e.action for e in db.events()] == ["refused", ACTION_PRESENT]


def test_attendance_change_token_moves_when_another_process_commits(workspace: Config) -> None:
    with open_attendance_store(workspace) as viewer, open_attendance_store(workspace) as kiosk:
        first = viewer.change_token()
        assert viewer.change_token() == first  # nothing happened
        kiosk.mark_present("Ada Lovelace", WHEN, 0.4, "cam")
        assert viewer.change_token() != first


def test_embedding_store_replace_is_one_transaction(workspace: Config) -> None:
    """Deleting stale rows, dropping other models and inserting happen together or not at all."""
    vector = np.ones(4, "<f4").tobytes()
    row = CropEmbedding("a" * 64, "Ada Lovelace/0001.png", "Ada Lovelace", 10, 1, 4, vector)
    with open_embedding_store(workspace) as store:
        store.insert("old-model", [row])
        store.insert("model", [row])
        broken = CropEmbedding("b" * 64, "Ada Lovelace/0002.png", "Ada Lovelace", 10, 1, 0, b"")
        with pytest.raises(Exception, match="(?i)constraint|gallery"):
            store.replace("model", [("a" * 64, "Ada Lovelace/0001.png")], [broken], None)
        assert store.identities("model") == {"Ada Lovelace": 1}  # nothing was deleted
        assert store.model_ids() == ["model", "old-model"]
        removed, other = store.replace("model", [("a" * 64, "Ada Lovelace/0001.png")], [], None)
        assert (removed, other) == (1, 1) and store.model_ids() == []


def test_embedding_insert_checks_rows_while_holding_the_write_lock(workspace: Config) -> None:
    """``still_valid`` is asked after the write lock is taken: no other writer (a removal)
    can slip in between the check and the insert (issue 9, item 2)."""
    vector = np.ones(4, "<f4").tobytes()
    rows = [
        CropEmbedding(c * 64, f"Ada Lovelace/000{i}.png", "Ada Lovelace", 10, 1, 4, vector)
        for i, c in enumerate("abc")
    ]
    with open_embedding_store(workspace) as store:
        pass  # create the file
    asked: list[str] = []

    def still_valid(row: CropEmbedding) -> bool:
        other = sqlite3.connect(str(workspace.gallery_path), timeout=0, isolation_level=None)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")  # a removal would have to wait here
        finally:
            other.close()
        asked.append(row.relpath)
        return not row.relpath.endswith("1.png")  # 0001.png was deleted meanwhile

    with open_embedding_store(workspace) as store:
        assert store.insert("model", rows, still_valid) == 2
        assert asked == [row.relpath for row in rows]
        assert store.load_identity("model", "Ada Lovelace")[0] == [
            "Ada Lovelace/0000.png",
            "Ada Lovelace/0002.png",
        ]
        removed, _ = store.replace("model", [], rows[1:2], None, lambda row: False)
        assert removed == 0 and store.identities("model") == {"Ada Lovelace": 2}


def test_a_stored_vector_that_is_not_finite_is_refused_by_name() -> None:
    from store.records import GalleryError, decode_vectors

    good = np.ones(2, "<f4").tobytes()
    bad = np.array([1.0, np.nan], "<f4").tobytes()
    with pytest.raises(GalleryError, match=r"Bob/0002\.png \(Bob\) is not finite"):
        decode_vectors("gallery", "m", [("Bob", "Bob/0001.png", 2, good),
                                        ("Bob", "Bob/0002.png", 2, bad)], None)  # fmt: skip
