"""Pure attendance-report functions: date parsing, per-person summaries, tables and CSV text.

Nothing here touches the database or the terminal; ``recognizer.report_cli`` does the I/O.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from common.errors import UserError
from store.records import ABSENT, PRESENT, AttendanceRow

# (record key = CSV header, table title)
Column = tuple[str, str]
DAY_COLUMNS: tuple[Column, ...] = (
    ("name", "Name"),
    ("date", "Date"),
    ("status", "Status"),
    ("entry_time", "Entry"),
    ("last_seen", "Last seen"),
)
RANGE_COLUMNS: tuple[Column, ...] = (
    ("name", "Name"),
    ("days_present", "Present"),
    ("days_absent", "Absent"),
    ("first_entry", "First entry"),
    ("mean_entry", "Mean entry"),
)
MISSING = "-"  # how an empty value is shown in a table (CSV leaves the cell empty)
# A text cell starting with one of these is run as a formula by spreadsheets (CSV injection,
# OWASP): such cells get a leading single quote in CSV output.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

Record = Mapping[str, object]


class DateError(UserError, ValueError):
    """A date given on the command line is malformed or out of order."""


def parse_date(text: str, flag: str, today: dt.date) -> dt.date:
    """``YYYY-MM-DD``, ``today`` or ``yesterday`` as a date; :class:`DateError` otherwise."""
    value = (text or "").strip()
    if value.lower() == "today":
        return today
    if value.lower() == "yesterday":
        return today - dt.timedelta(days=1)
    if _ISO_DATE.fullmatch(value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass  # e.g. 2024-02-30: reported below like any other bad value
    raise DateError(
        f"{flag} {text!r} is not a valid date; use YYYY-MM-DD (e.g. 2024-05-31), "
        "'today' or 'yesterday'"
    )


def people(count: int) -> str:
    """``1 person`` / ``3 people``."""
    return f"{count} person" if count == 1 else f"{count} people"


def time_to_seconds(hms: str) -> int:
    """``HH:MM:SS`` as seconds after midnight."""
    hours, minutes, seconds = (int(part) for part in hms.split(":"))
    return hours * 3600 + minutes * 60 + seconds


def seconds_to_time(seconds: float) -> str:
    """Seconds after midnight (rounded) as ``HH:MM:SS``."""
    total = int(round(seconds))
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


@dataclass(frozen=True)
class PersonSummary:
    """One person's attendance over a date range."""

    name: str
    days_present: int
    days_absent: int
    first_entry: str | None  # earliest entry time of day over the range
    mean_entry: str | None  # mean entry time of day over the days present


def summarize(rows: Iterable[AttendanceRow]) -> list[PersonSummary]:
    """Per-person counts and entry times, sorted by name."""
    entries: dict[str, list[str]] = {}
    absent: dict[str, int] = {}
    for row in rows:
        entries.setdefault(row.name, [])
        absent.setdefault(row.name, 0)
        if row.status == PRESENT and row.time:
            entries[row.name].append(row.time)
        elif row.status == ABSENT:
            absent[row.name] += 1
    summaries = []
    for name in sorted(entries):
        times = entries[name]
        mean = sum(time_to_seconds(t) for t in times) / len(times) if times else None
        summaries.append(
            PersonSummary(
                name=name,
                days_present=len(times),
                days_absent=absent[name],
                first_entry=min(times) if times else None,
                mean_entry=seconds_to_time(mean) if mean is not None else None,
            )
        )
    return summaries


def day_records(rows: Iterable[AttendanceRow]) -> list[dict[str, object]]:
    """Records for :data:`DAY_COLUMNS`, sorted by date then name."""
    return [
        {
            "name": row.name,
            "date": row.date,
            "status": row.status,
            "entry_time": row.time,
            "last_seen": row.last_seen,
        }
        for row in sorted(rows, key=lambda r: (r.date, r.name))
    ]


def range_records(summaries: Iterable[PersonSummary]) -> list[dict[str, object]]:
    """Records for :data:`RANGE_COLUMNS`."""
    return [
        {
            "name": s.name,
            "days_present": s.days_present,
            "days_absent": s.days_absent,
            "first_entry": s.first_entry,
            "mean_entry": s.mean_entry,
        }
        for s in summaries
    ]


def display_width(text: str) -> int:
    """Terminal columns ``text`` occupies: wide CJK characters count 2, combining marks 0."""
    width = 0
    for char in unicodedata.normalize("NFC", text):
        if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def _cell(value: object) -> str:
    return MISSING if value is None or value == "" else str(value)


def format_table(
    records: Sequence[Record], columns: Sequence[Column], right: Iterable[str] = ()
) -> str:
    """Plain aligned columns with a dashed rule under the titles (keys in ``right``
    are right-aligned). Alignment accounts for wide and combining Unicode characters."""
    right = set(right)
    cells = [[_cell(record.get(key)) for key, _ in columns] for record in records]
    titles = [title for _, title in columns]
    widths = [
        max([display_width(titles[i])] + [display_width(row[i]) for row in cells])
        for i in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        parts = []
        for (key, _), value, width in zip(columns, values, widths, strict=True):
            fill = " " * (width - display_width(value))
            parts.append(fill + value if key in right else value + fill)
        return "  ".join(parts).rstrip()

    out = [line(titles), line(["-" * w for w in widths])]
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def spreadsheet_safe(text: str) -> str:
    """``text`` as a CSV cell a spreadsheet shows as text and never runs as a formula.

    Following OWASP's advice on CSV injection (as spreadsheet-safe exporters do), a cell
    starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading single
    quote (``=HYPERLINK(...)`` becomes ``'=HYPERLINK(...)``); other text is unchanged.
    """
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


def _csv_cell(value: object) -> object:
    if value is None:
        return ""
    return spreadsheet_safe(value) if isinstance(value, str) else value


def to_csv(records: Iterable[Record], columns: Sequence[Column]) -> str:
    """CSV text (RFC 4180) with a header of the column keys; empty values stay empty and every
    text cell is made formula-safe (:func:`spreadsheet_safe`); numbers are written as is."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # RFC 4180: CRLF line ends, quoting as needed
    writer.writerow([spreadsheet_safe(key) for key, _ in columns])
    for record in records:
        writer.writerow([_csv_cell(record.get(key)) for key, _ in columns])
    return buffer.getvalue()
