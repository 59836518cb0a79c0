"""The sighting journal: queued sightings survive the end of a run and ``kill -9`` (issue 9,
item 8), are replayed once by the next writer, and a damaged journal line costs only itself."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from test_db import Locker

from common.config import Config
from store.factory import open_attendance_store, open_pending_writer, pending_journal_dir
from store.journal import PendingMark
from store.records import ACTION_PRESENT, DatabaseError

REPO = Path(__file__).resolve().parents[1]
WHEN = dt.datetime(2024, 5, 1, 9, 0, 0, 123456)


@pytest.fixture
def cfg(workspace: Config) -> Config:
    """A workspace whose attendance database exists; short lock waits."""
    with open_attendance_store(workspace):
        pass
    return workspace.replace(db_timeout_seconds=0.05)


def journals(cfg: Config) -> list[Path]:
    folder = pending_journal_dir(cfg)
    return sorted(folder.glob("*.jsonl")) if folder.is_dir() else []


def saved(cfg: Config) -> tuple[Counter, Counter]:
    """(rows per (name, date), events per (name, action)) in the database."""
    with open_attendance_store(cfg, create=False) as db:
        rows = Counter((r.name, r.date) for r in db.rows())
        events = Counter((e.name, e.action) for e in db.events())
    return rows, events


# --------------------------------------------------------------------------- kill -9
RECOGNISER = r"""
import datetime as dt, sys, time
from common.config import load_config
from store.factory import open_pending_writer

root, count, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cfg = load_config(root, overrides={"db_timeout_seconds": 0.05}, env={})
writer = open_pending_writer(cfg)
writer.retry_interval = 0.0  # every sighting tries the database at once
if mode == "committed":  # killed after the database committed, before the journal said so
    writer.journal.settle = lambda saved, remaining: None
start = dt.datetime(2024, 5, 1, 9, 0, 0)
for i in range(count):
    when = start + dt.timedelta(seconds=i, microseconds=1000 * i + 7)
    result = writer.mark_present(f"Person {i:02d}", when, 0.25 + i / 100, "camera 0")
    assert (result is None) == (mode == "locked"), result
queued = writer.log_event("Person 00", start + dt.timedelta(minutes=5), 0.3, "camera 0", "refused")
assert queued == (mode != "locked")
print("queued" if mode == "locked" else "saved", writer.backlog, flush=True)
time.sleep(600)
"""


def run_and_kill(cfg: Config, count: int, mode: str) -> str:
    """Start a recogniser-like process, wait until it says its sightings are queued (or
    saved), then ``kill -9`` it; return what it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", RECOGNISER, str(cfg.root), str(count), mode],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.strip(), proc.communicate(timeout=30)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return line.strip()


def test_kill_9_with_sightings_queued_loses_none_and_doubles_none(cfg: Config, caplog) -> None:
    count = 12
    locker = Locker(cfg.db_path)
    try:
        assert run_and_kill(cfg, count, "locked") == f"queued {count + 1}"
        (journal,) = journals(cfg)  # left behind by the killed process
        lines = journal.read_text(encoding="utf-8").splitlines()
        assert len(lines) == count + 1 and all(json.loads(line)["v"] == 1 for line in lines)
    finally:
        locker.release()
    assert saved(cfg) == (Counter(), Counter())  # nothing reached the database

    caplog.set_level(logging.INFO, logger="store.pending")
    with open_pending_writer(cfg) as writer:  # the next recogniser starting on the workspace
        assert writer.backlog == 0 and writer.replayed == count + 1 and writer.duplicates == 0
    assert "not saved by an earlier run" in caplog.text and str(journal) in caplog.text
    rows, events = saved(cfg)
    names = [f"Person {i:02d}" for i in range(count)]
    assert rows == Counter({(name, "2024-05-01"): 1 for name in names})
    assert events == Counter(
        {**{(name, ACTION_PRESENT): 1 for name in names}, ("Person 00", "refused"): 1}
    )
    with open_attendance_store(cfg, create=False) as db:  # in the order they were seen
        assert [e.name for e in db.events()][:count] == names
        assert [r.time for r in db.rows()] == [f"09:00:{i:02d}" for i in range(count)]
    assert not pending_journal_dir(cfg).exists()  # all saved: nothing left behind

    with open_pending_writer(cfg) as again:  # and nobody replays them a second time
        assert again.replayed == 0
    assert saved(cfg) == (rows, events)


