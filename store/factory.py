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


def open_pending_writer(cfg: Config) -> PendingWriter:
    """The attendance store of ``cfg`` wrapped so a busy store never loses a sighting."""
    return PendingWriter(open_attendance_store(cfg))


def open_embedding_store(cfg: Config) -> EmbeddingStore:
    """The embedding store (gallery) of ``cfg``, created on first use."""
    from store.sqlite_embeddings import SQLiteEmbeddingStore

    return SQLiteEmbeddingStore(cfg.gallery_path, timeout=cfg.db_timeout_seconds)


def embedding_store_exists(cfg: Config) -> bool:
    """Whether a gallery was ever stored (so a look need not create an empty one)."""
    return Path(cfg.gallery_path).exists()
