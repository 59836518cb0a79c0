"""Kiosk heartbeats (``recognizer.heartbeat``): what a running recogniser reports, how often,
and that a slow or broken site store never holds up or stops recognition.

Fast: fake stores and clocks, the synthetic frames and fake models of ``test_pipeline``; the
last tests go through the real SQLite site store (``store.factory.open_site_store``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import socket
import threading
import time
from pathlib import Path

import pytest
from test_pipeline import (
    FakeDetector,
    FakeEmbedder,
    ListSource,
    engine,
    make_frame,
    synthetic_config,
)
from test_recognizer_cli import enrol_crop

from common.config import Config, load_config
from common.sources import LiveSource, SourceError
from recognizer import cli
from recognizer.heartbeat import (
    NEW_PRESENT_ACTIONS,
    HeartbeatReporter,
    error_state,
    final_state,
)
from recognizer.pipeline import ACTION_QUEUED, ACTION_UNKNOWN, RecognitionEvent
from store.factory import open_attendance_store
from store.pending import PendingWriter
from store.records import (
    ACTION_REMOVED,
    ATTENDANCE_ACTIONS,
    DatabaseLocked,
    DatabaseUnavailable,
    Heartbeat,
    MarkResult,
)

DAY = dt.date(2025, 1, 6)
NOW = dt.datetime(2025, 1, 6, 8, 30, 0, tzinfo=dt.timezone.utc)


# --------------------------------------------------------------------------- fakes
class FakeSource:
    def __init__(self, description: str = "camera 0", reconnecting: bool = False) -> None:
        self.description = description
        self.reconnecting = reconnecting

    def describe(self) -> str:
        return self.description


class FakeStore:
    """A site store keeping heartbeats in memory (``beat`` upserts by kiosk)."""

    def __init__(self, stored: list[Heartbeat] = ()) -> None:
        self.rows = {h.kiosk: h for h in stored}
        self.beats: list[Heartbeat] = []
        self.closed = 0

    def beat(self, heartbeat: Heartbeat) -> None:
        self.beats.append(heartbeat)
        self.rows[heartbeat.kiosk] = heartbeat

    def kiosks(self) -> list[Heartbeat]:
        return [self.rows[k] for k in sorted(self.rows)]

    def close(self) -> None:
        self.closed += 1


class FlakyStore(FakeStore):
    """Locked for the first ``failures`` beats."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def beat(self, heartbeat: Heartbeat) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise DatabaseLocked("postgresql://kiosk:hunter2@db/attendance: the database is locked")
        super().beat(heartbeat)


