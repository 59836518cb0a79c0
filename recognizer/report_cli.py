"""``attendance report``: one day's attendance, or a per-person summary over a date range."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path

from common.config import Config
from common.errors import UserError
from common.fsutil import atomic_write_text
from recognizer.close_day_cli import enrolled_identities
from recognizer.report import (
    DAY_COLUMNS,
    RANGE_COLUMNS,
    DateError,
    day_records,
    format_table,
    parse_date,
    people,
    range_records,
    summarize,
    to_csv,
)
from store.factory import open_attendance_store
from store.records import ABSENT, PRESENT

HELP = "show attendance for a day, or per person over --from/--to; optionally save it as CSV"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's flags."""
    parser.add_argument(
        "--date", metavar="YYYY-MM-DD", help="the day to show (default: today; also 'yesterday')"
    )
    parser.add_argument(
        "--from", dest="start", metavar="YYYY-MM-DD", help="first day of a per-person summary"
    )
    parser.add_argument(
        "--to", dest="end", metavar="YYYY-MM-DD", help="last day of the summary (default: today)"
    )
    parser.add_argument(
        "--csv",
        metavar="FILE",
        help="also write the report to FILE as UTF-8 CSV with a header (its folder must exist; "
        "cells starting with = + - @ get a leading ' so spreadsheets show them as text)",
    )


def check_csv_target(path: Path) -> None:
    """Refuse a ``--csv`` path that is a folder or whose folder does not exist (nothing is
    created but the file itself)."""
    if path.is_dir():
        raise UserError(
            f"cannot write CSV {path}: it is a folder; give a file name, "
            f"e.g. --csv {path / 'attendance.csv'}"
        )
    folder = path.absolute().parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise UserError(
            f"cannot write CSV {path}: the folder {folder} {what}; create it first or "
            "choose another --csv path"
        )


def _write_csv(path: Path, text: str) -> None:
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise UserError(
            f"cannot write CSV {path} ({exc.strerror or exc}); choose another --csv path"
        ) from None


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Print the report table (and write the CSV)."""
    today = dt.date.today()
    if args.date and (args.start or args.end):
        raise DateError("give either --date or --from/--to, not both")
    if args.end and not args.start:
        raise DateError(f"--to {args.end!r} needs --from as well")
    if args.csv:
        check_csv_target(Path(args.csv))  # before any work: a typo must not cost a query
    note = ""
    if args.start:
        start = parse_date(args.start, "--from", today)
        end = parse_date(args.end, "--to", today) if args.end else today
        if start > end:
            raise DateError(
                f"--from {start.isoformat()} is after --to {end.isoformat()}; swap them"
            )
        with open_attendance_store(cfg, create=False) as db:
            rows = db.rows(start=start, end=end)
        columns, records = RANGE_COLUMNS, range_records(summarize(rows))
        shown, right = columns, ("days_present", "days_absent")
        days = len({row.date for row in rows})
        title = (
            f"Attendance {start.isoformat()} .. {end.isoformat()}: "
            f"{people(len(records))}, {days} day(s) with records"
        )
    else:
        day = parse_date(args.date, "--date", today) if args.date else today
        with open_attendance_store(cfg, create=False) as db:
            rows = db.rows(day)
        columns, records = DAY_COLUMNS, day_records(rows)
        shown, right = tuple(c for c in columns if c[0] != "date"), ()
        present = sum(row.status == PRESENT for row in rows)
        absent = sum(row.status == ABSENT for row in rows)
        title = f"Attendance on {day.isoformat()}: {present} Present, {absent} Absent"
        missing = set(enrolled_identities(cfg)) - {row.name for row in rows}
        if missing:
            note = (
                f"{people(len(missing))} enrolled but not recorded yet; "
                f"`attendance close-day --date {day.isoformat()}` marks them Absent"
            )
    print(title)
    print(format_table(records, shown, right=right) if records else "No records.")
    if note:
        print(note)
    if args.csv:
        path = Path(args.csv)
        check_csv_target(path)  # it may have gone meanwhile: atomic writes create folders
        _write_csv(path, to_csv(records, columns))
        print(f"Wrote {len(records)} row(s) to {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point (``python -m recognizer.report_cli``)."""
    from common.runner import run_single

    return run_single("attendance report", HELP, configure, run, argv)


if __name__ == "__main__":
    sys.exit(main())
