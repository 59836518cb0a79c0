"""The one place that builds stores from the configuration.

Every other module asks for an :class:`~store.interfaces.AttendanceStore` or an
:class:`~store.interfaces.EmbeddingStore` here and never names an implementation. By default
both live in the workspace's SQLite files (``db_path``, ``gallery_path``); with ``store`` set
to a ``postgresql://`` URL both live in that shared database (``store.pg_*``), and the
workspace keeps only its photos, crops and the journal of unsaved sightings.
"""

from __future__ import annotations

import os
from pathlib import Path

from common.config import Config
from store.interfaces import AttendanceStore, EmbeddingStore, SiteStore
from store.pending import PendingWriter
from store.records import StoreError


def open_attendance_store(cfg: Config, *, create: bool = True) -> AttendanceStore:
    """The attendance store of ``cfg``.

    ``create=False`` refuses to start a new, empty store (for read-only commands such as
    ``report``): the error says nothing has been recorded yet.
    """
    if is_shared(cfg):
        from store.pg_attendance import PostgresAttendanceStore

        return PostgresAttendanceStore(cfg.store, cfg.db_timeout_seconds)
    from store.sqlite_attendance import SQLiteAttendanceStore

    return SQLiteAttendanceStore(cfg.db_path, cfg.db_timeout_seconds, create=create)


def watch_attendance_store(cfg: Config) -> AttendanceStore:
    """An attendance store whose :meth:`change_token` follows other processes' writes (a
    shared store listens for notifications; SQLite's token always does): for live views."""
    if is_shared(cfg):
        from store.pg_attendance import PostgresAttendanceStore

        return PostgresAttendanceStore(cfg.store, cfg.db_timeout_seconds, listen=True)
    return open_attendance_store(cfg)


def open_site_store(cfg: Config, *, create: bool = True) -> SiteStore:
    """Users, sessions, API tokens and kiosk heartbeats (:class:`SiteStore`): the workspace's
    ``site_db_path`` SQLite file, or the shared database's tables. ``create=False`` refuses
    to start a new, empty SQLite file."""
    if is_shared(cfg):
        from store.pg_site import PostgresSiteStore

        return PostgresSiteStore(cfg.store, cfg.db_timeout_seconds)
    from store.sqlite_site import SQLiteSiteStore

    return SQLiteSiteStore(cfg.site_db_path, cfg.db_timeout_seconds, create=create)


def is_shared(cfg: Config) -> bool:
    """Whether ``cfg`` uses a shared server store (several kiosks) instead of SQLite files."""
    return bool(cfg.store)


def attendance_store_exists(cfg: Config) -> bool:
    """Whether anything was ever recorded (so a look need not create an empty store)."""
    return is_shared(cfg) or Path(cfg.db_path).exists()


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
    if is_shared(cfg):
        from store.pg_embeddings import PostgresEmbeddingStore

        return PostgresEmbeddingStore(cfg.store, cfg.db_timeout_seconds, origin=lambda: origin(cfg))
    from store.sqlite_embeddings import SQLiteEmbeddingStore

    return SQLiteEmbeddingStore(cfg.gallery_path, timeout=cfg.db_timeout_seconds)


WORKSPACE_ID = ".workspace-id"  # in the workspace root: which workspace published a crop


def origin(cfg: Config) -> str:
    """Which workspace publishes to a shared store: a random id kept in
    ``<workspace>/.workspace-id`` (made on first use), stable when the machine is renamed or
    the container recreated, and different for cloned machines' fresh workspaces. Each
    workspace manages only the crops it published."""
    import re
    import uuid

    from common.fsutil import read_regular_bytes

    path = Path(cfg.root) / WORKSPACE_ID
    if not path.exists():
        Path(cfg.root).mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{WORKSPACE_ID}.{uuid.uuid4().hex}.tmp")
        temp.write_text(uuid.uuid4().hex + "\n", encoding="ascii")
        try:
            os.link(temp, path)  # never replaces an id another process wrote meanwhile
        except FileExistsError:
            pass
        finally:
            temp.unlink()
    try:
        text = read_regular_bytes(path, max_bytes=64).decode("ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path}: cannot read the workspace id ({exc}); delete the file") from None
    if not re.fullmatch(r"[0-9a-f]{32}", text):
        raise StoreError(f"{path}: not a workspace id ({text[:40]!r}); delete the file")
    return text


def watch_embedding_store(cfg: Config) -> EmbeddingStore:
    """An embedding store for a :class:`store.gallery.GalleryWatcher`: a shared store listens
    for change notifications, so each change reaches the recogniser at its next poll."""
    if is_shared(cfg):
        from store.pg_embeddings import PostgresEmbeddingStore

        return PostgresEmbeddingStore(cfg.store, cfg.db_timeout_seconds, listen=True)
    return open_embedding_store(cfg)


def embedding_store_exists(cfg: Config) -> bool:
    """Whether a gallery was ever stored (so a look need not create an empty one)."""
    return is_shared(cfg) or Path(cfg.gallery_path).exists()


def remove_from_stores(cfg: Config, name: str, *, purge: bool) -> tuple[int, int, int]:
    """Delete ``name``'s embeddings (and with ``purge`` attendance rows and events) from the
    stores; ``(embeddings or crops, rows, events)``. A shared store does it in one
    transaction; the SQLite files one after the other (each idempotent)."""
    if is_shared(cfg):
        from store.pg_embeddings import PostgresEmbeddingStore

        with PostgresEmbeddingStore(cfg.store, cfg.db_timeout_seconds) as store:
            return store.remove_person(name, purge_history=purge)
    removed = rows = events = 0
    if embedding_store_exists(cfg):
        with open_embedding_store(cfg) as gallery:
            removed = gallery.remove_identity(name)
    if purge and attendance_store_exists(cfg):
        with open_attendance_store(cfg, create=False) as db:
            rows, events = db.delete_person(name)
    return removed, rows, events


def upgrade_store(cfg: Config) -> tuple[int | None, list[str]]:
    """Bring the configured store's schema up to this program's; ``(version before, names of
    the migrations applied)``. A shared store needs its owner's role; the workspace's SQLite
    files are created or upgraded by opening them."""
    if not is_shared(cfg):
        with open_attendance_store(cfg), open_embedding_store(cfg):
            return None, []
    from store.pg_connection import PgConnection
    from store.pg_schema import current_version, upgrade
    from store.records import DatabaseError, DatabaseUnavailable

    db = PgConnection(
        cfg.store,
        cfg.db_timeout_seconds,
        error=DatabaseError,
        unavailable=DatabaseUnavailable,
        check_schema=False,
    )
    try:
        with db.errors("upgrading the schema") as conn:
            before = current_version(conn)
            try:
                applied = upgrade(conn)
            except ValueError as exc:
                raise DatabaseError(f"{db.shown}: {exc}") from None
        return before, [f"{m.version}: {m.name}" for m in applied]
    finally:
        db.close()


def store_grants(kiosk: str, admin: str) -> list[str]:
    """The SQL that grants a shared store's kiosk and admin roles what they need."""
    from store.pg_schema import role_grants

    return role_grants(kiosk, admin)
