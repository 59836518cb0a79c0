"""The attendance database: rows, events, close-day, errors, concurrency and the pending queue."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import subprocess
import sys
import time
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

from common.errors import UserError
from common.names import InvalidName
from store.pending import PendingWriter
from store.records import (
    ABSENT,
    ACTION_ABSENT,
    ACTION_ABSENT_TO_PRESENT,
    ACTION_PRESENT,
    ACTION_SEEN,
    PRESENT,
    AttendanceRow,
    DatabaseCorrupt,
    DatabaseError,
    DatabaseLocked,
    DatabaseUnwritable,
)
from store.sqlite_attendance import SCHEMA_VERSION
from store.sqlite_attendance import SQLiteAttendanceStore as AttendanceDB

REPO = Path(__file__).resolve().parents[1]
DAY = dt.date(2024, 5, 1)


def at(hour: int, minute: int = 0, second: int = 0, day: dt.date = DAY) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, second)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "attendance.db"


@pytest.fixture
def db(db_path: Path):
    with AttendanceDB(db_path, timeout=2.0) as handle:
        yield handle


class Locker:
    """Another connection holding the write lock (an exclusive transaction) until released."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(str(path), isolation_level=None)
        self.conn.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        self.conn.execute("COMMIT")
        self.conn.close()


# --- schema -----------------------------------------------------------------------------------
def test_schema_has_the_original_columns_and_is_versioned(db: AttendanceDB, db_path: Path):
    conn = sqlite3.connect(db_path)
    columns = [row[1] for row in conn.execute("PRAGMA table_info(attendance)")]
    assert columns == ["EmpName", "Date", "Status", "Time", "LastSeen"]
    events = [row[1] for row in conn.execute("PRAGMA table_info(events)")]
    assert events == ["id", "Timestamp", "EmpName", "Distance", "Source", "Action"]
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_reopening_keeps_data(db_path: Path):
    with AttendanceDB(db_path, timeout=10.0) as first:
        first.mark_present("Ada", at(9), 0.4, "cam")
    with AttendanceDB(db_path, timeout=10.0) as second:
        assert [r.name for r in second.rows(DAY)] == ["Ada"]


def test_constraints_reject_duplicates_and_bad_status(db: AttendanceDB, db_path: Path):
    db.mark_present("Ada", at(9), 0.4, "cam")
    conn = sqlite3.connect(db_path)
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO attendance (EmpName, Date, Status, Time) VALUES (?, ?, ?, ?)",
            ("Ada", DAY.isoformat(), PRESENT, "10:00:00"),
        )
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO attendance (EmpName, Date, Status) VALUES (?, ?, ?)",
            ("Bob", DAY.isoformat(), "Late"),
        )
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO attendance (EmpName, Date, Status) VALUES (?, ?, ?)",
            ("Bob", "01/05/2024", ABSENT),
        )
    conn.close()


def test_legacy_table_is_upgraded_without_losing_rows(db_path: Path):
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE attendance (EmpName TEXT, Date TEXT, Status TEXT, Time TEXT)")
    conn.executemany(
        "INSERT INTO attendance VALUES (?, ?, ?, ?)",
        [
            ("Ada", "2024-05-01", "Present", "09:10:00"),
            ("Ada", "2024-05-01", "Present", "09:00:00"),  # duplicate the old code wrote
            ("Bob", "2024-05-01", "Absent", None),
            ("Bob", "2024-05-01", "Present", "11:00:00"),
            ("Cy", "2024-05-01", "Absent", None),
        ],
    )
    conn.commit()
    conn.close()
    with AttendanceDB(db_path, timeout=10.0) as db:
        assert db.rows(DAY) == [
            AttendanceRow("Ada", "2024-05-01", PRESENT, "09:00:00", "09:10:00"),
            AttendanceRow("Bob", "2024-05-01", PRESENT, "11:00:00", "11:00:00"),
            AttendanceRow("Cy", "2024-05-01", ABSENT, None, None),
        ]
        assert db.mark_present("Ada", at(12), 0.3, "cam").action == ACTION_SEEN
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT COUNT(*) FROM attendance_v0").fetchone()[0] == 5
    conn.close()


