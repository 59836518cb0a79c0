"""Report functions and the ``close-day`` / ``report`` commands."""

from __future__ import annotations

import csv
import datetime as dt
import io
import subprocess
import sys
from pathlib import Path

import pytest

from attendance import cli
from recognizer.report import (
    DAY_COLUMNS,
    RANGE_COLUMNS,
    DateError,
    PersonSummary,
    day_records,
    display_width,
    format_table,
    parse_date,
    people,
    range_records,
    seconds_to_time,
    spreadsheet_safe,
    summarize,
    time_to_seconds,
    to_csv,
)
from store.records import ABSENT, PRESENT, AttendanceRow
from store.sqlite_attendance import SQLiteAttendanceStore

REPO = Path(__file__).resolve().parents[1]
TODAY = dt.date(2024, 5, 10)


# --- pure functions --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-02-29", dt.date(2024, 2, 29)),
        (" 2024-05-01 ", dt.date(2024, 5, 1)),
        ("today", TODAY),
        ("Yesterday", dt.date(2024, 5, 9)),
    ],
)
def test_parse_date_accepts(text, expected):
    assert parse_date(text, "--date", TODAY) == expected


@pytest.mark.parametrize("text", ["2023-02-29", "2024-13-01", "01/05/2024", "20240501", "", "x"])
def test_parse_date_rejects_with_the_value_echoed(text):
    with pytest.raises(DateError) as info:
        parse_date(text, "--from", TODAY)
    message = str(info.value)
    assert message.startswith(f"--from {text!r} is not a valid date")
    assert "YYYY-MM-DD" in message and "\n" not in message


def test_time_conversions():
    assert time_to_seconds("09:05:07") == 9 * 3600 + 5 * 60 + 7
    assert seconds_to_time(9 * 3600 + 5 * 60 + 7) == "09:05:07"
    assert seconds_to_time(time_to_seconds("23:59:59")) == "23:59:59"
    assert seconds_to_time(59.6) == "00:01:00"


def test_summarize_counts_days_and_entry_times():
    rows = [
        AttendanceRow("Bob", "2024-05-01", PRESENT, "09:00:00", "17:00:00"),
        AttendanceRow("Ada", "2024-05-01", PRESENT, "08:30:00", "12:00:00"),
        AttendanceRow("Ada", "2024-05-02", PRESENT, "09:30:01", "09:31:00"),
        AttendanceRow("Ada", "2024-05-03", ABSENT, None, None),
        AttendanceRow("Cy", "2024-05-01", ABSENT, None, None),
        AttendanceRow("Cy", "2024-05-02", ABSENT, None, None),
    ]
    assert summarize(rows) == [
        PersonSummary("Ada", 2, 1, "08:30:00", "09:00:00"),  # mean of 08:30:00 and 09:30:01
        PersonSummary("Bob", 1, 0, "09:00:00", "09:00:00"),
        PersonSummary("Cy", 0, 2, None, None),
    ]
    assert summarize([]) == []


def test_people():
    assert (people(0), people(1), people(2)) == ("0 people", "1 person", "2 people")


def test_display_width_of_unicode():
    assert display_width("Ada") == 3
    assert display_width("José") == 4
    assert display_width("Jose\u0301") == 4  # decomposed accent
    assert display_width("李小龍") == 6


def _column_starts(line: str, cells: list[str]) -> list[int]:
    """Display column where each cell starts in a rendered line."""
    starts, position = [], 0
    for cell in cells:
        index = line.index(cell, position)
        starts.append(display_width(line[:index]))
        position = index + len(cell)
    return starts


