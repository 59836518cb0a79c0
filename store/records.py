"""What the stores hold and return, shared by every implementation: constants, records, errors.

Nothing here touches a database; :mod:`store.interfaces` says what a store does, and the
``sqlite_*`` modules do it for one machine.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import UserError
from common.names import validate_name

log = logging.getLogger(__name__)

PRESENT = "Present"
ABSENT = "Absent"

# values of events.Action
ACTION_PRESENT = "present"  # first sighting of the day: a new Present row
ACTION_ABSENT_TO_PRESENT = "absent_to_present"  # day closed before the person arrived
ACTION_SEEN = "seen"  # a later sighting: LastSeen (or an earlier entry time) updated
ACTION_ABSENT = "absent"  # close-day marked the person Absent
ATTENDANCE_ACTIONS = (ACTION_PRESENT, ACTION_ABSENT_TO_PRESENT, ACTION_SEEN, ACTION_ABSENT)
# what mark_present reports for a sighting it did not record: the person was removed from a
# shared store (after the sighting, or with their history purged)
ACTION_REMOVED = "removed"


class StoreError(UserError):
    """A store cannot be used; the message names it and what to do."""


class DatabaseError(StoreError):
    """The attendance database cannot be used; the message names the file and what to do."""

    retryable = False

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


class DatabaseLocked(DatabaseError):
    """Another program held the write lock for longer than the timeout."""

    retryable = True


class DatabaseUnwritable(DatabaseError):
    """The file or its folder cannot be written (permissions, read-only medium, disk full)."""

    retryable = True


class DatabaseCorrupt(DatabaseError):
    """The file is not an SQLite database or is damaged."""


class DatabaseUnavailable(DatabaseError):
    """The database server cannot be reached (down, restarting, network): retried later."""

    retryable = True


class GalleryError(StoreError):
    """The embedding store cannot be opened, is locked, or holds unusable data."""


class SchemaMismatch(DatabaseError, GalleryError):
    """The store's schema is older (run ``attendance db upgrade``) or newer than this program.

    Both a :class:`DatabaseError` and a :class:`GalleryError`, so whoever handles the errors of
    either store (the pending writer, the gallery watcher) handles it; it is not retryable."""


# --- records --------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttendanceRow:
    """One row of the ``attendance`` table."""

    name: str
    date: str  # YYYY-MM-DD
    status: str  # PRESENT or ABSENT
    time: str | None  # entry time HH:MM:SS (None when Absent)
    last_seen: str | None  # HH:MM:SS of the latest sighting (None when Absent)


@dataclass(frozen=True)
class Event:
    """One row of the ``events`` audit trail."""

    id: int
    timestamp: str  # ISO-8601 local time, milliseconds
    name: str
    distance: float | None
    source: str
    action: str


@dataclass(frozen=True)
class MarkResult:
    """What :meth:`AttendanceStore.mark_present` did."""

    name: str
    date: str
    action: str  # ACTION_PRESENT, ACTION_ABSENT_TO_PRESENT or ACTION_SEEN
    entry_time: str  # the row's Time after the write
    last_seen: str  # the row's LastSeen after the write
    event_id: int

    @property
    def new_present(self) -> bool:
        """True when this sighting made the person Present for the day (first of the day)."""
        return self.action in (ACTION_PRESENT, ACTION_ABSENT_TO_PRESENT)


@dataclass(frozen=True)
class StoredCrop:
    """What an embedding store knows of one stored crop (for incremental sync)."""

    sha256: str
    size: int
    mtime_ns: int
    intact: bool  # the stored vector has the length its dimension promises


@dataclass(frozen=True)
class CropEmbedding:
    """One crop's embedding to store: content hash, where the crop is, whose it is, vector."""

    sha256: str
    relpath: str  # relative to pre_images/: "<Name>/0001.png"
    identity: str
    size: int
    mtime_ns: int
    dim: int
    vector: bytes  # little-endian float32, dim values
    png: bytes | None = None  # the crop file's bytes, for stores that hold crops (shared ones)


# --- the site: users, sessions, API tokens, kiosk heartbeats (store.interfaces.SiteStore) ------
ROLES = ("admin", "viewer")  # admin: everything; viewer: read only


@dataclass(frozen=True)
class User:
    """A dashboard user. ``password_hash`` is an Argon2 hash string (never a password)."""

    name: str
    role: str  # one of ROLES
    password_hash: str
    created: str  # ISO-8601 UTC


@dataclass(frozen=True)
class Session:
    """A signed-in browser. Only the SHA-256 of the cookie's random token is stored."""

    token_sha256: str
    user: str
    csrf: str  # the form token of this session (random, sent in forms and X-CSRF-Token)
    created: str  # ISO-8601 UTC
    expires: str  # ISO-8601 UTC


@dataclass(frozen=True)
class ApiToken:
    """A token for scripts and kiosks. Only the SHA-256 of the token is stored."""

    name: str
    token_sha256: str
    role: str  # one of ROLES
    created: str  # ISO-8601 UTC


@dataclass(frozen=True)
class Heartbeat:
    """What a running recogniser last reported (one row per kiosk name)."""

    kiosk: str  # the kiosk's name (config ``kiosk_name``)
    host: str
    source: str  # the source it reads (no password)
    source_state: str  # "running", "reconnecting", "ended", "stopped" or "error: ..."
    fps: float  # processed frames per second over the last interval
    model_version: str
    started: str  # ISO-8601 UTC, when this recogniser started
    last_seen: str  # ISO-8601 UTC, this heartbeat
    day: str  # YYYY-MM-DD (local) of the counts below
    marked: int  # people marked present by this kiosk on ``day``
    unknown: int  # faces nobody matched, seen by this kiosk on ``day``


