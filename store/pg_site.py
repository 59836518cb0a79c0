"""The site store in PostgreSQL: dashboard users, sessions, API tokens and kiosk heartbeats.

Same behaviour as :mod:`store.sqlite_site` (whose checks it uses: invalid values raise
``ValueError``, timestamps are stored in one ISO-8601 UTC form so text order is time order) on
the tables of schema migration 4 (:mod:`store.pg_schema`): ``site_users``, ``site_sessions``,
``site_api_tokens`` and ``kiosks``. A kiosk's role may only read and write ``kiosks``
(:func:`store.pg_schema.role_grants`); anything else it tries fails with a message naming the
missing grant. A server that cannot be reached raises the retryable
:class:`~store.records.DatabaseUnavailable`; the next call reconnects.
"""

from __future__ import annotations

import dataclasses
import logging

from store.pg_connection import PgConnection
from store.records import (
    ApiToken,
    DatabaseError,
    DatabaseUnavailable,
    Heartbeat,
    Session,
    User,
)
from store.sqlite_site import (
    MAX_KIOSK_NAME,
    as_heartbeat,
    check_heartbeat,
    check_session,
    check_token,
    check_user,
    heartbeat_row,
    is_name,
    is_sha256,
    utc_stamp,
)

log = logging.getLogger(__name__)

_USER_COLUMNS = "name, role, password_hash, created"
_SESSION_COLUMNS = "token_sha256, user_name, csrf, created, expires"
_TOKEN_COLUMNS = "name, token_sha256, role, created"
_KIOSK_COLUMNS = (
    "kiosk, host, source, source_state, fps, model_version, started, last_seen, day, marked, "
    "unknown"
)


