"""What a store does, whatever holds the data: :class:`AttendanceStore`, :class:`EmbeddingStore`.

Everything the recogniser, scanner, reports, close-day, remove, evaluation and a web app need
goes through these two protocols. ``store.factory`` builds the configured implementation; no
other module names an implementation class. Both stores are context managers, and both give a
*change token*: an opaque value that differs once another process has committed a change, so
a long-running reader can reload only when something happened (never per frame).

To add a store (PostgreSQL, say): implement both protocols in a new module of this package,
reusing :mod:`store.records` for what they hold and return, and teach ``store.factory`` to
build it from the configuration. :mod:`store.gallery` (incremental sync, watching) and
:mod:`store.pending` (never drop a sighting) work with any implementation.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Protocol

import numpy as np

from store.records import (
    ApiToken,
    AttendanceRow,
    CropEmbedding,
    Event,
    Heartbeat,
    MarkResult,
    Session,
    StoredCrop,
    User,
)


class AttendanceStore(Protocol):
    """One row per person and day (EmpName, Date, Status, Time, LastSeen) and an audit trail."""

    def describe(self) -> str:
        """Where the store lives, for messages (a path or a URL without its password)."""
        ...

    def mark_present(
        self, name: str, when: dt.datetime, distance: float | None, source: str
    ) -> MarkResult:
        """Record a confirmed sighting: the first of the day makes the person Present."""
        ...

    def log_event(
        self, name: str, when: dt.datetime, distance: float | None, source: str, action: str
    ) -> int:
        """Append one audit event that changes no attendance row (e.g. a refused face)."""
        ...

    def close_day(self, date: dt.date | str, enrolled: Iterable[str]) -> int:
        """Mark every ``enrolled`` person without a row on ``date`` Absent; idempotent."""
        ...

    def delete_person(self, name: str) -> tuple[int, int]:
        """Delete every attendance row and event of ``name``; ``(rows, events)`` deleted."""
        ...

    def rows(
        self,
        date: dt.date | str | None = None,
        start: dt.date | str | None = None,
        end: dt.date | str | None = None,
        name: str | None = None,
    ) -> list[AttendanceRow]:
        """Attendance rows of one ``date`` or the inclusive range ``start``..``end``."""
        ...

    def events(
        self,
        date: dt.date | str | None = None,
        start: dt.date | str | None = None,
        end: dt.date | str | None = None,
        name: str | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        """Audit events of one day or a range (the newest ``limit`` when given), oldest
        first."""
        ...

    def last_present(self) -> dict[str, AttendanceRow]:
        """Each person's latest Present row (when they were last seen), by name."""
        ...

    def change_token(self) -> Hashable:
        """Differs after another process committed a change (cheap; for live views)."""
        ...

    def close(self) -> None:
        """Release the connection (idempotent)."""
        ...

    def __enter__(self) -> AttendanceStore: ...

    def __exit__(self, *exc: object) -> None: ...