def decode_vectors(
    where: str, model_id: str, rows: Sequence[tuple[str, str, int, bytes]], dim: int | None
) -> np.ndarray:
    """The vectors of ``rows`` (identity, relpath, dim, blob) as float32 (N, dim).

    Raises :class:`GalleryError` naming ``where`` (the store) when dimensions disagree with
    each other or with ``dim``, or a vector's length does not match its dimension.
    """
    if not rows:
        return np.zeros((0, dim or 0), np.float32)
    dims = {row[2] for row in rows}
    if len(dims) != 1 or (dim is not None and dims != {dim}):
        raise GalleryError(
            f"{where}: embeddings of {model_id} have dimension {sorted(dims)}, "
            f"expected {dim}; sync the gallery again to rebuild them"
        )
    (width,) = dims
    for identity, relpath, _, blob in rows:
        if len(blob) != 4 * width:
            raise GalleryError(
                f"{where}: the embedding of {relpath} ({identity}) is corrupt; "
                "sync the gallery again to rebuild it"
            )
    vectors = np.frombuffer(b"".join(bytes(row[3]) for row in rows), dtype="<f4")
    vectors = vectors.reshape(len(rows), width).astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if len(bad):
        identity, relpath = rows[int(bad[0])][:2]
        raise GalleryError(
            f"{where}: the embedding of {relpath} ({identity}) is not finite (NaN or inf); "
            "sync the gallery again to rebuild it"
        )
    return vectors


def keep_valid(
    add: Sequence[CropEmbedding], still_valid: Callable[[CropEmbedding], bool] | None
) -> list[CropEmbedding]:
    """The rows of ``add`` that ``still_valid`` accepts (all without a check), each refused
    one logged."""
    if still_valid is None:
        return list(add)
    kept: list[CropEmbedding] = []
    for row in add:
        if still_valid(row):
            kept.append(row)
        else:
            log.info("not stored: %s was removed or changed meanwhile", row.relpath)
    return kept


def where_clause(
    column: str,
    date: dt.date | str | None,
    start: dt.date | str | None,
    end: dt.date | str | None,
    name: str | None,
    placeholder: str = "?",
    *,
    timestamps: bool = False,
) -> tuple[str, list[str]]:
    """A WHERE clause over a date ``column`` (an SQL expression of this module's constants,
    never user input) and EmpName, with its parameters, in the driver's ``placeholder`` style.

    ``timestamps``: ``column`` holds ISO timestamps; days become a half-open range of strings
    (``>= first day``, ``< the day after the last``), so an index on the column is used."""
    if date is not None and (start is not None or end is not None):
        raise ValueError("give either date or start/end, not both")
    clauses: list[str] = []
    params: list[str] = []
    if date is not None and not timestamps:
        clauses.append(f"{column} = {placeholder}")
        params.append(iso_date(date))
    elif date is not None:
        start = end = date
    if start is not None:
        clauses.append(f"{column} >= {placeholder}")
        params.append(iso_date(start))
    if end is not None and timestamps:
        clauses.append(f"{column} < {placeholder}")
        params.append((dt.date.fromisoformat(iso_date(end)) + dt.timedelta(days=1)).isoformat())
    elif end is not None:
        clauses.append(f"{column} <= {placeholder}")
        params.append(iso_date(end))
    if name is not None:
        clauses.append(f"EmpName = {placeholder}")
        params.append(validate_name(name))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def iso_date(value: dt.date | str) -> str:
    """``value`` as ``YYYY-MM-DD``; raises ``ValueError`` for anything else."""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return dt.date.fromisoformat(str(value)).isoformat()


def local_time(when: dt.datetime) -> dt.datetime:
    """Naive local time: aware datetimes are converted, naive ones are taken as local."""
    if when.tzinfo is not None:
        return when.astimezone().replace(tzinfo=None)
    return when


def after_sighting(
    row: tuple[str, str | None, str | None] | None, clock: str
) -> tuple[str, str, str]:
    """``(action, entry, last_seen)`` of a person's day after a sighting at ``clock``
    (HH:MM:SS), given the day's row ``(Status, Time, LastSeen)`` or ``None``: the first
    sighting makes them Present, an Absent row (close-day) turns Present, a later one keeps
    the earliest entry and the latest sighting. The same rule for every store."""
    if row is None:
        return ACTION_PRESENT, clock, clock
    status, old_entry, old_last = row
    if status == ABSENT or not old_entry:
        return ACTION_ABSENT_TO_PRESENT, clock, clock
    return ACTION_SEEN, min(old_entry, clock), max(old_last or old_entry, clock)


def check_audit_action(action: object) -> str:
    """``action`` if it may be logged as an audit-only event; ``ValueError`` otherwise."""
    if not action or not isinstance(action, str) or action in ATTENDANCE_ACTIONS:
        raise ValueError(
            f"action={action!r} must be a non-empty string other than the attendance "
            f"actions ({', '.join(ATTENDANCE_ACTIONS)})"
        )
    return action


def check_mark(distance: float | None, source: str) -> float | None:
    if distance is not None:
        distance = float(distance)
        if not math.isfinite(distance) or distance < 0:
            raise ValueError(f"distance={distance!r} must be a finite number >= 0")
    if not source or not isinstance(source, str):
        raise ValueError(f"source={source!r} must be a non-empty string")
    return distance
