"""Benchmark the web dashboard against the issue's speed targets, on synthetic data.

Targets (issue): with 1,000 people and one year of attendance, the Today page's server time
p95 <= 100 ms; a one-month report for everyone <= 1 s; 50 concurrent dashboard clients with
live updates with no effect on a recogniser's FPS on the same machine beyond noise.

1. **Data.** A temp workspace (SQLite; ``--store postgresql://...`` an empty PostgreSQL
   database, ``--pg`` a throwaway cluster from ``tests/pg.py``) gets ``--people`` enrolled
   people (three tiny crop PNGs each in ``pre_images/`` and their embeddings, inserted with
   the embedding store's ``insert`` for the real model's id) and ``--days`` working days of
   attendance ending today: each day ~90% of the people come in (entry ~ N(08:45, 25 min),
   mostly a later sighting ~8 h after), written with the attendance store's ``mark_present``
   (one event per sighting), each past day closed with ``close_day`` (Absent rows and
   events). Today is a full day too, so the Today page is measured at its largest. Four kiosk
   heartbeats go to ``open_site_store(cfg).beat``. Faster path, SQLite only: the build's own
   connection runs with ``PRAGMA synchronous = OFF`` (the durability of the bench's writes
   only: the same store methods write the same rows; the server and the writer use the
   store's own settings); about 0.1 ms per sighting instead of 0.35. PostgreSQL has no such
   path (about 1.8 ms per sighting here): use fewer ``--days`` there. The build time is shown.
2. **Pages.** The real app (``web.app.create_app``, live updates on, a fake enrolment
   service) on uvicorn in a thread; an admin signs in; ``GET /`` and ``/api/v1/today``
   ``--requests`` times each, then the People page and ``/api/v1/people`` (``--requests``/6
   times), one request after another, after 3 uncounted ones. The app sends no Server-Timing
   header, so the bench wraps it in an ASGI timer: *server time* runs from the request
   reaching the app to the last chunk of its body handed to uvicorn (auth, store reads,
   rendering, serialising); the round trip on 127.0.0.1 is shown too.
3. **Reports.** ``/api/v1/reports?start=<first>&end=<last>`` of the last full calendar month
   (the last 30 days when ``--days`` does not reach it) for everyone, as JSON, CSV and XLSX,
   the Reports page and its "CSV (every day)" download, ``--report-requests`` times each
   after one uncounted (median and max; the 1 s target applies to each).
4. **Live clients and FPS.** A recogniser (``face_recognizer --headless --continuous`` in its
   own workspace: four sample people enrolled with ``call_preprocess``, the real weights) reads
   a 640x480 video of sample faces (``--fps-frames``) at full speed, (a) alone and (b) while
   ``attendance serve`` runs on the synthetic workspace in its own process, ``--clients``
   server-sent-events clients (one asyncio + httpx process, an API token) follow
   ``/events/today``, and a writer process calls ``mark_present`` about every
   ``--write-interval`` s (jittered; each write moves someone's LastSeen to a clock time after
   the synthetic day's, so every write changes the Today snapshot). ``--fps-runs`` runs of
   each, back to back in ABBA order (a b, b a, ...). FPS is the recogniser's summary line
   (frames / seconds of its loop). Reported per run and overall: FPS (mean +- stdev, min-max),
   the CPU of the server, the clients, the writer and the recogniser (% of one core, from
   /proc/<pid>/stat), updates per client, the latency from a write's commit (the writer's
   clock) to each client receiving a snapshot that shows it (the client's clock; one machine)
   p50/p95/max, writes a client never saw, and how far apart the first and the last client
   received the same snapshot. "Not affected beyond noise" = the mean FPS with clients is at
   most one run-to-run range (max - min of either kind) below the mean alone.

The machine may be shared (other engineers' jobs, a VM's steal time): each figure comes with
"others", the CPU that processes not the bench's used meanwhile (% of one core; /proc/stat
minus the bench's processes), and the FPS runs with the hypervisor's steal; before each series
and each recogniser run the bench waits up to ``--quiet-wait`` s for others to drop below
``--quiet-below`` %. The SSE clients run on this machine too (a dashboard's browsers would
not): their CPU is reported apart from the server's.

Usage: ``python bench/bench_web.py [--people 1000] [--days 250] [--clients 50] [--requests
300] [--skip-fps] [--skip-reports] [--store URL | --pg] [--keep DIR]``; a smoke run:
``--quick``. The full run takes about 8 minutes on the 2-core machine. Part 4 needs the FaceNet
weights and the sample photos in the cache (``attendance fetch``). Every child process is
stopped on any exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import multiprocessing as mp
import os
import random
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tests/web_support.py: users, tokens, sign-in, server

TODAY_TARGET_MS = 100.0  # Today page server time, p95
REPORT_TARGET_S = 1.0  # one-month report for everyone
FIRST_NAMES = (
    "Amelia", "Ben", "Chloe", "Daniel", "Elif", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kofi",
    "Lena", "Mateo", "Nadia", "Oscar", "Priya", "Quentin", "Rosa", "Samir", "Tara", "Umar",
    "Vera", "Wei", "Ximena", "Yusuf", "Zoe", "Aiko", "Bruno", "Carmen", "Dmitri", "Esther",
    "Felix", "Gita", "Hamid", "Ivana", "Jamal", "Katya", "Luis", "Maya", "Noor",
)  # fmt: skip
LAST_NAMES = (
    "Okafor", "Lindqvist", "Moreau", "Tanaka", "Alvarez", "Novak", "Haddad", "Brennan",
    "Kowalski", "Mensah", "Rossi", "Nakamura", "Fischer", "Oduya", "Petrov", "Silva", "Chen",
    "Dubois", "Ibrahim", "Jensen", "Kaur", "Larsen", "Mendes", "Nguyen", "Ortiz",
)  # fmt: skip
SAMPLE_ENROLLED = ("ben_afflek", "elton_john", "jerry_seinfeld", "madonna")


# --------------------------------------------------------------------------- child processes
class Children:
    """Every process the bench starts, so each one is ended (by its id) on any exit."""

    def __init__(self) -> None:
        self._procs: list[Any] = []  # subprocess.Popen or multiprocessing.Process
        self._lock = threading.Lock()

    def popen(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        with self._lock:
            proc = subprocess.Popen(list(cmd), start_new_session=True, **kwargs)
            self._procs.append(proc)
            return proc

    def process(self, target: Any, args: tuple) -> Any:
        proc = mp.get_context("spawn").Process(target=target, args=args, daemon=True)
        proc.start()
        with self._lock:
            self._procs.append(proc)
        return proc

    def stop(self, proc: Any, grace: float = 10.0) -> None:
        if isinstance(proc, subprocess.Popen):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)  # uvicorn and the recogniser stop cleanly
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        else:
            proc.join(grace)
            if proc.is_alive():
                proc.kill()
                proc.join()

    def stop_all(self) -> None:
        with self._lock:
            procs, self._procs = self._procs, []
        for proc in procs:
            with contextlib.suppress(Exception):
                if isinstance(proc, subprocess.Popen):
                    self.stop(proc, 5.0)
                elif proc.is_alive():
                    proc.terminate()
                    proc.join(5.0)
                    if proc.is_alive():
                        proc.kill()


CHILDREN = Children()


def tool(name: str, module: str) -> list[str]:
    """The console script ``name`` next to this Python (the venv's bin), else ``-m module``."""
    script = Path(sys.executable).parent / name
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


def child_env() -> dict[str, str]:
    """This tree first on the import path; no workspace or store from the environment."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ATTENDANCE_ROOT", "ATTENDANCE_STORE", "DISPLAY")
    }
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """``(busy, steal)`` CPU seconds of the whole machine so far (all cores), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


class LoadMeter:
    """What *other* processes (not the bench's: ``pids``) used of the machine meanwhile, in %
    of one core: other engineers' jobs on a shared machine skew every figure here."""

    def __init__(self, pids: Sequence[int] = ()) -> None:
        self.pids = [os.getpid(), *pids]
        self.start()

    def _own(self) -> float:
        return sum(c for c in (cpu_seconds(p) for p in self.pids) if c == c)  # NaN: gone

    def start(self) -> None:
        self._busy, self._steal = machine_cpu()
        self._own0 = self._own()
        self._wall = time.perf_counter()

    def others(self, extra_own: float = 0.0) -> tuple[float, float]:
        """``(others %, steal %)`` since :meth:`start`; ``extra_own``: CPU seconds of the
        bench's processes that are gone (not in ``pids``)."""
        busy, steal = machine_cpu()
        wall = max(time.perf_counter() - self._wall, 1e-9)
        own = self._own() - self._own0 + extra_own
        return (
            max(0.0, 100.0 * (busy - self._busy - own) / wall),
            100.0 * (steal - self._steal) / wall,
        )


def wait_quiet(limit: float, threshold: float, pids: Sequence[int] = ()) -> tuple[float, float]:
    """Wait up to ``limit`` s until other processes use less than ``threshold`` % of a core
    (over 2 s); ``(seconds waited, their % in the last window)``."""
    started = time.monotonic()
    while True:
        meter = LoadMeter(pids)
        time.sleep(2.0)
        others, _ = meter.others()
        waited = time.monotonic() - started
        if others < threshold or waited >= limit:
            return waited, others


# --------------------------------------------------------------------------- statistics
def pct(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (linear interpolation between the closest ranks)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass
class Row:
    """One line of the final table."""

    what: str
    value: str
    target: str = ""
    verdict: str = ""


# --------------------------------------------------------------------------- 1. data
def workspace_config(root: Path, store: str) -> Any:
    from common.config import load_config

    overrides = {"store": store} if store else None
    return load_config(root, overrides=overrides, env={})


def people_names(n: int) -> list[str]:
    names = [f"{first} {last}" for last in LAST_NAMES for first in FIRST_NAMES]
    out = names[:n]
    k = 2
    while len(out) < n:
        out += [f"{name} {k}" for name in names[: n - len(out)]]
        k += 1
    return out


def working_days(count: int, today: dt.date) -> list[dt.date]:
    """Today and the ``count - 1`` weekdays before it, oldest first."""
    days = [today]
    day = today
    while len(days) < count:
        day -= dt.timedelta(days=1)
        if day.weekday() < 5:
            days.append(day)
    return days[::-1]


def solid_png(rgb: tuple[int, int, int], size: int = 160) -> bytes:
    """A valid ``size``x``size`` PNG of one colour (8-bit palette, ~120 bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", size, size, 8, 3, 0, 0, 0)
    idat = zlib.compress(b"\x00" * ((size + 1) * size), 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"PLTE", bytes(rgb))
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


def model_id_for(cfg: Any) -> str:
    """The recogniser's model id without loading TensorFlow (as ``bench_kiosks`` does)."""
    from model.versions import model_id_of

    base = model_id_of(cfg, cfg.model_version)
    return f"{base}+flip" if cfg.flip_average else base


def clock(minutes: float) -> dt.time:
    minutes = min(max(minutes, 0.0), 24 * 60 - 1 / 60)
    seconds = int(round(minutes * 60))
    return dt.time(seconds // 3600, (seconds // 60) % 60, seconds % 60)


@dataclass
class Built:
    root: Path
    cfg: Any
    names: list[str]
    days: list[dt.date]
    sightings: int
    absent_rows: int
    seconds: dict[str, float]
    sizes: dict[str, int]


def enrol_synthetic(cfg: Any, names: Sequence[str], crops: int, seed: int) -> int:
    """Crop PNGs in ``pre_images/<name>/`` and one random unit 128-d embedding per crop."""
    import numpy as np

    from store.factory import open_embedding_store
    from store.records import CropEmbedding

    rng = np.random.default_rng(seed)
    model_id = model_id_for(cfg)
    rows = []
    base = Path(cfg.pre_images_dir)
    for i, name in enumerate(names):
        folder = base / name
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(crops):
            k = i * crops + j
            png = solid_png((k & 255, (k >> 8) & 255, (k * 7) & 255))
            path = folder / f"{j + 1:04d}.png"
            path.write_bytes(png)
            stat = path.stat()
            vector = rng.normal(size=128).astype("<f4")
            vector /= np.linalg.norm(vector)
            rows.append(
                CropEmbedding(
                    sha256=hashlib.sha256(png).hexdigest(),
                    relpath=f"{name}/{path.name}",
                    identity=name,
                    size=stat.st_size,
                    mtime_ns=stat.st_mtime_ns,
                    dim=128,
                    vector=vector.tobytes(),
                    png=png,
                )
            )
    with open_embedding_store(cfg) as gallery:
        return gallery.insert(model_id, rows)


def build_workspace(root: Path, args: argparse.Namespace) -> Built:
    """Part 1: the synthetic workspace (see the module docstring)."""
    from store.factory import open_attendance_store, open_site_store, upgrade_store
    from store.records import Heartbeat

    cfg = workspace_config(root, args.store)
    seconds: dict[str, float] = {}
    if args.store:
        upgrade_store(cfg)
        with open_attendance_store(cfg) as db:
            if db.rows(start="1900-01-01", end="2999-12-31")[:1]:
                raise SystemExit(f"{args.store}: the store holds attendance: use an empty one")
    names = people_names(args.people)
    rng = random.Random(args.seed)
    today = dt.date.today()
    days = working_days(args.days, today)

    started = time.perf_counter()
    crops = enrol_synthetic(cfg, names, 3, args.seed)
    seconds["people"] = time.perf_counter() - started

    started = time.perf_counter()
    sightings = absent_rows = 0
    doors = ("door-north", "door-south", "lobby")
    with open_attendance_store(cfg) as db:
        conn = getattr(db, "_conn", None)
        if not args.store and conn is not None:
            conn.execute("PRAGMA synchronous = OFF")  # this connection only: see the docstring
        for number, day in enumerate(days):
            marks: list[tuple[dt.datetime, str]] = []
            for name in names:
                if rng.random() >= 0.9:
                    continue
                entry = rng.gauss(8 * 60 + 45, 25)
                entry = min(max(entry, 7 * 60), 11 * 60)
                marks.append((dt.datetime.combine(day, clock(entry)), name))
                if rng.random() < 0.95:
                    last = min(entry + rng.gauss(8 * 60, 60), 19 * 60 + 30)
                    if last > entry:
                        marks.append((dt.datetime.combine(day, clock(last)), name))
            marks.sort()
            for when, name in marks:
                db.mark_present(name, when, round(rng.uniform(0.3, 0.8), 3), rng.choice(doors))
            sightings += len(marks)
            if day != today:
                absent_rows += db.close_day(day, names)
            if args.verbose_build and number % 25 == 0:
                print(f"  day {number + 1}/{len(days)} {day}", flush=True)
    seconds["attendance"] = time.perf_counter() - started

    started = time.perf_counter()
    now = dt.datetime.now(dt.timezone.utc)
    with open_site_store(cfg) as site:
        for k, (state, age) in enumerate(
            (("running", 1), ("running", 2), ("running", 4), ("stopped", 3600))
        ):
            site.beat(
                Heartbeat(
                    kiosk=f"kiosk-{k + 1}",
                    host=f"host-{k + 1}",
                    source=f"rtsp://camera-{k + 1}/stream",
                    source_state=state,
                    fps=15.0 - k,
                    model_version="pretrained",
                    started=(now - dt.timedelta(hours=9)).isoformat(timespec="seconds"),
                    last_seen=(now - dt.timedelta(seconds=age)).isoformat(timespec="seconds"),
                    day=today.isoformat(),
                    marked=200 + k,
                    unknown=3 * k,
                )
            )
    seconds["heartbeats"] = time.perf_counter() - started
    sizes = {}
    if not args.store:
        for path in (cfg.db_path, cfg.gallery_path, cfg.site_db_path):
            size = sum(
                Path(f"{path}{suffix}").stat().st_size
                for suffix in ("", "-wal")
                if Path(f"{path}{suffix}").exists()
            )
            sizes[Path(path).name] = size
    print(
        f"data: {len(names)} people ({crops} crop embeddings) in {seconds['people']:.1f} s; "
        f"{len(days)} working days {days[0]}..{days[-1]}: {sightings} sightings "
        f"(mark_present) + {absent_rows} Absent rows (close_day) in "
        f"{seconds['attendance']:.1f} s ({1000 * seconds['attendance'] / max(1, sightings):.3f}"
        f" ms per sighting); 4 heartbeats"
        + (
            "; files " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in sizes.items())
            if sizes
            else ""
        ),
        flush=True,
    )
    return Built(root, cfg, names, days, sightings, absent_rows, seconds, sizes)


# --------------------------------------------------------------------------- 2./3. pages
class AppTimer:
    """ASGI wrapper: the seconds from a request reaching the app to the last chunk of its
    body handed to uvicorn."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.last: float | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed(message: Any) -> None:
            # each body chunk, before the client can see it (a response whose length is
            # known is complete for the client before the empty closing chunk is sent)
            if message["type"] == "http.response.body" and (
                message.get("body") or not message.get("more_body")
            ):
                self.last = time.perf_counter() - started
            await send(message)

        await self.app(scope, receive, timed)


@dataclass
class Series:
    label: str
    server: list[float] = field(default_factory=list)  # seconds
    trip: list[float] = field(default_factory=list)
    size: int = 0
    cold: float = 0.0  # the first request's server time (not in the lists)
    others: float = 0.0  # % of a core other processes used meanwhile (LoadMeter)

    def line(self) -> str:
        ms = [1000 * s for s in self.server]
        trip = [1000 * s for s in self.trip]
        return (
            f"{self.label:<28} n={len(ms):<4} server p50 {pct(ms, 50):7.1f}  p95 "
            f"{pct(ms, 95):7.1f}  max {max(ms):7.1f} ms | round trip p50 {pct(trip, 50):7.1f}  "
            f"p95 {pct(trip, 95):7.1f} ms | {self.size / 1024:.0f} KiB | "
            f"first {1000 * self.cold:.0f} ms | others {self.others:.0f}%"
        )


QUIET = (10.0, 30.0)  # before each series: wait up to 10 s for others below 30% (main() sets it)


def measure(client: Any, timer: AppTimer, label: str, path: str, n: int, warm: int = 3) -> Series:
    """GET ``path`` ``warm`` times (not counted) and then ``n`` times, one after another."""
    series = Series(label)
    wait_quiet(*QUIET)
    meter = LoadMeter()
    for i in range(warm + n):
        timer.last = None
        started = time.perf_counter()
        response = client.get(path)
        trip = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:300]}")
        if timer.last is None:
            raise RuntimeError(f"GET {path}: the timer saw no response")
        if i == 0:
            series.cold = timer.last
        if i >= warm:
            series.server.append(timer.last)
            series.trip.append(trip)
        series.size = len(response.content)
    series.others = meter.others()[0]
    print("  " + series.line(), flush=True)
    return series


def last_full_month(today: dt.date) -> tuple[dt.date, dt.date]:
    last = today.replace(day=1) - dt.timedelta(days=1)
    return last.replace(day=1), last


def wait_for_reports(poll: float, limit: float) -> bool:
    """Whether ``web.reports`` (and ``web.exports``) can be imported, polling for ``limit`` s
    (other engineers are finishing them)."""
    import importlib

    deadline = time.monotonic() + limit
    while True:
        missing = [
            m
            for m in ("web.reports", "web.exports")
            if not (ROOT / f"{m.replace('.', '/')}.py").exists()
        ]
        if not missing:
            try:
                importlib.import_module("web.reports")
                return True
            except Exception as exc:  # noqa: BLE001 - half-written module: wait and retry
                missing = [f"web.reports ({type(exc).__name__}: {exc})"]
        if time.monotonic() >= deadline:
            print(f"  reports skipped: {', '.join(missing)} not importable", flush=True)
            return False
        print(f"  waiting for {', '.join(missing)} ...", flush=True)
        time.sleep(poll)


def measure_pages(built: Built, args: argparse.Namespace) -> dict[str, Series]:
    """Parts 2 and 3 on the app served by uvicorn in a thread."""
    import httpx
    import web_support

    from web.app import create_app

    out: dict[str, Series] = {}
    web_support.add_user(built.cfg, "bench-admin", "admin")
    app = create_app(built.cfg, enrol=web_support.FakeEnrol(), live=True)
    timer = AppTimer(app)
    with (
        web_support.running_server(timer) as url,
        httpx.Client(base_url=url, follow_redirects=True, timeout=120) as client,
    ):
        response = web_support.sign_in(client, "bench-admin")
        if response.status_code != 200 or "/login" in str(response.url):
            raise RuntimeError(f"sign-in failed: {response.status_code} {response.url}")
        today = client.get("/api/v1/today").json()
        print(
            f"pages ({url}, in this process; server time = app time, see the docstring): "
            f"Today shows {today['counts']['present']} present, {today['counts']['absent']} "
            f"absent, {today['counts']['kiosks']} kiosks",
            flush=True,
        )
        n = args.requests
        out["today"] = measure(client, timer, "Today page  GET /", "/", n)
        out["api_today"] = measure(client, timer, "GET /api/v1/today", "/api/v1/today", n)
        m = max(5, n // 6)
        out["people"] = measure(client, timer, "People page  GET /people", "/people", m)
        out["api_people"] = measure(client, timer, "GET /api/v1/people", "/api/v1/people", m)
        if args.skip_reports or not wait_for_reports(60.0, args.wait_reports):
            return out
        first, last = last_full_month(dt.date.today())
        if built.days[0] > first:  # little data (--days): the last 30 days instead
            first, last = dt.date.today() - dt.timedelta(days=29), dt.date.today()
        span = f"start={first}&end={last}"
        print(f"reports: {first}..{last}, everyone", flush=True)
        r = args.report_requests
        for fmt in ("json", "csv", "xlsx"):
            out[f"report_{fmt}"] = measure(
                client, timer, f"report {fmt.upper()}", f"/api/v1/reports?{span}&format={fmt}", r, 1
            )
        out["report_page"] = measure(client, timer, "Reports page", f"/reports?{span}", r, 1)
        days = f"/reports/export.csv?{span}&view=days"
        if client.get(days).status_code == 200:  # the page's "CSV (every day)" download
            out["report_days_csv"] = measure(client, timer, "report CSV, every day", days, r, 1)
    return out


# --------------------------------------------------------------------------- 4. live + FPS
def writer_main(
    root: str, store: str, names: list[str], interval: float, offset: int, stop: Any, out: Any
) -> None:
    """A writer process: one ``mark_present`` every ``interval`` s on average (each gap drawn
    from 0.5-1.5 x ``interval``, so writes do not lock on to the server's polling phase) until
    ``stop``; puts the ``((name, entry, last_seen), commit time)`` of each write on ``out``."""
    sys.path.insert(0, str(ROOT))
    from store.factory import open_attendance_store

    cfg = workspace_config(Path(root), store)
    base = dt.datetime.combine(dt.date.today(), dt.time(19, 45)) + dt.timedelta(seconds=offset)
    log: list[tuple[tuple[str, str, str], float]] = []
    rng = random.Random(offset)
    with open_attendance_store(cfg) as db:
        k = 0
        tick = time.monotonic()
        while not stop.is_set():
            name = names[k % len(names)]
            result = db.mark_present(name, base + dt.timedelta(seconds=k), 0.42, "bench-writer")
            log.append(((result.name, result.entry_time, result.last_seen), time.time()))
            k += 1
            tick += interval * rng.uniform(0.5, 1.5)
            stop.wait(max(0.0, tick - time.monotonic()))
    out.put(log)


@dataclass
class ClientState:
    events: int = 0  # snapshots received, the first one included
    keys: dict[tuple[str, str, str], float] = field(default_factory=dict)  # first receipt
    versions: dict[int, float] = field(default_factory=dict)  # snapshot id -> receipt
    error: str = ""
    ready: bool = False


def clients_main(url: str, token: str, n: int, ready: Any, stop: Any, out: Any) -> None:
    """``n`` SSE clients of ``/events/today`` in one asyncio loop (a process of its own)."""
    asyncio.run(_clients(url, token, n, ready, stop, out))


async def _clients(url: str, token: str, n: int, ready: Any, stop: Any, out: Any) -> None:
    import httpx

    states = [ClientState() for _ in range(n)]
    limits = httpx.Limits(max_connections=n + 5, max_keepalive_connections=n + 5)
    timeout = httpx.Timeout(30.0, read=None)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, limits=limits, timeout=timeout
    ) as client:
        tasks = [asyncio.create_task(_client(client, s)) for s in states]
        deadline = time.monotonic() + 60
        while sum(s.ready for s in states) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        ready.put(sum(s.ready for s in states))
        while not stop.is_set():
            await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    out.put([(s.events, s.keys, s.versions, s.error) for s in states])


async def _client(client: Any, state: ClientState) -> None:
    seen: set[tuple[str, str, str]] = set()
    try:
        async with client.stream("GET", "/events/today") as response:
            if response.status_code != 200:
                state.error = f"HTTP {response.status_code}"
                return
            buffer = b""
            async for chunk in response.aiter_raw():
                buffer += chunk
                while b"\n\n" in buffer:
                    message, buffer = buffer.split(b"\n\n", 1)
                    lines = message.split(b"\n")
                    data = b"".join(line[6:] for line in lines if line.startswith(b"data: "))
                    if not data:
                        continue  # a keep-alive comment
                    received = time.time()
                    for line in lines:
                        if line.startswith(b"id: "):
                            state.versions[int(line[4:])] = received
                    snapshot = json.loads(data)
                    keys = {(p["name"], p["since"], p["last_seen"]) for p in snapshot["present"]}
                    if state.ready:
                        for key in keys - seen:
                            state.keys.setdefault(key, received)
                    seen = keys
                    state.events += 1
                    state.ready = True
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported in the table
        state.error = f"{type(exc).__name__}: {exc}"


def setup_recogniser(tmp: Path, frames: int) -> tuple[Path, Path, float]:
    """A workspace with the four sample people enrolled (``call_preprocess``, real weights)
    and a video of their held-back photos, one face at a time; ``(workspace, video, s)``."""
    from attendance.demo import build_video, enrol, load_photo, pretty_name
    from common.config import load_config
    from common.sdist import ensure_sample_data

    started = time.perf_counter()
    ws = tmp / "recogniser"
    ws.mkdir()
    cfg = load_config(ws, env={})
    sample = ensure_sample_data(cfg.cache_dir)
    enrol(cfg, sample, SAMPLE_ENROLLED, limit=6)
    cmd = [*tool("call_preprocess", "attendance.preprocess_cli"), "--workspace", str(ws), "-q"]
    proc = CHILDREN.popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)  # fmt: skip
    out, _ = proc.communicate(timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"call_preprocess failed ({proc.returncode}):\n{out[-2000:]}")
    scenes = []
    fps, hold, gap = 15.0, 1.8, 0.2
    per_scene = round(hold * fps) + round(gap * fps)
    i = 0
    while len(scenes) * per_scene < frames:
        person = SAMPLE_ENROLLED[i % len(SAMPLE_ENROLLED)]
        photos = sorted((sample / "val" / person).glob("*.jpg"))
        scenes.append((pretty_name(person), True, [load_photo(photos[(i // 4) % len(photos)])]))
        i += 1
    video = tmp / "faces.mp4"
    build_video(video, scenes, fps=fps, hold=hold, gap=gap)
    return ws, video, time.perf_counter() - started


SUMMARY = re.compile(r"summary: (\d+) frames in ([\d.]+) s \(([\d.]+) fps\)")


@dataclass
class FpsRun:
    mode: str  # "alone" or "clients"
    fps: float
    frames: int
    seconds: float
    wall: float
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core, during the run
    events: list[int] = field(default_factory=list)  # updates received per client
    latencies: list[float] = field(default_factory=list)  # seconds, all clients and writes
    missed: int = 0  # (client, write) pairs never received
    writes: int = 0
    connected: int = 0
    errors: list[str] = field(default_factory=list)
    spreads: list[float] = field(default_factory=list)  # per snapshot: last - first receipt
    others: float = 0.0  # % of a core other processes used during the run (LoadMeter)
    steal: float = 0.0  # % of a core the hypervisor gave to other machines
    waited: float = 0.0  # seconds waited for the machine to quieten before the run


def run_recogniser(
    ws: Path, video: Path, pids: Sequence[int] = ()
) -> tuple[float, int, float, float, float, tuple[float, float]]:
    """One recogniser run to the end of the video; ``(fps, frames, loop s, wall s, cpu s,
    (others %, steal %))``: wall and CPU from its start to its summary line (model loading
    included); others = the machine's CPU minus the bench's processes (``pids``, this one,
    the recogniser) meanwhile."""
    cmd = [*tool("face_recognizer", "recognizer.cli"), "--workspace", str(ws), "--source",
           str(video), "--headless", "--continuous", "-q"]  # fmt: skip
    meter = LoadMeter(pids)
    started = time.perf_counter()
    proc = CHILDREN.popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)  # fmt: skip
    cpu = wall = 0.0
    load = (0.0, 0.0)
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("summary:"):
            cpu = cpu_seconds(proc.pid)
            wall = time.perf_counter() - started
            load = meter.others(extra_own=cpu)
    proc.wait(600)
    found = next((SUMMARY.search(line) for line in lines if SUMMARY.search(line)), None)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"face_recognizer failed ({proc.returncode}):\n{''.join(lines)[-2000:]}")
    frames, seconds, fps = int(found.group(1)), float(found.group(2)), float(found.group(3))
    return fps, frames, seconds, wall, cpu, load


def start_server(root: Path, store: str, log: Path) -> tuple[subprocess.Popen, str]:
    """``attendance serve`` on a free port of 127.0.0.1; waits for ``/healthz``."""
    import httpx
    import web_support

    port = web_support.free_port()
    cmd = [*tool("attendance", "attendance.cli"), "serve", "--workspace", str(root),
           "--port", str(port)] + (["--store", store] if store else [])  # fmt: skip
    handle = log.open("a", encoding="utf-8")
    proc = CHILDREN.popen(cmd, env=child_env(), stdout=handle, stderr=subprocess.STDOUT)
    handle.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"attendance serve exited ({proc.returncode}); see {log}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        time.sleep(0.2)
    raise RuntimeError(f"attendance serve did not answer within 60 s; see {log}")


@contextlib.contextmanager
def dashboard_load(
    built: Built, args: argparse.Namespace, token: str, run: FpsRun, offset: int, log: Path
) -> Iterator[dict[str, int]]:
    """The server, ``--clients`` SSE clients (all connected) and the writer, for one run;
    yields the pids whose CPU is measured. Fills ``run`` with what the clients received."""
    ctx = mp.get_context("spawn")
    server, url = start_server(built.root, args.store, log)
    stop_clients, stop_writer = ctx.Event(), ctx.Event()
    ready, client_out, writer_out = ctx.Queue(), ctx.Queue(), ctx.Queue()
    clients = CHILDREN.process(
        clients_main, (url, token, args.clients, ready, stop_clients, client_out)
    )
    writer = None
    try:
        run.connected = ready.get(timeout=120)
        connected_at = time.time()
        order = list(built.names)
        random.Random(offset).shuffle(order)
        writer = CHILDREN.process(
            writer_main,
            (str(built.root), args.store, order, args.write_interval, offset, stop_writer,
             writer_out),
        )  # fmt: skip
        time.sleep(1.0)
        yield {"server": server.pid, "clients": clients.pid, "writer": writer.pid}
    finally:
        stop_writer.set()
        writes: list[tuple[tuple[str, str, str], float]] = []
        if writer is not None:
            with contextlib.suppress(Exception):
                writes = writer_out.get(timeout=30)
            CHILDREN.stop(writer)
        time.sleep(2.0)  # the last write's update reaches the clients
        stop_clients.set()
        results = []
        with contextlib.suppress(Exception):
            results = client_out.get(timeout=30)
        CHILDREN.stop(clients)
        CHILDREN.stop(server)
    deadline = writes[-1][1] - 1.0 if writes else 0.0  # writes at the very end may be in flight
    counted = [(key, t) for key, t in writes if connected_at <= t <= deadline]
    run.writes = len(counted)
    receipts: dict[int, list[float]] = {}
    for _, _, versions, _ in results:
        for version, t in versions.items():
            receipts.setdefault(version, []).append(t)
    run.spreads = [max(ts) - min(ts) for ts in receipts.values() if len(ts) == len(results) > 1]
    for events, keys, _, error in results:
        run.events.append(events - 1)  # the first snapshot is not an update
        if error:
            run.errors.append(error)
        for key, t in counted:
            if key in keys:
                run.latencies.append(keys[key] - t)
            else:
                run.missed += 1


def measure_fps(built: Built, tmp: Path, args: argparse.Namespace) -> list[FpsRun]:
    """Part 4: recogniser runs alone and with the dashboard load, alternately."""
    import web_support

    print(
        f"fps: preparing the recogniser workspace and a {args.fps_frames}-frame video", flush=True
    )
    ws, video, prep = setup_recogniser(tmp, args.fps_frames)
    print(f"  enrolled 4 sample people and built the video in {prep:.0f} s", flush=True)
    token = web_support.add_token(built.cfg, "bench-clients", "viewer")
    log = tmp / "serve.log"
    runs: list[FpsRun] = []
    for i in range(args.fps_runs):
        # ABBA order (a b, b a, a b, ...): a drift of the machine's speed over the runs (this
        # VM's steal time grows under sustained load) does not favour either kind
        for mode in ("alone", "clients") if i % 2 == 0 else ("clients", "alone"):
            run = FpsRun(mode, 0.0, 0, 0.0, 0.0)
            if mode == "alone":
                run.waited = wait_quiet(args.quiet_wait, args.quiet_below)[0]
                found = run_recogniser(ws, video)
                run.fps, run.frames, run.seconds, run.wall, cpu, load = found
                run.cpu["recogniser"] = 100.0 * cpu / max(run.wall, 1e-9)
            else:
                with dashboard_load(built, args, token, run, offset=1000 * i, log=log) as pids:
                    own = list(pids.values())
                    run.waited = wait_quiet(args.quiet_wait, args.quiet_below, own)[0]
                    before = {k: cpu_seconds(p) for k, p in pids.items()}
                    started = time.perf_counter()
                    found = run_recogniser(ws, video, own)
                    run.fps, run.frames, run.seconds, run.wall, cpu, load = found
                    wall = time.perf_counter() - started
                    run.cpu = {k: 100.0 * (cpu_seconds(p) - before[k]) / wall
                               for k, p in pids.items()}  # fmt: skip
                    run.cpu["recogniser"] = 100.0 * cpu / max(run.wall, 1e-9)
            run.others, run.steal = load
            runs.append(run)
            print("  " + fps_line(run, i + 1), flush=True)
    return runs


def fps_line(run: FpsRun, number: int) -> str:
    text = (
        f"run {number} {run.mode:<7}: {run.fps:5.1f} fps ({run.frames} frames in "
        f"{run.seconds:.1f} s; {run.wall:.0f} s with start-up); CPU % of a core: "
        + ", ".join(f"{k} {v:.0f}" for k, v in run.cpu.items())
        + f"; other processes {run.others:.0f}, steal {run.steal:.0f}"
        + (f" (waited {run.waited:.0f} s for quiet)" if run.waited > 2.5 else "")
    )
    if run.mode == "clients":
        lat = [1000 * s for s in run.latencies]
        events = run.events or [0]
        text += (
            f"\n      {run.connected} clients connected; {run.writes} writes; updates per client"
            f" min {min(events)} mean {statistics.mean(events):.1f}; write->client latency"
            f" p50 {pct(lat, 50):.0f} p95 {pct(lat, 95):.0f} max {max(lat, default=0):.0f} ms;"
            f" missed {run.missed}; first->last client of a snapshot p50 "
            f"{1000 * pct(run.spreads, 50):.0f} max {1000 * max(run.spreads, default=0):.0f} ms"
            + (f"; errors: {run.errors[:3]}" if run.errors else "")
        )
    return text


# --------------------------------------------------------------------------- 5. table
def mean_spread(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return (
        f"{statistics.mean(values):.1f} +- {statistics.stdev(values):.1f} "
        f"({min(values):.1f}-{max(values):.1f})"
    )


def table(built: Built, pages: dict[str, Series], runs: list[FpsRun], args) -> list[Row]:
    rows = [
        Row(
            "data build (people + attendance)",
            f"{built.seconds['people'] + built.seconds['attendance']:.0f} s; "
            f"{len(built.names)} people x {len(built.days)} days, {built.sightings} sightings",
        )
    ]
    if "today" in pages:
        p95 = 1000 * pct(pages["today"].server, 95)
        rows.append(
            Row(
                "Today page server time p95",
                f"{p95:.1f} ms (p50 {1000 * pct(pages['today'].server, 50):.1f}, max "
                f"{1000 * max(pages['today'].server):.1f}); others {pages['today'].others:.0f}%",
                f"<= {TODAY_TARGET_MS:.0f} ms",
                "PASS" if p95 <= TODAY_TARGET_MS else "FAIL",
            )
        )
    for key, label in (
        ("api_today", "GET /api/v1/today p95"),
        ("people", "People page p95"),
        ("api_people", "GET /api/v1/people p95"),
    ):
        if key in pages:
            s = pages[key]
            rows.append(
                Row(
                    label,
                    f"{1000 * pct(s.server, 95):.1f} ms (p50 {1000 * pct(s.server, 50):.1f}, max "
                    f"{1000 * max(s.server):.1f}); others {s.others:.0f}%",
                )
            )
    for key, label in (
        ("report_json", "one-month report, JSON"),
        ("report_csv", "one-month report, CSV"),
        ("report_xlsx", "one-month report, XLSX"),
        ("report_days_csv", "one-month report, CSV every day"),
        ("report_page", "one-month Reports page"),
    ):
        if key in pages:
            s = pages[key]
            worst = max(s.server)
            rows.append(
                Row(
                    label,
                    f"median {statistics.median(s.server):.3f} s, max {worst:.3f} s; "
                    f"{s.size / 1024:.0f} KiB; others {s.others:.0f}%",
                    f"<= {REPORT_TARGET_S:g} s",
                    "PASS" if worst <= REPORT_TARGET_S else "FAIL",
                )
            )
    if not pages.get("report_json") and not args.skip_reports:
        rows.append(Row("one-month report", "not measured (web.reports missing)", "<= 1 s", "-"))
    alone = [r.fps for r in runs if r.mode == "alone"]
    loaded = [r for r in runs if r.mode == "clients"]
    if alone and loaded:
        with_fps = [r.fps for r in loaded]
        noise = max(max(alone) - min(alone), max(with_fps) - min(with_fps))
        drop = statistics.mean(alone) - statistics.mean(with_fps)
        others_alone = statistics.mean(r.others for r in runs if r.mode == "alone")
        steal_alone = statistics.mean(r.steal for r in runs if r.mode == "alone")
        rows.append(
            Row(
                "recogniser FPS alone",
                f"{mean_spread(alone)}; others {others_alone:.0f}%, steal {steal_alone:.0f}%",
            )
        )
        rows.append(
            Row(
                f"recogniser FPS, {args.clients} SSE clients + writer",
                f"{mean_spread(with_fps)}; drop {drop:+.1f} fps "
                f"({100 * drop / statistics.mean(alone):+.1f}%); others "
                f"{statistics.mean(r.others for r in loaded):.0f}%, steal "
                f"{statistics.mean(r.steal for r in loaded):.0f}%",
                f"drop <= noise {noise:.1f}",
                "PASS" if drop <= noise else "FAIL",
            )
        )
        server = [r.cpu.get("server", 0.0) for r in loaded]
        clients = [r.cpu.get("clients", 0.0) for r in loaded]
        rows.append(
            Row(
                "CPU during the runs (% of a core)",
                f"server {mean_spread(server)}; clients {mean_spread(clients)}; writer "
                f"{statistics.mean(r.cpu.get('writer', 0.0) for r in loaded):.1f}",
            )
        )
        lat = [1000 * s for r in loaded for s in r.latencies]
        events = [e for r in loaded for e in r.events]
        missed = sum(r.missed for r in loaded)
        connected = min(r.connected for r in loaded)
        spreads = [1000 * s for r in loaded for s in r.spreads]
        rows.append(
            Row(
                "live update latency write->client",
                f"p50 {pct(lat, 50):.0f} ms, p95 {pct(lat, 95):.0f} ms, max "
                f"{max(lat, default=0):.0f} ms; {connected}/{args.clients} connected; "
                f"updates/client {min(events, default=0)}-{max(events, default=0)}; "
                f"missed {missed}; first->last client p50 {pct(spreads, 50):.0f} ms",
                f"all {args.clients} clients get every write",
                "PASS" if connected == args.clients and missed == 0 and lat else "FAIL",
            )
        )
    return rows


def print_table(rows: list[Row]) -> None:
    width = max(len(r.what) for r in rows)
    vwidth = max(len(r.value) for r in rows)
    print()
    print(
        "others = CPU other processes on this machine (not the bench's) used meanwhile, "
        "% of one core of 200"
    )
    print(f"{'figure':<{width}}  {'measured':<{vwidth}}  {'target':<24}  verdict")
    print("-" * (width + vwidth + 38))
    for r in rows:
        print(f"{r.what:<{width}}  {r.value:<{vwidth}}  {r.target:<24}  {r.verdict}")


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, help="enrolled people (default 1000)")
    parser.add_argument("--days", type=int, help="working days of attendance (default 250)")
    parser.add_argument("--clients", type=int, help="SSE clients in part 4 (default 50)")
    parser.add_argument("--requests", type=int, help="Today requests (default 300)")
    parser.add_argument("--report-requests", type=int, help="requests per report (default 5)")
    parser.add_argument("--fps-runs", type=int, help="recogniser runs of each kind (default 4)")
    parser.add_argument("--fps-frames", type=int, help="video frames per run (default 300)")
    parser.add_argument("--write-interval", type=float, default=1.0,
                        help="seconds between the writer's marks (default 1)")  # fmt: skip
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=20.0,
        metavar="S",
        help="before each recogniser run, wait up to S s for other processes to use less than "
        "--quiet-below %% of a core (default 20)",
    )
    parser.add_argument("--quiet-below", type=float, default=30.0, metavar="PCT")
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--skip-fps", action="store_true", help="skip part 4")
    parser.add_argument("--skip-reports", action="store_true", help="skip part 3")
    parser.add_argument(
        "--wait-reports",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for web/reports.py to appear (default 0)",
    )
    parser.add_argument(
        "--store", default="", help="an empty PostgreSQL database URL (default: SQLite files)"
    )
    parser.add_argument(
        "--pg",
        action="store_true",
        help="a throwaway PostgreSQL cluster (tests/pg.py; needs the server binaries) as --store",
    )
    parser.add_argument("--keep", metavar="DIR", help="build the workspaces in DIR and keep them")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--verbose-build", action="store_true", help="progress of the build")
    args = parser.parse_args(argv)
    quick = {"people": 100, "days": 20, "clients": 10, "requests": 40, "report_requests": 2,
             "fps_runs": 1, "fps_frames": 60}  # fmt: skip
    full = {"people": 1000, "days": 250, "clients": 50, "requests": 300, "report_requests": 5,
            "fps_runs": 4, "fps_frames": 300}  # fmt: skip
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    from common.runner import setup_logging

    setup_logging(0, quiet=True)
    global QUIET
    QUIET = (min(10.0, args.quiet_wait), args.quiet_below)
    began = time.time()
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="bench-web-", dir=args.keep))
    else:
        tmp = Path(tempfile.mkdtemp(prefix="bench-web-"))
    print(
        f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; "
        f"store {'postgresql' if args.store or args.pg else 'sqlite'}; workspace {tmp}",
        flush=True,
    )
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        with contextlib.ExitStack() as stack:
            if args.pg:
                import pg  # tests/pg.py

                args.store = stack.enter_context(pg.pg_cluster()).new_database()
            root = tmp / "dashboard"
            root.mkdir()
            built = build_workspace(root, args)
            pages = measure_pages(built, args)
            runs = [] if args.skip_fps else measure_fps(built, tmp, args)
            CHILDREN.stop_all()  # before the cluster stops
    except KeyboardInterrupt:
        print("interrupted: stopping every child process", file=sys.stderr)
        return 130
    finally:
        CHILDREN.stop_all()
        signal.signal(signal.SIGTERM, previous)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print_table(table(built, pages, runs, args))
    print(f"\ntotal bench time: {(time.time() - began) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
