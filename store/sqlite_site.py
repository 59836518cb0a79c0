"""The site store in SQLite: dashboard users, sessions, API tokens and kiosk heartbeats.

Schema (``PRAGMA user_version`` = 1), created idempotently in ``site_db_path``::

    users(name TEXT PRIMARY KEY, role 'admin'|'viewer', password_hash TEXT, created TEXT)
    sessions(token_sha256 TEXT PRIMARY KEY, user_name -> users ON DELETE CASCADE,
             csrf TEXT, created TEXT, expires TEXT)
    api_tokens(name TEXT PRIMARY KEY, token_sha256 TEXT UNIQUE, role TEXT, created TEXT)
    kiosks(kiosk TEXT PRIMARY KEY, host, source, source_state, fps REAL, model_version,
           started, last_seen, day 'YYYY-MM-DD', marked INTEGER, unknown INTEGER)

Timestamps are ISO-8601 UTC text. Every one is brought to the single form
``YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00`` (what ``datetime.isoformat()`` gives for UTC) before it
is stored or compared, so comparing the strings (session expiry, the purge of expired sessions)
compares the instants; a timestamp without a zone or with another offset is refused.

Like :mod:`store.sqlite_attendance`: WAL journal, one short ``BEGIN IMMEDIATE`` transaction per
write, and failures as one-line :class:`~store.records.DatabaseError` naming the file and what
to do. Writes refuse invalid values with ``ValueError`` (:func:`check_user` and friends, shared
with :mod:`store.pg_site`); a lookup by a name or hash no valid row can have finds nothing
(a login form may pass anything). Secrets are stored only as hashes, and a hash is never shown
in a message.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import numbers
import re
from collections.abc import Iterable
from pathlib import Path

from store.records import (
    ROLES,
    ApiToken,
    DatabaseError,
    Heartbeat,
    Session,
    User,
)
from store.sqlite_file import SQLiteFile

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MAX_USER_NAME = 64  # users and API tokens
MAX_KIOSK_NAME = 100  # as config.kiosk_name
MAX_SECRET = 1024  # password hashes and CSRF tokens
MAX_TEXT = 1000  # free text of a heartbeat (host, source, state, model version)
MAX_COUNT = 2**31 - 1

_SHA256 = re.compile(r"[0-9a-f]{64}")
_TABLES = (
    """CREATE TABLE IF NOT EXISTS users (
        name          TEXT NOT NULL PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64),
        role          TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
        password_hash TEXT NOT NULL CHECK (password_hash <> ''),
        created       TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS sessions (
        token_sha256 TEXT NOT NULL PRIMARY KEY
                     CHECK (length(token_sha256) = 64 AND token_sha256 NOT GLOB '*[^0-9a-f]*'),
        user_name    TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
        csrf         TEXT NOT NULL CHECK (csrf <> ''),
        created      TEXT NOT NULL,
        expires      TEXT NOT NULL CHECK (expires > created)
    )""",
    "CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user_name)",
    "CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (expires)",
    """CREATE TABLE IF NOT EXISTS api_tokens (
        name         TEXT NOT NULL PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64),
        token_sha256 TEXT NOT NULL UNIQUE
                     CHECK (length(token_sha256) = 64 AND token_sha256 NOT GLOB '*[^0-9a-f]*'),
        role         TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
        created      TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS kiosks (
        kiosk         TEXT NOT NULL PRIMARY KEY CHECK (length(kiosk) BETWEEN 1 AND 100),
        host          TEXT NOT NULL,
        source        TEXT NOT NULL,
        source_state  TEXT NOT NULL,
        fps           REAL NOT NULL CHECK (fps >= 0),
        model_version TEXT NOT NULL,
        started       TEXT NOT NULL,
        last_seen     TEXT NOT NULL,
        day           TEXT NOT NULL
                      CHECK (day GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]'),
        marked        INTEGER NOT NULL CHECK (marked >= 0),
        unknown       INTEGER NOT NULL CHECK (unknown >= 0)
    )""",
)
_OWN_TABLES = {"users", "sessions", "api_tokens", "kiosks"}
_USER_COLUMNS = "name, role, password_hash, created"
_SESSION_COLUMNS = "token_sha256, user_name, csrf, created, expires"
_TOKEN_COLUMNS = "name, token_sha256, role, created"
_KIOSK_COLUMNS = (
    "kiosk, host, source, source_state, fps, model_version, started, last_seen, day, marked, "
    "unknown"
)


# --- boundary checks (shared with store.pg_site) ------------------------------------------------
def _shown(value: object) -> str:
    """``repr(value)``, cut short for a one-line message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_name(value: object, limit: int = MAX_USER_NAME) -> bool:
    """Whether ``value`` is 1..``limit`` printable characters without outer spaces."""
    return (
        isinstance(value, str)
        and 1 <= len(value) <= limit
        and value.isprintable()
        and value == value.strip()
    )


