"""One PostgreSQL connection of a store: reconnects with back-off, one-line errors, LISTEN.

Every store object of :mod:`store.pg_attendance` and :mod:`store.pg_embeddings` owns one
:class:`PgConnection`. It connects lazily, checks the schema version on each (re)connection,
and turns driver errors into the project's :class:`~store.records.StoreError` family:

- server unreachable or gone: a retryable error naming host and port; the next call
  reconnects, no sooner than the back-off allows (0.5 s doubling to 15 s);
- missing or outdated schema: ``run attendance db upgrade``; newer schema: upgrade the program;
- a permission the role lacks: names the role and the operation.

The password (from the URL, ``PGPASSWORD`` or ``~/.pgpass``, which libpq reads itself) never
appears in a message: URLs are shown through :func:`common.urls.redact_url` and any error text
is scrubbed of it. The connection runs in autocommit mode; writes use :meth:`transaction`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from common.urls import redact_url
from store.pg_schema import SCHEMA_VERSION, current_version
from store.records import SchemaMismatch, StoreError

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

BACKOFF_START = 0.5  # seconds before the first reconnection attempt after a failure
BACKOFF_MAX = 15.0
# A reconnection blocks the caller (the recogniser's frame loop) at most this long; a server
# that answers nothing (a dead host, a firewall dropping packets) then costs one such stall per
# back-off period instead of the full start-up timeout.
RECONNECT_TIMEOUT = 2
# Errors worth retrying (SQLSTATE classes or codes): connection problems, a transaction the
# server rolled back (deadlock, serialization), a read-only server after a fail-over, too few
# resources, an administrator's shutdown or a cancelled statement.
RETRYABLE_SQLSTATES = ("08", "40", "53", "57", "25006", "55P03")
RECONNECT_SQLSTATES = ("25006", "57P01", "57P02", "57P03")


def url_parts(url: str) -> tuple[str, str, str | None]:
    """``(host, port, password)`` of a ``postgresql://`` URL as libpq reads it (several hosts
    stay comma-separated; a password may also be a query parameter)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:  # ProgrammingError: not a connection string
        return "?", "?", None
    host = str(params.get("host") or "localhost")
    port = str(params.get("port") or 5432)
    password = params.get("password")
    return host, port, str(password) if password else None