def test_kill_9_after_the_database_committed_writes_nothing_twice(cfg: Config, caplog) -> None:
    """The journal still lists sightings the database already has (the process died between
    the commit and the journal update): the replay recognises and skips them."""
    assert run_and_kill(cfg, 3, "committed") == "saved 0"
    (journal,) = journals(cfg)
    assert len(journal.read_text(encoding="utf-8").splitlines()) == 4
    before = saved(cfg)
    assert sum(before[1].values()) == 4
    caplog.set_level(logging.INFO, logger="store.pending")
    with open_pending_writer(cfg) as writer:
        assert writer.duplicates == 4 and writer.replayed == 0
    assert saved(cfg) == before
    assert "already saved; not written twice" in caplog.text
    assert not pending_journal_dir(cfg).exists()


# --------------------------------------------------------------------------- in one process
def test_sightings_unsaved_at_close_are_journalled_and_written_next_time(cfg: Config) -> None:
    locker = Locker(cfg.db_path)
    try:
        writer = open_pending_writer(cfg)
        writer.retry_interval = 0.0
        assert writer.mark_present("Ada", WHEN, 0.4, "camera 0") is None
        assert writer.log_event("Ada", WHEN, 0.5, "camera 0", "refused") is False
        with pytest.raises(DatabaseError) as info:
            writer.close()
    finally:
        locker.release()
    message = str(info.value)
    (journal,) = journals(cfg)
    assert "\n" not in message and message.startswith("2 sighting(s) could not be saved")
    assert f"journalled in {journal}" in message
    assert "will be written at the next start of a recogniser" in message
    with open_pending_writer(cfg) as writer:
        assert writer.replayed == 2
    assert saved(cfg)[1] == Counter({("Ada", ACTION_PRESENT): 1, ("Ada", "refused"): 1})


def test_a_running_writers_journal_is_not_replayed_by_another(cfg: Config) -> None:
    """Two recognisers on one workspace: the second one starting must not take over the
    first one's queue (that one is alive and saves it itself)."""
    locker = Locker(cfg.db_path)
    try:
        first = open_pending_writer(cfg)
        first.retry_interval = 0.0
        assert first.mark_present("Ada", WHEN, 0.4, "camera 0") is None
        second = open_pending_writer(cfg)
        assert second.backlog == 0 and second.replayed == 0
        assert len(journals(cfg)) == 1
    finally:
        locker.release()
    second.close()
    first.close()  # saves its own sighting
    assert saved(cfg)[1] == Counter({("Ada", ACTION_PRESENT): 1})
    assert not pending_journal_dir(cfg).exists()


def test_journal_is_written_ahead_and_truncated_once_saved(cfg: Config) -> None:
    with open_pending_writer(cfg) as writer:
        result = writer.mark_present("Ada", WHEN, 0.4, "camera 0")
        assert result is not None and result.new_present
        (journal,) = journals(cfg)
        assert journal.stat().st_size == 0  # written first, truncated once saved
        assert writer.journal.path == journal
    assert not pending_journal_dir(cfg).exists()