class EmbeddingStore(Protocol):
    """Embeddings of enrolled crops, one per crop content, path and model id."""

    def describe(self) -> str:
        """Where the store lives, for messages."""
        ...

    # -- reading --------------------------------------------------------------------------
    def load(self, model_id: str, dim: int | None = None) -> tuple[list[str], np.ndarray]:
        """``(labels, embeddings)`` of every crop for ``model_id``, sorted by identity."""
        ...

    def load_identity(
        self, model_id: str, name: str, dim: int | None = None
    ) -> tuple[list[str], np.ndarray]:
        """``(relpaths, embeddings)`` of one identity's crops for ``model_id``, by relpath."""
        ...

    def identities(self, model_id: str | None = None) -> dict[str, int]:
        """The people stored, with their number of crops (for one model id, or all)."""
        ...

    def model_ids(self) -> list[str]:
        """Every model id with stored embeddings."""
        ...

    def thumbnail(self, name: str) -> bytes | None:
        """The PNG bytes of one of ``name``'s crops, if the store holds crop images (a shared
        store does; SQLite keeps crops in the workspace's files and returns None)."""
        ...

    def change_token(self) -> Hashable:
        """Differs after another process committed a change (someone enrolled or removed)."""
        ...

    # -- incremental sync (used by store.gallery) ----------------------------------------------
    def stored(self, model_id: str, scope: Sequence[str] | None) -> dict[str, list[StoredCrop]]:
        """relpath -> what is stored for ``model_id`` (identities in ``scope``, or all)."""
        ...

    def vectors(self, model_id: str, shas: Iterable[str]) -> dict[str, tuple[int, bytes]]:
        """sha256 -> (dim, vector) of intact stored embeddings with that content."""
        ...

    def replace(
        self,
        model_id: str,
        stale: Sequence[tuple[str, str]],
        add: Sequence[CropEmbedding],
        scope: Sequence[str] | None,
        still_valid: Callable[[CropEmbedding], bool] | None = None,
    ) -> tuple[int, int]:
        """In one transaction: delete the ``(sha256, relpath)`` rows in ``stale``, drop the
        rows of other model ids (within ``scope``), insert those of ``add`` that
        ``still_valid`` accepts (see :meth:`insert`); ``(stale, other)`` counts."""
        ...

    def insert(
        self,
        model_id: str,
        add: Sequence[CropEmbedding],
        still_valid: Callable[[CropEmbedding], bool] | None = None,
    ) -> int:
        """Insert (or replace) embeddings in one transaction; return how many were inserted.

        ``still_valid(row)`` is asked about each row *after* the store's write lock is taken
        and before anything is written; rows it refuses are not stored. A sync passes "the
        crop file is still there, unchanged", so a removal that deletes the crops and then
        the embeddings (each under the same lock) cannot be undone by a sync in flight.
        """
        ...

    # -- writing --------------------------------------------------------------------------
    def remove_identity(self, name: str) -> int:
        """Delete every embedding of ``name`` (all model ids); return how many."""
        ...

    def close(self) -> None:
        """Release the connection (idempotent)."""
        ...

    def __enter__(self) -> EmbeddingStore: ...

    def __exit__(self, *exc: object) -> None: ...


class SiteStore(Protocol):
    """Who may use the dashboard and API (users, sessions, API tokens) and what each running
    recogniser last reported (heartbeats). SQLite: ``site_db_path`` in the workspace; a shared
    store: tables of the same PostgreSQL database. Secrets are stored only as hashes."""

    def describe(self) -> str:
        """Where the store lives, for messages."""
        ...

    # -- users ------------------------------------------------------------------------------
    def add_user(self, user: User, *, replace: bool = False) -> bool:
        """Add ``user``; with ``replace`` an existing user's role and hash are replaced (and
        their sessions ended). False when the name exists and ``replace`` is not set."""
        ...

    def user(self, name: str) -> User | None:
        """The user called ``name`` (exact match), or None."""
        ...

    def users(self) -> list[User]:
        """Every user, by name."""
        ...

    def remove_user(self, name: str) -> bool:
        """Delete a user and their sessions; False when there was none."""
        ...

    # -- sessions ---------------------------------------------------------------------------
    def add_session(self, session: Session) -> None:
        """Store a new session (and delete expired ones)."""
        ...

    def session(self, token_sha256: str, now: str) -> Session | None:
        """The unexpired session (``expires`` > ``now``, ISO-8601 UTC) with that hash."""
        ...

    def remove_session(self, token_sha256: str) -> None:
        """Sign out: delete the session (idempotent)."""
        ...

    # -- API tokens -------------------------------------------------------------------------
    def add_token(self, token: ApiToken) -> bool:
        """Store a token; False when a token of that name exists."""
        ...

    def token(self, token_sha256: str) -> ApiToken | None:
        """The token with that hash, or None."""
        ...

    def tokens(self) -> list[ApiToken]:
        """Every token (hashes included), by name."""
        ...

    def remove_token(self, name: str) -> bool:
        """Revoke a token by name; False when there was none."""
        ...

    # -- kiosk heartbeats -------------------------------------------------------------------
    def beat(self, heartbeat: Heartbeat) -> None:
        """Insert or replace the heartbeat of ``heartbeat.kiosk``."""
        ...

    def kiosks(self) -> list[Heartbeat]:
        """Every kiosk's last heartbeat, by name."""
        ...

    def remove_kiosk(self, kiosk: str) -> bool:
        """Forget a kiosk (retired); False when there was none."""
        ...

    def close(self) -> None:
        """Release the connection (idempotent)."""
        ...

    def __enter__(self) -> SiteStore: ...

    def __exit__(self, *exc: object) -> None: ...