def test_format_table_aligns_wide_and_accented_names():
    rows = [
        AttendanceRow("李小龍", "2024-05-01", PRESENT, "09:00:00", "10:00:00"),
        AttendanceRow("Jose\u0301 Álvarez", "2024-05-01", ABSENT, None, None),
        AttendanceRow("Al", "2024-05-01", PRESENT, "08:00:00", "08:30:00"),
    ]
    records = day_records(rows)
    columns = [c for c in DAY_COLUMNS if c[0] != "date"]
    lines = format_table(records, columns).splitlines()
    assert lines[0].split() == ["Name", "Status", "Entry", "Last", "seen"]
    assert set(lines[1]) == {"-", " "}
    body = {line.split()[0]: line for line in lines[2:]}
    assert list(body) == ["Al", "Jose\u0301", "李小龍"]  # sorted by name
    title_starts = _column_starts(lines[0], ["Name", "Status", "Entry", "Last seen"])
    assert (
        _column_starts(body["李小龍"], ["李小龍", "Present", "09:00:00", "10:00:00"])
        == title_starts
    )
    assert _column_starts(body["Al"], ["Al", "Present", "08:00:00", "08:30:00"]) == title_starts
    assert _column_starts(body["Jose\u0301"], ["Jose\u0301 Álvarez", "Absent", "-", "-"]) == (
        title_starts
    )
    assert all(line == line.rstrip() for line in lines)


def test_format_table_right_aligns_counts():
    records = range_records([PersonSummary("Ada", 12, 3, "08:00:00", "08:10:00")])
    lines = format_table(records, RANGE_COLUMNS, right=("days_present",)).splitlines()
    assert lines == [
        "Name  Present  Absent  First entry  Mean entry",
        "----  -------  ------  -----------  ----------",
        "Ada        12  3       08:00:00     08:10:00",
    ]


def test_csv_has_header_empty_cells_and_quotes():
    rows = [
        AttendanceRow("Lovelace, Ada", "2024-05-01", PRESENT, "09:00:00", "10:00:00"),
        AttendanceRow('Bob "B"', "2024-05-01", ABSENT, None, None),
    ]
    text = to_csv(day_records(rows), DAY_COLUMNS)
    parsed = list(csv.reader(io.StringIO(text)))
    assert parsed == [
        ["name", "date", "status", "entry_time", "last_seen"],
        ['Bob "B"', "2024-05-01", "Absent", "", ""],
        ["Lovelace, Ada", "2024-05-01", "Present", "09:00:00", "10:00:00"],
    ]
    assert to_csv([], RANGE_COLUMNS).strip() == ",".join(key for key, _ in RANGE_COLUMNS)


FORMULA_NAMES = ["=1+2", "+Bob", "-Ada", "@SUM(A1)", "\tTab", "\rReturn"]


def test_csv_cells_that_a_spreadsheet_would_run_get_a_leading_quote():
    """CSV injection (OWASP): a text cell starting with = + - @ tab or CR is prefixed with
    ``'``; other text, numbers and empty cells are unchanged (issue 9, item 4)."""
    names = [*FORMULA_NAMES, "Ada - Lovelace", "O'Brien"]
    rows = [AttendanceRow(name, "2024-05-01", PRESENT, "09:00:00", None) for name in names]
    parsed = list(csv.reader(io.StringIO(to_csv(day_records(rows), DAY_COLUMNS))))
    cells = {row[0]: row for row in parsed[1:]}
    assert set(cells) == {"'" + name for name in FORMULA_NAMES} | {"Ada - Lovelace", "O'Brien"}
    assert all(row[1:] == ["2024-05-01", "Present", "09:00:00", ""] for row in parsed[1:])
    summaries = [PersonSummary("=cmd|' /C calc'!A0", 2, 1, "08:00:00", None)]
    parsed = list(csv.reader(io.StringIO(to_csv(range_records(summaries), RANGE_COLUMNS))))
    assert parsed[1] == ["'=cmd|' /C calc'!A0", "2", "1", "08:00:00", ""]
    for name in FORMULA_NAMES:
        assert spreadsheet_safe(name) == "'" + name
    assert spreadsheet_safe("Ada") == "Ada" and spreadsheet_safe("") == ""


