"""The attendance store in SQLite: one row per person and day, plus an audit trail of sightings.

Schema (``PRAGMA user_version`` = 1), created idempotently::

    attendance(EmpName TEXT, Date TEXT 'YYYY-MM-DD', Status 'Present'|'Absent',
               Time TEXT 'HH:MM:SS' (entry), LastSeen TEXT 'HH:MM:SS', UNIQUE(EmpName, Date))
    events(id INTEGER PRIMARY KEY, Timestamp TEXT ISO-8601 local, EmpName TEXT,
           Distance REAL, Source TEXT, Action TEXT)

Several processes (recognisers, ``close-day``, ``report``) may share one file: the journal is
WAL, every write is one short ``BEGIN IMMEDIATE`` transaction and waits up to ``timeout``
seconds for a competing writer. Failures become :class:`DatabaseError` (a ``UserError``) naming
the file and what to do; :class:`store.pending.PendingWriter` keeps sightings that could not be
saved and retries them.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from common.names import validate_name
from store.records import (
    ABSENT,
    ACTION_ABSENT,
    PRESENT,
    AttendanceRow,
    DatabaseError,
    Event,
    MarkResult,
    after_sighting,
    check_audit_action,
    check_mark,
    iso_date,
    local_time,
    where_clause,
)
from store.sqlite_file import SQLiteFile

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_TABLES = (
    """CREATE TABLE IF NOT EXISTS attendance (
        EmpName  TEXT NOT NULL,
        Date     TEXT NOT NULL
                 CHECK (Date GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]'),
        Status   TEXT NOT NULL CHECK (Status IN ('Present', 'Absent')),
        Time     TEXT,
        LastSeen TEXT,
        UNIQUE (EmpName, Date)
    )""",
    "CREATE INDEX IF NOT EXISTS attendance_by_date ON attendance (Date)",
    """CREATE TABLE IF NOT EXISTS events (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        Timestamp TEXT NOT NULL,
        EmpName   TEXT NOT NULL,
        Distance  REAL,
        Source    TEXT NOT NULL,
        Action    TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS events_by_time ON events (Timestamp)",
)
_LEGACY_COLUMNS = {"EmpName", "Date", "Status", "Time"}
_LEGACY_TABLE = "attendance_v0"