class PostgresSiteStore:
    """Users, sessions, API tokens and heartbeats in the PostgreSQL database at ``url``."""

    def __init__(self, url: str, timeout: float) -> None:
        self.db = PgConnection(
            url,
            timeout,
            error=lambda message: DatabaseError(message),
            unavailable=lambda message: DatabaseUnavailable(message),
        )
        self.db.conn  # noqa: B018 - connect now: a wrong URL or schema fails at start-up

    # -- lifecycle ---------------------------------------------------------------------------
    def describe(self) -> str:
        """The URL without its password."""
        return self.db.shown

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self.db.close()

    def __enter__(self) -> PostgresSiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- users -------------------------------------------------------------------------------
    def add_user(self, user: User, *, replace: bool = False) -> bool:
        """Add ``user``; with ``replace`` an existing user's role and hash are replaced (their
        ``created`` is kept) and their sessions ended, in one transaction. False when the name
        exists and ``replace`` is not set."""
        user = check_user(user)
        upsert = (
            "DO UPDATE SET role = EXCLUDED.role, password_hash = EXCLUDED.password_hash"
            if replace
            else "DO NOTHING"
        )
        ended = 0
        with self.db.transaction(f"adding user {user.name!r}") as conn:
            added = (
                conn.execute(
                    f"INSERT INTO site_users ({_USER_COLUMNS}) VALUES (%s, %s, %s, %s) "
                    f"ON CONFLICT (name) {upsert}",
                    dataclasses.astuple(user),
                ).rowcount
                == 1
            )
            if replace:
                ended = conn.execute(
                    "DELETE FROM site_sessions WHERE user_name = %s", (user.name,)
                ).rowcount
        log.info("user %r (%s): %s, %d session(s) ended", user.name, user.role,
                 "set" if added else "exists", ended)  # fmt: skip
        return added

    def user(self, name: str) -> User | None:
        """The user called ``name`` (exact match), or None."""
        if not is_name(name):
            return None
        with self.db.errors("reading users") as conn:
            found = conn.execute(
                f"SELECT {_USER_COLUMNS} FROM site_users WHERE name = %s", (name,)
            ).fetchone()
        return User(*found) if found else None

    def users(self) -> list[User]:
        """Every user, by name."""
        with self.db.errors("reading users") as conn:
            found = conn.execute(f"SELECT {_USER_COLUMNS} FROM site_users ORDER BY name").fetchall()
        return [User(*row) for row in found]

    def remove_user(self, name: str) -> bool:
        """Delete a user and (by the foreign key) their sessions; False when there was none."""
        if not is_name(name):
            return False
        with self.db.errors(f"removing user {name!r}") as conn:
            removed = conn.execute("DELETE FROM site_users WHERE name = %s", (name,)).rowcount == 1
        log.info("user %r %s", name, "removed" if removed else "not found")
        return removed

    # -- sessions ----------------------------------------------------------------------------
    def add_session(self, session: Session) -> None:
        """Store a new session and delete those expired at its ``created`` time.

        ``ValueError`` when its user does not exist (removed meanwhile)."""
        session = check_session(session)
        with self.db.transaction(f"signing in {session.user!r}") as conn:
            purged = conn.execute(
                "DELETE FROM site_sessions WHERE expires <= %s", (session.created,)
            ).rowcount
            # the lock keeps the user from being removed before this commits
            known = conn.execute(
                "SELECT 1 FROM site_users WHERE name = %s FOR KEY SHARE", (session.user,)
            ).fetchone()
            if known is None:
                raise ValueError(f"user {session.user!r} does not exist")
            conn.execute(
                f"INSERT INTO site_sessions ({_SESSION_COLUMNS}) VALUES (%s, %s, %s, %s, %s)",
                dataclasses.astuple(session),
            )
        log.debug("session of %r added, %d expired one(s) deleted", session.user, purged)

    def session(self, token_sha256: str, now: str) -> Session | None:
        """The unexpired session (``expires`` > ``now``, ISO-8601 UTC) with that hash."""
        now = utc_stamp(now, "now")
        if not is_sha256(token_sha256):
            return None
        with self.db.errors("reading sessions") as conn:
            found = conn.execute(
                f"SELECT {_SESSION_COLUMNS} FROM site_sessions "
                "WHERE token_sha256 = %s AND expires > %s",
                (token_sha256, now),
            ).fetchone()
        return Session(*found) if found else None

    def remove_session(self, token_sha256: str) -> None:
        """Sign out: delete the session (idempotent)."""
        if not is_sha256(token_sha256):
            return
        with self.db.errors("signing out") as conn:
            conn.execute("DELETE FROM site_sessions WHERE token_sha256 = %s", (token_sha256,))

    # -- API tokens --------------------------------------------------------------------------
    def add_token(self, token: ApiToken) -> bool:
        """Store a token; False when a token of that name exists. ``ValueError`` when another
        token has the same hash (the same secret)."""
        token = check_token(token)
        with self.db.transaction(f"adding API token {token.name!r}") as conn:
            if conn.execute(
                "SELECT 1 FROM site_api_tokens WHERE name = %s", (token.name,)
            ).fetchone():
                return False
            if conn.execute(
                "SELECT 1 FROM site_api_tokens WHERE token_sha256 = %s", (token.token_sha256,)
            ).fetchone():
                raise ValueError(f"API token {token.name!r} has the same secret as another token")
            added = (
                conn.execute(  # a token of that name added meanwhile: False, not an error
                    f"INSERT INTO site_api_tokens ({_TOKEN_COLUMNS}) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (name) DO NOTHING",
                    dataclasses.astuple(token),
                ).rowcount
                == 1
            )
        log.info("API token %r (%s) %s", token.name, token.role, "added" if added else "exists")
        return added

    def token(self, token_sha256: str) -> ApiToken | None:
        """The token with that hash, or None."""
        if not is_sha256(token_sha256):
            return None
        with self.db.errors("reading API tokens") as conn:
            found = conn.execute(
                f"SELECT {_TOKEN_COLUMNS} FROM site_api_tokens WHERE token_sha256 = %s",
                (token_sha256,),
            ).fetchone()
        return ApiToken(*found) if found else None

    def tokens(self) -> list[ApiToken]:
        """Every token (hashes included), by name."""
        with self.db.errors("reading API tokens") as conn:
            found = conn.execute(
                f"SELECT {_TOKEN_COLUMNS} FROM site_api_tokens ORDER BY name"
            ).fetchall()
        return [ApiToken(*row) for row in found]

    def remove_token(self, name: str) -> bool:
        """Revoke a token by name; False when there was none."""
        if not is_name(name):
            return False
        with self.db.errors(f"revoking API token {name!r}") as conn:
            removed = (
                conn.execute("DELETE FROM site_api_tokens WHERE name = %s", (name,)).rowcount == 1
            )
        log.info("API token %r %s", name, "revoked" if removed else "not found")
        return removed

    # -- kiosk heartbeats --------------------------------------------------------------------
    def beat(self, heartbeat: Heartbeat) -> None:
        """Insert or replace the heartbeat of ``heartbeat.kiosk`` (one statement)."""
        heartbeat = check_heartbeat(heartbeat)
        with self.db.errors(f"recording the heartbeat of {heartbeat.kiosk!r}") as conn:
            conn.execute(
                f"INSERT INTO kiosks ({_KIOSK_COLUMNS}) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (kiosk) DO UPDATE SET host = EXCLUDED.host, "
                "source = EXCLUDED.source, source_state = EXCLUDED.source_state, "
                "fps = EXCLUDED.fps, model_version = EXCLUDED.model_version, "
                "started = EXCLUDED.started, last_seen = EXCLUDED.last_seen, "
                "day = EXCLUDED.day, marked = EXCLUDED.marked, unknown = EXCLUDED.unknown",
                heartbeat_row(heartbeat),
            )

    def kiosks(self) -> list[Heartbeat]:
        """Every kiosk's last heartbeat, by name."""
        with self.db.errors("reading kiosk heartbeats") as conn:
            found = conn.execute(f"SELECT {_KIOSK_COLUMNS} FROM kiosks ORDER BY kiosk").fetchall()
        return [as_heartbeat(row) for row in found]

    def remove_kiosk(self, kiosk: str) -> bool:
        """Forget a kiosk (retired); False when there was none."""
        if not is_name(kiosk, MAX_KIOSK_NAME):
            return False
        with self.db.errors(f"forgetting kiosk {kiosk!r}") as conn:
            removed = conn.execute("DELETE FROM kiosks WHERE kiosk = %s", (kiosk,)).rowcount == 1
        log.info("kiosk %r %s", kiosk, "forgotten" if removed else "not found")
        return removed