# --- commands --------------------------------------------------------------------------------
@pytest.fixture
def attendance(monkeypatch):
    """``attendance.cli.main`` with only this stage's commands registered, so these tests do
    not depend on the other stages' modules importing."""
    monkeypatch.setattr(
        cli,
        "COMMANDS",
        {"close-day": "recognizer.close_day_cli", "report": "recognizer.report_cli"},
    )
    return cli.main


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """A workspace with enrolled people in images/ and pre_images/, plus distractions."""
    for name in ("Ada", "José Álvarez", ".hidden"):
        (tmp_path / "images" / name).mkdir(parents=True)
    for name in ("Ada", "李小龍"):
        (tmp_path / "pre_images" / name).mkdir(parents=True)
    (tmp_path / "images" / "notes.txt").write_text("not a person", encoding="utf-8")
    return tmp_path


def _seed(ws: Path, marks: list[tuple[str, dt.datetime]]) -> None:
    with SQLiteAttendanceStore(ws / "attendance.db", timeout=10.0) as db:
        for name, when in marks:
            db.mark_present(name, when, 0.5, "test")


def test_close_day_marks_enrolled_absentees_once(attendance, ws: Path, capsys):
    _seed(ws, [("Ada", dt.datetime(2024, 5, 1, 9, 0))])
    assert attendance(["close-day", "--date", "2024-05-01", "--workspace", str(ws)]) == 0
    out = capsys.readouterr().out
    assert "Closed 2024-05-01: 2 newly marked Absent; 1 Present, 2 Absent (3 enrolled)" in out
    assert "Absent: José Álvarez, 李小龍" in out
    assert attendance(["close-day", "--date", "2024-05-01", "--workspace", str(ws)]) == 0
    assert "0 newly marked Absent; 1 Present, 2 Absent" in capsys.readouterr().out
    with SQLiteAttendanceStore(ws / "attendance.db", timeout=10.0) as db:
        rows = {r.name: r.status for r in db.rows("2024-05-01")}
    assert rows == {"Ada": PRESENT, "José Álvarez": ABSENT, "李小龍": ABSENT}


