"""The dashboard in a real browser (headless Chromium through chromedriver), real weights.

One workspace with three sample people enrolled (real MTCNN and FaceNet), one server
(``create_app`` on uvicorn, live updates on, the real :class:`web.enrolment.EnrolService`)
and one browser serve the whole module. The tests sign in through the form, watch the Today
page update while a real recogniser (a separate ``recognizer.cli`` process) marks someone
from a sample video, enrol a person by uploading photos, remove them, download a CSV report
and enrol them again through the webcam page, with a fake camera playing sample photos.

Screenshots go to ``artifacts/web/`` (``$ATTENDANCE_TEST_ARTIFACTS/web``): look at them.
Run in file order (the default): later tests use what earlier ones did when it is there, and
make it themselves otherwise, so each can also run alone.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import sqlite3
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest
from browser import (
    REPO,
    artifacts_dir,
    chromium_paths,
    console_errors,
    screenshot,
    start_chromium,
    text_of,
    texts_of,
    wait_for,
)
from PIL import Image
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from web_support import PASSWORD, add_user, running_server

from attendance.demo import build_video, enrol, letterbox, load_photo, pretty_name
from common.config import Config, load_config
from store.factory import attendance_store_exists, open_attendance_store, open_embedding_store

pytestmark = [pytest.mark.browser, pytest.mark.weights, pytest.mark.sample]

ENROLLED = ("ben_afflek", "elton_john", "jerry_seinfeld")  # enrolled before the server starts
WALKER = "ben_afflek"  # walks past the recogniser's camera (the sample video)
STRANGER = "mindy_kaling"  # also in the video, not enrolled then: never marked
NEWCOMER = "mindy_kaling"  # enrolled by upload in the browser, then removed
# the fake camera's person, enrolled again through the webcam page after the removal (the
# photos of one sample person look alike enough for the enrolment's one-person check)
WEBCAM = NEWCOMER
ADMIN = "boss"
KIOSK = "door-1"
LIVE_DELAY_LIMIT = 2.5  # seconds from the row in the database to the row on the page


@dataclass
class Site:
    cfg: Config
    base: str  # the server's URL
    app: object


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def _chromium_installed() -> None:
    """Fail at once (before the models load) when chromium or chromedriver is missing."""
    chromium_paths()


@pytest.fixture(scope="module")
def cfg(tmp_path_factory, cache_dir, sample_dir, embedder, detector) -> Config:
    """A workspace with ENROLLED enrolled from their first 6 train photos (real models)."""
    from preprocess.pipeline import run_preprocess
    from store.gallery import sync_gallery

    root = tmp_path_factory.mktemp("web-browser-ws")
    # the sample's web photos are small (faces of 25-150 px), as in test_web_enrolment;
    # heartbeats every second so the Kiosks page follows the recogniser closely
    cfg = load_config(
        root,
        overrides={"cache_dir": str(cache_dir), "min_scan_face_px": 40, "heartbeat_seconds": 1.0},
        env={},
    )
    enrol(cfg, sample_dir, ENROLLED, limit=6)
    summary = run_preprocess(cfg, detector=detector, progress=False)
    assert len(summary.processed) == 6 * len(ENROLLED), summary.lines()
    with open_embedding_store(cfg) as gallery:
        sync_gallery(gallery, cfg, embedder, progress=False)
        assert set(gallery.identities()) == {pretty_name(p) for p in ENROLLED}
    add_user(cfg, ADMIN, "admin")
    return cfg


@pytest.fixture(scope="module")
def site(cfg: Config, detector, embedder) -> Iterator[Site]:
    """The dashboard on uvicorn (live updates on, the real enrolment with shared models)."""
    from web.app import create_app
    from web.enrolment import EnrolService

    app = create_app(cfg, live=True, enrol=EnrolService(cfg, detector=detector, embedder=embedder))
    with running_server(app) as base:
        yield Site(cfg, base, app)


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def fake_camera(tmp_path_factory, sample_dir: Path) -> Path:
    """A Y4M video of WEBCAM's first 8 train photos, one a second, for Chromium's fake
    camera (it plays the file in a loop). 7 of them pass the quality gate."""
    path = tmp_path_factory.mktemp("camera") / "camera.y4m"
    photos = sorted((sample_dir / "train" / WEBCAM).glob("*.jpg"))[:8]
    assert len(photos) == 8
    with path.open("wb") as out:
        out.write(b"YUV4MPEG2 W640 H480 F2:1 Ip A1:1 C420jpeg\n")
        for photo in photos:
            yuv = cv2.cvtColor(letterbox(load_photo(photo)), cv2.COLOR_BGR2YUV_I420)
            for _ in range(2):  # 2 frames at 2 fps: each photo shows for a second
                out.write(b"FRAME\n" + yuv.tobytes())
    return path


@pytest.fixture(scope="module")
def chrome(site: Site, downloads: Path, fake_camera: Path) -> Iterator[WebDriver]:
    """One headless Chromium for the module (closed before the server stops, so no live
    stream is left open at its shutdown)."""
    driver = start_chromium(downloads=downloads, fake_video=fake_camera)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(chrome: WebDriver, site: Site) -> Iterator[WebDriver]:
    """The module's browser, signed in as ADMIN; no script errors or CSP violations on the
    pages the test visited."""
    chrome.get(site.base + "/")
    if "/login" in chrome.current_url:
        sign_in(chrome, site.base)
    console_errors(chrome)  # drop what came before this test
    yield chrome
    assert console_errors(chrome) == []


# --------------------------------------------------------------------------- helpers
def fill(driver: WebDriver, css: str, value: str) -> None:
    field = driver.find_element(By.CSS_SELECTOR, css)
    field.clear()
    field.send_keys(value)


def click(driver: WebDriver, css: str) -> None:
    driver.find_element(By.CSS_SELECTOR, css).click()


def sign_in(driver: WebDriver, base: str, password: str = PASSWORD) -> None:
    """Fill in the sign-in form (the browser is on it) and submit it."""
    wait_for(driver, lambda d: d.find_elements(By.ID, "sign-in"), "the sign-in form")
    fill(driver, "#username", ADMIN)
    fill(driver, "#password", password)
    click(driver, "#sign-in")
    if password == PASSWORD:
        wait_for(driver, lambda d: "/login" not in d.current_url, "leaving the sign-in page")


def assert_styled(driver: WebDriver) -> None:
    """The stylesheet is applied (a page without it would have a white header)."""
    header = driver.find_element(By.CSS_SELECTOR, "header.top")
    assert header.value_of_css_property("background-color") == "rgba(17, 24, 39, 1)"


def live_connected(driver: WebDriver) -> None:
    wait_for(driver, lambda d: text_of(d, "#live-state") == "connected", "the live stream")


def present_rows(driver: WebDriver) -> list[list[str]]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#present tbody tr")
    return [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]


def kiosk_row(driver: WebDriver, kiosk: str) -> list[str] | None:
    for row in driver.find_elements(By.CSS_SELECTOR, "#kiosks tbody tr"):
        cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
        if cells and cells[0] == kiosk:
            return cells
    return None


def largest_photos(folder: Path, count: int) -> list[Path]:
    """The ``count`` photos of ``folder`` with the most pixels (the sample's faces are small)."""

    def pixels(path: Path) -> int:
        with Image.open(path) as image:
            return image.size[0] * image.size[1]

    return sorted(sorted(folder.glob("*.jpg")), key=lambda p: -pixels(p))[:count]


class FirstPresent(threading.Thread):
    """Polls the attendance database every 10 ms; ``seen_at`` (epoch seconds) is when the
    Present row of ``name`` first showed up there."""

    def __init__(self, db: Path, name: str) -> None:
        super().__init__(daemon=True)
        self.db, self.name = db, name
        self.seen_at: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        conn: sqlite3.Connection | None = None
        query = "SELECT 1 FROM attendance WHERE EmpName = ? AND Status = 'Present'"
        try:
            while not self.stop.is_set():
                try:
                    if conn is None and self.db.exists():
                        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=1)
                    if conn is not None and conn.execute(query, (self.name,)).fetchone():
                        self.seen_at = time.time()
                        return
                except sqlite3.Error:  # created but no table yet
                    if conn is not None:
                        conn.close()
                    conn = None
                self.stop.wait(0.01)
        finally:
            if conn is not None:
                conn.close()


