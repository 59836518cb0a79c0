"""Attendance reports for a day or a range, per person or everyone: CSV and Excel downloads.

Pure functions over :class:`store.records.AttendanceRow` (no web framework, no terminal); the
per-person figures, record layouts and formula-safe CSV are ``recognizer.report``'s, so a
download says exactly what ``attendance report`` prints.

What a payroll user gets:

- **Totals** (the per-person sheet, and :func:`totals_csv`): one row per person with days
  present and absent, first and mean entry time. This is what gets keyed into payroll, so it
  is its own file: a CSV importer reads one table, and a second section or a "total" row
  would be read as more people. Enrolled people without a single record in the range are
  listed with zero days, so nobody silently drops out of a pay run.
- **Days** (the day sheet, and :func:`days_csv`): one row per person and day recorded, with
  status, entry and last-seen time: the evidence behind the totals. Days nobody recorded
  (``attendance close-day`` not run) have no row; they count neither as present nor absent.

The Excel workbook (:func:`report_xlsx`) holds both sheets, Totals first, plus the overall
totals under the Totals table. Dates and times are real Excel dates and times; every text
cell is written as a string, never a formula (a name like ``=HYPERLINK(...)`` stays text).
"""

from __future__ import annotations

import datetime as dt
import io
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from common.config import Config
from common.errors import UserError
from recognizer.report import (
    DAY_COLUMNS,
    RANGE_COLUMNS,
    Column,
    PersonSummary,
    day_records,
    display_width,
    people,
    range_records,
    summarize,
    to_csv,
)
from store.records import AttendanceRow

#: The two tables of a report: per-person totals, and the day rows behind them.
VIEWS = ("totals", "days")
#: How each record key is written to Excel (text is the default).
_KINDS = {
    "date": "date",
    "entry_time": "time",
    "last_seen": "time",
    "first_entry": "time",
    "mean_entry": "time",
    "days_present": "number",
    "days_absent": "number",
}
_MAX_WIDTH = 60  # characters: a column is never wider than this


class ReportError(UserError, ValueError):
    """A report cannot be made as asked (e.g. the range ends before it starts)."""


@dataclass(frozen=True)
class Totals:
    """Overall figures of a report."""

    people: int  # people listed (with records, or enrolled)
    present_days: int  # person-days Present
    absent_days: int  # person-days Absent
    days: int  # calendar days in the range
    days_with_records: int  # of which days with at least one row


@dataclass(frozen=True)
class Report:
    """Attendance from ``start`` to ``end`` (inclusive), for ``name`` or everyone.

    ``rows``: the day view, one row per person and day recorded, by date then name.
    ``people``: per-person totals (:class:`recognizer.report.PersonSummary`), by name.
    """

    start: dt.date
    end: dt.date
    name: str | None
    rows: tuple[AttendanceRow, ...]
    people: tuple[PersonSummary, ...]
    totals: Totals

    @property
    def title(self) -> str:
        """``"Attendance 2024-05-01 .. 2024-05-31: 3 people"`` (a day: one date)."""
        span = self.start.isoformat()
        if self.end != self.start:
            span += f" .. {self.end.isoformat()}"
        who = self.name if self.name is not None else people(self.totals.people)
        return f"Attendance {span}: {who}"


def build_report(
    rows: Sequence[AttendanceRow],
    start: dt.date,
    end: dt.date,
    name: str | None = None,
    enrolled: Sequence[str] = (),
) -> Report:
    """The report of ``rows`` from ``start`` to ``end`` (rows outside are ignored), for
    ``name`` only when given. ``enrolled`` people without rows appear with zero days."""
    if start > end:
        raise ReportError(f"the report starts {start.isoformat()}, after it ends {end.isoformat()}")
    wanted = unicodedata.normalize("NFC", name).strip() if name is not None else ""
    first, last = start.isoformat(), end.isoformat()
    kept = sorted(
        (row for row in rows if first <= row.date <= last and (not wanted or row.name == wanted)),
        key=lambda r: (r.date, r.name),
    )
    summaries = {s.name: s for s in summarize(kept)}
    for person in enrolled:
        if person not in summaries and (not wanted or person == wanted):
            summaries[person] = PersonSummary(person, 0, 0, None, None)
    listed = tuple(summaries[n] for n in sorted(summaries))
    totals = Totals(
        people=len(listed),
        present_days=sum(s.days_present for s in listed),
        absent_days=sum(s.days_absent for s in listed),
        days=(end - start).days + 1,
        days_with_records=len({row.date for row in kept}),
    )
    return Report(start, end, wanted or None, tuple(kept), listed, totals)


def load_report(cfg: Config, start: dt.date, end: dt.date, name: str | None = None) -> Report:
    """:func:`build_report` from the attendance store of ``cfg`` and its enrolled people
    (nothing is created when no attendance was ever recorded)."""
    from recognizer.close_day_cli import enrolled_identities
    from store.factory import attendance_store_exists, open_attendance_store

    rows: list[AttendanceRow] = []
    if attendance_store_exists(cfg):
        with open_attendance_store(cfg, create=False) as db:
            rows = db.rows(start=start, end=end)
    return build_report(rows, start, end, name, enrolled_identities(cfg))


# --------------------------------------------------------------------------- CSV
def totals_csv(report: Report) -> str:
    """The per-person totals as CSV: ``attendance report --from/--to --csv``'s format."""
    return to_csv(range_records(report.people), RANGE_COLUMNS)


