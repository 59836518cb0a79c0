"""The attendance store in PostgreSQL, shared by several kiosks.

Same rows and events as :mod:`store.sqlite_attendance` (the schema is
:mod:`store.pg_schema`). Once a day per person across all kiosks: ``(EmpName, Date)`` is the
primary key, the first sighting inserts with ``ON CONFLICT DO NOTHING`` and a later one locks
the row and keeps the earliest entry time, so two kiosks seeing someone at once write one row.
A server that cannot be reached raises :class:`~store.records.DatabaseUnavailable`, which
:class:`store.pending.PendingWriter` journals and retries.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING

from common.names import validate_name
from store.pg_connection import PgConnection
from store.pg_schema import ROWS_CHANNEL
from store.records import (
    ABSENT,
    ACTION_ABSENT,
    ACTION_REMOVED,
    PRESENT,
    AttendanceRow,
    DatabaseError,
    DatabaseUnavailable,
    Event,
    MarkResult,
    after_sighting,
    check_audit_action,
    check_mark,
    iso_date,
    local_time,
    where_clause,
)

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

_INSERT_EVENT = (
    "INSERT INTO events (Timestamp, EmpName, Distance, Source, Action) "
    "VALUES (%s, %s, %s, %s, %s) RETURNING id"
)


class PostgresAttendanceStore:
    """Attendance rows and the audit trail in the PostgreSQL database at ``url``."""

    def __init__(self, url: str, timeout: float, *, listen: bool = False) -> None:
        self.db = PgConnection(
            url,
            timeout,
            error=lambda message: DatabaseError(message),
            unavailable=lambda message: DatabaseUnavailable(message),
            listen=(ROWS_CHANNEL,) if listen else (),
        )
        self.db.conn  # noqa: B018 - connect now: a wrong URL or schema fails at start-up
        self._changes = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def describe(self) -> str:
        """The URL without its password."""
        return self.db.shown

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self.db.close()

    def __enter__(self) -> PostgresAttendanceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def change_token(self) -> Hashable:
        """Differs once rows changed (a notification arrived) or the connection was remade.

        Only meaningful for a store opened with ``listen=True``; otherwise it counts
        connections only.
        """
        self._changes += len(self.db.notified())
        return self.db.connections, self._changes

    # -- writes ------------------------------------------------------------------------------
    def mark_present(
        self, name: str, when: dt.datetime, distance: float | None, source: str
    ) -> MarkResult:
        """Record a confirmed sighting (see :meth:`SQLiteAttendanceStore.mark_present`)."""
        name = validate_name(name)
        distance = check_mark(distance, source)
        stamp = local_time(when)
        day = stamp.date().isoformat()
        clock = stamp.strftime("%H:%M:%S")
        with self.db.transaction(f"recording {name!r}") as conn:
            if _removed(conn, name, stamp):
                return MarkResult(name, day, ACTION_REMOVED, "", "", 0)
            row, inserted = None, False
            for _ in range(3):  # the day's row may be deleted (a purge) between the two
                inserted = bool(
                    conn.execute(
                        "INSERT INTO attendance (EmpName, Date, Status, Time, LastSeen) "
                        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (EmpName, Date) DO NOTHING",
                        (name, day, PRESENT, clock, clock),
                    ).rowcount
                )
                if inserted:
                    break
                row = conn.execute(
                    "SELECT Status, Time, LastSeen FROM attendance "
                    "WHERE EmpName = %s AND Date = %s FOR UPDATE",
                    (name, day),
                ).fetchone()
                if row is not None:
                    break
            if row is None and not inserted:
                raise DatabaseUnavailable(
                    f"{self.db.shown}: the row of {name!r} on {day} kept changing while "
                    "recording it; it is retried"
                )
            action, entry, last = after_sighting(row, clock)
            if row is not None:
                conn.execute(
                    "UPDATE attendance SET Status = %s, Time = %s, LastSeen = %s "
                    "WHERE EmpName = %s AND Date = %s",
                    (PRESENT, entry, last, name, day),
                )
            event_id = conn.execute(
                _INSERT_EVENT,
                (stamp.isoformat(timespec="milliseconds"), name, distance, source, action),
            ).fetchone()[0]
        return MarkResult(name, day, action, entry, last, int(event_id))

    def log_event(
        self, name: str, when: dt.datetime, distance: float | None, source: str, action: str
    ) -> int:
        """Append one audit event that changes no attendance row; return its id."""
        name = validate_name(name)
        distance = check_mark(distance, source)
        action = check_audit_action(action)
        stamp = local_time(when)
        with self.db.transaction(f"logging {action} for {name!r}") as conn:
            if _removed(conn, name, stamp):
                return 0
            text = stamp.isoformat(timespec="milliseconds")
            row = conn.execute(_INSERT_EVENT, (text, name, distance, source, action)).fetchone()
        return int(row[0])

    def close_day(self, date: dt.date | str, enrolled: Iterable[str]) -> int:
        """Mark every ``enrolled`` person without a row on ``date`` Absent; idempotent."""
        day = iso_date(date)
        names = sorted({validate_name(name) for name in enrolled})
        now = dt.datetime.now().isoformat(timespec="milliseconds")
        inserted = 0
        with self.db.transaction(f"closing {day}") as conn:
            for name in names:
                added = conn.execute(
                    "INSERT INTO attendance (EmpName, Date, Status, Time, LastSeen) "
                    "VALUES (%s, %s, %s, NULL, NULL) ON CONFLICT (EmpName, Date) DO NOTHING",
                    (name, day, ABSENT),
                ).rowcount
                if added:
                    inserted += 1
                    conn.execute(
                        _INSERT_EVENT, (now, name, None, f"close-day:{day}", ACTION_ABSENT)
                    )
        return inserted

    def delete_person(self, name: str) -> tuple[int, int]:
        """Delete every attendance row and event of ``name`` in one transaction."""
        name = validate_name(name)
        with self.db.transaction(f"deleting the history of {name!r}") as conn:
            return delete_history(conn, name)

    # -- moving an installation (attendance db copy) ----------------------------------------
    def import_rows(self, rows: Iterable[AttendanceRow]) -> None:
        """Merge attendance rows copied from another store, in one transaction; rerunning
        changes nothing. A day already here keeps Present over Absent, the earlier entry and
        the later last sighting (as two kiosks' sightings would merge)."""
        with self.db.transaction("copying attendance rows") as conn:
            conn.cursor().executemany(
                "INSERT INTO attendance AS a (EmpName, Date, Status, Time, LastSeen) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (EmpName, Date) DO UPDATE SET "
                "Status = CASE WHEN a.Status = 'Present' OR EXCLUDED.Status = 'Present' "
                "THEN 'Present' ELSE 'Absent' END, "
                "Time = LEAST(a.Time, EXCLUDED.Time), "
                "LastSeen = GREATEST(a.LastSeen, EXCLUDED.LastSeen)",
                [(r.name, r.date, r.status, r.time, r.last_seen) for r in rows],
            )

    def import_events(self, events: Iterable[Event]) -> None:
        """Add audit events copied from another store, in one transaction: each distinct
        event (time, person, distance, source, action) until the store holds as many of it as
        the source, so rerunning adds nothing and identical events are all kept."""
        counts = Counter((e.timestamp, e.name, e.distance, e.source, e.action) for e in events)
        with self.db.transaction("copying events") as conn:
            conn.cursor().executemany(
                "INSERT INTO events (Timestamp, EmpName, Distance, Source, Action) "
                "SELECT %(t)s, %(n)s, %(d)s, %(s)s, %(a)s FROM generate_series(1, %(k)s - "
                "(SELECT COUNT(*) FROM events WHERE Timestamp = %(t)s AND EmpName = %(n)s "
                "AND Source = %(s)s AND Action = %(a)s "
                "AND Distance IS NOT DISTINCT FROM %(d)s::double precision))",
                [
                    {"t": t, "n": n, "d": d, "s": s, "a": a, "k": k}
                    for (t, n, d, s, a), k in counts.items()
                ],
            )

    # -- reads -------------------------------------------------------------------------------
    def rows(
        self,
        date: dt.date | str | None = None,
        start: dt.date | str | None = None,
        end: dt.date | str | None = None,
        name: str | None = None,
    ) -> list[AttendanceRow]:
        """Attendance rows of one ``date`` or the inclusive range ``start``..``end``."""
        where, params = where_clause("Date", date, start, end, name, placeholder="%s")
        with self.db.errors("reading attendance") as conn:
            found = conn.execute(
                "SELECT EmpName, Date, Status, Time, LastSeen FROM attendance"
                f"{where} ORDER BY Date, EmpName",
                params,
            ).fetchall()
        return [AttendanceRow(*row) for row in found]

    def last_present(self) -> dict[str, AttendanceRow]:
        """Each person's latest Present row."""
        with self.db.errors("reading attendance") as conn:
            found = conn.execute(
                "SELECT DISTINCT ON (EmpName) EmpName, Date, Status, Time, LastSeen "
                "FROM attendance WHERE Status = %s ORDER BY EmpName, Date DESC",
                (PRESENT,),
            ).fetchall()
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
        where, params = where_clause(
            "Timestamp", date, start, end, name, placeholder="%s", timestamps=True
        )
        sql = f"SELECT id, Timestamp, EmpName, Distance, Source, Action FROM events{where}"
        args: list[object] = list(params)
        if limit is not None:
            sql += " ORDER BY id DESC LIMIT %s"
            args.append(int(limit))
        else:
            sql += " ORDER BY id"
        with self.db.errors("reading events") as conn:
            found = conn.execute(sql, args).fetchall()
        events = [Event(*row) for row in found]
        return events[::-1] if limit is not None else events


def _removed(conn: psycopg.Connection, name: str, stamp: dt.datetime) -> bool:
    """Is a sighting of ``name`` at local time ``stamp`` not to be recorded? True when the
    person was removed from the store after it, or removed with their history purged (an
    offline kiosk's journal must not bring a purged history back)."""
    found = conn.execute(
        "SELECT 1 FROM removed_people WHERE identity = %s AND (purged OR removed_at <= %s)",
        (name, stamp.astimezone()),
    ).fetchone()
    if found is not None:
        log.warning("%s was removed from the store: the sighting at %s is not recorded", name,
                    stamp.isoformat(timespec="seconds"))  # fmt: skip
    return found is not None


def delete_history(conn: psycopg.Connection, name: str) -> tuple[int, int]:
    """Delete ``name``'s attendance rows and events inside the caller's transaction."""
    rows = conn.execute("DELETE FROM attendance WHERE EmpName = %s", (name,)).rowcount
    events = conn.execute("DELETE FROM events WHERE EmpName = %s", (name,)).rowcount
    log.info("deleted %d attendance row(s) and %d event(s) of %s", rows, events, name)
    return rows, events