def present_today(cfg: Config) -> list[str]:
    """Who is Present today (nobody when no attendance database exists: none is created)."""
    if not attendance_store_exists(cfg):
        return []
    with open_attendance_store(cfg, create=False) as db:
        return sorted(r.name for r in db.rows(date=dt.date.today()) if r.status == "Present")


def enrolled_names(cfg: Config) -> set[str]:
    with open_embedding_store(cfg) as gallery:
        return set(gallery.identities())


def recogniser_env(cfg: Config) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTENDANCE_")}
    env.pop("DISPLAY", None)
    env["ATTENDANCE_CACHE_DIR"] = str(cfg.cache_dir)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


# --------------------------------------------------------------------------- the tests
def test_sign_in_through_the_form(chrome: WebDriver, site: Site) -> None:
    chrome.delete_all_cookies()
    chrome.get(site.base + "/people")
    wait_for(chrome, lambda d: "/login" in d.current_url, "the redirect to the sign-in page")
    assert chrome.current_url == site.base + "/login?next=/people"
    assert text_of(chrome, "h1") == "Sign in"
    assert_styled(chrome)

    sign_in(chrome, site.base, password="not the password")
    error = wait_for(chrome, lambda d: text_of(d, "#login-error"), "the sign-in error")
    assert error == "Wrong user name or password."
    assert "/login" in chrome.current_url and not chrome.find_elements(By.ID, "sign-out")
    screenshot(chrome, "01_login_wrong_password")
    errors = console_errors(chrome)  # the page came with status 401, which Chromium logs
    assert [e["message"].split(" - ", 1)[1] for e in errors] == [
        "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
    ]

    sign_in(chrome, site.base)
    assert chrome.current_url == site.base + "/people"  # where it was going
    chrome.find_element(By.LINK_TEXT, "Today").click()
    wait_for(chrome, lambda d: text_of(d, "h1").startswith("Today"), "the Today page")
    assert text_of(chrome, ".who") == f"{ADMIN} (admin)"
    live_connected(chrome)
    absent = texts_of(chrome, "#absent li")
    assert absent == sorted(pretty_name(p) for p in ENROLLED)
    assert text_of(chrome, "#count-absent") == str(len(ENROLLED))
    assert_styled(chrome)
    screenshot(chrome, "02_today_signed_in")
    assert console_errors(chrome) == []


