"""``attendance close-day``: mark every enrolled person without a record on a day as Absent."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from collections.abc import Sequence

from common.config import Config
from common.errors import UserError
from common.names import InvalidName, list_identities, validate_name
from recognizer.report import parse_date
from store.factory import is_shared, open_attendance_store, open_embedding_store
from store.records import ABSENT, PRESENT

HELP = "mark every enrolled person not seen on a day as Absent (default: today; idempotent)"

log = logging.getLogger(__name__)


def enrolled_identities(cfg: Config) -> list[str]:
    """Sorted canonical names of the identity folders in ``pre_images/`` and ``images/``, and,
    with a shared store, of everyone in it (enrolled at any kiosk).

    Hidden folders are ignored; folders whose name is not a valid identity are skipped with a
    warning.
    """
    names: set[str] = set()
    if is_shared(cfg):
        with open_embedding_store(cfg) as store:
            names.update(store.identities())
    for base in (cfg.pre_images_dir, cfg.images_dir):
        for folder in list_identities(base):
            if folder.startswith("."):
                continue
            try:
                names.add(validate_name(folder))
            except InvalidName as exc:
                log.warning("ignoring folder %s: %s", base / folder, exc)
    return sorted(names)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's flags."""
    parser.add_argument(
        "--date",
        metavar="YYYY-MM-DD",
        help="the day to close: YYYY-MM-DD, 'today' or 'yesterday' (default: today)",
    )


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Close the day and print a one-line summary plus the absentees."""
    today = dt.date.today()
    day = parse_date(args.date, "--date", today) if args.date else today
    if day > today:
        raise UserError(
            f"--date {args.date!r} is in the future; only today or past days can be closed"
        )
    enrolled = enrolled_identities(cfg)
    if not enrolled:
        raise UserError(
            f"nobody is enrolled: no person folders in {cfg.images_dir} or {cfg.pre_images_dir}; "
            "enrol people with `attendance scan` or check --workspace"
        )
    with open_attendance_store(cfg) as db:
        inserted = db.close_day(day, enrolled)
        rows = db.rows(day)
    present = sorted(r.name for r in rows if r.status == PRESENT)
    absent = sorted(r.name for r in rows if r.status == ABSENT)
    print(
        f"Closed {day.isoformat()}: {inserted} newly marked Absent; "
        f"{len(present)} Present, {len(absent)} Absent ({len(enrolled)} enrolled)"
    )
    if absent:
        print("Absent: " + ", ".join(absent))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point (``python -m recognizer.close_day_cli``)."""
    from common.runner import run_single

    return run_single("attendance close-day", HELP, configure, run, argv)


if __name__ == "__main__":
    sys.exit(main())