def test_close_day_defaults_to_today(attendance, ws: Path, capsys):
    assert attendance(["close-day", "--workspace", str(ws)]) == 0
    assert f"Closed {dt.date.today().isoformat()}: 3 newly marked Absent" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--date", "2024-02-30"], "--date '2024-02-30' is not a valid date"),
        (["--date", "2999-01-01"], "--date '2999-01-01' is in the future"),
    ],
)
def test_close_day_bad_dates(attendance, ws: Path, capsys, argv, expected):
    assert attendance(["close-day", *argv, "--workspace", str(ws)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {expected}") and err.count("\n") == 1
    assert not (ws / "attendance.db").exists()


def test_close_day_without_enrolled_people(attendance, tmp_path: Path, capsys):
    assert attendance(["close-day", "--workspace", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "nobody is enrolled" in err and str(tmp_path / "images") in err


def test_close_day_on_a_locked_database(attendance, ws: Path, capsys):
    import sqlite3

    path = ws / "attendance.db"
    _seed(ws, [("Ada", dt.datetime(2024, 5, 1, 9, 0))])
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        argv = ["close-day", "--date", "2024-05-01", "--workspace", str(ws)]
        assert attendance([*argv, "--set", "db_timeout_seconds=0.05"]) == 2
    finally:
        locker.execute("COMMIT")
        locker.close()
    err = capsys.readouterr().err
    assert f"error: {path} stayed locked" in err and err.count("\n") == 1


def test_report_for_one_day_with_csv(attendance, ws: Path, tmp_path: Path, capsys):
    _seed(
        ws,
        [
            ("Ada", dt.datetime(2024, 5, 1, 9, 0, 5)),
            ("李小龍", dt.datetime(2024, 5, 1, 9, 30)),
            ("Ada", dt.datetime(2024, 5, 1, 16, 45)),
        ],
    )
    out_csv = tmp_path / "out" / "day.csv"
    out_csv.parent.mkdir()  # the folder must exist (a missing one is refused, see below)
    argv = ["report", "--date", "2024-05-01", "--csv", str(out_csv), "--workspace", str(ws)]
    assert attendance(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Attendance on 2024-05-01: 2 Present, 0 Absent"
    assert out[1].split() == ["Name", "Status", "Entry", "Last", "seen"]
    assert out[3].split() == ["Ada", "Present", "09:00:05", "16:45:00"]
    assert out[4].split() == ["李小龍", "Present", "09:30:00", "09:30:00"]
    assert "1 person enrolled but not recorded yet" in out[5]
    assert "close-day --date 2024-05-01" in out[5]
    assert out[6] == f"Wrote 2 row(s) to {out_csv}"
    with out_csv.open(encoding="utf-8", newline="") as handle:
        assert list(csv.DictReader(handle)) == [
            {
                "name": "Ada",
                "date": "2024-05-01",
                "status": "Present",
                "entry_time": "09:00:05",
                "last_seen": "16:45:00",
            },
            {
                "name": "李小龍",
                "date": "2024-05-01",
                "status": "Present",
                "entry_time": "09:30:00",
                "last_seen": "09:30:00",
            },
        ]
    assert not list(out_csv.parent.glob(".*.tmp"))


def test_report_for_a_day_without_records(attendance, ws: Path, capsys):
    _seed(ws, [("Ada", dt.datetime(2024, 5, 1, 9, 0))])
    assert attendance(["report", "--date", "2024-05-02", "--workspace", str(ws)]) == 0
    out = capsys.readouterr().out
    assert "Attendance on 2024-05-02: 0 Present, 0 Absent" in out and "No records." in out


def test_report_over_a_range(attendance, ws: Path, tmp_path: Path, capsys):
    _seed(
        ws,
        [
            ("Ada", dt.datetime(2024, 5, 1, 9, 0)),
            ("Ada", dt.datetime(2024, 5, 2, 10, 0)),
            ("José Álvarez", dt.datetime(2024, 5, 2, 8, 15)),
            ("Ada", dt.datetime(2024, 5, 9, 7, 0)),  # outside the range
        ],
    )
    with SQLiteAttendanceStore(ws / "attendance.db", timeout=10.0) as db:
        db.close_day("2024-05-01", ["Ada", "José Álvarez"])
    out_csv = tmp_path / "range.csv"
    argv = ["report", "--from", "2024-05-01", "--to", "2024-05-03", "--workspace", str(ws)]
    assert attendance([*argv, "--csv", str(out_csv)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Attendance 2024-05-01 .. 2024-05-03: 2 people, 2 day(s) with records"
    assert out[1].split() == ["Name", "Present", "Absent", "First", "entry", "Mean", "entry"]
    assert out[3].split() == ["Ada", "2", "0", "09:00:00", "09:30:00"]
    assert out[4].split() == ["José", "Álvarez", "1", "1", "08:15:00", "08:15:00"]
    text = out_csv.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "name,days_present,days_absent,first_entry,mean_entry"
    assert "José Álvarez,1,1,08:15:00,08:15:00" in text


def test_report_from_without_to_runs_until_today(attendance, ws: Path, capsys):
    _seed(ws, [("Ada", dt.datetime.now())])
    assert attendance(["report", "--from", "yesterday", "--workspace", str(ws)]) == 0
    out = capsys.readouterr().out
    assert f".. {dt.date.today().isoformat()}: 1 person, 1 day(s)" in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--date", "2024-5-1"], "--date '2024-5-1' is not a valid date"),
        (["--from", "2024-05-01", "--to", "05/03/2024"], "--to '05/03/2024' is not a valid date"),
        (["--from", "2024-05-03", "--to", "2024-05-01"], "--from 2024-05-03 is after --to"),
        (["--to", "2024-05-01"], "--to '2024-05-01' needs --from"),
        (["--date", "2024-05-01", "--from", "2024-05-01"], "give either --date or --from/--to"),
    ],
)
def test_report_rejects_bad_dates_in_one_line(attendance, ws: Path, capsys, argv, expected):
    _seed(ws, [("Ada", dt.datetime(2024, 5, 1, 9, 0))])
    assert attendance(["report", *argv, "--workspace", str(ws)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {expected}") and err.count("\n") == 1


def test_report_without_a_database(attendance, tmp_path: Path, capsys):
    assert attendance(["report", "--workspace", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "attendance.db does not exist" in err and err.count("\n") == 1
    assert not (tmp_path / "attendance.db").exists()


def test_report_on_a_corrupt_database(attendance, ws: Path, capsys):
    path = ws / "attendance.db"
    path.write_bytes(b"\x00garbage" * 500)
    assert attendance(["report", "--workspace", str(ws)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path} is damaged") and err.count("\n") == 1
    assert path.read_bytes() == b"\x00garbage" * 500


def test_report_csv_to_an_unwritable_place(attendance, ws: Path, capsys):
    _seed(ws, [("Ada", dt.datetime(2024, 5, 1, 9, 0))])
    target = ws / "images"  # a folder: the CSV cannot replace it
    argv = ["report", "--date", "2024-05-01", "--csv", str(target), "--workspace", str(ws)]
    assert attendance(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write CSV {target}") and err.count("\n") == 1
    assert (ws / "images" / "Ada").is_dir()


def test_report_csv_of_hostile_names_is_formula_safe(attendance, ws: Path, tmp_path: Path):
    names = ["=1+2", "+Bob", "-Ada", "@SUM(A1)"]
    _seed(ws, [(name, dt.datetime(2024, 5, 1, 9, i)) for i, name in enumerate(names)])
    for argv, name_column in (
        (["--date", "2024-05-01"], "name"),
        (["--from", "2024-05-01", "--to", "2024-05-01"], "name"),
    ):
        out_csv = tmp_path / "hostile.csv"
        assert attendance(["report", *argv, "--csv", str(out_csv), "--workspace", str(ws)]) == 0
        with out_csv.open(encoding="utf-8", newline="") as handle:
            cells = sorted(row[name_column] for row in csv.DictReader(handle))
        assert cells == sorted("'" + name for name in names)


@pytest.mark.parametrize("where", ["missing", "file"])
def test_report_csv_refuses_a_missing_folder_and_creates_none(
    attendance, ws: Path, tmp_path: Path, capsys, where
):
    """``--csv /nonexistent_dir/x.csv`` is refused in one line naming the folder; nothing is
    created (issue 9, item 11)."""
    _seed(ws, [("Ada", dt.datetime(2024, 5, 1, 9, 0))])
    folder = tmp_path / "nonexistent_dir"
    if where == "file":
        folder.write_text("a file, not a folder", encoding="utf-8")
    target = folder / "x.csv"
    argv = ["report", "--date", "2024-05-01", "--csv", str(target), "--workspace", str(ws)]
    assert attendance(argv) == 2
    out, err = capsys.readouterr()
    what = "does not exist" if where == "missing" else "is not a folder"
    assert err == (
        f"error: cannot write CSV {target}: the folder {folder} {what}; create it first or "
        "choose another --csv path\n"
    )
    assert out == ""  # refused before any work
    assert folder.exists() == (where == "file") and not target.exists()


def test_report_csv_to_a_folder_says_it_is_a_folder(attendance, ws: Path, capsys):
    _seed(ws, [("Ada", dt.datetime(2024, 5, 1, 9, 0))])
    target = ws / "images"
    argv = ["report", "--date", "2024-05-01", "--csv", str(target), "--workspace", str(ws)]
    assert attendance(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write CSV {target}: it is a folder; give a file name")
    assert err.count("\n") == 1 and (target / "Ada").is_dir()


def test_commands_run_as_modules(ws: Path):
    _seed(ws, [("Ada", dt.datetime(2024, 5, 1, 9, 0))])
    done = subprocess.run(
        [sys.executable, "-m", "recognizer.report_cli", "--date", "2024-05-01", "--workspace", ws],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Attendance on 2024-05-01: 1 Present, 0 Absent" in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "recognizer.close_day_cli", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "--date" in done.stdout