class PgConnection:
    """A lazily opened, self-healing connection to the store at ``url``.

    ``errors(kind)`` is the error class raised for failures (``DatabaseError`` family for
    attendance, ``GalleryError`` for embeddings); ``unavailable`` the retryable one for a
    server that cannot be reached. ``listen`` names channels to LISTEN on after each connect.
    """

    def __init__(
        self,
        url: str,
        timeout: float,
        *,
        error: Callable[[str], StoreError],
        unavailable: Callable[[str], StoreError],
        listen: tuple[str, ...] = (),
        check_schema: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.host, self.port, self._password = url_parts(url)
        self.shown = self._scrub(redact_url(url))
        self.timeout = max(1.0, float(timeout))
        self._error = error
        self._unavailable = unavailable
        self.listen = listen
        self.check_schema = check_schema
        self._clock = clock
        self._conn: psycopg.Connection | None = None
        self._backoff = BACKOFF_START
        self._next_attempt = 0.0
        self.connections = 0  # how many times a connection was made (a change token part)

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._conn is not None:
            import psycopg

            with contextlib.suppress(psycopg.Error, OSError):  # a connection already broken
                self._conn.close()
            self._conn = None

    @property
    def conn(self) -> psycopg.Connection:
        """The open connection, (re)connecting first when needed (respecting the back-off)."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        now = self._clock()
        if now < self._next_attempt:
            # the same words at every call, so a caller that logs each new message once
            # (the gallery watcher) does not log every poll of an outage
            raise self._unavailable(
                f"the store at {self.where()} is unreachable; retrying with back-off "
                f"(up to every {BACKOFF_MAX:g} s)"
            )
        try:
            self._conn = self._connect()
        except BaseException:
            self._next_attempt = self._clock() + self._backoff
            self._backoff = min(BACKOFF_MAX, self._backoff * 2)
            raise
        self._backoff = BACKOFF_START
        self._next_attempt = 0.0
        self.connections += 1
        return self._conn

    def _connect(self) -> psycopg.Connection:
        import psycopg

        wait = self.timeout if self.connections == 0 else min(self.timeout, RECONNECT_TIMEOUT)
        try:
            conn = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=max(1, round(wait)),
                application_name="facenet-attendance",
                # a peer that vanished without closing is noticed in seconds, not hours
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=3,
                tcp_user_timeout=int(self.timeout * 1000),
                options=f"-c statement_timeout={int(self.timeout * 1000)}",
            )
        except psycopg.Error as exc:
            raise self._unavailable(
                f"cannot connect to the store at {self.where()}: {self._clean(exc)}; check "
                "that the server runs and the URL, user and password are right"
            ) from None
        try:
            if self.check_schema:
                self._check_schema(conn)
            for channel in self.listen:
                conn.execute(f"LISTEN {channel}")  # channel names are this package's constants
        except psycopg.Error as exc:
            conn.close()
            raise self._translate(exc, "opening the store", conn) from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_schema(self, conn: psycopg.Connection) -> None:
        version = current_version(conn)
        if version is None or version < SCHEMA_VERSION:
            found = "has no attendance schema" if not version else f"has schema {version}"
            raise SchemaMismatch(
                f"the store {self.shown} {found}, this program needs {SCHEMA_VERSION}; run "
                f"`attendance db upgrade --store {self.shown}` as its owner first"
            )
        if version > SCHEMA_VERSION:
            raise SchemaMismatch(
                f"the store {self.shown} has schema {version}, newer than this program's "
                f"{SCHEMA_VERSION}; upgrade facenet-attendance on this machine"
            )

    def where(self) -> str:
        """``host:port`` of the server, for messages."""
        return f"{self.host}:{self.port}"

    # -- running statements -----------------------------------------------------------------
    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[psycopg.Connection]:
        """The connection; driver errors become one-line store errors (and a lost
        connection is dropped, to be reopened by the next call)."""
        import psycopg

        conn = None
        try:
            conn = self.conn
            yield conn
        except psycopg.Error as exc:
            raise self._translate(exc, doing, conn) from None

    def _translate(
        self, exc: BaseException, doing: str, conn: psycopg.Connection | None
    ) -> StoreError:
        """The store error for driver error ``exc`` (a lost connection is dropped, to be
        reopened by the next call after the back-off)."""
        from psycopg import errors as pgerr

        state = str(getattr(exc, "sqlstate", None) or "")
        # a read-only server (after a fail-over) or one shutting down: connect again, so a
        # multi-host URL (target_session_attrs=read-write) finds the new primary
        lost = conn is None or conn.closed or conn.broken or state in RECONNECT_SQLSTATES
        if lost or state.startswith(RETRYABLE_SQLSTATES):
            if lost:
                self.close()
                self._next_attempt = self._clock() + self._backoff
                self._backoff = min(BACKOFF_MAX, self._backoff * 2)
            what = "lost the connection to" if lost else "a passing failure of"
            return self._unavailable(
                f"{what} the store at {self.where()} while {doing} ({self._clean(exc)}); "
                "it is retried"
            )
        if isinstance(exc, pgerr.InsufficientPrivilege):
            return self._error(
                f"{self.shown}: the database role may not do this ({doing}): "
                f"{self._clean(exc)}; use a role with that grant (README: Several kiosks)"
            )
        if isinstance(exc, pgerr.UndefinedTable):
            return SchemaMismatch(
                f"the store {self.shown} lacks a table while {doing}; run "
                f"`attendance db upgrade --store {self.shown}`"
            )
        return self._error(f"{self.shown}: {doing} failed: {self._clean(exc)}")

    @contextlib.contextmanager
    def transaction(self, doing: str) -> Iterator[psycopg.Connection]:
        """One transaction (committed at the end, rolled back on any error)."""
        with self.errors(doing) as conn, conn.transaction():
            yield conn

    def notified(self) -> list[str]:
        """Payloads of the notifications received since the last call (never blocks).

        Raises the retryable error when the connection is lost; the caller then treats
        everything as changed, since notifications may have been missed meanwhile.
        """
        with self.errors("reading notifications") as conn:
            return [n.payload for n in conn.notifies(timeout=0)]

    def _clean(self, exc: BaseException) -> str:
        """The error's first line, without the password."""
        return self._scrub((str(exc).strip().splitlines() or [type(exc).__name__])[0])

    def _scrub(self, text: str) -> str:
        """``text`` with the password (as libpq reads it from the URL) replaced by ``***``."""
        return text.replace(self._password, "***") if self._password else text
