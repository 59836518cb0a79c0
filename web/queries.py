"""What pages and the API both ask of the stores (no web framework; run in worker threads)."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.config import Config
from common.errors import UserError
from common.fsutil import read_regular_bytes, regular_file_problem
from common.names import person_dir, validate_name
from recognizer.report import parse_date
from store.records import AttendanceRow, Event
from web.stores import ThreadStores

log = logging.getLogger(__name__)

MAX_RANGE_DAYS = 366 * 2  # a report or query spans at most two years
THUMBNAIL_MAX_BYTES = 2_000_000
HISTORY_DAYS = 90


class NotFound(UserError, LookupError):
    """No such person (the API answers 404)."""


def date_range(
    date: str | None, start: str | None, end: str | None, today: dt.date
) -> tuple[dt.date, dt.date]:
    """One ``date``, or ``start``..``end`` (inclusive): a missing start is the end, a missing
    end is today (or the start, if later); neither: today. At most :data:`MAX_RANGE_DAYS`."""
    if date:
        day = parse_date(date, "date", today)
        return day, day
    first = parse_date(start, "start", today) if start else None
    last = parse_date(end, "end", today) if end else None
    first = first or last or today
    last = last or max(first, today)  # "from X": X up to today
    if last < first:
        raise UserError(f"end {last} is before start {first}: swap them")
    if (last - first).days >= MAX_RANGE_DAYS:
        raise UserError(f"{first}..{last} is longer than {MAX_RANGE_DAYS} days: ask for less")
    return first, last


def person_name(raw: str) -> str:
    """A person's name from a URL or form, validated (no path tricks reach the files)."""
    return validate_name(raw)


@dataclass(frozen=True)
class PersonView:
    """One enrolled person on the People page."""

    name: str
    crops: int
    last_seen: str | None  # "YYYY-MM-DD HH:MM:SS" of the latest sighting, or None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "crops": self.crops, "last_seen": self.last_seen}


def people(stores: ThreadStores) -> list[PersonView]:
    """Everyone enrolled, by name, with crops and when they were last seen."""
    enrolled = stores.enrolled()
    latest = stores.attendance().last_present() if enrolled else {}
    views = []
    for name in sorted(enrolled, key=str.casefold):
        row = latest.get(name)
        seen = f"{row.date} {row.last_seen or row.time or ''}".strip() if row else None
        views.append(PersonView(name, enrolled[name], seen))
    return views


def person(stores: ThreadStores, raw: str, today: dt.date) -> dict[str, Any]:
    """One person's enrolment and history (the last :data:`HISTORY_DAYS` days)."""
    name = person_name(raw)
    enrolled = stores.enrolled()
    start = today - dt.timedelta(days=HISTORY_DAYS - 1)
    rows = stores.attendance().rows(start=start, end=today, name=name)
    if name not in enrolled and not rows:
        raise NotFound(f"{name!r} is not enrolled and has no attendance: check the name")
    events = stores.attendance().events(start=start, end=today, name=name, limit=200)
    return {
        "name": name,
        "enrolled": name in enrolled,
        "crops": enrolled.get(name, 0),
        "rows": [row_json(r) for r in reversed(rows)],
        "events": [event_json(e) for e in reversed(events)],
        "present_days": sum(1 for r in rows if r.status == "Present"),
        "since": start.isoformat(),
    }


def row_json(row: AttendanceRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "date": row.date,
        "status": row.status,
        "time": row.time,
        "last_seen": row.last_seen,
    }


def event_json(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "timestamp": event.timestamp,
        "name": event.name,
        "distance": None if event.distance is None else round(event.distance, 4),
        "source": event.source,
        "action": event.action,
    }


def thumbnail(cfg: Config, stores: ThreadStores, raw: str) -> bytes | None:
    """A PNG of one of the person's crops: the workspace's first crop file, else the shared
    store's. The path is built from a validated name and must be a regular file inside
    ``pre_images``."""
    name = person_name(raw)
    folder = person_dir(cfg.pre_images_dir, name)
    base = Path(cfg.pre_images_dir).resolve()
    if folder.is_dir() and not folder.is_symlink():
        for path in sorted(folder.glob("*.png")):
            if path.resolve().parent != folder.resolve() or not path.resolve().is_relative_to(base):
                continue
            if regular_file_problem(path, follow_symlinks=False) is None:
                return read_regular_bytes(path, max_bytes=THUMBNAIL_MAX_BYTES)
    return stores.embeddings().thumbnail(name) if name in stores.enrolled() else None


def settings(cfg: Config) -> dict[str, Any]:
    """The threshold in use, the calibration figures per model, and the model versions."""
    from model.thresholds import format_far, read_thresholds
    from model.versions import list_versions

    try:
        records = read_thresholds(cfg)
    except UserError as exc:
        log.warning("%s", exc)
        records = {}
    calibration = [
        {
            "model_id": record.model_id,
            "threshold": record.threshold,
            "far": format_far(record.far) if record.far is not None else None,
            "tar": record.tar,
            "source": record.source,
            "calibrated_on": record.calibrated_on,
            "updated": record.updated,
        }
        for record in records.values()
    ]
    versions = [
        {"version": "pretrained", "created": "", "active": cfg.model_version == "pretrained"}
    ]
    for found in list_versions(cfg):
        versions.append(
            {
                "version": found.version,
                "created": found.created,
                "active": found.version == cfg.model_version,
            }
        )
    return {
        "threshold": cfg.threshold,
        "calibrate_far": format_far(cfg.calibrate_far),
        "model_version": cfg.model_version,
        "calibration": calibration,
        "versions": versions,
    }