class BlockingStore(FakeStore):
    """Each ``beat`` waits until ``release`` is set (a database holding its lock)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def beat(self, heartbeat: Heartbeat) -> None:
        self.entered.set()
        self.release.wait(30)
        super().beat(heartbeat)


class Clock:
    def __init__(self, value: float = 0.0) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


class Today:
    def __init__(self, day: dt.date = DAY) -> None:
        self.day = day

    def __call__(self) -> dt.date:
        return self.day


def reporter(cfg: Config, store: FakeStore, **kwargs) -> HeartbeatReporter:
    """A reporter on ``store`` with a fixed host, wall clock, day and (by default) frame clock;
    its thread is not started (tests call ``beat`` themselves unless they ``start`` it)."""
    options = {
        "source": FakeSource(), "open_store": lambda: store, "clock": Clock(),
        "now": lambda: NOW, "today": Today(), "host": "gate-pc",
    }  # fmt: skip
    options.update(kwargs)
    return HeartbeatReporter(cfg, options.pop("source"), **options)


def event(name: str, action: str, gate: str | None = None) -> RecognitionEvent:
    when = dt.datetime(2025, 1, 6, 9, 0, 0)
    return RecognitionEvent(when, name, 0.3, action, "camera 0", 1, 0, 0.0, 0.0, gate=gate)


def wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


@pytest.fixture
def cfg(workspace: Config) -> Config:
    return workspace


# --------------------------------------------------------------------------- what is reported
def test_kiosk_name_host_source_and_model_without_passwords(cfg: Config) -> None:
    source = FakeSource("stream rtsp://admin:s3cret@10.0.0.5:554/live")
    beat = HeartbeatReporter(cfg, source, open_store=FakeStore).snapshot()
    host = socket.gethostname()
    assert beat.host == host
    assert beat.source == "stream rtsp://admin:***@10.0.0.5:554/live"
    assert beat.kiosk == f"{host} {beat.source}"[:100]
    assert "s3cret" not in repr(beat)
    assert beat.model_version == cfg.model_version == "pretrained"
    assert (beat.source_state, beat.fps) == ("running", 0.0)
    for stamp in (beat.started, beat.last_seen):  # as datetime.isoformat(timespec="seconds")
        parsed = dt.datetime.fromisoformat(stamp)
        assert parsed.utcoffset() == dt.timedelta(0) and stamp == parsed.isoformat("T", "seconds")
        assert abs(parsed - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=1)
    assert beat.day == dt.date.today().isoformat() and (beat.marked, beat.unknown) == (0, 0)

    long = FakeSource("folder " + "x" * 200)
    assert len(HeartbeatReporter(cfg, long, open_store=FakeStore).kiosk) == 100
    # a name the site store takes: printable, no space at the end of the cut
    cut = FakeSource("video " + "y" * (99 - len(host) - 7) + " clip\tone.mp4")
    name = HeartbeatReporter(cfg, cut, open_store=FakeStore).kiosk
    assert name == f"{host} video {'y' * (99 - len(host) - 7)}"
    tab = HeartbeatReporter(cfg, FakeSource("folder a\tb"), open_store=FakeStore).snapshot()
    assert (tab.kiosk, tab.source) == (f"{host} folder a?b", "folder a?b")
    named = cfg.replace(kiosk_name="front door", model_version="v3")
    beat = HeartbeatReporter(named, source, open_store=FakeStore).snapshot()
    assert (beat.kiosk, beat.model_version) == ("front door", "v3")


def test_fps_is_processed_frames_per_second_since_the_previous_beat(cfg: Config) -> None:
    clock, store = Clock(100.0), FakeStore()
    rep = reporter(cfg, store, clock=clock)
    for _ in range(20):
        rep.frame()
    clock.value = 102.0
    assert rep.beat() is True
    assert store.beats[-1].fps == pytest.approx(10.0)
    for _ in range(5):  # the next interval starts at the previous beat
        rep.frame()
    clock.value = 107.0
    rep.beat()
    assert store.beats[-1].fps == pytest.approx(1.0)
    for _ in range(30):  # a person marked: the pipeline pauses, frames are not processed
        rep.frame(paused=True)
    clock.value = 109.0
    rep.beat()
    assert store.beats[-1].fps == 0.0
    clock.value = 111.0  # nothing at all (a held file frame): still paused
    rep.beat()
    assert store.beats[-1].fps == 0.0
    clock.value = 112.0
    rep.frame()  # after n: measured afresh from the first processed frame
    for _ in range(8):
        clock.value += 0.25
        rep.frame()
    clock.value = 114.0
    rep.beat()
    assert store.beats[-1].fps == pytest.approx(4.0)
    rep.close("ended")
    assert store.beats[-1].fps == 0.0  # the final beat: nothing is processed any more
    assert [b.source_state for b in store.beats] == ["running"] * 5 + ["ended"]


def test_counts_people_newly_marked_and_unknown_faces(cfg: Config) -> None:
    store = FakeStore()
    rep = reporter(cfg, store)
    for e in [
        event("Ada", "present"),
        event("Ada", "seen"),  # already counted
        event("Unknown", ACTION_UNKNOWN),
        event("Bob", "absent_to_present"),  # closed day, then arrived: newly present
        event("Cy", "refused", gate="liveness"),  # held back by a gate: nothing recorded
        event("Dan", ACTION_REMOVED),  # removed from the shared store meanwhile
        event("Fay", "seen"),  # present before (another kiosk, an earlier run) ...
        event("Fay", ACTION_QUEUED),  # ... so a queued sighting of her is not new
        event("Eve", ACTION_QUEUED),  # the store is busy: a first sighting as far as we know
        event("Eve", ACTION_QUEUED),  # once per person
        event("Unknown", ACTION_UNKNOWN),
    ]:
        rep.event(e)
    rep.beat()
    beat = store.beats[-1]
    assert (beat.day, beat.marked, beat.unknown) == ("2025-01-06", 3, 2)


def test_new_present_actions_are_those_of_mark_result() -> None:
    for action in ATTENDANCE_ACTIONS:
        result = MarkResult("Ada", "2025-01-06", action, "09:00:00", "09:00:00", 1)
        assert (action in NEW_PRESENT_ACTIONS) == result.new_present, action


def test_counts_start_again_at_local_midnight(cfg: Config) -> None:
    today, store = Today(DAY), FakeStore()
    rep = reporter(cfg, store, today=today)
    rep.event(event("Ada", "present"))
    rep.event(event("Unknown", ACTION_UNKNOWN))
    rep.beat()
    assert (store.beats[-1].day, store.beats[-1].marked, store.beats[-1].unknown) == (
        "2025-01-06", 1, 1,
    )  # fmt: skip
    today.day = DAY + dt.timedelta(days=1)
    rep.beat()  # no event since midnight: the beat itself starts the new day
    assert (store.beats[-1].day, store.beats[-1].marked, store.beats[-1].unknown) == (
        "2025-01-07", 0, 0,
    )  # fmt: skip
    rep.event(event("Ada", ACTION_QUEUED))  # yesterday's Ada does not count today
    today.day = DAY + dt.timedelta(days=2)
    rep.event(event("Ada", "present"))  # the event rolls the day over too
    assert rep.counts == ("2025-01-08", 1, 0)


def test_a_date_read_before_midnight_never_rolls_the_day_back(cfg: Config) -> None:
    """Another thread may have read the date a moment before this one rolled it."""
    today, store = Today(DAY + dt.timedelta(days=1)), FakeStore()
    rep = reporter(cfg, store, today=today)
    rep.event(event("Ada", "present"))  # counted on the new day
    today.day = DAY  # a stale date, read before midnight by the beat thread
    rep.beat()
    assert (store.beats[-1].day, store.beats[-1].marked) == ("2025-01-07", 1)


@pytest.mark.parametrize(
    ("stored_day", "expected"),
    [("2025-01-06", (6, 3)), ("2025-01-05", (2, 1))],
    ids=["today-continues", "yesterday-forgotten"],
)
def test_a_restart_continues_the_counts_of_the_day(cfg, stored_day, expected) -> None:
    named = cfg.replace(kiosk_name="door")
    old = Heartbeat(
        "door", "gate-pc", "camera 0", "stopped", 0.0, "pretrained",
        "2025-01-06T06:00:00+00:00", "2025-01-06T07:00:00+00:00", stored_day, 4, 2,
    )  # fmt: skip
    other = Heartbeat(
        "hall", "pc2", "camera 1", "running", 9.0, "pretrained",
        "2025-01-06T06:00:00+00:00", "2025-01-06T07:00:00+00:00", "2025-01-06", 40, 20,
    )  # fmt: skip
    store = FakeStore([old, other])
    rep = reporter(named, store)
    rep.event(event("Ada", "present"))  # before the store answered
    rep.event(event("Bob", "present"))
    rep.event(event("Unknown", ACTION_UNKNOWN))
    rep.beat()
    rep.beat()  # continued once, not at every beat
    assert [(b.marked, b.unknown) for b in store.beats] == [expected, expected]
    assert store.rows["hall"] == other and store.beats[-1].started == "2025-01-06T08:30:00+00:00"


def test_the_counts_of_the_day_wait_for_a_store_that_answers(cfg: Config) -> None:
    named = cfg.replace(kiosk_name="door")
    old = Heartbeat(
        "door", "gate-pc", "camera 0", "stopped", 0.0, "pretrained",
        "2025-01-06T06:00:00+00:00", "2025-01-06T07:00:00+00:00", "2025-01-06", 4, 2,
    )  # fmt: skip
    store = FakeStore([old])
    down = True

    def open_store() -> FakeStore:
        if down:
            raise DatabaseLocked("site.sqlite: the database is locked")
        return store

    rep = reporter(named, store, open_store=open_store)
    rep.event(event("Ada", "present"))
    assert rep.beat() is False  # nothing written: it would have replaced the day's counts
    down = False
    assert rep.beat() is True
    assert (store.beats[-1].marked, store.beats[-1].unknown) == (5, 2)


# --------------------------------------------------------------------------- states
@pytest.mark.parametrize(
    ("stopped_by", "state"),
    [
        ("end of source", "ended"),
        ("esc", "stopped"),
        ("Ctrl-C", "stopped"),
        ("stop signal", "stopped"),
        ("--max-frames 50", "stopped"),
        ("first person marked", "stopped"),
    ],
)
def test_final_state_of_a_run(stopped_by: str, state: str) -> None:
    assert final_state(stopped_by) == state


def test_an_error_state_is_one_line_without_a_password() -> None:
    error = SourceError("stream rtsp://cam:pw123@10.0.0.9/x was lost\nand more detail")
    assert final_state("error", error) == "error: stream rtsp://cam:***@10.0.0.9/x was lost"
    assert error_state(RuntimeError()) == "error: RuntimeError"
    assert len(error_state("x" * 500)) == 200


def test_the_source_state_while_running_and_reconnecting(cfg: Config) -> None:
    source, store = FakeSource(), FakeStore()
    rep = reporter(cfg, store, source=source)
    rep.beat()
    source.reconnecting = True
    rep.beat()
    source.reconnecting = False
    rep.beat()
    assert [b.source_state for b in store.beats] == ["running", "reconnecting", "running"]


class Capture:
    """A capture whose first read blocks until ``lose`` is set, then fails (signal lost)."""

    def __init__(self, lose: threading.Event, opened: bool = True) -> None:
        self.lose = lose
        self.opened = opened

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return self.opened

    def read(self):
        self.lose.wait(10)
        return False, None

    def release(self) -> None:
        pass


def test_a_live_source_says_when_it_is_reconnecting(cfg: Config) -> None:
    lose = threading.Event()
    opened = iter([Capture(lose)])
    source = LiveSource(
        lambda: next(opened, Capture(lose, opened=False)), "camera 7",
        max_retries=1, backoff=(30.0, 30.0), close_timeout=5.0,
    )  # fmt: skip
    store = FakeStore()
    rep = reporter(cfg, store, source=source)
    try:
        assert source.reconnecting is False
        rep.beat()
        lose.set()  # the signal is lost: the reader waits 30 s before reopening
        assert wait_for(lambda: source.reconnecting)
        rep.beat()
    finally:
        source.close()
    assert source.reconnecting is False
    assert [b.source_state for b in store.beats] == ["running", "reconnecting"]


@pytest.mark.parametrize(
    ("how", "state"),
    [
        ("clean", "stopped"),
        ("finish-ended", "ended"),
        ("error", "error: the database is corrupt"),
        ("ctrl-c", "stopped"),
    ],
)
def test_closing_writes_the_final_state(cfg: Config, how: str, state: str) -> None:
    store = FakeStore()
    rep = reporter(cfg, store)
    raises = how in ("error", "ctrl-c")
    expected = pytest.raises((RuntimeError, KeyboardInterrupt))
    with expected if raises else contextlib.nullcontext(), rep:
        assert wait_for(lambda: store.beats)  # the first beat comes at once
        if how == "finish-ended":
            rep.finish("ended")
        elif how == "error":
            raise RuntimeError("the database is corrupt\ntraceback...")
        elif how == "ctrl-c":
            raise KeyboardInterrupt
    assert store.beats[0].source_state == "running"
    assert store.beats[-1].source_state == state
    assert store.closed >= 1  # the thread closed its store
    beats = len(store.beats)
    rep.close("ended")  # idempotent: nothing more is written
    time.sleep(0.05)
    assert len(store.beats) == beats


# --------------------------------------------------------------------------- the thread
def test_the_thread_beats_every_interval_until_closed(cfg: Config) -> None:
    store = FakeStore()
    rep = reporter(cfg, store, interval=0.02, clock=time.monotonic)
    rep.start()
    try:
        assert wait_for(lambda: len(store.beats) >= 4)
    finally:
        rep.close("ended")
    assert {b.source_state for b in store.beats[:-1]} == {"running"}
    assert store.beats[-1].source_state == "ended"
    count = len(store.beats)
    time.sleep(0.1)
    assert len(store.beats) == count  # the thread has stopped


def test_a_failing_store_is_logged_once_retried_and_recovers(cfg: Config, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="recognizer.heartbeat")
    store = FlakyStore(failures=3)
    rep = reporter(cfg.replace(kiosk_name="door"), store, interval=0.01)
    rep.start()
    try:
        for _ in range(200):  # the frame loop carries on, never raising
            rep.frame()
            rep.event(event("Unknown", ACTION_UNKNOWN))
        assert wait_for(lambda: len(store.beats) >= 2)
    finally:
        rep.close()
    assert rep.failures == 3 and store.failures == 0
    records = [r for r in caplog.records if r.name == "recognizer.heartbeat"]
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert warnings == [
        "kiosk door: heartbeat not saved (postgresql://kiosk:***@db/attendance: the database "
        "is locked); retrying every 0.01 s"
    ]
    debug = [r.getMessage() for r in records if r.levelno == logging.DEBUG]
    assert sum("heartbeat not saved" in m for m in debug) == 2
    infos = [r.getMessage() for r in records if r.levelno == logging.INFO]
    assert infos.count("kiosk door: heartbeat saved again") == 1
    assert "hunter2" not in caplog.text
    assert store.closed >= 3  # closed after each failure, reopened at the next attempt
    assert store.beats[-1].unknown == 200 and store.beats[-1].source_state == "stopped"


def test_a_store_that_cannot_be_opened_never_raises(cfg: Config, caplog) -> None:
    def broken() -> FakeStore:
        raise DatabaseUnavailable("cannot reach the PostgreSQL server at db:5432")

    rep = reporter(cfg, FakeStore(), open_store=broken)
    assert rep.beat() is False and rep.beat() is False
    rep.close("ended")
    assert rep.failures == 3 and rep.saved == 0
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 1


def test_the_frame_loop_never_waits_for_the_store(cfg: Config) -> None:
    store = BlockingStore()
    rep = reporter(cfg, store, interval=0.01, clock=time.monotonic)
    rep.start()
    done = threading.Event()

    def frame_loop() -> None:
        for _ in range(1000):
            rep.frame()
            rep.event(event("Unknown", ACTION_UNKNOWN))
        rep.finish("ended")
        done.set()

    try:
        assert store.entered.wait(5)  # the thread is inside beat(), the store holds it
        threading.Thread(target=frame_loop, daemon=True).start()
        assert done.wait(2.0), "the frame loop waited for the store"
        assert rep.counts[2] == 1000
    finally:
        store.release.set()
        rep.close()
    assert store.beats[-1].source_state == "ended" and store.beats[-1].unknown == 1000


def test_a_dead_store_does_not_hang_shutdown(cfg: Config, caplog) -> None:
    store = BlockingStore()
    rep = reporter(cfg, store, close_timeout=0.2)
    rep.start()
    try:
        assert store.entered.wait(5)
        started = time.monotonic()
        rep.close("stopped")
        assert time.monotonic() - started < 1.5
    finally:
        store.release.set()
    assert "did not answer within 0.2 s; the final state (stopped) may not be saved" in (
        caplog.text
    )


def test_close_timeout_follows_the_database_timeout(cfg: Config) -> None:
    source = FakeSource()
    assert HeartbeatReporter(cfg.replace(db_timeout_seconds=7.0), source).close_timeout == 7.0
    assert HeartbeatReporter(cfg.replace(db_timeout_seconds=0.0), source).close_timeout == 1.0
    assert HeartbeatReporter(cfg.replace(heartbeat_seconds=2.5), source).interval == 2.5


# --------------------------------------------------------------------------- run_loop
class StoppingSource(ListSource):
    """Synthetic frames; before frame ``at`` is handed out, ``action()`` runs."""

    def __init__(self, frames, at: int, action) -> None:
        super().__init__(frames)
        self.at, self.action = at, action

    def __next__(self):
        if self.taken == self.at:
            self.action()
        return super().__next__()


def lose_stream() -> None:
    raise SourceError("stream rtsp://u:pw@cam/1 was lost and did not come back")


def interrupt() -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("how", "frames", "state"),
    [
        ("end", 30, "ended"),
        ("stop", 29, "stopped"),  # the frame handed out as the stop came is processed
        ("ctrl-c", 28, "stopped"),
        ("lost", 28, "error: stream rtsp://u:***@cam/1 was lost and did not come back"),
    ],
)
def test_run_loop_feeds_the_heartbeat(tmp_path: Path, how: str, frames: int, state: str) -> None:
    cfg = synthetic_config(tmp_path)
    images = [make_frame(i, {"Ada": (100, 60)}) for i in range(15)]
    images += [make_frame(15 + i, {"Zed": (100, 60)}) for i in range(15)]
    stop = threading.Event()
    actions = {"end": lambda: None, "stop": stop.set, "ctrl-c": interrupt, "lost": lose_stream}
    source = StoppingSource(images, 28 if how != "end" else 99, actions[how])
    clock, store = Clock(0.0), FakeStore()
    rep = reporter(cfg, store, source=source, clock=clock)
    with PendingWriter(open_attendance_store(cfg)) as writer:
        pipe, _, _ = engine(cfg, writer)
        summary = cli.run_loop(source, pipe, stop=stop, heartbeat=rep)
    assert summary.frames == frames
    clock.value = 2.0
    rep.beat()
    beat = store.beats[-1]
    assert beat.fps == pytest.approx(frames / 2.0)
    assert (beat.marked, beat.unknown) == (1, 1)  # Ada present, Zed unknown
    rep.close()
    assert store.beats[-1].source_state == state


# --------------------------------------------------------------------------- the real store
def test_heartbeats_through_the_sqlite_site_store(workspace: Config) -> None:
    from store.factory import open_site_store

    cfg = workspace.replace(kiosk_name="front door", db_timeout_seconds=2.0)
    with HeartbeatReporter(cfg, FakeSource("camera 0")) as rep:
        rep.event(event("Ada", "present"))
        rep.event(event("Unknown", ACTION_UNKNOWN))
        rep.finish("ended")
    assert rep.saved >= 2 and rep.failures == 0
    with open_site_store(cfg, create=False) as site:
        (beat,) = site.kiosks()
    assert (beat.kiosk, beat.source, beat.source_state) == ("front door", "camera 0", "ended")
    assert (beat.day, beat.marked, beat.unknown) == (dt.date.today().isoformat(), 1, 1)
    assert beat.host == socket.gethostname() and beat.model_version == "pretrained"

    with HeartbeatReporter(cfg, FakeSource("camera 0")) as again:  # a restart the same day
        again.event(event("Bob", "present"))
    with open_site_store(cfg, create=False) as site:
        (beat,) = site.kiosks()
    assert (beat.marked, beat.unknown, beat.source_state) == (2, 1, "stopped")


@pytest.fixture
def live(tmp_path: Path, cache_dir: Path) -> Config:
    """The synthetic set-up of test_recognizer_cli: Bob enrolled in gallery.sqlite."""
    cfg = load_config(tmp_path, overrides={"cache_dir": str(cache_dir)}, env={})
    enrol_crop(cfg, "Bob")
    return cfg


def face_recognizer(live: Config, monkeypatch, frames, *settings: str) -> int:
    """``face_recognizer --continuous`` on ``frames`` with the fake models (no display)."""
    from model.embedder import Embedder

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(Embedder, "from_config", classmethod(lambda cls, cfg: FakeEmbedder()))
    monkeypatch.setattr("common.sources.open_source", lambda spec: ListSource(frames))
    flags = ["--workspace", str(live.root), "--source", "synthetic", "--continuous"]
    # the synthetic source is live, so liveness would be passive: off, this is about beats
    for setting in ("detect_every=1", "threshold=0.8", "kiosk_name=gate 1", "liveness=off",
                    *settings):  # fmt: skip
        flags += ["--set", setting]
    return cli.main(flags)


def test_face_recognizer_reports_its_end_in_the_site_store(
    live: Config, monkeypatch, capsys, use_detector
) -> None:
    from store.factory import open_site_store

    use_detector(FakeDetector())
    frames = [make_frame(i, {"Bob": (100, 60)}) for i in range(12)]
    frames += [make_frame(12 + i, {"Zed": (100, 60)}) for i in range(12)]
    assert face_recognizer(live, monkeypatch, frames) == 0
    with open_site_store(live, create=False) as site:
        (beat,) = site.kiosks()
    assert (beat.kiosk, beat.source, beat.source_state) == ("gate 1", "synthetic", "ended")
    assert (beat.marked, beat.unknown) == (1, 1)
    assert "summary: 24 frames" in capsys.readouterr().out


def test_face_recognizer_reports_a_failure_while_closing(
    live: Config, monkeypatch, capsys, use_detector
) -> None:
    """The attendance database stays locked: the run exits 2 because a sighting is unsaved,
    and the kiosk's final state says so."""
    import sqlite3

    from store.factory import open_site_store

    use_detector(FakeDetector())
    frames = [make_frame(i, {"Bob": (100, 60)}) for i in range(12)]
    with open_attendance_store(live):
        pass
    locker = sqlite3.connect(str(live.db_path), isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        assert face_recognizer(live, monkeypatch, frames, "db_timeout_seconds=0.05") == 2
    finally:
        locker.execute("COMMIT")
        locker.close()
    capsys.readouterr()
    with open_site_store(live, create=False) as site:
        (beat,) = site.kiosks()
    assert beat.source_state.startswith("error: 1 sighting(s) could not be saved to ")
    assert beat.marked == 1  # queued: as far as this kiosk knows, Bob's first sighting