def days_csv(report: Report) -> str:
    """The day rows as CSV: ``attendance report --date --csv``'s format, with every day."""
    return to_csv(day_records(report.rows), DAY_COLUMNS)


def report_csv(report: Report, view: str = "totals") -> str:
    """One table of ``report`` as formula-safe CSV (RFC 4180, a header of the column keys):
    ``"totals"`` (one row per person, what payroll keys in) or ``"days"`` (the evidence)."""
    if view == "totals":
        return totals_csv(report)
    if view == "days":
        return days_csv(report)
    raise ReportError(f"unknown report view {view!r}; use one of {', '.join(VIEWS)}")


# --------------------------------------------------------------------------- Excel
def report_xlsx(report: Report) -> bytes:
    """The report as an Excel workbook: a "Totals" sheet (per person, then overall) and a
    "Days" sheet; bold frozen headers, real dates and times, names always as text."""
    import xlsxwriter

    buffer = io.BytesIO()
    options = {
        "in_memory": True,
        # defence in depth: write_string is used for text anyway
        "strings_to_formulas": False,
        "strings_to_urls": False,
        "strings_to_numbers": False,
    }
    workbook = xlsxwriter.Workbook(buffer, options)
    workbook.set_properties({"title": report.title, "subject": "attendance"})
    formats = {
        "header": workbook.add_format({"bold": True, "bottom": 1}),
        "bold": workbook.add_format({"bold": True}),
        "date": workbook.add_format({"num_format": "yyyy-mm-dd"}),
        "time": workbook.add_format({"num_format": "hh:mm:ss"}),
        "number": workbook.add_format({"num_format": "0"}),
    }
    totals = workbook.add_worksheet("Totals")
    widths = _write_table(totals, RANGE_COLUMNS, range_records(report.people), formats)
    row = len(report.people) + 2  # one empty row below the table
    label = f"Total: {people(report.totals.people)}"
    totals.write_string(row, 0, label, formats["bold"])
    totals.write_number(row, 1, report.totals.present_days, formats["bold"])
    totals.write_number(row, 2, report.totals.absent_days, formats["bold"])
    widths[0] = max(widths[0], display_width(label))
    _set_widths(totals, widths)

    days = workbook.add_worksheet("Days")
    _set_widths(days, _write_table(days, DAY_COLUMNS, day_records(report.rows), formats))
    workbook.close()
    return buffer.getvalue()


def _write_table(
    sheet: Any, columns: Sequence[Column], records: Sequence[dict[str, object]], formats: dict
) -> list[int]:
    """Header and records from the top left; the widest cell of each column (characters).

    A month for a thousand people is ~100,000 cells: dates and times become Excel serial
    numbers once per distinct value, and each distinct text is measured once."""
    widths = [display_width(title) for _, title in columns]
    for col, (_, title) in enumerate(columns):
        sheet.write_string(0, col, title, formats["header"])
    kinds = [_KINDS.get(key, "text") for key, _ in columns]
    serials: dict[tuple[str, str], float | None] = {}
    shown: dict[str, int] = {}
    write_string, write_number = sheet.write_string, sheet.write_number
    for row, record in enumerate(records, start=1):
        for col, (key, _) in enumerate(columns):
            value, kind = record.get(key), kinds[col]
            if value is None or value == "":
                continue  # an empty cell (nothing to write)
            if kind == "number" and isinstance(value, int | float):
                write_number(row, col, value, formats["number"])
                width = len(str(value))
            else:
                text = str(value)
                serial = None
                if kind in ("date", "time"):
                    cache_key = (kind, text)
                    if cache_key not in serials:
                        serials[cache_key] = _serial(text, kind)
                    serial = serials[cache_key]
                if serial is not None:
                    write_number(row, col, serial, formats[kind])
                    width = 10 if kind == "date" else 8
                else:
                    write_string(row, col, text)
                    width = shown.get(text)
                    if width is None:
                        width = shown[text] = display_width(text)
            if width > widths[col]:
                widths[col] = width
    sheet.freeze_panes(1, 0)
    sheet.autofilter(0, 0, max(len(records), 1), len(columns) - 1)
    return widths


_EXCEL_EPOCH = dt.date(1899, 12, 30)  # day 0 of Excel's 1900 date system (as xlsxwriter)


def _serial(text: str, kind: str) -> float | None:
    """``YYYY-MM-DD`` or ``HH:MM:SS`` as an Excel serial number; None when it is neither."""
    parsed = _parse(text, kind)
    if parsed is None:
        return None
    if isinstance(parsed, dt.date):
        return float((parsed - _EXCEL_EPOCH).days)
    return (parsed.hour * 3600 + parsed.minute * 60 + parsed.second) / 86400


def _parse(text: str, kind: str) -> dt.date | dt.time | None:
    """``YYYY-MM-DD`` as a date or ``HH:MM:SS`` as a time; None when it is neither."""
    try:
        return dt.date.fromisoformat(text) if kind == "date" else dt.time.fromisoformat(text)
    except ValueError:
        return None


def _set_widths(sheet: Any, widths: Sequence[int]) -> None:
    for col, width in enumerate(widths):
        sheet.set_column(col, col, min(width, _MAX_WIDTH) + 2)
