"""The one place that builds stores from the configuration.

Every other module asks for an :class:`~store.interfaces.AttendanceStore` or an
:class:`~store.interfaces.EmbeddingStore` here and never names an implementation. Today both
live in the workspace's SQLite files (``db_path``, ``gallery_path``); a shared server store is
added here, chosen by the configuration, without touching the callers.
"""

from __future__ import annotations

from pathlib import Path

from common.config import Config
from store.interfaces import AttendanceStore, EmbeddingStore
from store.pending import PendingWriter


def open_attendance_store(cfg: Config, *, create: bool = True) -> AttendanceStore:
    """The attendance store of ``cfg``.

    ``create=False`` refuses to start a new, empty store (for read-only commands such as
    ``report``): the error says nothing has been recorded yet.
    """
    from store.sqlite_attendance import SQLiteAttendanceStore

    return SQLiteAttendanceStore(cfg.db_path, cfg.db_timeout_seconds, create=create)


def attendance_store_exists(cfg: Config) -> bool:
    """Whether anything was ever recorded (so a look need not create an empty store)."""
    return Path(cfg.db_path).exists()


def pending_journal_dir(cfg: Config) -> Path:
    """Where recognisers journal the sightings not saved yet: ``<db_path>-pending/`` (it
    belongs to that database, like SQLite's ``-wal`` file; one journal file per recogniser)."""
    db_path = Path(cfg.db_path)
    return db_path.with_name(db_path.name + "-pending")


def open_pending_writer(cfg: Config) -> PendingWriter:
    """The attendance store of ``cfg`` wrapped so a busy store or a killed process never loses
    a sighting: each one is journalled on disk first (:func:`pending_journal_dir`), and the
    journals of recognisers that stopped before saving everything are replayed now."""
    store = open_attendance_store(cfg)
    try:
        return PendingWriter(store, journal=pending_journal_dir(cfg))
    except BaseException:
        store.close()
        raise


def open_embedding_store(cfg: Config) -> EmbeddingStore:
    """The embedding store (gallery) of ``cfg``, created on first use."""
    from store.sqlite_embeddings import SQLiteEmbeddingStore

    return SQLiteEmbeddingStore(cfg.gallery_path, timeout=cfg.db_timeout_seconds)


def embedding_store_exists(cfg: Config) -> bool:
    """Whether a gallery was ever stored (so a look need not create an empty one)."""
    return Path(cfg.gallery_path).exists()
