"""The embedding store in SQLite (``gallery.sqlite``): one row per crop content, path and model.

Each row holds one crop's embedding for one model: the crop's content sha256, the model id,
the identity, the crop's path relative to ``pre_images/``, the dimension and the float32 vector
(plus the file's size and mtime, so unchanged files are not even re-hashed). The journal is
WAL, so a recogniser reading it never blocks an enrolment writing it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from common.names import validate_name
from store.records import CropEmbedding, GalleryError, StoredCrop, decode_vectors, keep_valid

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    sha256   TEXT    NOT NULL,
    model_id TEXT    NOT NULL,
    relpath  TEXT    NOT NULL,
    identity TEXT    NOT NULL,
    dim      INTEGER NOT NULL CHECK (dim > 0),
    vector   BLOB    NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    created  REAL    NOT NULL,
    PRIMARY KEY (sha256, model_id, relpath)
);
CREATE INDEX IF NOT EXISTS embeddings_model_identity ON embeddings (model_id, identity, relpath);
"""


class SQLiteEmbeddingStore:
    """The embedding store in the SQLite file ``path`` (created on first use)."""

    def __init__(self, path: str | Path, timeout: float) -> None:
        self.path = Path(path)
        self.timeout = float(timeout)
        self._open()

    def _open(self) -> None:
        self._conn, self._file = self._connect()

    def _connect(self) -> tuple[sqlite3.Connection, tuple[int, int]]:
        """A prepared connection to the file at ``path`` and the file's (device, inode)."""
        with self._errors("open"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.timeout)
        try:
            with self._errors("open"):
                self._prepare(conn)
                stat = os.stat(self.path)
        except GalleryError:
            conn.close()
            raise
        return conn, (stat.st_dev, stat.st_ino)

    # --- housekeeping -----------------------------------------------------------------------
    def __enter__(self) -> SQLiteEmbeddingStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connection (idempotent)."""
        self._conn.close()

    def describe(self) -> str:
        """The database file's path."""
        return str(self.path)

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn SQLite and file-system failures into one-line :class:`GalleryError` messages."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise GalleryError(
                    f"{self.path}: the gallery database is locked by another process "
                    f"(waited {self.timeout:g} s); stop it or try again"
                ) from None
            raise GalleryError(f"{self.path}: cannot {action} the gallery: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise GalleryError(
                f"{self.path}: not a usable gallery database ({exc}); move the file away and "
                "sync again to rebuild it from pre_images/"
            ) from None
        except OSError as exc:
            raise GalleryError(f"{self.path}: cannot {action} the gallery: {exc}") from None

    def _prepare(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise GalleryError(
                f"{self.path}: gallery schema {version} is newer than this program's "
                f"({SCHEMA_VERSION}); upgrade facenet-attendance"
            )
        conn.execute("PRAGMA journal_mode=WAL")
        if version < SCHEMA_VERSION:
            with conn:
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # --- reading ------------------------------------------------------------------------------
    def load(self, model_id: str, dim: int | None = None) -> tuple[list[str], np.ndarray]:
        """``(labels, embeddings)`` of every stored crop for ``model_id``, sorted by identity.

        ``embeddings`` is float32 (N, dim); an empty gallery gives shape (0, ``dim`` or 0).
        """
        with self._errors("read"):
            rows = self._conn.execute(
                "SELECT identity, relpath, dim, vector FROM embeddings WHERE model_id = ? "
                "ORDER BY identity, relpath",
                (model_id,),
            ).fetchall()
        return [row[0] for row in rows], self._decode(model_id, rows, dim)

    def load_identity(
        self, model_id: str, name: str, dim: int | None = None
    ) -> tuple[list[str], np.ndarray]:
        """``(relpaths, embeddings)`` of one identity's crops for ``model_id``, by relpath.

        ``relpaths`` are relative to ``pre_images/`` (``"<Name>/0001.png"``); ``embeddings`` is
        float32 (N, dim), shape (0, ``dim`` or 0) when the person has no stored crops.
        """
        identity = validate_name(name)
        with self._errors("read"):
            rows = self._conn.execute(
                "SELECT identity, relpath, dim, vector FROM embeddings "
                "WHERE model_id = ? AND identity = ? ORDER BY relpath",
                (model_id, identity),
            ).fetchall()
        return [row[1] for row in rows], self._decode(model_id, rows, dim)

    def _decode(
        self, model_id: str, rows: Sequence[tuple[str, str, int, bytes]], dim: int | None
    ) -> np.ndarray:
        """The vectors of ``rows`` (identity, relpath, dim, blob) as float32 (N, dim)."""
        return decode_vectors(str(self.path), model_id, rows, dim)

    def change_token(self) -> tuple[int, int, int]:
        """(device, inode, ``PRAGMA data_version``) of the file.

        ``data_version`` changes whenever *another* connection (in any process) has committed
        to the file since the previous call; this connection's own writes do not change it.
        A file moved away and rebuilt is another file: the connection moves to the new one
        (logged) once that one opens; until then the old connection stays. A missing file
        raises ``FileNotFoundError``.
        """
        stat = os.stat(self.path)
        identity = (stat.st_dev, stat.st_ino)
        if identity != self._file:
            log.info("%s was replaced by a new file: reopening it", self.path)
            conn, self._file = self._connect()
            self._conn.close()
            self._conn = conn
        with self._errors("read"):
            version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        return (*self._file, version)

    def identities(self, model_id: str | None = None) -> dict[str, int]:
        """Stored identities with their number of crops (for one model id, or all)."""
        sql = "SELECT identity, COUNT(DISTINCT relpath) FROM embeddings"
        params: tuple[str, ...] = ()
        if model_id is not None:
            sql, params = sql + " WHERE model_id = ?", (model_id,)
        with self._errors("read"):
            rows = self._conn.execute(sql + " GROUP BY identity ORDER BY identity", params)
            return {name: count for name, count in rows.fetchall()}

    def thumbnail(self, name: str) -> bytes | None:
        """None: the crops themselves are the workspace's files (``pre_images/<name>/``)."""
        return None

    def model_ids(self) -> list[str]:
        """Every model id with stored embeddings."""
        with self._errors("read"):
            rows = self._conn.execute("SELECT DISTINCT model_id FROM embeddings ORDER BY 1")
            return [row[0] for row in rows.fetchall()]

    # --- writing ------------------------------------------------------------------------------
    def remove_identity(self, name: str) -> int:
        """Delete every embedding of identity ``name`` (all model ids); return how many.

        The crops themselves are not touched: while ``pre_images/<name>/`` exists, the next
        sync adds them back.
        """
        identity = validate_name(name)
        with self._errors("update"), self._write():
            cursor = self._conn.execute("DELETE FROM embeddings WHERE identity = ?", (identity,))
        log.info("removed %d embeddings of %s from %s", cursor.rowcount, identity, self.path)
        return cursor.rowcount

    # --- incremental sync ------------------------------------------------------------------
    def stored(self, model_id: str, scope: Sequence[str] | None) -> dict[str, list[StoredCrop]]:
        """relpath -> what is stored for ``model_id`` (identities in ``scope``, or all)."""
        sql = (
            "SELECT relpath, sha256, size, mtime_ns, dim, length(vector) FROM embeddings "
            "WHERE model_id = ?"
        )
        params: list[str] = [model_id]
        if scope is not None:
            sql += f" AND identity IN ({','.join('?' * len(scope))})"
            params += list(scope)
        out: dict[str, list[StoredCrop]] = {}
        with self._errors("read"):
            for relpath, sha, size, mtime_ns, dim, length in self._conn.execute(sql, params):
                out.setdefault(relpath, []).append(
                    StoredCrop(sha, size, mtime_ns, length == 4 * dim)
                )
        return out

    def vectors(self, model_id: str, shas: Iterable[str]) -> dict[str, tuple[int, bytes]]:
        """sha256 -> (dim, vector) of intact stored embeddings with that content."""
        found: dict[str, tuple[int, bytes]] = {}
        wanted = sorted(set(shas))
        with self._errors("read"):
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                cursor = self._conn.execute(
                    "SELECT sha256, dim, vector FROM embeddings WHERE model_id = ? AND "
                    f"length(vector) = 4 * dim AND sha256 IN ({','.join('?' * len(chunk))})",
                    [model_id, *chunk],
                )
                for sha, dim, blob in cursor:
                    found[sha] = (dim, blob)
        return found

    def replace(
        self,
        model_id: str,
        stale: Sequence[tuple[str, str]],
        add: Sequence[CropEmbedding],
        scope: Sequence[str] | None,
        still_valid: Callable[[CropEmbedding], bool] | None = None,
    ) -> tuple[int, int]:
        """In one write transaction: delete the ``(sha256, relpath)`` rows in ``stale``, drop
        the rows of other model ids (within ``scope``), insert the rows of ``add`` that
        ``still_valid`` accepts once the write lock is held; ``(stale, other)`` counts."""
        with self._errors("update"), self._write():
            self._conn.executemany(
                "DELETE FROM embeddings WHERE model_id = ? AND sha256 = ? AND relpath = ?",
                [(model_id, sha, relpath) for sha, relpath in stale],
            )
            sql = "DELETE FROM embeddings WHERE model_id != ?"
            params: list[str] = [model_id]
            if scope is not None:
                sql += f" AND identity IN ({','.join('?' * len(scope))})"
                params += list(scope)
            other = self._conn.execute(sql, params).rowcount
            self._insert(model_id, keep_valid(add, still_valid))
        return len(stale), other

    def insert(
        self,
        model_id: str,
        add: Sequence[CropEmbedding],
        still_valid: Callable[[CropEmbedding], bool] | None = None,
    ) -> int:
        """Insert (or replace) embeddings in one write transaction; return how many.

        The write lock is taken first (``BEGIN IMMEDIATE``), then ``still_valid`` is asked
        about each row, then the accepted rows are inserted and committed. Another process
        deleting rows (``remove_identity``) waits for this commit or has already committed,
        so a check made here sees every file deletion that happened before that removal.
        """
        with self._errors("update"), self._write():
            rows = keep_valid(add, still_valid)
            self._insert(model_id, rows)
        return len(rows)

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction holding SQLite's write lock from its first statement.

        ``BEGIN IMMEDIATE`` waits (up to ``timeout``) for other writers and then keeps them
        out until ``COMMIT``; an error rolls everything back.
        """
        self._conn.execute("BEGIN IMMEDIATE")
        with self._conn:  # commits on success, rolls back on an exception
            yield

    def _insert(self, model_id: str, add: Sequence[CropEmbedding]) -> None:
        if not add:
            return
        now = time.time()
        self._conn.executemany(
            "INSERT OR REPLACE INTO embeddings "
            "(sha256, model_id, relpath, identity, dim, vector, size, mtime_ns, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (e.sha256, model_id, e.relpath, e.identity, e.dim, e.vector, e.size,
                 e.mtime_ns, now)
                for e in add
            ],
        )  # fmt: skip
