"""The dashboard and REST API through Starlette's TestClient: sign-in, roles, CSRF, rate limit,
API tokens, uploads, path checks, errors, and what each page and endpoint returns."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import sqlite3
import zipfile

import pytest
from fastapi.testclient import TestClient
from test_gallery import FakeEmbedder, enrol
from web_support import PASSWORD, FakeEnrol, add_token, add_user, csrf_of, sign_in

from common.config import Config
from store.factory import open_attendance_store, open_embedding_store, open_site_store
from store.gallery import sync_gallery
from web.app import create_app

TODAY = dt.date.today()


def at(hour: int, minute: int = 0, day: dt.date = TODAY) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute))


@pytest.fixture
def cfg(workspace: Config) -> Config:
    """Three people enrolled (fake embeddings), Ada present today, Alan yesterday."""
    cfg = workspace.replace(embed_batch=4, login_attempts=3, upload_max_bytes=20_000)
    for i, name in enumerate(("Ada Lovelace", "Alan Turing", "Grace Hopper")):
        enrol(cfg, name, 3, seed=100 * i)
    with open_embedding_store(cfg) as store:
        sync_gallery(store, cfg, FakeEmbedder(), progress=False)
    with open_attendance_store(cfg) as db:
        db.mark_present("Ada Lovelace", at(8, 5), 0.41, "cam")
        db.mark_present("Ada Lovelace", at(12, 30), 0.44, "cam")
        db.mark_present("Alan Turing", at(9, 0, TODAY - dt.timedelta(days=1)), 0.5, "cam")
    add_user(cfg, "boss", "admin")
    add_user(cfg, "clerk", "viewer")
    return cfg


@pytest.fixture
def enrolment() -> FakeEnrol:
    return FakeEnrol()


@pytest.fixture
def client(cfg: Config, enrolment: FakeEnrol):
    with TestClient(create_app(cfg, enrol=enrolment, live=False)) as c:
        yield c


def admin_client(client: TestClient) -> TestClient:
    assert sign_in(client, "boss").status_code == 200
    return client


# --- sign-in and sessions ---------------------------------------------------------------------
def _routes(app) -> list:
    """Every route with its full path (included routers too)."""
    found = []
    for route in app.routes:
        inner = getattr(route, "original_router", None)
        if inner is None:
            found.append((route, getattr(route, "path", "")))
            continue
        prefix = "/api/v1" if any(r.path == "/people/check-photo" for r in inner.routes) else ""
        found.extend((r, prefix + r.path) for r in inner.routes)
    return found


def test_everything_but_healthz_needs_a_sign_in(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    open_paths = {"/healthz", "/login", "/favicon.ico"}
    checked = 0
    for route, path in _routes(client.app):
        methods = getattr(route, "methods", None) or set()
        if not path or path in open_paths or path.startswith("/static"):
            continue
        url = path.replace("{name}", "Ada Lovelace").replace("{fmt}", "csv")
        url = url.replace("{kiosk}", "k1").replace("{asset}", "swagger-ui.css")
        for method in methods - {"HEAD"}:
            response = client.request(
                method, url, follow_redirects=False, headers={"accept": "application/json"}
            )
            assert response.status_code == 401, (method, url, response.status_code)
            assert "error" in response.json()
            checked += 1
    assert checked >= 25
    page = client.get("/people", follow_redirects=False, headers={"accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/people"


def test_sign_in_sets_a_hardened_session_cookie(client: TestClient) -> None:
    response = sign_in(client, "boss", next_page="/people")
    assert response.status_code == 200 and response.url.path == "/people"
    cookie = next(
        h
        for h in response.history[0].headers.get_list("set-cookie")
        if h.startswith("attendance_session=")
    )
    lowered = cookie.lower()
    assert "httponly" in lowered and "samesite=strict" in lowered
    assert "secure" not in lowered.replace("samesite", "")  # plain http on 127.0.0.1
    # only the token's SHA-256 is stored
    token = cookie.split(";")[0].split("=", 1)[1]
    with sqlite3.connect(client.app.state.ctx.cfg.site_db_path) as db:
        stored = [row[0] for row in db.execute("SELECT token_sha256 FROM sessions")]
    assert stored == [hashlib.sha256(token.encode()).hexdigest()]


def test_cookie_is_secure_behind_https(cfg: Config) -> None:
    with TestClient(
        create_app(cfg, enrol=FakeEnrol(), live=False), base_url="https://testserver"
    ) as client:
        response = sign_in(client, "boss")
        cookie = response.history[0].headers["set-cookie"]
        assert "secure" in cookie.lower().replace("samesite", "")


def test_passwords_are_stored_as_argon2_hashes(cfg: Config) -> None:
    with open_site_store(cfg) as site:
        user = site.user("boss")
    assert user is not None and user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash


def test_wrong_password_and_unknown_user_are_refused_alike(client: TestClient) -> None:
    wrong = sign_in(client, "boss", "not the password")
    unknown = sign_in(client, "nobody", PASSWORD)
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong user name or password" in wrong.text and "Wrong user name" in unknown.text
    assert client.get("/api/v1/people").status_code == 401


def test_failed_sign_ins_are_rate_limited(client: TestClient) -> None:
    for _ in range(3):  # login_attempts=3
        assert sign_in(client, "boss", "wrong password").status_code == 401
    limited = sign_in(client, "boss", PASSWORD)  # even the right password now waits
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    assert client.get("/api/v1/people").status_code == 401


def test_login_form_needs_its_csrf_token(client: TestClient) -> None:
    client.get("/login")
    response = client.post(
        "/login", data={"username": "boss", "password": PASSWORD, "csrf_token": "forged"}
    )
    assert response.status_code == 403
    assert client.get("/api/v1/people").status_code == 401


def test_sign_in_never_redirects_off_site(client: TestClient) -> None:
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        page = client.get("/login")
        response = client.post(
            "/login",
            data={
                "username": "boss",
                "password": PASSWORD,
                "csrf_token": csrf_of(page.text),
                "next": target,
            },
            follow_redirects=False,
        )
        assert response.status_code == 303 and response.headers["location"] == "/"


def test_sign_out_ends_the_session(client: TestClient) -> None:
    page = admin_client(client).get("/")
    assert client.post("/logout", data={"csrf_token": csrf_of(page.text)}).status_code == 200
    assert client.get("/api/v1/people").status_code == 401
    with sqlite3.connect(client.app.state.ctx.cfg.site_db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0


def test_forms_need_the_session_csrf_token(client: TestClient, cfg: Config) -> None:
    admin_client(client)
    forged = client.post("/settings", data={"threshold": "0.7", "csrf_token": "nope"})
    assert forged.status_code == 403 and "CSRF" in forged.text
    missing = client.post("/settings", data={"threshold": "0.7"})
    assert missing.status_code == 403
    json_call = client.post("/api/v1/settings", json={"threshold": 0.7})
    assert json_call.status_code == 403
    assert (
        "threshold" not in (cfg.root / "attendance.toml").read_text()
        if (cfg.root / "attendance.toml").exists()
        else True
    )
    token = csrf_of(client.get("/settings").text)
    ok = client.post("/api/v1/settings", json={"threshold": 0.7}, headers={"X-CSRF-Token": token})
    assert ok.status_code == 200 and ok.json()["threshold"] == 0.7
    assert "threshold = 0.7" in (cfg.root / "attendance.toml").read_text()


def test_a_viewer_reads_but_may_not_change(client: TestClient) -> None:
    assert sign_in(client, "clerk").status_code == 200
    token = csrf_of(client.get("/").text)
    assert client.get("/api/v1/people").status_code == 200
    refused = client.delete("/api/v1/people/Ada Lovelace", headers={"X-CSRF-Token": token})
    assert refused.status_code == 403 and "only an admin" in refused.json()["error"]
    page = client.get("/people/enrol", headers={"accept": "text/html"})
    assert page.status_code == 403
    assert client.get("/api/v1/people/Ada Lovelace").status_code == 200


def test_a_user_replaced_loses_their_sessions(client: TestClient, cfg: Config) -> None:
    admin_client(client)
    add_user(cfg, "boss", "viewer", "another password")
    assert client.get("/api/v1/people").status_code == 401


# --- API tokens -------------------------------------------------------------------------------
def test_api_tokens_are_stored_hashed_and_can_be_revoked(client: TestClient, cfg: Config) -> None:
    secret = add_token(cfg, "payroll", "viewer")
    with sqlite3.connect(cfg.site_db_path) as db:
        stored = db.execute("SELECT token_sha256 FROM api_tokens").fetchall()
    assert stored == [(hashlib.sha256(secret.encode()).hexdigest(),)]
    assert secret not in (cfg.site_db_path.read_bytes().decode("latin-1"))
    auth = {"Authorization": f"Bearer {secret}"}
    assert [p["name"] for p in client.get("/api/v1/people", headers=auth).json()] == [
        "Ada Lovelace",
        "Alan Turing",
        "Grace Hopper",
    ]
    # a token needs no CSRF token, but a viewer's may not change anything
    assert client.delete("/api/v1/people/Ada Lovelace", headers=auth).status_code == 403
    assert (
        client.get("/api/v1/people", headers={"Authorization": "Bearer att_x"}).status_code == 401
    )
    with open_site_store(cfg) as site:
        assert site.remove_token("payroll")
    assert client.get("/api/v1/people", headers=auth).status_code == 401


# --- reading ----------------------------------------------------------------------------------
def test_today_lists_present_absent_and_since_when(client: TestClient) -> None:
    admin_client(client)
    today = client.get("/api/v1/today").json()
    assert [(p["name"], p["since"], p["last_seen"]) for p in today["present"]] == [
        ("Ada Lovelace", "08:05:00", "12:30:00")
    ]
    assert today["absent"] == ["Alan Turing", "Grace Hopper"]
    page = client.get("/")
    assert "Ada Lovelace" in page.text and 'id="count-present">1<' in page.text


def test_attendance_events_and_people(client: TestClient) -> None:
    admin_client(client)
    rows = client.get("/api/v1/attendance", params={"start": "yesterday", "end": "today"}).json()
    assert {(r["name"], r["date"]) for r in rows} == {
        ("Ada Lovelace", TODAY.isoformat()),
        ("Alan Turing", (TODAY - dt.timedelta(days=1)).isoformat()),
    }
    events = client.get("/api/v1/events", params={"name": "Ada Lovelace"}).json()
    assert [e["action"] for e in events] == ["present", "seen"]
    people = {p["name"]: p for p in client.get("/api/v1/people").json()}
    assert people["Ada Lovelace"]["crops"] == 3
    assert people["Ada Lovelace"]["last_seen"] == f"{TODAY} 12:30:00"
    assert people["Grace Hopper"]["last_seen"] is None
    person = client.get("/api/v1/people/Ada Lovelace").json()
    assert person["present_days"] == 1 and person["rows"][0]["time"] == "08:05:00"
    png = client.get("/api/v1/people/Ada Lovelace/thumbnail.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert client.get("/api/v1/people/Nobody").status_code == 404
    assert "Ada Lovelace" in client.get("/person/Ada Lovelace").text


def test_bad_dates_and_names_are_one_line_json_errors(client: TestClient) -> None:
    admin_client(client)
    bad = client.get("/api/v1/attendance", params={"date": "2024-02-30"})
    assert bad.status_code == 400 and "2024-02-30" in bad.json()["error"]
    backwards = client.get(
        "/api/v1/attendance", params={"start": "2024-05-02", "end": "2024-05-01"}
    )
    assert backwards.status_code == 400 and "before" in backwards.json()["error"]
    for name in ("..", "../../etc/passwd", ".hidden"):
        response = client.get(f"/api/v1/people/{name}/thumbnail.png")
        assert response.status_code in (400, 404), name
        assert "Traceback" not in response.text


def test_path_tricks_never_reach_the_files(client: TestClient, cfg: Config) -> None:
    admin_client(client)
    secret = cfg.root / "secret.png"
    secret.write_bytes(b"\x89PNG secret")
    (cfg.pre_images_dir / "Link").symlink_to(cfg.root)
    for name in ("..%2F", "Link", "%2e%2e"):
        response = client.get(f"/api/v1/people/{name}/thumbnail.png")
        assert b"secret" not in response.content, name


def test_unexpected_errors_are_json_without_traceback(cfg: Config) -> None:
    app = create_app(cfg, enrol=FakeEnrol(fail=RuntimeError("boom in /secret/path")), live=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        sign_in(client, "boss")
        token = csrf_of(client.get("/").text)
        files = [("photos", (f"{i}.jpg", b"face", "image/jpeg")) for i in range(5)]
        response = client.post(
            "/api/v1/people", data={"name": "Eve"}, files=files, headers={"X-CSRF-Token": token}
        )
    assert response.status_code == 500
    assert response.json() == {"error": "internal error; the server log has the details"}


def test_security_headers(client: TestClient) -> None:
    response = client.get("/login")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"


# --- enrolment by upload ----------------------------------------------------------------------
def _files(count: int, data: bytes = b"face and more") -> list:
    return [("photos", (f"p{i}.jpg", data, "image/jpeg")) for i in range(count)]


def test_enrol_by_upload_goes_through_the_enrolment(client: TestClient, enrolment) -> None:
    admin_client(client)
    token = csrf_of(client.get("/people/enrol").text)
    files = _files(5) + [("photos", ("cat.jpg", b"not a face", "image/jpeg"))]
    response = client.post(
        "/api/v1/people",
        data={"name": "Edsger Dijkstra"},
        files=files,
        headers={"X-CSRF-Token": token},
    )
    assert response.status_code == 201
    body = response.json()
    assert body["enrolled"] and body["photos"][-1] == {
        "filename": "cat.jpg",
        "accepted": False,
        "reason": "no face found",
    }
    assert enrolment.calls[0][0] == "Edsger Dijkstra" and len(enrolment.calls[0][1]) == 6
    # the page form too (CSRF in the multipart form)
    page = client.post(
        "/people/enrol", data={"name": "Barbara Liskov", "csrf_token": token}, files=_files(5)
    )
    assert page.status_code == 200 and "Barbara Liskov" in page.text


def test_uploads_are_limited(client: TestClient, cfg: Config, enrolment) -> None:
    admin_client(client)
    headers = {"X-CSRF-Token": csrf_of(client.get("/").text)}
    too_many = client.post("/api/v1/people", data={"name": "X"}, files=_files(36), headers=headers)
    assert too_many.status_code == 413 and "error" in too_many.json(), too_many.text
    # the whole body is capped: upload_max_files * upload_max_bytes + 1 MB
    huge = b"face" + b"0" * (cfg.upload_max_files * cfg.upload_max_bytes + 1_000_000)
    big = client.post("/api/v1/people", data={"name": "X"}, files=_files(1, huge), headers=headers)
    assert big.status_code == 413
    # a single photo over upload_max_bytes reaches the enrolment cut to max + 1 bytes
    one = b"face" + b"0" * (cfg.upload_max_bytes * 2)
    client.post("/api/v1/people", data={"name": "Y"}, files=_files(5, one), headers=headers)
    assert {len(data) for _, data in enrolment.calls[-1][1]} == {cfg.upload_max_bytes + 1}
    assert all(call[0] != "X" for call in enrolment.calls)


def test_check_photo_for_the_webcam(client: TestClient) -> None:
    admin_client(client)
    headers = {"X-CSRF-Token": csrf_of(client.get("/").text)}
    ok = client.post(
        "/api/v1/people/check-photo", files={"photo": ("f.jpg", b"face")}, headers=headers
    )
    assert ok.json() == {"filename": "f.jpg", "accepted": True, "reason": ""}
    bad = client.post(
        "/api/v1/people/check-photo", files={"photo": ("f.jpg", b"wall")}, headers=headers
    )
    assert bad.json()["reason"] == "no face found"


# --- removal ----------------------------------------------------------------------------------
def test_remove_needs_the_typed_name_then_removes_everywhere(client: TestClient, cfg) -> None:
    admin_client(client)
    page = client.get("/person/Alan Turing/remove")
    assert page.status_code == 200 and "Type <strong>Alan Turing</strong>" in page.text
    token = csrf_of(page.text)
    wrong = client.post("/person/Alan Turing/remove", data={"csrf_token": token, "confirm": "x"})
    assert wrong.status_code == 400 and (cfg.pre_images_dir / "Alan Turing").exists()
    done = client.post(
        "/person/Alan Turing/remove", data={"csrf_token": token, "confirm": "Alan Turing"}
    )
    assert done.status_code == 200 and "Alan Turing was removed" in done.text
    assert not (cfg.pre_images_dir / "Alan Turing").exists()
    names = [p["name"] for p in client.get("/api/v1/people").json()]
    assert names == ["Ada Lovelace", "Grace Hopper"]
    # the history is kept without purge
    assert client.get(
        "/api/v1/attendance", params={"name": "Alan Turing", "start": "yesterday"}
    ).json()
    purge = client.delete(
        "/api/v1/people/Grace Hopper", params={"purge": "true"}, headers={"X-CSRF-Token": token}
    )
    assert purge.json()["purged"] and purge.json()["crops"] == 3
    assert (
        client.delete("/api/v1/people/Grace Hopper", headers={"X-CSRF-Token": token}).status_code
        == 404
    )


# --- reports ----------------------------------------------------------------------------------
def test_report_exports(client: TestClient) -> None:
    admin_client(client)
    params = {"start": "yesterday", "end": "today"}
    report = client.get("/api/v1/reports", params=params).json()
    assert report["start"] == (TODAY - dt.timedelta(days=1)).isoformat()
    csv_text = client.get("/reports/export.csv", params=params)
    assert csv_text.headers["content-type"].startswith("text/csv")
    assert "attachment" in csv_text.headers["content-disposition"]
    assert "Ada Lovelace" in csv_text.text and "Grace Hopper" in csv_text.text
    xlsx = client.get("/api/v1/reports", params={**params, "format": "xlsx"})
    with zipfile.ZipFile(io.BytesIO(xlsx.content)) as book:
        assert "xl/workbook.xml" in book.namelist()
    page = client.get("/reports", params=params)
    assert page.status_code == 200 and "Alan Turing" in page.text
    assert 'id="days-cut"' not in page.text


def test_the_reports_page_shows_at_most_500_day_rows(client: TestClient, cfg: Config) -> None:
    with open_attendance_store(cfg) as db:
        for day in range(1, 200):
            for name in ("Ada Lovelace", "Alan Turing", "Grace Hopper"):
                db.mark_present(name, at(9, day=TODAY - dt.timedelta(days=day)), 0.4, "cam")
    admin_client(client)
    page = client.get("/reports", params={"start": str(TODAY - dt.timedelta(days=199))})
    assert page.text.count("<tr>") < 520 and "The first 500 of 598 day rows" in page.text
    days = client.get("/reports/export.csv", params={"start": str(TODAY - dt.timedelta(days=199)),
                                                     "view": "days"})  # fmt: skip
    assert days.text.count("\n") == 599  # header and every row


# --- kiosks and settings ------------------------------------------------------------------------
def test_kiosks_and_settings(client: TestClient, cfg: Config) -> None:
    from store.records import Heartbeat

    now = dt.datetime.now(dt.timezone.utc)
    with open_site_store(cfg) as site:
        for name, age in (("door-a", 1), ("door-b", 600)):
            site.beat(
                Heartbeat(
                    name,
                    "host",
                    "camera 0",
                    "running",
                    12.5,
                    "pretrained",
                    (now - dt.timedelta(hours=1)).isoformat(timespec="seconds"),
                    (now - dt.timedelta(seconds=age)).isoformat(timespec="seconds"),
                    TODAY.isoformat(),
                    2,
                    3,
                )
            )
    admin_client(client)
    client.app.state.ctx.hub.refresh()
    kiosks = {k["name"]: k for k in client.get("/api/v1/kiosks").json()}
    assert kiosks["door-a"]["alive"] and not kiosks["door-b"]["alive"]
    assert kiosks["door-b"]["state"] == "silent"
    assert client.get("/api/v1/today").json()["unknown"] == 6
    settings = client.get("/api/v1/settings").json()
    assert settings["threshold"] == cfg.threshold and settings["model_version"] == "pretrained"
    assert "door-b" in client.get("/kiosks").text
    token = csrf_of(client.get("/settings").text)
    assert client.delete("/api/v1/kiosks/door-b", headers={"X-CSRF-Token": token}).json()
    assert [k["name"] for k in client.get("/api/v1/kiosks").json()] == ["door-a"]


def test_openapi_lists_the_api(client: TestClient) -> None:
    admin_client(client)
    spec = client.get("/api/v1/openapi.json").json()
    paths = set(spec["paths"])
    for path in (
        "/api/v1/attendance",
        "/api/v1/people",
        "/api/v1/people/{name}",
        "/api/v1/events",
        "/api/v1/reports",
        "/api/v1/health",
        "/api/v1/today",
    ):
        assert path in paths
    assert spec["components"]["securitySchemes"]["token"]["scheme"] == "bearer"
    assert spec["security"] == [{"token": []}]
    docs = client.get("/api/v1/docs")
    assert docs.status_code == 200 and "/api/v1/docs-assets/swagger-ui-bundle.js" in docs.text
    assert client.get("/api/v1/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert json.dumps(spec).count("Traceback") == 0


# --- after the security review ------------------------------------------------------------------
def test_a_burst_of_simultaneous_sign_ins_is_limited_too(cfg: Config) -> None:
    """Attempts count before the (slow) password check: 12 at once, 3 allowed."""
    import threading

    import httpx
    from web_support import running_server

    app = create_app(cfg, enrol=FakeEnrol(), live=False)
    codes: list[int] = []
    with running_server(app) as base:

        def attempt(password: str) -> None:
            with httpx.Client(base_url=base, follow_redirects=False, timeout=60) as c:
                codes.append(sign_in(c, "boss", password).status_code)

        threads = [threading.Thread(target=attempt, args=("wrong password",)) for _ in range(12)]
        threads.append(threading.Thread(target=attempt, args=(PASSWORD,)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert codes.count(429) >= 10 and codes.count(401) + codes.count(303) <= 3, codes


def test_small_requests_are_capped_before_sign_in(client: TestClient) -> None:
    big = client.post("/api/v1/settings", content=b"{" + b" " * 100_000 + b"}",
                      headers={"content-type": "application/json"})  # fmt: skip
    assert big.status_code == 413 and "kB" in big.json()["error"]
    form = client.post("/login", data={"username": "x" * 70_000, "password": "y"})
    assert form.status_code == 413


def test_a_chunked_body_over_the_limit_is_413_not_500(client: TestClient, cfg: Config) -> None:
    admin_client(client)
    headers = {"X-CSRF-Token": csrf_of(client.get("/").text),
               "content-type": "multipart/form-data; boundary=xx"}  # fmt: skip

    def chunks():
        yield b"--xx\r\nContent-Disposition: form-data; name=photo; filename=a.jpg\r\n\r\n"
        for _ in range(10):
            yield b"0" * cfg.upload_max_bytes

    response = client.post("/api/v1/people/check-photo", content=chunks(), headers=headers)
    assert response.status_code == 413 and "error" in response.json(), response.text


def test_store_errors_do_not_show_paths(cfg: Config) -> None:
    cfg.site_db_path.write_bytes(b"this is not a database" * 100)
    with TestClient(create_app(cfg, enrol=FakeEnrol(), live=False)) as client:
        response = client.get("/api/v1/people", cookies={"attendance_session": "x"})
    assert response.status_code == 503
    assert str(cfg.root) not in response.text and "unavailable" in response.json()["error"]


def test_no_redirects_built_from_the_host_header(client: TestClient) -> None:
    response = client.get("/people/", headers={"host": "evil.example"}, follow_redirects=False)
    assert response.status_code == 404 and "location" not in response.headers


def test_the_site_database_is_private(cfg: Config) -> None:
    assert cfg.site_db_path.stat().st_mode & 0o077 == 0


def test_a_live_stream_ends_when_its_session_does(cfg: Config, monkeypatch) -> None:
    import threading
    import time

    import httpx
    from web_support import running_server

    import web.live

    monkeypatch.setattr(web.live, "RECHECK_SECONDS", 0.2)
    monkeypatch.setattr(web.live, "KEEPALIVE_SECONDS", 0.3)
    ended = threading.Event()
    with running_server(create_app(cfg, enrol=FakeEnrol(), live=True)) as base:
        with httpx.Client(base_url=base, follow_redirects=True) as c:
            sign_in(c, "clerk")
            cookies = c.cookies

        def watch() -> None:
            with (
                httpx.Client(base_url=base, cookies=cookies, timeout=30) as w,
                w.stream("GET", "/events/today") as stream,
            ):
                for _ in stream.iter_lines():
                    pass
            ended.set()

        threading.Thread(target=watch, daemon=True).start()
        time.sleep(1.0)
        assert not ended.is_set()  # signed in: the stream stays open
        with open_site_store(cfg) as site:
            assert site.remove_user("clerk")
        assert ended.wait(5), "the stream outlived the session"


def test_stores_of_retired_worker_threads_are_closed(cfg: Config) -> None:
    import threading

    from web.stores import ThreadStores

    stores = ThreadStores(cfg)
    for _ in range(5):  # five short-lived worker threads, three stores each
        worker = threading.Thread(
            target=lambda: (stores.site(), stores.attendance(), stores.embeddings())
        )
        worker.start()
        worker.join()
    stores.site()  # opening one in this thread sweeps the dead threads' stores
    assert stores.open_count() == 1
    stores.close()
    assert stores.open_count() == 0