def check_name(value: object, what: str, limit: int = MAX_USER_NAME) -> str:
    """``value`` if :func:`is_name`; ``ValueError`` naming it otherwise."""
    if not is_name(value, limit):
        raise ValueError(
            f"{what} {_shown(value)} must be 1-{limit} printable characters without leading "
            "or trailing spaces"
        )
    return value  # type: ignore[return-value]


def is_sha256(value: object) -> bool:
    """Whether ``value`` is a SHA-256 in 64 lower-case hex digits."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def check_sha256(value: object, what: str = "token_sha256") -> str:
    """``value`` if :func:`is_sha256`; ``ValueError`` otherwise (without showing the value: a
    caller passing the token itself by mistake must not have it logged)."""
    if not is_sha256(value):
        size = f"{len(value)} characters" if isinstance(value, str) else type(value).__name__
        raise ValueError(
            f"{what} ({size}) must be 64 lower-case hex digits: the SHA-256 of the token, "
            "never the token"
        )
    return value  # type: ignore[return-value]


def check_role(value: object) -> str:
    if value not in ROLES:
        raise ValueError(f"role {_shown(value)} must be one of {', '.join(ROLES)}")
    return value  # type: ignore[return-value]


def check_secret(value: object, what: str) -> str:
    """A non-empty string of at most :data:`MAX_SECRET` characters (never shown)."""
    if not isinstance(value, str) or not value or len(value) > MAX_SECRET:
        raise ValueError(f"{what} must be a non-empty string of at most {MAX_SECRET} characters")
    return value


def utc_stamp(value: object, what: str) -> str:
    """ISO-8601 UTC ``value`` in the one stored form ``YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00``;
    ``ValueError`` for anything else (no zone, another offset, not a timestamp)."""
    try:
        stamp = dt.datetime.fromisoformat(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        stamp = None
    if stamp is None or stamp.utcoffset() != dt.timedelta(0):
        raise ValueError(
            f"{what} {_shown(value)} must be an ISO-8601 UTC timestamp such as "
            "2024-05-01T09:00:00+00:00"
        )
    return stamp.replace(tzinfo=dt.timezone.utc).isoformat()


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise ValueError(f"{what} {_shown(value)} must be a string of at most {MAX_TEXT} chars")
    return value


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{what} {_shown(value)} must be a whole number")
    if not 0 <= int(value) <= MAX_COUNT:
        raise ValueError(f"{what}={int(value)} must be between 0 and {MAX_COUNT}")
    return int(value)


def check_user(user: User) -> User:
    """``user`` with its timestamp in the stored form; ``ValueError`` for a bad field."""
    return User(
        check_name(user.name, "user name"),
        check_role(user.role),
        check_secret(user.password_hash, "password_hash"),
        utc_stamp(user.created, "created"),
    )


def check_session(session: Session) -> Session:
    """``session`` checked (its user's name, a hash, a CSRF token, ``created`` < ``expires``)."""
    created = utc_stamp(session.created, "created")
    expires = utc_stamp(session.expires, "expires")
    if expires <= created:
        raise ValueError(f"expires {expires!r} must be later than created {created!r}")
    return Session(
        check_sha256(session.token_sha256),
        check_name(session.user, "user name"),
        check_secret(session.csrf, "csrf"),
        created,
        expires,
    )


def check_token(token: ApiToken) -> ApiToken:
    """``token`` checked (a name, a hash, a role, a timestamp)."""
    return ApiToken(
        check_name(token.name, "token name"),
        check_sha256(token.token_sha256),
        check_role(token.role),
        utc_stamp(token.created, "created"),
    )


def check_heartbeat(beat: Heartbeat) -> Heartbeat:
    """``beat`` checked: a kiosk name, strings, a finite fps >= 0, a day, counts >= 0."""
    kiosk = check_name(beat.kiosk, "kiosk name", MAX_KIOSK_NAME)
    fps = beat.fps
    if (
        isinstance(fps, bool)
        or not isinstance(fps, numbers.Real)
        or not math.isfinite(fps)
        or fps < 0
    ):
        raise ValueError(f"fps {_shown(fps)} must be a finite number >= 0")
    try:
        day_ok = dt.date.fromisoformat(beat.day).isoformat() == beat.day  # type: ignore[arg-type]
    except (TypeError, ValueError):
        day_ok = False
    if not day_ok:
        raise ValueError(f"day {_shown(beat.day)} must be a date YYYY-MM-DD")
    return Heartbeat(
        kiosk=kiosk,
        host=_text(beat.host, "host"),
        source=_text(beat.source, "source"),
        source_state=_text(beat.source_state, "source_state"),
        fps=float(fps),
        model_version=_text(beat.model_version, "model_version"),
        started=utc_stamp(beat.started, "started"),
        last_seen=utc_stamp(beat.last_seen, "last_seen"),
        day=beat.day,
        marked=_count(beat.marked, "marked"),
        unknown=_count(beat.unknown, "unknown"),
    )


def heartbeat_row(beat: Heartbeat) -> tuple:
    """The column values of a (checked) heartbeat, in :data:`_KIOSK_COLUMNS` order."""
    return dataclasses.astuple(beat)


def as_heartbeat(row: Iterable[object]) -> Heartbeat:
    """A heartbeat from a row of :data:`_KIOSK_COLUMNS`."""
    values = list(row)
    values[4], values[9], values[10] = float(values[4]), int(values[9]), int(values[10])
    return Heartbeat(*values)


# --- the database -------------------------------------------------------------------------------
class SQLiteSiteStore(SQLiteFile):
    """The site SQLite file. Use as a context manager; one instance per thread.

    ``create=False`` refuses to make a new file.
    """

    KIND = "a site database"
    SETTING = "site_db_path"
    MISSING = "no dashboard users or API tokens yet (add a user first, or check --workspace)"
    FILE_MODE = 0o600  # password and token hashes: readable by this user only
    CORRUPT_ADVICE = (
        "move it aside (it is left untouched) and run again to start a new one, then add "
        "the dashboard users and API tokens again"
    )

    def __init__(self, path: str | Path, timeout: float, *, create: bool = True) -> None:
        self._open(path, timeout, create)

    # -- lifecycle --------------------------------------------------------------------------
    def describe(self) -> str:
        """The database file's path."""
        return str(self.path)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._conn.close()

    def __enter__(self) -> SQLiteSiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ------------------------------------------------------------------------------
    def _setup(self) -> None:
        self._enable_wal()
        self._read("PRAGMA synchronous = FULL", doing="configuring it")
        self._read("PRAGMA foreign_keys = ON", doing="configuring it")  # per connection
        if self._user_version() == SCHEMA_VERSION:
            return
        with self._transaction("creating its tables") as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == SCHEMA_VERSION:  # another process created it meanwhile
                return
            if version > SCHEMA_VERSION:
                raise DatabaseError(
                    f"{self.path} uses schema version {version}, newer than this program's "
                    f"{SCHEMA_VERSION}; upgrade facenet-attendance",
                    self.path,
                )
            tables = {
                row[0]
                for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if not row[0].startswith("sqlite_")
            }
            if tables - _OWN_TABLES:
                raise DatabaseError(
                    f"{self.path} belongs to another program (tables: "
                    f"{', '.join(sorted(tables))}); set site_db_path to another file",
                    self.path,
                )
            for statement in _TABLES:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {int(SCHEMA_VERSION)}")
        log.info("created site database schema v%d in %s", SCHEMA_VERSION, self.path)

    # -- users -------------------------------------------------------------------------------
    def add_user(self, user: User, *, replace: bool = False) -> bool:
        """Add ``user``; with ``replace`` an existing user's role and hash are replaced (their
        ``created`` is kept) and their sessions ended, in one transaction. False when the name
        exists and ``replace`` is not set."""
        user = check_user(user)
        upsert = (
            "DO UPDATE SET role = excluded.role, password_hash = excluded.password_hash"
            if replace
            else "DO NOTHING"
        )
        ended = 0
        with self._transaction(f"adding user {user.name!r}") as conn:
            added = (
                conn.execute(
                    f"INSERT INTO users ({_USER_COLUMNS}) VALUES (?, ?, ?, ?) "
                    f"ON CONFLICT (name) {upsert}",
                    dataclasses.astuple(user),
                ).rowcount
                == 1
            )
            if replace:
                ended = conn.execute(
                    "DELETE FROM sessions WHERE user_name = ?", (user.name,)
                ).rowcount
        log.info("user %r (%s): %s, %d session(s) ended", user.name, user.role,
                 "set" if added else "exists", ended)  # fmt: skip
        return added

    def user(self, name: str) -> User | None:
        """The user called ``name`` (exact match), or None."""
        if not is_name(name):
            return None
        found = self._read(f"SELECT {_USER_COLUMNS} FROM users WHERE name = ?", (name,))
        return User(*found[0]) if found else None

    def users(self) -> list[User]:
        """Every user, by name."""
        found = self._read(f"SELECT {_USER_COLUMNS} FROM users ORDER BY name")
        return [User(*row) for row in found]

    def remove_user(self, name: str) -> bool:
        """Delete a user and (by the foreign key) their sessions; False when there was none."""
        if not is_name(name):
            return False
        with self._transaction(f"removing user {name!r}") as conn:
            removed = conn.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 1
        log.info("user %r %s", name, "removed" if removed else "not found")
        return removed

    # -- sessions ----------------------------------------------------------------------------
    def add_session(self, session: Session) -> None:
        """Store a new session and delete those expired at its ``created`` time.

        ``ValueError`` when its user does not exist (removed meanwhile)."""
        session = check_session(session)
        with self._transaction(f"signing in {session.user!r}") as conn:
            purged = conn.execute(
                "DELETE FROM sessions WHERE expires <= ?", (session.created,)
            ).rowcount
            known = conn.execute("SELECT 1 FROM users WHERE name = ?", (session.user,)).fetchone()
            if known is None:
                raise ValueError(f"user {session.user!r} does not exist")
            conn.execute(
                f"INSERT INTO sessions ({_SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                dataclasses.astuple(session),
            )
        log.debug("session of %r added, %d expired one(s) deleted", session.user, purged)

    def session(self, token_sha256: str, now: str) -> Session | None:
        """The unexpired session (``expires`` > ``now``, ISO-8601 UTC) with that hash."""
        now = utc_stamp(now, "now")
        if not is_sha256(token_sha256):
            return None
        found = self._read(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE token_sha256 = ? AND expires > ?",
            (token_sha256, now),
        )
        return Session(*found[0]) if found else None

    def remove_session(self, token_sha256: str) -> None:
        """Sign out: delete the session (idempotent)."""
        if not is_sha256(token_sha256):
            return
        with self._transaction("signing out") as conn:
            conn.execute("DELETE FROM sessions WHERE token_sha256 = ?", (token_sha256,))

    # -- API tokens --------------------------------------------------------------------------
    def add_token(self, token: ApiToken) -> bool:
        """Store a token; False when a token of that name exists. ``ValueError`` when another
        token has the same hash (the same secret)."""
        token = check_token(token)
        with self._transaction(f"adding API token {token.name!r}") as conn:
            if conn.execute("SELECT 1 FROM api_tokens WHERE name = ?", (token.name,)).fetchone():
                return False
            if conn.execute(
                "SELECT 1 FROM api_tokens WHERE token_sha256 = ?", (token.token_sha256,)
            ).fetchone():
                raise ValueError(f"API token {token.name!r} has the same secret as another token")
            conn.execute(
                f"INSERT INTO api_tokens ({_TOKEN_COLUMNS}) VALUES (?, ?, ?, ?)",
                dataclasses.astuple(token),
            )
        log.info("API token %r (%s) added", token.name, token.role)
        return True

    def token(self, token_sha256: str) -> ApiToken | None:
        """The token with that hash, or None."""
        if not is_sha256(token_sha256):
            return None
        found = self._read(
            f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE token_sha256 = ?", (token_sha256,)
        )
        return ApiToken(*found[0]) if found else None

    def tokens(self) -> list[ApiToken]:
        """Every token (hashes included), by name."""
        found = self._read(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens ORDER BY name")
        return [ApiToken(*row) for row in found]

    def remove_token(self, name: str) -> bool:
        """Revoke a token by name; False when there was none."""
        if not is_name(name):
            return False
        with self._transaction(f"revoking API token {name!r}") as conn:
            removed = conn.execute("DELETE FROM api_tokens WHERE name = ?", (name,)).rowcount == 1
        log.info("API token %r %s", name, "revoked" if removed else "not found")
        return removed

    # -- kiosk heartbeats --------------------------------------------------------------------
    def beat(self, heartbeat: Heartbeat) -> None:
        """Insert or replace the heartbeat of ``heartbeat.kiosk``."""
        heartbeat = check_heartbeat(heartbeat)
        with self._transaction(f"recording the heartbeat of {heartbeat.kiosk!r}") as conn:
            conn.execute(
                f"INSERT INTO kiosks ({_KIOSK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (kiosk) DO UPDATE SET host = excluded.host, "
                "source = excluded.source, source_state = excluded.source_state, "
                "fps = excluded.fps, model_version = excluded.model_version, "
                "started = excluded.started, last_seen = excluded.last_seen, "
                "day = excluded.day, marked = excluded.marked, unknown = excluded.unknown",
                heartbeat_row(heartbeat),
            )

    def kiosks(self) -> list[Heartbeat]:
        """Every kiosk's last heartbeat, by name."""
        found = self._read(f"SELECT {_KIOSK_COLUMNS} FROM kiosks ORDER BY kiosk")
        return [as_heartbeat(row) for row in found]

    def remove_kiosk(self, kiosk: str) -> bool:
        """Forget a kiosk (retired); False when there was none."""
        if not is_name(kiosk, MAX_KIOSK_NAME):
            return False
        with self._transaction(f"forgetting kiosk {kiosk!r}") as conn:
            removed = conn.execute("DELETE FROM kiosks WHERE kiosk = ?", (kiosk,)).rowcount == 1
        log.info("kiosk %r %s", kiosk, "forgotten" if removed else "not found")
        return removed