def test_today_updates_live_while_a_recogniser_marks_someone(
    browser: WebDriver, site: Site, sample_dir: Path, tmp_path: Path
) -> None:
    walker = pretty_name(WALKER)
    cfg = site.cfg
    assert walker not in present_today(cfg)
    # the video: the walker's held-back photos with the stranger between them
    video = tmp_path / "door.mp4"
    scenes = [
        (pretty_name(person), person != STRANGER, [load_photo(sorted(files)[i])])
        for person, i in ((WALKER, 0), (STRANGER, 0), (WALKER, 1))
        for files in [list((sample_dir / "val" / person).glob("*.jpg"))]
    ]
    build_video(video, scenes, fps=12.0, hold=1.5)

    browser.get(site.base + "/")
    live_connected(browser)
    assert (
        present_rows(browser) == [] and browser.find_element(By.ID, "present-empty").is_displayed()
    )
    assert walker in texts_of(browser, "#absent li")
    # a marker that a reload would lose, and the moment the walker's row appears
    browser.execute_script(
        """
        window.__marker = 1;
        window.__seenAt = null;
        const name = arguments[0], body = document.querySelector('#present tbody');
        const check = () => {
          if (window.__seenAt === null
              && [...body.rows].some((r) => r.cells[0].textContent === name)) {
            window.__seenAt = Date.now();
          }
        };
        new MutationObserver(check).observe(body, {childList: true, subtree: true});
        """,
        walker,
    )
    watcher = FirstPresent(Path(cfg.db_path), walker)
    watcher.start()
    log_path = tmp_path / "recogniser.log"
    with log_path.open("w") as log:
        run = subprocess.Popen(
            [sys.executable, "-m", "recognizer.cli", "--workspace", str(cfg.root),
             "--source", str(video), "--headless", "--continuous",
             "--set", f"kiosk_name={KIOSK}", "--set", "heartbeat_seconds=1"],
            stdout=log, stderr=subprocess.STDOUT, env=recogniser_env(cfg), cwd=REPO,
        )  # fmt: skip
    try:

        def marked(driver: WebDriver) -> float | None:
            if run.poll() not in (None, 0):
                raise AssertionError(f"the recogniser failed:\n{log_path.read_text()}")
            return driver.execute_script("return window.__seenAt")

        seen_ms = wait_for(browser, marked, f"{walker} in the Present table", timeout=90)
        watcher.join(timeout=5)
        assert watcher.seen_at is not None, "the page showed a row the database does not have"
        delay = seen_ms / 1000 - watcher.seen_at
        figure = f"database row -> Today page: {delay:.3f} s"
        print(figure)
        (artifacts_dir() / "live_delay.txt").write_text(figure + "\n")
        assert browser.execute_script("return window.__marker") == 1, "the page was reloaded"
        assert delay <= LIVE_DELAY_LIMIT, figure
        assert [row[0] for row in present_rows(browser)] == [walker]
        assert walker not in texts_of(browser, "#absent li")
        assert text_of(browser, "#count-present") == "1"
        assert text_of(browser, "#count-absent") == str(len(ENROLLED) - 1)
        assert not browser.find_element(By.ID, "present-empty").is_displayed()
        screenshot(browser, "03_today_live_update")

        browser.find_element(By.LINK_TEXT, "Kiosks").click()
        cells = wait_for(browser, lambda d: kiosk_row(d, KIOSK), f"kiosk {KIOSK} on Kiosks")
        live_connected(browser)
        assert "door.mp4" in cells[4] and cells[5] == "pretrained", cells
        screenshot(browser, "04_kiosks_heartbeat")
        browser.execute_script("window.__marker = 2")
        out = ""
        try:
            run.wait(timeout=120)
        finally:
            out = log_path.read_text()
        assert run.returncode == 0, out
        assert f"  {walker}  " in out and pretty_name(STRANGER) not in out, out
        # the final heartbeat reaches the open page without a reload
        cells = wait_for(
            browser,
            lambda d: (row := kiosk_row(d, KIOSK)) and row[1] == "ended" and row,
            "the kiosk's final heartbeat",
        )
        assert cells[6] == "1", cells  # marked today
        assert int(cells[7]) >= 1, cells  # the stranger: an unknown face
        # stopped on purpose: shown as ended (grey), not as a dead camera (red)
        row = browser.find_element(By.XPATH, f"//table[@id='kiosks']//tr[td[1]='{KIOSK}']")
        assert row.get_attribute("class") == "ended"
        assert browser.execute_script("return window.__marker") == 2
        screenshot(browser, "05_kiosks_ended")
    finally:
        watcher.stop.set()
        if run.poll() is None:
            run.kill()
            run.wait()
    assert present_today(cfg) == [walker]