def test_database_of_another_program_is_refused_and_untouched(db_path: Path):
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE embeddings (sha TEXT, vector BLOB)")
    conn.commit()
    conn.close()
    with pytest.raises(DatabaseError, match="another program") as info:
        AttendanceDB(db_path, timeout=10.0)
    assert str(db_path) in str(info.value)
    conn = sqlite3.connect(db_path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert tables == {"embeddings"}


def test_newer_schema_is_refused(db_path: Path):
    with AttendanceDB(db_path, timeout=10.0):
        pass
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(DatabaseError, match="newer"):
        AttendanceDB(db_path, timeout=10.0)


def test_corrupt_file_gives_one_line_error_and_is_left_untouched(db_path: Path):
    garbage = b"this is not an sqlite database, just some bytes\n" * 200
    db_path.write_bytes(garbage)
    with pytest.raises(DatabaseCorrupt) as info:
        AttendanceDB(db_path, timeout=10.0)
    message = str(info.value)
    assert str(db_path) in message and "move it aside" in message and "\n" not in message
    assert isinstance(info.value, UserError)
    assert db_path.read_bytes() == garbage


def test_missing_file_with_create_false(db_path: Path):
    with pytest.raises(DatabaseError, match="does not exist"):
        AttendanceDB(db_path, timeout=10.0, create=False)
    assert not db_path.exists()


def test_folder_as_database_path(tmp_path: Path):
    with pytest.raises(DatabaseError, match="is a folder"):
        AttendanceDB(tmp_path, timeout=10.0)


def test_folder_that_cannot_be_created(tmp_path: Path):
    (tmp_path / "taken").write_text("a file, not a folder", encoding="utf-8")
    with pytest.raises(DatabaseUnwritable, match="cannot create the folder") as info:
        AttendanceDB(tmp_path / "taken" / "attendance.db", timeout=10.0)
    assert str(tmp_path / "taken") in str(info.value)


def test_database_in_a_new_subfolder_is_created(tmp_path: Path):
    with AttendanceDB(tmp_path / "data" / "att.db", timeout=10.0) as db:
        db.mark_present("Ada", at(9), 0.4, "cam")
    assert (tmp_path / "data" / "att.db").is_file()


# --- marking ---------------------------------------------------------------------------------
def test_first_sighting_inserts_present_later_ones_update_last_seen(db: AttendanceDB):
    first = db.mark_present("Ada Lovelace", at(9, 5, 7), 0.42, "cam0")
    assert first.action == ACTION_PRESENT and first.new_present
    assert (first.entry_time, first.last_seen, first.date) == ("09:05:07", "09:05:07", "2024-05-01")
    later = db.mark_present("Ada Lovelace", at(13, 30), 0.55, "cam1")
    assert later.action == ACTION_SEEN and not later.new_present
    assert (later.entry_time, later.last_seen) == ("09:05:07", "13:30:00")
    assert db.rows(DAY) == [
        AttendanceRow("Ada Lovelace", "2024-05-01", PRESENT, "09:05:07", "13:30:00")
    ]
    events = db.events(DAY)
    assert [(e.name, e.action, e.source, e.distance) for e in events] == [
        ("Ada Lovelace", ACTION_PRESENT, "cam0", pytest.approx(0.42)),
        ("Ada Lovelace", ACTION_SEEN, "cam1", pytest.approx(0.55)),
    ]
    assert events[0].timestamp == "2024-05-01T09:05:07.000"
    assert [e.id for e in events] == [first.event_id, later.event_id]


def test_a_late_earlier_sighting_moves_the_entry_time_back(db: AttendanceDB):
    db.mark_present("Ada", at(10), 0.4, "cam")
    result = db.mark_present("Ada", at(8, 59), 0.4, "queued")
    assert (result.entry_time, result.last_seen, result.action) == ("08:59:00", "10:00:00", "seen")


def test_each_day_gets_its_own_row(db: AttendanceDB):
    db.mark_present("Ada", at(9), 0.4, "cam")
    nxt = db.mark_present("Ada", at(9, day=DAY + dt.timedelta(days=1)), 0.4, "cam")
    assert nxt.new_present
    assert len(db.rows()) == 2
    assert [r.date for r in db.rows(start=DAY + dt.timedelta(days=1))] == ["2024-05-02"]


def test_unicode_names_are_canonical(db: AttendanceDB):
    nfd = unicodedata.normalize("NFD", "José Álvarez")
    assert db.mark_present(nfd, at(9), 0.4, "cam").new_present
    assert not db.mark_present("  José Álvarez ", at(10), 0.4, "cam").new_present
    assert [r.name for r in db.rows()] == ["José Álvarez"]
    assert [r.name for r in db.rows(name=nfd)] == ["José Álvarez"]


def test_timezone_aware_times_are_stored_as_local_time(db: AttendanceDB):
    aware = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    local = aware.astimezone().replace(tzinfo=None)
    result = db.mark_present("Ada", aware, 0.4, "cam")
    assert (result.date, result.entry_time) == (
        local.date().isoformat(),
        local.strftime("%H:%M:%S"),
    )


@pytest.mark.parametrize(
    ("name", "distance", "source", "error"),
    [
        ("../etc", 0.4, "cam", InvalidName),
        ("", 0.4, "cam", InvalidName),
        ("Ada", float("nan"), "cam", ValueError),
        ("Ada", -0.1, "cam", ValueError),
        ("Ada", 0.4, "", ValueError),
    ],
)
def test_bad_marks_are_refused_before_writing(db: AttendanceDB, name, distance, source, error):
    with pytest.raises(error):
        db.mark_present(name, at(9), distance, source)
    assert db.rows() == [] and db.events() == []


def test_distance_may_be_unknown(db: AttendanceDB):
    db.mark_present("Ada", at(9), None, "manual")
    assert db.events()[0].distance is None


# --- close-day -------------------------------------------------------------------------------
def test_close_day_marks_only_people_without_a_row_and_is_idempotent(db: AttendanceDB):
    db.mark_present("Ada", at(9), 0.4, "cam")
    assert db.close_day(DAY, ["Ada", "Bob", "Cy", "Bob"]) == 2
    assert db.close_day(DAY, ["Ada", "Bob", "Cy"]) == 0
    assert db.close_day(DAY.isoformat(), ["Ada", "Bob", "Cy", "Dee"]) == 1
    statuses = {r.name: (r.status, r.time, r.last_seen) for r in db.rows(DAY)}
    assert statuses == {
        "Ada": (PRESENT, "09:00:00", "09:00:00"),
        "Bob": (ABSENT, None, None),
        "Cy": (ABSENT, None, None),
        "Dee": (ABSENT, None, None),
    }
    absent_events = [e for e in db.events() if e.action == ACTION_ABSENT]
    assert sorted(e.name for e in absent_events) == ["Bob", "Cy", "Dee"]
    assert {e.source for e in absent_events} == {"close-day:2024-05-01"}
    assert db.rows(DAY + dt.timedelta(days=1)) == []


def test_sighting_after_close_day_turns_absent_into_present(db: AttendanceDB):
    db.close_day(DAY, ["Bob"])
    result = db.mark_present("Bob", at(15, 45), 0.5, "cam")
    assert result.action == ACTION_ABSENT_TO_PRESENT and result.new_present
    assert db.rows(DAY) == [AttendanceRow("Bob", "2024-05-01", PRESENT, "15:45:00", "15:45:00")]
    assert db.close_day(DAY, ["Bob"]) == 0
    assert db.rows(DAY)[0].status == PRESENT


def test_close_day_refuses_invalid_input_without_writing(db: AttendanceDB):
    with pytest.raises(InvalidName):
        db.close_day(DAY, ["Ada", "a/b"])
    with pytest.raises(ValueError):
        db.close_day("2024-13-01", ["Ada"])
    assert db.rows() == []


def test_row_and_event_filters(db: AttendanceDB):
    for offset in range(5):
        day = DAY + dt.timedelta(days=offset)
        db.mark_present("Ada", at(9, day=day), 0.4, "cam")
        if offset % 2:
            db.mark_present("Bob", at(10, day=day), 0.4, "cam")
    assert len(db.rows()) == 7
    assert [r.date for r in db.rows(start="2024-05-02", end="2024-05-03")] == [
        "2024-05-02",
        "2024-05-02",
        "2024-05-03",
    ]
    assert [r.date for r in db.rows(name="Bob")] == ["2024-05-02", "2024-05-04"]
    assert [e.name for e in db.events(date="2024-05-04")] == ["Ada", "Bob"]
    assert len(db.events(end="2024-05-02")) == 3
    with pytest.raises(ValueError):
        db.rows(date=DAY, start=DAY)


# --- deleting a person (privacy) ------------------------------------------------------------
def test_delete_person_removes_only_their_rows_and_events(db: AttendanceDB):
    for offset in range(3):
        day = DAY + dt.timedelta(days=offset)
        for name in ("Ada", "O'Brien", "Ad%", "José Álvarez"):
            db.mark_present(name, at(9, day=day), 0.4, "cam")
    db.mark_present("Ada", at(11), 0.3, "cam")  # a second sighting: one more event
    db.close_day(DAY + dt.timedelta(days=3), ["Ada", "O'Brien"])
    assert db.delete_person("Ada") == (4, 5)
    assert db.rows(name="Ada") == [] and db.events(name="Ada") == []
    # quotes and LIKE wildcards are just characters: nobody else is touched
    assert db.delete_person("O'Brien") == (4, 4)
    assert [len(db.rows(name=n)) for n in ("Ad%", "José Álvarez")] == [3, 3]
    nfd = unicodedata.normalize("NFD", " José Álvarez")  # canonicalised like mark_present
    assert db.delete_person(nfd) == (3, 3)
    assert db.delete_person("Ada") == (0, 0)  # idempotent
    assert {r.name for r in db.rows()} == {"Ad%"} and len(db.events()) == 3


def test_delete_person_refuses_a_bad_name_without_deleting(db: AttendanceDB):
    db.mark_present("Ada", at(9), 0.4, "cam")
    with pytest.raises(InvalidName):
        db.delete_person("../Ada")
    with pytest.raises(InvalidName):
        db.delete_person("")
    assert len(db.rows()) == 1 and len(db.events()) == 1


def test_delete_person_is_one_transaction(db: AttendanceDB, db_path: Path):
    db.mark_present("Ada", at(9), 0.4, "cam")
    with sqlite3.connect(db_path) as other:  # make the second DELETE fail
        other.execute(
            "CREATE TRIGGER keep_events BEFORE DELETE ON events "
            "BEGIN SELECT RAISE(ABORT, 'events are append-only here'); END"
        )
    with pytest.raises(DatabaseError, match="deleting the history of 'Ada'"):
        db.delete_person("Ada")
    assert len(db.rows(name="Ada")) == 1  # the first DELETE was rolled back with it
    assert len(db.events(name="Ada")) == 1


def test_delete_person_while_locked_deletes_nothing(db_path: Path):
    with AttendanceDB(db_path, timeout=0.05) as db:
        db.mark_present("Ada", at(9), 0.4, "cam")
        locker = Locker(db_path)
        try:
            with pytest.raises(DatabaseLocked, match="db_timeout_seconds"):
                db.delete_person("Ada")
        finally:
            locker.release()
        assert len(db.rows()) == 1 and len(db.events()) == 1
        assert db.delete_person("Ada") == (1, 1)


# --- locked / unwritable ---------------------------------------------------------------------
def test_locked_database_gives_a_clear_error_then_works(db_path: Path):
    with AttendanceDB(db_path, timeout=0.05) as db:
        locker = Locker(db_path)
        try:
            with pytest.raises(DatabaseLocked) as info:
                db.mark_present("Ada", at(9), 0.4, "cam")
        finally:
            locker.release()
        message = str(info.value)
        assert str(db_path) in message and "db_timeout_seconds" in message
        assert info.value.retryable
        assert db.rows() == [] and db.events() == []
        assert db.mark_present("Ada", at(9), 0.4, "cam").new_present


def test_opening_a_new_database_locked_by_another_program(db_path: Path):
    locker = Locker(db_path)  # creates the empty file and holds it
    try:
        with pytest.raises(DatabaseLocked, match="locked"):
            AttendanceDB(db_path, timeout=0.05)
    finally:
        locker.release()
    with AttendanceDB(db_path, timeout=0.05) as db:
        assert db.rows() == []


def test_read_only_connection_reports_unwritable(db: AttendanceDB):
    db._conn.execute("PRAGMA query_only = ON")  # the same error as a read-only file
    with pytest.raises(DatabaseUnwritable) as info:
        db.mark_present("Ada", at(9), 0.4, "cam")
    assert str(db.path) in str(info.value) and "permissions" in str(info.value)
    db._conn.execute("PRAGMA query_only = OFF")
    assert db.rows() == []


# --- pending writer --------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_pending_writer_keeps_sightings_while_locked_and_flushes_them(db_path: Path, caplog):
    caplog.set_level(logging.WARNING, logger="store.pending")
    clock = FakeClock()
    db = AttendanceDB(db_path, timeout=0.05)
    writer = PendingWriter(db, retry_interval=5.0, clock=clock)
    assert writer.mark_present("Ada", at(9), 0.4, "cam").new_present
    locker = Locker(db_path)
    try:
        assert writer.mark_present("Bob", at(9, 1), 0.5, "cam") is None
        assert writer.backlog == 1
        assert "queued" in caplog.text and str(db_path) in caplog.text
        clock.now += 1.0  # not yet time to retry: queued without touching the database
        assert writer.mark_present("Ada", at(9, 2), 0.4, "cam") is None
        clock.now += 5.0  # retry is due, but the database is still locked
        assert writer.mark_present("Cy", at(9, 3), 0.6, "cam") is None
        assert writer.backlog == 3
        assert [m.name for m in writer.pending()] == ["Bob", "Ada", "Cy"]
        assert isinstance(writer.last_error, DatabaseLocked)
    finally:
        locker.release()
    saved = writer.flush()
    assert [(r.name, r.action) for r in saved] == [
        ("Bob", ACTION_PRESENT),
        ("Ada", ACTION_SEEN),
        ("Cy", ACTION_PRESENT),
    ]
    assert writer.backlog == 0 and writer.last_error is None
    result = writer.mark_present("Dee", at(9, 4), 0.3, "cam")
    assert result is not None and result.new_present
    writer.close()
    with AttendanceDB(db_path, timeout=10.0) as check:
        assert [(r.name, r.time) for r in check.rows(DAY)] == [
            ("Ada", "09:00:00"),
            ("Bob", "09:01:00"),
            ("Cy", "09:03:00"),
            ("Dee", "09:04:00"),
        ]
        assert len(check.events()) == 5


def test_pending_writer_retries_on_next_call_once_the_lock_is_gone(db_path: Path):
    clock = FakeClock()
    writer = PendingWriter(AttendanceDB(db_path, timeout=0.05), retry_interval=0, clock=clock)
    locker = Locker(db_path)
    try:
        assert writer.mark_present("Ada", at(9), 0.4, "cam") is None
    finally:
        locker.release()
    result = writer.mark_present("Bob", at(9, 5), 0.4, "cam")
    assert result is not None and result.name == "Bob"
    assert writer.backlog == 0
    writer.close()
    with AttendanceDB(db_path, timeout=10.0) as check:
        assert [r.name for r in check.rows()] == ["Ada", "Bob"]


def test_pending_writer_queues_while_unwritable(db_path: Path):
    db = AttendanceDB(db_path, timeout=0.05)
    writer = PendingWriter(db, retry_interval=0)
    db._conn.execute("PRAGMA query_only = ON")
    assert writer.mark_present("Ada", at(9), 0.4, "cam") is None
    assert isinstance(writer.last_error, DatabaseUnwritable)
    db._conn.execute("PRAGMA query_only = OFF")
    assert len(writer.flush()) == 1
    writer.close()


def test_pending_writer_close_never_drops_sightings_silently(db_path: Path, caplog):
    caplog.set_level(logging.ERROR, logger="store.pending")
    writer = PendingWriter(AttendanceDB(db_path, timeout=0.05), retry_interval=0)
    locker = Locker(db_path)
    try:
        writer.mark_present("Ada", at(9), 0.4, "cam")
        writer.mark_present("Bob", at(9, 30), 0.4, "cam")
        with pytest.raises(DatabaseError, match="2 sighting"):
            writer.close()
    finally:
        locker.release()
    assert "unsaved sighting: Ada at 2024-05-01T09:00:00" in caplog.text
    assert "unsaved sighting: Bob at 2024-05-01T09:30:00" in caplog.text


def test_pending_writer_refuses_bad_input_instead_of_queueing(db_path: Path):
    with PendingWriter(AttendanceDB(db_path, timeout=10.0)) as writer:
        with pytest.raises(InvalidName):
            writer.mark_present("a/b", at(9), 0.4, "cam")
        with pytest.raises(ValueError):
            writer.mark_present("Ada", at(9), float("inf"), "cam")
        assert writer.backlog == 0


# --- two real processes ----------------------------------------------------------------------
WORKER = r"""
import datetime as dt, json, sys, time
from pathlib import Path
from store.sqlite_attendance import SQLiteAttendanceStore as AttendanceDB

path, proc, days = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names = json.loads(sys.argv[4])
signal = Path(path).parent
(signal / f"ready-{proc}").touch()
while not (signal / "go").exists():
    time.sleep(0.001)
new = []
with AttendanceDB(path, timeout=30) as db:  # both processes create the schema at once
    for d in range(days):
        when = dt.datetime(2024, 5, 1 + d, 9, 0, proc)
        if proc == 1 and d % 2 == 0:
            db.close_day(when.date(), names)
        for name in names:
            result = db.mark_present(name, when, 0.5 + proc / 10, f"proc{proc}")
            if result.new_present:
                new.append([name, result.date])
            time.sleep(0.0005)
print(json.dumps(new))
"""


def test_two_processes_writing_at_once_never_duplicate_or_fail(tmp_path: Path):
    names = ["Ada", "Bob", "José Álvarez", "李小龍"]
    days = 25
    path = tmp_path / "attendance.db"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), str(i), str(days), json.dumps(names)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{i}").exists() for i in range(2)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [
            p.communicate() for p in procs if p.poll() is not None
        ]
        time.sleep(0.005)
    (tmp_path / "go").touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "locked" not in err
    new = Counter(tuple(item) for out, _ in outputs for item in json.loads(out))
    pairs = {(n, (DAY + dt.timedelta(days=d)).isoformat()) for n in names for d in range(days)}
    assert set(new) == pairs and set(new.values()) == {1}  # exactly one first sighting each

    with AttendanceDB(path, timeout=10.0) as db:
        rows = db.rows()
        events = db.events()
    assert len(rows) == len(pairs) == len({(r.name, r.date) for r in rows})
    # everyone was seen by both processes: Present, earliest entry, latest sighting
    assert {(r.status, r.time, r.last_seen) for r in rows} == {(PRESENT, "09:00:00", "09:00:01")}
    sources = Counter(e.source for e in events if e.source.startswith("proc"))
    assert sources == {"proc0": len(pairs), "proc1": len(pairs)}
    actions = Counter(e.action for e in events)
    assert actions[ACTION_PRESENT] + actions[ACTION_ABSENT_TO_PRESENT] == len(pairs)
    assert actions[ACTION_ABSENT] == actions[ACTION_ABSENT_TO_PRESENT]
