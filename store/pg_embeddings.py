"""The gallery in PostgreSQL: people, their aligned crops (PNG bytes) and embeddings per model.

Unlike the SQLite gallery, which mirrors one workspace's ``pre_images/``, this store *is* the
gallery of every kiosk sharing it (``holds_crops``):

- a workspace that enrols (``call_preprocess``, the scanner) publishes its people's crops
  and embeddings (``store.gallery.sync_gallery`` limits itself to the people it has);
- a kiosk reads people and embeddings; crops without an embedding for its model are embedded
  from the stored PNG bytes (``store.gallery.load_gallery``), so a new model needs no photos;
- ``remove_identity`` deletes the person, crops and embeddings in one transaction and leaves
  a tombstone, so a workspace still holding old crops does not bring them back.

Embeddings are keyed by crop content (sha256) and model id. Triggers notify
``attendance_gallery`` with the identity on every change; a watcher opened with
``listen=True`` applies just those identities (:meth:`changed_identities`). Gallery writes
take one advisory lock, so they are serialised as SQLite's write lock serialises them.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from common.names import InvalidName, validate_name
from store.pg_attendance import delete_history
from store.pg_connection import PgConnection
from store.pg_schema import GALLERY_CHANNEL
from store.records import CropEmbedding, GalleryError, StoredCrop, decode_vectors, keep_valid

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

_WRITE_LOCK = 0x47414C4C  # pg_advisory_xact_lock key of gallery writes ("GALL")


class PostgresEmbeddingStore:
    """People, crops and embeddings in the PostgreSQL database at ``url``."""

    holds_crops = True  # the crops live here, not only in a workspace's pre_images/

    def __init__(
        self,
        url: str,
        timeout: float,
        *,
        listen: bool = False,
        origin: str | Callable[[], str] = "",
    ) -> None:
        self.db = PgConnection(
            url,
            timeout,
            error=lambda message: GalleryError(message),
            unavailable=lambda message: GalleryError(message),
            listen=(GALLERY_CHANNEL,) if listen else (),
        )
        self.db.conn  # noqa: B018 - connect now: a wrong URL or schema fails at start-up
        self._seen_connections = self.db.connections
        self._changes = 0
        # which workspace this is: a publish manages only the crops it published itself (a
        # callable is asked on first use, so a kiosk that never publishes leaves no trace)
        self._origin = origin
        # set by begin_publish: when the publish started (server time) and whom it may bring
        # back after a removal (people enrolled again by name)
        self._since: dt.datetime | None = None
        self._revive: frozenset[str] = frozenset()

    # -- lifecycle ---------------------------------------------------------------------------
    def describe(self) -> str:
        """The URL without its password."""
        return self.db.shown

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self.db.close()

    def __enter__(self) -> PostgresEmbeddingStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def origin(self) -> str:
        """The id of the workspace publishing through this store object."""
        if callable(self._origin):
            self._origin = self._origin()
        return self._origin

    # -- change notifications -----------------------------------------------------------------
    def change_token(self) -> Hashable:
        """Differs once a notification arrived or the connection was remade (``listen=True``)."""
        self._changes += len(self.db.notified())
        return self.db.connections, self._changes

    def changed_identities(self) -> set[str] | None:
        """The identities changed since the last call (empty: nothing), or ``None`` when
        anything may have changed (the connection was remade: notifications were missed)."""
        payloads = set(self.db.notified())
        if self.db.connections != self._seen_connections:
            self._seen_connections = self.db.connections
            return None
        names: set[str] = set()
        for payload in payloads:  # any role may NOTIFY: only valid names are taken
            try:
                names.add(validate_name(payload))
            except InvalidName:
                log.warning("ignored a gallery notification naming %r: not a person", payload)
        return names

    # -- reading ------------------------------------------------------------------------------
    def load(self, model_id: str, dim: int | None = None) -> tuple[list[str], np.ndarray]:
        """``(labels, embeddings)`` of every crop with an embedding for ``model_id``."""
        return self._load(model_id, None, dim)

    def load_identities(
        self, model_id: str, names: Iterable[str], dim: int | None = None
    ) -> tuple[list[str], np.ndarray]:
        """``(labels, embeddings)`` of the crops of ``names`` only (to apply a change)."""
        wanted = sorted({validate_name(n) for n in names})
        if not wanted:
            return [], np.zeros((0, dim or 0), np.float32)
        return self._load(model_id, wanted, dim)

    def _load(
        self, model_id: str, names: list[str] | None, dim: int | None
    ) -> tuple[list[str], np.ndarray]:
        rows = self._rows(model_id, names)
        return [row[0] for row in rows], decode_vectors(self.db.shown, model_id, rows, dim)

    def _rows(self, model_id: str, names: list[str] | None) -> list[tuple[str, str, int, bytes]]:
        """``(identity, relpath, dim, vector)`` of the crops (of ``names``, or all) that have
        an embedding for ``model_id``, by identity and relpath."""
        sql = (
            "SELECT c.identity, c.relpath, e.dim, e.vector FROM crops c "
            "JOIN embeddings e ON e.sha256 = c.sha256 AND e.model_id = %s"
        )
        params: list[object] = [model_id]
        if names is not None:
            sql += " WHERE c.identity = ANY(%s)"
            params.append(names)
        with self.db.errors("reading the gallery") as conn:
            return conn.execute(sql + " ORDER BY c.identity, c.relpath", params).fetchall()

    def load_identity(
        self, model_id: str, name: str, dim: int | None = None
    ) -> tuple[list[str], np.ndarray]:
        """``(relpaths, embeddings)`` of one identity's crops for ``model_id``, by relpath."""
        rows = self._rows(model_id, [validate_name(name)])
        return [row[1] for row in rows], decode_vectors(self.db.shown, model_id, rows, dim)

    def identities(self, model_id: str | None = None) -> dict[str, int]:
        """Stored people with their number of crops (with an embedding for ``model_id``)."""
        sql = "SELECT c.identity, COUNT(*) FROM crops c"
        params: tuple[str, ...] = ()
        if model_id is not None:
            sql += " JOIN embeddings e ON e.sha256 = c.sha256 AND e.model_id = %s"
            params = (model_id,)
        with self.db.errors("reading the gallery") as conn:
            rows = conn.execute(sql + " GROUP BY c.identity ORDER BY 1", params).fetchall()
        return {name: int(count) for name, count in rows}

    def thumbnail(self, name: str) -> bytes | None:
        """The PNG bytes of ``name``'s first crop (by path), or None."""
        with self.db.errors("reading crops") as conn:
            row = conn.execute(
                "SELECT png FROM crops WHERE identity = %s ORDER BY relpath LIMIT 1", (name,)
            ).fetchone()
        return bytes(row[0]) if row else None

    def model_ids(self) -> list[str]:
        """Every model id with stored embeddings."""
        with self.db.errors("reading the gallery") as conn:
            rows = conn.execute("SELECT DISTINCT model_id FROM embeddings ORDER BY 1").fetchall()
        return [row[0] for row in rows]

    def missing(
        self, model_id: str, names: Iterable[str] | None = None
    ) -> list[tuple[str, str, str]]:
        """``(sha256, identity, relpath)`` of the crops (of ``names``, or everyone's) with no
        embedding for ``model_id`` (a kiosk embeds these from the stored bytes, see
        :meth:`crop_bytes`)."""
        sql = (
            "SELECT c.sha256, c.identity, c.relpath FROM crops c WHERE NOT EXISTS "
            "(SELECT 1 FROM embeddings e WHERE e.sha256 = c.sha256 AND e.model_id = %s)"
        )
        params: list[object] = [model_id]
        if names is not None:
            sql += " AND c.identity = ANY(%s)"
            params.append(sorted({validate_name(n) for n in names}))
        with self.db.errors("reading the gallery") as conn:
            rows = conn.execute(sql + " ORDER BY c.identity, c.relpath", params).fetchall()
        return [(sha, who, relpath) for sha, who, relpath in rows]

    def crop_bytes(self, shas: Iterable[str]) -> dict[str, bytes]:
        """sha256 -> the PNG bytes of a stored crop with that content."""
        wanted = sorted(set(shas))
        if not wanted:
            return {}
        with self.db.errors("reading crops") as conn:
            rows = conn.execute(
                "SELECT DISTINCT ON (sha256) sha256, png FROM crops WHERE sha256 = ANY(%s)",
                (wanted,),
            ).fetchall()
        return {sha: bytes(png) for sha, png in rows}

    def tombstones(self, names: Iterable[str]) -> dict[str, dt.datetime]:
        """When each of ``names`` that was removed was removed (aware UTC datetimes)."""
        wanted = sorted({validate_name(n) for n in names})
        with self.db.errors("reading removals") as conn:
            rows = conn.execute(
                "SELECT identity, removed_at FROM removed_people WHERE identity = ANY(%s)",
                (wanted,),
            ).fetchall()
        return {name: when for name, when in rows}

    # -- incremental sync (store.gallery) -------------------------------------------------------
    def begin_publish(self, revive: Iterable[str] = ()) -> None:
        """Start publishing this workspace's people: writes from now on refuse people removed
        from the store, except those of ``revive`` removed before this moment (enrolled again
        by name); a removal committed while the publish runs always wins."""
        # under the gallery lock: a removal still running commits first, and its time
        # (clock_timestamp, as here) is then before this one
        with self.db.transaction("starting to publish") as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
            self._since = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        self._revive = frozenset(validate_name(n) for n in revive)

    def stored(self, model_id: str, scope: Sequence[str] | None) -> dict[str, list[StoredCrop]]:
        """relpath -> the crop this workspace published (identities in ``scope``, or all); a
        crop without an intact embedding for ``model_id`` is reported not intact (it is
        published again). Other workspaces' crops are theirs to manage."""
        sql = (
            "SELECT c.relpath, c.sha256, c.size, c.mtime_ns, e.dim, length(e.vector) "
            "FROM crops c LEFT JOIN embeddings e ON e.sha256 = c.sha256 AND e.model_id = %s "
            "WHERE c.origin = %s"
        )
        params: list[object] = [model_id, self.origin]
        if scope is not None:
            sql += " AND c.identity = ANY(%s)"
            params.append(list(scope))
        out: dict[str, list[StoredCrop]] = {}
        with self.db.errors("reading the gallery") as conn:
            for relpath, sha, size, mtime_ns, dim, length in conn.execute(sql, params):
                intact = dim is not None and length == 4 * dim
                out.setdefault(relpath, []).append(StoredCrop(sha, size, mtime_ns, intact))
        return out

    def vectors(self, model_id: str, shas: Iterable[str]) -> dict[str, tuple[int, bytes]]:
        """sha256 -> (dim, vector) of intact stored embeddings with that content."""
        wanted = sorted(set(shas))
        if not wanted:
            return {}
        with self.db.errors("reading the gallery") as conn:
            rows = conn.execute(
                "SELECT sha256, dim, vector FROM embeddings WHERE model_id = %s "
                "AND length(vector) = 4 * dim AND sha256 = ANY(%s)",
                (model_id, wanted),
            ).fetchall()
        return {sha: (int(dim), bytes(blob)) for sha, dim, blob in rows}

    def replace(
        self,
        model_id: str,
        stale: Sequence[tuple[str, str]],
        add: Sequence[CropEmbedding],
        scope: Sequence[str] | None,
        still_valid: Callable[[CropEmbedding], bool] | None = None,
    ) -> tuple[int, int]:
        """In one transaction: delete the ``(sha256, relpath)`` crops in ``stale`` (and
        embeddings no crop uses any more), insert those of ``add`` that ``still_valid``
        accepts; ``(stale, 0)``. Embeddings of other models are kept: other kiosks may still
        run them."""
        with self.db.transaction("updating the gallery") as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
            if stale:
                conn.cursor().executemany(
                    "DELETE FROM crops WHERE origin = %s AND sha256 = %s AND relpath = %s",
                    [(self.origin, sha, relpath) for sha, relpath in stale],
                )
                _drop_orphans(conn, [sha for sha, _ in stale])
            self._insert(conn, model_id, keep_valid(add, still_valid))
        return len(stale), 0

    def insert(
        self,
        model_id: str,
        add: Sequence[CropEmbedding],
        still_valid: Callable[[CropEmbedding], bool] | None = None,
    ) -> int:
        """Insert (or replace) crops and embeddings in one transaction; return how many."""
        with self.db.transaction("updating the gallery") as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
            rows = self._insert(conn, model_id, keep_valid(add, still_valid))
        return len(rows)

    def add_vectors(self, model_id: str, rows: Sequence[tuple[str, int, bytes]]) -> int:
        """Store ``(sha256, dim, vector)`` embeddings of crops already stored (a kiosk that
        embedded stored crops for its model); return how many were offered."""
        with self.db.transaction("storing embeddings") as conn:
            cursor = conn.cursor()
            cursor.executemany(
                "INSERT INTO embeddings (model_id, sha256, dim, vector) "
                "SELECT %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM crops WHERE sha256 = %s) "
                "ON CONFLICT (model_id, sha256) DO NOTHING",
                [(model_id, sha, dim, vec, sha) for sha, dim, vec in rows],
            )
        return len(rows)

    def _insert(
        self, conn: psycopg.Connection, model_id: str, add: Sequence[CropEmbedding]
    ) -> list[CropEmbedding]:
        """Store ``add`` (people, crops, embeddings); return the rows stored."""
        if not add:
            return []
        missing = [row.relpath for row in add if row.png is None]
        if missing:
            raise GalleryError(f"{self.db.shown}: no crop bytes given for {missing[0]}")
        add = self._not_removed(conn, add)
        if not add:
            return []
        people = sorted({row.identity for row in add})
        cursor = conn.cursor()
        cursor.executemany(
            "INSERT INTO people (identity) VALUES (%s) ON CONFLICT DO NOTHING",
            [(name,) for name in people],
        )
        cursor.execute("DELETE FROM removed_people WHERE identity = ANY(%s)", (people,))
        cursor.executemany(
            "INSERT INTO crops (origin, relpath, identity, sha256, size, mtime_ns, png) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (origin, relpath) DO UPDATE SET "
            "identity = EXCLUDED.identity, sha256 = EXCLUDED.sha256, size = EXCLUDED.size, "
            "mtime_ns = EXCLUDED.mtime_ns, png = EXCLUDED.png",
            [(self.origin, r.relpath, r.identity, r.sha256, r.size, r.mtime_ns, r.png)
             for r in add],
        )  # fmt: skip
        cursor.executemany(
            "INSERT INTO embeddings (model_id, sha256, dim, vector) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (model_id, sha256) DO UPDATE SET dim = EXCLUDED.dim, "
            "vector = EXCLUDED.vector",
            [(model_id, r.sha256, r.dim, r.vector) for r in add],
        )
        return add

    def _not_removed(
        self, conn: psycopg.Connection, add: Sequence[CropEmbedding]
    ) -> list[CropEmbedding]:
        """The rows of ``add`` whose person this write may store, checked inside the write
        transaction (under the gallery lock): not someone removed, unless :meth:`begin_publish`
        named them for enrolling again and the removal came before the publish started."""
        people = sorted({row.identity for row in add})
        removed = dict(
            conn.execute(
                "SELECT identity, removed_at FROM removed_people WHERE identity = ANY(%s)",
                (people,),
            ).fetchall()
        )
        refused = {
            name
            for name, when in removed.items()
            if name not in self._revive or self._since is None or when > self._since
        }
        for name in sorted(refused):
            log.warning("%s was removed from %s: not stored again", name, self.db.shown)
        return [row for row in add if row.identity not in refused]

    # -- removing ------------------------------------------------------------------------------
    def remove_identity(self, name: str) -> int:
        """Delete ``name``'s crops and embeddings (all models) in one transaction, leaving a
        tombstone; return how many crops were deleted."""
        return self.remove_person(name, purge_history=False)[0]

    def remove_person(self, name: str, *, purge_history: bool) -> tuple[int, int, int]:
        """Delete ``name`` everywhere in one transaction: crops, embeddings and, with
        ``purge_history``, attendance rows and events; ``(crops, rows, events)``."""
        identity = validate_name(name)
        with self.db.transaction(f"removing {identity!r}") as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
            shas = [
                row[0]
                for row in conn.execute(
                    "SELECT sha256 FROM crops WHERE identity = %s", (identity,)
                ).fetchall()
            ]
            conn.execute("DELETE FROM people WHERE identity = %s", (identity,))  # crops cascade
            _drop_orphans(conn, shas)
            conn.execute(
                "INSERT INTO removed_people (identity, removed_at, purged) "
                "VALUES (%s, clock_timestamp(), %s) ON CONFLICT (identity) DO UPDATE SET "
                "removed_at = EXCLUDED.removed_at, purged = EXCLUDED.purged",
                (identity, purge_history),
            )
            rows, events = delete_history(conn, identity) if purge_history else (0, 0)
        log.info("removed %s from %s: %d crops", identity, self.db.shown, len(shas))
        return len(shas), rows, events

    def models(self) -> dict[str, tuple[float | None, dict]]:
        """model id -> (threshold, metadata) of the recorded model versions."""
        with self.db.errors("reading model versions") as conn:
            rows = conn.execute("SELECT model_id, threshold, meta FROM model_versions").fetchall()
        return {model_id: (threshold, meta) for model_id, threshold, meta in rows}

    def record_model(self, model_id: str, threshold: float | None, meta_json: str) -> None:
        """Record (or update) a model version's threshold and metadata (JSON text)."""
        with self.db.transaction("recording the model version") as conn:
            conn.execute(
                "INSERT INTO model_versions (model_id, threshold, meta) VALUES (%s, %s, %s) "
                "ON CONFLICT (model_id) DO UPDATE SET threshold = EXCLUDED.threshold, "
                "meta = EXCLUDED.meta, updated = now()",
                (model_id, threshold, meta_json),
            )


def _drop_orphans(conn: psycopg.Connection, shas: Sequence[str]) -> None:
    """Delete the embeddings of contents in ``shas`` that no stored crop has any more."""
    if shas:
        conn.execute(
            "DELETE FROM embeddings e WHERE e.sha256 = ANY(%s) AND NOT EXISTS "
            "(SELECT 1 FROM crops c WHERE c.sha256 = e.sha256)",
            (sorted(set(shas)),),
        )
