"""What the Today page and the Kiosks page show, computed from store records (pure)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from store.records import PRESENT, AttendanceRow, Heartbeat

# A kiosk is alive while its last heartbeat is younger than this many intervals (plus slack).
ALIVE_INTERVALS = 3
ENDED = ("ended", "stopped")  # a recogniser that stopped on purpose (not a dead camera)


@dataclass(frozen=True)
class KioskView:
    """One kiosk on the dashboard."""

    name: str
    host: str
    source: str
    state: str
    fps: float
    model_version: str
    started: str
    last_seen: str  # ISO-8601 UTC, as reported
    seen: str  # the same in local time, "YYYY-MM-DD HH:MM:SS", for people
    age_seconds: float
    alive: bool
    row: str  # how the dashboard shows it: "alive", "ended" (stopped on purpose) or "dead"
    marked: int
    unknown: int


def _parse(when: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(when)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def kiosk_views(
    beats: Iterable[Heartbeat], now: dt.datetime, heartbeat_seconds: float, today: str
) -> list[KioskView]:
    """Each kiosk with its age; alive = running and heard from within a few intervals.
    Counts of another day show as 0 (the kiosk has not reported today)."""
    views = []
    for beat in beats:
        seen = _parse(beat.last_seen)
        age = (now - seen).total_seconds() if seen else float("inf")
        alive = (
            beat.source_state in ("running", "reconnecting")
            and age <= ALIVE_INTERVALS * heartbeat_seconds + 2.0
        )
        same_day = beat.day == today
        views.append(
            KioskView(
                name=beat.kiosk,
                host=beat.host,
                source=beat.source,
                state=beat.source_state if alive or beat.source_state != "running" else "silent",
                fps=round(beat.fps, 1),
                model_version=beat.model_version,
                started=beat.started,
                last_seen=beat.last_seen,
                seen=seen.astimezone().strftime("%Y-%m-%d %H:%M:%S") if seen else beat.last_seen,
                age_seconds=round(max(age, 0.0), 1) if seen else -1.0,
                alive=alive,
                row="alive" if alive else ("ended" if beat.source_state in ENDED else "dead"),
                marked=beat.marked if same_day else 0,
                unknown=beat.unknown if same_day else 0,
            )
        )
    return views


def today_snapshot(
    date: dt.date,
    rows: Iterable[AttendanceRow],
    enrolled: Iterable[str],
    kiosks: Iterable[KioskView],
    now_local: dt.datetime,
) -> dict[str, Any]:
    """Present (since when, last seen), absent, unknown faces and kiosks for ``date``.

    Absent = enrolled and not Present (whether or not close-day wrote an Absent row). People
    present today who were removed since stay listed as present: they did come in.
    """
    present = sorted(
        (r for r in rows if r.status == PRESENT),
        key=lambda r: (r.time or "", r.name),
    )
    present_names = {r.name for r in present}
    absent = sorted(set(enrolled) - present_names, key=str.casefold)
    kiosk_list = list(kiosks)
    unknown = sum(k.unknown for k in kiosk_list)
    return {
        "date": date.isoformat(),
        "generated": now_local.strftime("%H:%M:%S"),
        "present": [{"name": r.name, "since": r.time, "last_seen": r.last_seen} for r in present],
        "absent": absent,
        "unknown": unknown,
        "counts": {
            "present": len(present),
            "absent": len(absent),
            "unknown": unknown,
            "kiosks_alive": sum(1 for k in kiosk_list if k.alive),
            "kiosks": len(kiosk_list),
        },
        "kiosks": [asdict(k) for k in kiosk_list],
        "error": None,
    }


def same_content(a: Mapping[str, Any] | None, b: Mapping[str, Any]) -> bool:
    """Whether two snapshots differ only in when they were made (and kiosk ages)."""
    if a is None:
        return False

    def key(s: Mapping[str, Any]) -> Any:
        kiosks = [{k: v for k, v in x.items() if k != "age_seconds"} for x in s["kiosks"]]
        return {k: v for k, v in s.items() if k not in ("generated", "kiosks")}, kiosks

    return key(a) == key(b)