def test_enrol_a_person_by_uploading_photos(
    browser: WebDriver, site: Site, sample_dir: Path
) -> None:
    from web.enrolment import safe_filename

    name = pretty_name(NEWCOMER)
    assert name not in enrolled_names(site.cfg)
    photos = largest_photos(sample_dir / "train" / NEWCOMER, 8)
    browser.get(site.base + "/people")
    assert name not in texts_of(browser, "#people tbody tr td:nth-child(2)")
    click(browser, "#enrol-upload")
    wait_for(browser, lambda d: d.current_url == site.base + "/people/enrol", "the enrol page")
    fill(browser, "#enrol-name", name)
    browser.find_element(By.ID, "enrol-photos").send_keys("\n".join(str(p) for p in photos))
    chosen = browser.execute_script("return document.getElementById('enrol-photos').files.length")
    assert chosen == len(photos)
    click(browser, "#enrol-submit")
    message = wait_for(browser, lambda d: text_of(d, "#enrol-message"), "the result", timeout=120)
    verdicts = [
        [td.text for td in row.find_elements(By.TAG_NAME, "td")]
        for row in browser.find_elements(By.CSS_SELECTOR, "#verdicts tbody tr")
    ]
    screenshot(browser, "06_enrol_upload_result")
    assert message.startswith(f"{name} is enrolled"), (message, verdicts)
    assert "ok" in browser.find_element(By.ID, "enrol-message").get_attribute("class")
    assert [v[0] for v in verdicts] == [safe_filename(p.name) for p in photos]
    accepted = [v for v in verdicts if v[1] == "accepted"]
    refused = [v for v in verdicts if v[1] != "accepted"]
    assert len(accepted) >= 5 and all(v[1].strip() for v in refused), verdicts
    if refused:
        assert f"{len(refused)} of {len(photos)} photos refused" in message
    assert browser.find_element(By.ID, "enrolled-link").text == name
    assert name in enrolled_names(site.cfg)

    browser.find_element(By.LINK_TEXT, "People").click()
    row = wait_for(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, f'#people tr[data-name="{name}"]'),
        f"{name} on People",
    )[0]
    thumb = row.find_element(By.CSS_SELECTOR, "img.thumb")
    wait_for(
        browser,
        lambda d: d.execute_script("return arguments[0].complete", thumb),
        "the thumbnail to load",
    )
    assert browser.execute_script("return arguments[0].naturalWidth", thumb) > 0
    # every thumbnail on the page loaded, not just the newcomer's
    widths = browser.execute_script(
        "return [...document.querySelectorAll('img.thumb')].map((i) => i.naturalWidth)"
    )
    assert len(widths) == len(ENROLLED) + 1 and all(w > 0 for w in widths), widths
    assert row.find_elements(By.TAG_NAME, "td")[2].text == str(len(accepted))  # shots
    screenshot(browser, "07_people_with_newcomer")


