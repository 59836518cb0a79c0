"""Live updates: one watcher per server, a snapshot per change, server-sent events to every
client within 2 s of another process marking someone (real uvicorn on 127.0.0.1)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from web_support import FakeEnrol, add_user, running_server, sign_in

from common.config import Config
from store.factory import open_attendance_store
from store.records import AttendanceRow, Heartbeat
from web.app import create_app
from web.live import STORE_DOWN, LiveHub
from web.today import kiosk_views, same_content, today_snapshot

ROOT = Path(__file__).resolve().parents[1]
NOW = dt.datetime(2024, 5, 1, 9, 30)


def test_today_snapshot_present_absent_unknown() -> None:
    rows = [
        AttendanceRow("Bob", "2024-05-01", "Present", "08:10:00", "09:00:00"),
        AttendanceRow("Ada", "2024-05-01", "Present", "07:55:00", "07:55:00"),
        AttendanceRow("Cy", "2024-05-01", "Absent", None, None),
    ]
    utc = dt.datetime(2024, 5, 1, 7, 30, tzinfo=dt.timezone.utc)
    beats = [
        Heartbeat(
            "a", "h", "cam", "running", 10.0, "pretrained", "", utc.isoformat(), "2024-05-01", 2, 4
        ),
        Heartbeat(
            "b",
            "h",
            "cam",
            "running",
            10.0,
            "pretrained",
            "",
            (utc - dt.timedelta(minutes=5)).isoformat(),
            "2024-04-30",
            9,
            9,
        ),
    ]
    kiosks = kiosk_views(beats, utc, 5.0, "2024-05-01")
    assert [(k.alive, k.state, k.unknown) for k in kiosks] == [
        (True, "running", 4),
        (False, "silent", 0),
    ]
    snap = today_snapshot(NOW.date(), rows, ["Ada", "Bob", "Cy", "Dee"], kiosks, NOW)
    assert [p["name"] for p in snap["present"]] == ["Ada", "Bob"]  # by entry time
    assert snap["absent"] == ["Cy", "Dee"]
    assert snap["counts"] == {
        "present": 2,
        "absent": 2,
        "unknown": 4,
        "kiosks_alive": 1,
        "kiosks": 2,
    }
    later = today_snapshot(
        NOW.date(), rows, ["Ada", "Bob", "Cy", "Dee"], kiosks, NOW + dt.timedelta(seconds=5)
    )
    assert same_content(snap, later)
    assert not same_content(snap, today_snapshot(NOW.date(), rows[:1], ["Ada"], kiosks, NOW))


def test_the_hub_rebuilds_only_when_a_store_changes(workspace: Config) -> None:
    cfg = workspace
    with open_attendance_store(cfg) as db:
        db.mark_present("Ada", dt.datetime.now(), 0.4, "cam")
    hub = LiveHub(cfg, interval=0.05, kiosk_interval=60)
    hub.start()
    try:
        time.sleep(0.5)
        version, rebuilds = hub.version, hub.rebuilds
        time.sleep(0.5)  # nothing changed: ten polls, no rebuild
        assert (hub.version, hub.rebuilds) == (version, rebuilds)
        with open_attendance_store(cfg) as db:
            db.mark_present("Bob", dt.datetime.now(), 0.4, "cam")
        deadline = time.monotonic() + 2
        while hub.version == version and time.monotonic() < deadline:
            time.sleep(0.02)
        assert hub.version == version + 1
        assert [p["name"] for p in hub.snapshot()["present"]] == ["Ada", "Bob"]
    finally:
        hub.stop()


WRITER = """
import datetime as dt, sys
from common.config import load_config
from store.factory import open_attendance_store
with open_attendance_store(load_config(sys.argv[1], env={})) as db:
    db.mark_present(sys.argv[2], dt.datetime.now(), 0.42, "door")
"""


def _listen(base: str, cookies: httpx.Cookies, got: list, ready: threading.Event) -> None:
    with (
        httpx.Client(base_url=base, cookies=cookies, timeout=10) as client,
        client.stream("GET", "/events/today") as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                got.append((time.monotonic(), json.loads(line[6:])))
                ready.set()
                if any(p["name"] == "Grace" for p in got[-1][1]["present"]):
                    return


def test_every_client_sees_another_process_mark_someone_within_2_s(workspace: Config) -> None:
    cfg = workspace
    add_user(cfg, "boss", "viewer")
    with open_attendance_store(cfg):
        pass
    app = create_app(cfg, enrol=FakeEnrol(), live=True)
    with running_server(app) as base:
        with httpx.Client(base_url=base, follow_redirects=True) as client:
            page = client.get("/login")
            assert sign_in(client, "boss").status_code == 200 and page.status_code == 200
            cookies = client.cookies
        received: list[list] = [[] for _ in range(5)]
        readies = [threading.Event() for _ in received]
        threads = [
            threading.Thread(target=_listen, args=(base, cookies, got, ready), daemon=True)
            for got, ready in zip(received, readies, strict=True)
        ]
        for thread in threads:
            thread.start()
        assert all(ready.wait(10) for ready in readies)
        rebuilds = app.state.ctx.hub.rebuilds
        written = time.monotonic()
        subprocess.run(
            [sys.executable, "-c", WRITER, str(cfg.root), "Grace"], check=True, cwd=ROOT, timeout=60
        )
        done = time.monotonic()
        for thread in threads:
            thread.join(timeout=5)
        for got in received:
            when, snapshot = got[-1]
            assert [p["name"] for p in snapshot["present"]] == ["Grace"]
            # the writer process needs ~0.3 s to start: the update came within 2 s of its end
            assert when - done < 2.0, when - done
            assert when > written
        # one snapshot for the change, not one per client
        assert app.state.ctx.hub.rebuilds - rebuilds <= 2


def test_the_stream_needs_a_sign_in(workspace: Config) -> None:
    app = create_app(workspace, enrol=FakeEnrol(), live=True)
    with running_server(app) as base, httpx.Client(base_url=base) as client:
        response = client.get("/events/today", headers={"accept": "text/event-stream"})
        assert response.status_code == 401


@pytest.mark.parametrize("error", ["the database is locked"])
def test_a_store_error_is_shown_not_fatal(workspace: Config, error: str, monkeypatch) -> None:
    from common.errors import UserError

    hub = LiveHub(workspace, interval=0.05)
    monkeypatch.setattr(hub, "_build", lambda watch: (_ for _ in ()).throw(UserError(error)))
    hub.start()
    try:
        time.sleep(0.3)
        assert hub.snapshot()["error"] == STORE_DOWN  # the detail (a path) only in the log
    finally:
        hub.stop()