# --- the database ---------------------------------------------------------------------------
class SQLiteAttendanceStore(SQLiteFile):
    """The attendance SQLite file. Use as a context manager; one instance per thread.

    ``create=False`` refuses to make a new file (for read-only commands such as ``report``).
    """

    KIND = "an attendance database"
    MISSING = "no attendance recorded yet (run `attendance recognize` first, or check --workspace)"

    def __init__(self, path: str | Path, timeout: float, *, create: bool = True) -> None:
        self._open(path, timeout, create)

    # -- lifecycle --------------------------------------------------------------------------
    def describe(self) -> str:
        """The database file's path."""
        return str(self.path)

    def change_token(self) -> tuple[int, int, int]:
        """(device, inode, ``PRAGMA data_version``): differs once another connection (any
        process) committed, or the file was replaced."""
        stat = os.stat(self.path)
        version = int(self._read("PRAGMA data_version", doing="reading")[0][0])
        return stat.st_dev, stat.st_ino, version

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._conn.close()

    def __enter__(self) -> SQLiteAttendanceStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- schema ------------------------------------------------------------------------------
    def _setup(self) -> None:
        self._enable_wal()
        self._read("PRAGMA synchronous = FULL", doing="configuring it")
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
            self._create_schema(conn)
            conn.execute(f"PRAGMA user_version = {int(SCHEMA_VERSION)}")
        log.info("created attendance database schema v%d in %s", SCHEMA_VERSION, self.path)

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        """Create the tables inside the caller's transaction, upgrading a legacy table."""
        tables = {
            row[0]
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not row[0].startswith("sqlite_")
        }
        legacy = False
        if "attendance" in tables:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(attendance)")}
            if not columns >= _LEGACY_COLUMNS or "LastSeen" in columns:
                raise DatabaseError(
                    f"{self.path} has an 'attendance' table with unexpected columns "
                    f"({', '.join(sorted(columns))}); set db_path to another file",
                    self.path,
                )
            if _LEGACY_TABLE in tables:
                raise DatabaseError(
                    f"{self.path} already holds a table {_LEGACY_TABLE!r}; "
                    "set db_path to another file",
                    self.path,
                )
            conn.execute(f"ALTER TABLE attendance RENAME TO {_LEGACY_TABLE}")
            legacy = True
        elif tables - {"events"}:
            raise DatabaseError(
                f"{self.path} belongs to another program (tables: {', '.join(sorted(tables))}); "
                "set db_path to another file",
                self.path,
            )
        for statement in _TABLES:
            conn.execute(statement)
        if legacy:
            # one row per (person, day): Present wins, earliest entry, latest sighting.
            # The old rows stay in attendance_v0, so nothing is lost.
            conn.execute(
                f"""INSERT INTO attendance (EmpName, Date, Status, Time, LastSeen)
                SELECT EmpName, Date,
                       CASE WHEN SUM(Status = 'Present') > 0 THEN 'Present' ELSE 'Absent' END,
                       MIN(CASE WHEN Status = 'Present' THEN Time END),
                       MAX(CASE WHEN Status = 'Present' THEN Time END)
                FROM {_LEGACY_TABLE} GROUP BY EmpName, Date"""
            )
            log.warning(
                "%s: upgraded a legacy attendance table (old rows kept in %s)",
                self.path,
                _LEGACY_TABLE,
            )

    # -- writes ------------------------------------------------------------------------------
    def mark_present(
        self, name: str, when: dt.datetime, distance: float | None, source: str
    ) -> MarkResult:
        """Record a confirmed sighting of ``name`` at ``when`` (local time).

        The first sighting of the day inserts a Present row with the entry time; later ones
        update LastSeen (and the entry time, if an earlier sighting arrives late); an Absent
        row written by close-day becomes Present. Every call appends one event.
        """
        name = validate_name(name)
        distance = check_mark(distance, source)
        stamp = local_time(when)
        day = stamp.date().isoformat()
        clock = stamp.strftime("%H:%M:%S")
        with self._transaction(f"recording {name!r}") as conn:
            row = conn.execute(
                "SELECT Status, Time, LastSeen FROM attendance WHERE EmpName = ? AND Date = ?",
                (name, day),
            ).fetchone()
            action, entry, last = after_sighting(row, clock)
            if row is None:
                conn.execute(
                    "INSERT INTO attendance (EmpName, Date, Status, Time, LastSeen) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (name, day, PRESENT, entry, last),
                )
            else:
                conn.execute(
                    "UPDATE attendance SET Status = ?, Time = ?, LastSeen = ? "
                    "WHERE EmpName = ? AND Date = ?",
                    (PRESENT, entry, last, name, day),
                )
            cursor = conn.execute(
                "INSERT INTO events (Timestamp, EmpName, Distance, Source, Action) "
                "VALUES (?, ?, ?, ?, ?)",
                (stamp.isoformat(timespec="milliseconds"), name, distance, source, action),
            )
            event_id = int(cursor.lastrowid or 0)
        log.debug("%s %s on %s at %s (event %d)", name, action, day, clock, event_id)
        return MarkResult(name, day, action, entry, last, event_id)

    def log_event(
        self, name: str, when: dt.datetime, distance: float | None, source: str, action: str
    ) -> int:
        """Append one audit event that changes no attendance row; return its id."""
        name = validate_name(name)
        distance = check_mark(distance, source)
        action = check_audit_action(action)
        stamp = local_time(when).isoformat(timespec="milliseconds")
        with self._transaction(f"logging {action} for {name!r}") as conn:
            cursor = conn.execute(
                "INSERT INTO events (Timestamp, EmpName, Distance, Source, Action) "
                "VALUES (?, ?, ?, ?, ?)",
                (stamp, name, distance, source, action),
            )
            return int(cursor.lastrowid or 0)

    def close_day(self, date: dt.date | str, enrolled: Iterable[str]) -> int:
        """Mark every ``enrolled`` person without a row on ``date`` Absent; idempotent.

        Returns how many Absent rows were inserted. Each gets an event with Action ``absent``
        and Source ``close-day:<date>``.
        """
        day = iso_date(date)
        names = sorted({validate_name(name) for name in enrolled})
        now = dt.datetime.now().isoformat(timespec="milliseconds")
        inserted = 0
        with self._transaction(f"closing {day}") as conn:
            for name in names:
                cursor = conn.execute(
                    "INSERT INTO attendance (EmpName, Date, Status, Time, LastSeen) "
                    "VALUES (?, ?, ?, NULL, NULL) ON CONFLICT (EmpName, Date) DO NOTHING",
                    (name, day, ABSENT),
                )
                if cursor.rowcount == 1:
                    inserted += 1
                    conn.execute(
                        "INSERT INTO events (Timestamp, EmpName, Distance, Source, Action) "
                        "VALUES (?, ?, NULL, ?, ?)",
                        (now, name, f"close-day:{day}", ACTION_ABSENT),
                    )
        log.debug("closed %s: %d marked Absent", day, inserted)
        return inserted

    def delete_person(self, name: str) -> tuple[int, int]:
        """Delete every ``attendance`` row and event of ``name`` in one transaction (privacy).

        Returns ``(attendance rows, events)`` deleted; ``(0, 0)`` when there were none.
        """
        name = validate_name(name)
        with self._transaction(f"deleting the history of {name!r}") as conn:
            rows = conn.execute("DELETE FROM attendance WHERE EmpName = ?", (name,)).rowcount
            events = conn.execute("DELETE FROM events WHERE EmpName = ?", (name,)).rowcount
        log.info("deleted %d attendance row(s) and %d event(s) of %s", rows, events, name)
        return rows, events

    # -- reads -------------------------------------------------------------------------------
    def rows(
        self,
        date: dt.date | str | None = None,
        start: dt.date | str | None = None,
        end: dt.date | str | None = None,
        name: str | None = None,
    ) -> list[AttendanceRow]:
        """Attendance rows of one ``date`` or the inclusive range ``start``..``end``."""
        where, params = where_clause("Date", date, start, end, name)
        found = self._read(
            "SELECT EmpName, Date, Status, Time, LastSeen FROM attendance"
            f"{where} ORDER BY Date, EmpName",
            params,
        )
        return [AttendanceRow(*row) for row in found]

    def last_present(self) -> dict[str, AttendanceRow]:
        """Each person's latest Present row (one indexed pass over ``(EmpName, Date)``)."""
        # per person, walk the (EmpName, Date) index backwards to the first Present row:
        # ~30 ms for 1,000 people with a year each (a GROUP BY over all rows took ~0.5 s)
        found = self._read(
            "SELECT a.EmpName, a.Date, a.Status, a.Time, a.LastSeen "
            "FROM (SELECT DISTINCT EmpName FROM attendance) n JOIN attendance a ON a.rowid = "
            "(SELECT rowid FROM attendance WHERE EmpName = n.EmpName AND Status = ? "
            "ORDER BY Date DESC LIMIT 1)",
            (PRESENT,),
        )
        return {row[0]: AttendanceRow(*row) for row in found}

    def events(
        self,
        date: dt.date | str | None = None,
        start: dt.date | str | None = None,
        end: dt.date | str | None = None,
        name: str | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        """Audit events whose timestamp falls on ``date`` or in ``start``..``end`` (the newest
        ``limit`` of them when given), oldest first."""
        where, params = where_clause("Timestamp", date, start, end, name, timestamps=True)
        sql = f"SELECT id, Timestamp, EmpName, Distance, Source, Action FROM events{where}"
        args: list[object] = list(params)
        if limit is not None:
            sql, args = sql + " ORDER BY id DESC LIMIT ?", [*args, int(limit)]
        else:
            sql += " ORDER BY id"
        events = [Event(*row) for row in self._read(sql, args)]
        return events[::-1] if limit is not None else events