def test_remove_a_person_after_typing_their_name(
    browser: WebDriver, site: Site, sample_dir: Path
) -> None:
    name = pretty_name(NEWCOMER)
    if name not in enrolled_names(site.cfg):  # run alone: enrol them first, directly
        photos = largest_photos(sample_dir / "train" / NEWCOMER, 8)
        result = site.app.state.ctx.enrol.enrol(name, [(p.name, p.read_bytes()) for p in photos])
        assert result.enrolled, result.message
    browser.get(site.base + "/people")
    row = browser.find_element(By.CSS_SELECTOR, f'#people tr[data-name="{name}"]')
    row.find_element(By.LINK_TEXT, "Remove…").click()
    wait_for(browser, lambda d: d.current_url.endswith("/remove"), "the confirmation page")
    assert text_of(browser, "h1") == f"Remove {name}?"
    screenshot(browser, "08_remove_confirm")

    fill(browser, "#remove-confirm", name.lower())  # not exactly the name: refused
    click(browser, "#remove-submit")
    error = wait_for(browser, lambda d: text_of(d, "#error-message"), "the refusal")
    assert error == f"type the name {name!r} exactly to confirm the removal"
    errors = console_errors(browser)  # the refusal came with status 400, which Chromium logs
    assert len(errors) == 1 and "status of 400 (Bad Request)" in errors[0]["message"], errors
    assert name in enrolled_names(site.cfg)

    browser.back()
    wait_for(browser, lambda d: d.find_elements(By.ID, "remove-confirm"), "the form again")
    fill(browser, "#remove-confirm", name)
    click(browser, "#remove-submit")
    removed = wait_for(browser, lambda d: text_of(d, "#removed"), "the removal")
    assert removed == f"{name} was removed"
    assert "the attendance history is kept" in text_of(browser, "main")
    screenshot(browser, "09_removed")
    assert name not in enrolled_names(site.cfg)
    assert not (Path(site.cfg.images_dir) / name).exists()

    browser.find_element(By.LINK_TEXT, "Back to People").click()
    wait_for(browser, lambda d: d.current_url == site.base + "/people", "People")
    rows = browser.find_elements(By.CSS_SELECTOR, "#people tbody tr")
    listed = [r.get_attribute("data-name") for r in rows]
    assert name not in listed and sorted(listed) == sorted(pretty_name(p) for p in ENROLLED)
    screenshot(browser, "10_people_after_removal")