def test_partly_saved_backlog_is_marked_done_in_the_journal(cfg: Config) -> None:
    """A retry that saves some entries but not all notes those as done, so a kill after it
    replays only the rest."""
    locker = Locker(cfg.db_path)
    writer = open_pending_writer(cfg)
    writer.retry_interval = 0.0
    try:
        for minute in range(3):
            writer.mark_present("Ada", WHEN + dt.timedelta(minutes=minute), 0.4, "camera 0")
    finally:
        locker.release()
    calls = []
    original = writer.store.mark_present

    def fails_on_third(*args):
        calls.append(args)
        if len(calls) == 3:
            from store.records import DatabaseLocked

            raise DatabaseLocked("busy again")
        return original(*args)

    writer.store.mark_present = fails_on_third
    writer.flush()
    assert writer.backlog == 1
    (journal,) = journals(cfg)
    lines = [json.loads(line) for line in journal.read_text(encoding="utf-8").splitlines()]
    assert [sorted(item) for item in lines[-1:]] == [["done", "v"]]
    assert len(lines[-1]["done"]) == 2
    # killed here: the lock dies with the process, nothing is closed
    os.close(writer.journal._fd)
    writer.journal._fd = None
    writer.store.close()
    with open_pending_writer(cfg) as again:
        assert again.replayed == 1 and again.duplicates == 0
    assert saved(cfg)[1] == Counter({("Ada", ACTION_PRESENT): 1, ("Ada", "seen"): 2})


def test_a_damaged_journal_line_is_set_aside_and_the_rest_replayed(cfg: Config, caplog) -> None:
    folder = pending_journal_dir(cfg)
    folder.mkdir()
    good = [
        PendingMark("Ada", WHEN, 0.4, "camera 0").to_json(),
        PendingMark("Bob", WHEN + dt.timedelta(seconds=1), 0.5, "camera 0").to_json(),
        PendingMark("Cy", WHEN + dt.timedelta(seconds=2), None, "camera 0").to_json(),
    ]
    bad = [
        '{"v": 1, "id": "x", "name": "../etc", "when": "2024-05-01T09:00:00"',
        '{"v": 1, "id": "y", "name": "Eve", "when": "yesterday", "source": "c", "action": null}',
    ]
    undecodable = b"\xff\xfe not json"
    journal = folder / "20240501T090000-1-deadbeef.jsonl"
    lines = [good[0], bad[0], good[1], bad[1], undecodable, good[2][:30]]
    journal.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines))
    caplog.set_level(logging.WARNING, logger="store.pending")
    with open_pending_writer(cfg) as writer:
        assert writer.replayed == 2
    warnings = [r.getMessage() for r in caplog.records if "not a readable journal" in r.message]
    assert [w.split(" is not")[0] for w in warnings] == [
        f"{journal} line {n}" for n in (2, 4, 5, 6)
    ]
    assert all(w.count("\n") == 0 and "Traceback" not in w for w in warnings)
    corrupt = folder / (journal.name + ".corrupt")
    assert corrupt.read_bytes().splitlines() == [
        bad[0].encode(), bad[1].encode(), undecodable, good[2][:30].encode(),
    ]  # fmt: skip
    assert not journal.exists()
    assert saved(cfg)[1] == Counter({("Ada", ACTION_PRESENT): 1, ("Bob", ACTION_PRESENT): 1})


def test_journal_that_cannot_be_written_does_not_stop_saving(cfg: Config, caplog) -> None:
    pending_journal_dir(cfg).write_text("a file where the journal folder goes", encoding="utf-8")
    caplog.set_level(logging.WARNING, logger="store.pending")
    with open_pending_writer(cfg) as writer:
        assert writer.mark_present("Ada", WHEN, 0.4, "camera 0") is not None
        assert writer.journal.broken
    assert "cannot journal sightings" in caplog.text
    assert saved(cfg)[1] == Counter({("Ada", ACTION_PRESENT): 1})
    locker = Locker(cfg.db_path)
    try:
        writer = open_pending_writer(cfg)
        writer.mark_present("Bob", WHEN, 0.4, "camera 0")
        with pytest.raises(DatabaseError, match="were not journalled"):
            writer.close()
    finally:
        locker.release()


def test_entry_round_trip_keeps_every_field() -> None:
    aware = dt.datetime(2024, 5, 1, 9, 0, 0, 5000, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    for mark in (
        PendingMark("José Álvarez", WHEN, 0.123456789, "rtsp://cam/1"),
        PendingMark("李小龍", aware, None, "camera 0", "refused"),
    ):
        back = PendingMark.from_json(json.loads(mark.to_json()))
        assert back == PendingMark(
            mark.name, mark.when, mark.distance, mark.source, mark.action, mark.id, True
        )
