"""Reports for the dashboard and the API: built from the stores, sent as JSON, CSV or XLSX.

The figures and file formats are ``web.exports``' (and through it ``recognizer.report``'s),
so a download says what ``attendance report`` prints.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from fastapi.responses import Response

from recognizer.report import DAY_COLUMNS, RANGE_COLUMNS, day_records, range_records
from web.exports import Report, build_report, report_csv, report_xlsx
from web.stores import ThreadStores

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def build(stores: ThreadStores, start: dt.date, end: dt.date, name: str | None) -> Report:
    """The report of ``start``..``end`` for ``name`` or everyone enrolled (worker thread)."""
    rows = stores.attendance().rows(start=start, end=end, name=name)
    return build_report(rows, start, end, name, sorted(stores.enrolled()))


def to_json(report: Report) -> dict[str, Any]:
    """Both tables and the overall totals, with their column titles."""
    return {
        "title": report.title,
        "start": report.start.isoformat(),
        "end": report.end.isoformat(),
        "name": report.name,
        "totals_columns": [title for _, title in RANGE_COLUMNS],
        "totals": [
            {title: record[key] for key, title in RANGE_COLUMNS}
            for record in range_records(report.people)
        ],
        "days_columns": [title for _, title in DAY_COLUMNS],
        "days": [
            {title: record[key] for key, title in DAY_COLUMNS}
            for record in day_records(report.rows)
        ],
        "overall": dataclasses.asdict(report.totals),
    }


def filename(report: Report, suffix: str) -> str:
    span = report.start.isoformat()
    if report.end != report.start:
        span += f"_{report.end.isoformat()}"
    return f"attendance_{span}{suffix}"


def download(report: Report, fmt: str, view: str = "totals") -> Response:
    """The report as an attachment: ``csv`` (one table: ``totals`` or ``days``) or ``xlsx``
    (both sheets). The file name holds only dates (nothing user-typed)."""
    if fmt == "xlsx":
        return Response(
            report_xlsx(report),
            media_type=XLSX,
            headers={"Content-Disposition": f'attachment; filename="{filename(report, ".xlsx")}"'},
        )
    text = report_csv(report, view)
    name = filename(report, f"_{view}.csv")
    return Response(
        text.encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