def test_export_a_csv_report(browser: WebDriver, site: Site, downloads: Path) -> None:
    cfg = site.cfg
    if not present_today(cfg):  # run alone: nobody was marked by the recogniser
        with open_attendance_store(cfg) as db:  # (created if need be)
            db.mark_present(pretty_name(WALKER), dt.datetime.now(), 0.5, "browser test")
    present = present_today(cfg)
    today = dt.date.today()
    start = today - dt.timedelta(days=6)
    browser.get(site.base + "/reports")
    wait_for(browser, lambda d: d.find_elements(By.ID, "report-form"), "the report form")
    browser.execute_script(
        "document.getElementById('start').value = arguments[0];"
        "document.getElementById('end').value = arguments[1];",
        start.isoformat(),
        today.isoformat(),
    )
    click(browser, "#show-report")
    wait_for(browser, lambda d: f"start={start.isoformat()}" in d.current_url, "the report")
    wait_for(browser, lambda d: d.find_elements(By.ID, "totals"), "the totals table")
    assert not browser.find_elements(By.ID, "report-error")
    totals = {
        cells[0]: cells
        for row in browser.find_elements(By.CSS_SELECTOR, "#totals tbody tr")
        for cells in [[td.text for td in row.find_elements(By.TAG_NAME, "td")]]
    }
    for name in present:
        assert totals[name][1] == "1", totals  # present on one day of the range
    screenshot(browser, "11_reports")

    for old in downloads.iterdir():
        old.unlink()
    click(browser, "#export-csv")
    expected = downloads / f"attendance_{start.isoformat()}_{today.isoformat()}_totals.csv"

    def downloaded(_driver: WebDriver) -> list[Path]:
        files = sorted(downloads.iterdir())
        done = [f for f in files if not f.name.endswith(".crdownload")]
        return done if done and len(done) == len(files) else []

    files = wait_for(browser, downloaded, "the CSV download", timeout=20)
    assert files == [expected], files
    text = expected.read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["name", "days_present", "days_absent", "first_entry", "mean_entry"]
    by_name = {row[0]: row for row in rows[1:]}
    for name in present:
        assert by_name[name][1] == "1" and by_name[name][3], rows  # with an entry time
    enrolled = {pretty_name(p) for p in ENROLLED}
    assert enrolled <= set(by_name), rows  # enrolled people without a day are listed too
    for name in enrolled - set(present):
        assert by_name[name][1] == "0", rows

    click(browser, "#export-days-csv")  # the evidence: one row per person and day
    days = downloads / f"attendance_{start.isoformat()}_{today.isoformat()}_days.csv"
    wait_for(browser, lambda d: days in downloaded(d), "the day CSV download", timeout=20)
    rows = list(csv.reader(io.StringIO(days.read_text(encoding="utf-8"))))
    assert rows[0] == ["name", "date", "status", "entry_time", "last_seen"]
    assert sorted((r[0], r[1], r[2]) for r in rows[1:]) == [
        (name, today.isoformat(), "Present") for name in present
    ]

    click(browser, "#export-xlsx")
    book = downloads / f"attendance_{start.isoformat()}_{today.isoformat()}.xlsx"
    wait_for(browser, lambda d: book in downloaded(d), "the Excel download", timeout=20)
    with zipfile.ZipFile(book) as workbook:
        assert "xl/workbook.xml" in workbook.namelist()
    assert browser.current_url.startswith(site.base + "/reports?")  # downloads, no navigation


def test_enrol_by_webcam_with_a_fake_camera(browser: WebDriver, site: Site) -> None:
    name = pretty_name(WEBCAM)
    assert name not in enrolled_names(site.cfg)
    browser.get(site.base + "/people")
    click(browser, "#enrol-webcam")
    wait_for(browser, lambda d: d.find_elements(By.ID, "webcam-start"), "the webcam page")
    assert text_of(browser, "#webcam-status") == "Camera off."
    assert not browser.find_element(By.ID, "webcam-enrol").is_enabled()
    fill(browser, "#webcam-name", name)
    click(browser, "#webcam-start")
    wait_for(
        browser,
        lambda d: d.execute_script(
            "const v = document.getElementById('webcam-video');"
            "return v.readyState >= 2 && v.videoWidth === 640 && !v.paused;"
        ),
        "the camera picture",
    )
    # the server's verdicts on the frames replace "Camera on."
    status = wait_for(
        browser,
        lambda d: (s := text_of(d, "#webcam-status")) not in ("Camera off.", "Camera on.") and s,
        "a verdict on a frame",
        timeout=30,
    )
    assert not status.startswith("No camera"), status
    wait_for(browser, lambda d: int(text_of(d, "#webcam-kept")) >= 1, "a kept frame", timeout=30)
    screenshot(browser, "12_webcam_live")
    # the same photo is kept again when the camera shows it twice: keep plenty
    wait_for(browser, lambda d: int(text_of(d, "#webcam-kept")) >= 10, "10 kept frames", 60)
    assert browser.find_element(By.ID, "webcam-enrol").is_enabled()
    click(browser, "#webcam-enrol")
    message = wait_for(browser, lambda d: text_of(d, "#webcam-message"), "the enrolment", 120)
    browser.execute_script("document.getElementById('webcam-message').scrollIntoView(false)")
    screenshot(browser, "13_webcam_enrolled")
    assert message.startswith(f"{name} is enrolled"), message
    assert text_of(browser, "#webcam-status") == "Done."
    assert name in enrolled_names(site.cfg)
    # the camera is released
    assert browser.execute_script(
        "const s = document.getElementById('webcam-video').srcObject;"
        "return s.getTracks().every((t) => t.readyState === 'ended');"
    )
