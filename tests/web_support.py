"""Helpers of the web tests: users, a signed-in client, a fake enrolment, a real server."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from common.config import Config
from store.factory import open_site_store
from web.security import new_api_token, new_user

PASSWORD = "correct horse battery"


def add_user(cfg: Config, name: str, role: str = "admin", password: str = PASSWORD) -> None:
    with open_site_store(cfg) as site:
        site.add_user(new_user(name, password, role), replace=True)


def add_token(cfg: Config, name: str, role: str = "viewer") -> str:
    secret, record = new_api_token(name, role)
    with open_site_store(cfg) as site:
        assert site.add_token(record)
    return secret


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def sign_in(client, name: str, password: str = PASSWORD, next_page: str = "/"):
    """Sign ``client`` in through the login form; the response after the redirect."""
    page = client.get("/login")
    return client.post(
        "/login",
        data={
            "username": name,
            "password": password,
            "csrf_token": csrf_of(page.text),
            "next": next_page,
        },
    )


@dataclass
class Verdict:
    filename: str
    accepted: bool
    reason: str


@dataclass
class Result:
    name: str
    photos: list[Verdict]
    enrolled: bool
    message: str
    shots_saved: int
    crops: int
    warnings: list[str] = field(default_factory=list)


class FakeEnrol:
    """Accepts photos whose bytes start with b"face"; records the calls."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[tuple[str, list[tuple[str, bytes]], bool]] = []
        self.fail = fail

    def check_photo(self, data: bytes, filename: str = "frame") -> Verdict:
        if self.fail:
            raise self.fail
        ok = data.startswith(b"face")
        return Verdict(filename, ok, "" if ok else "no face found")

    def enrol(self, name: str, files: list[tuple[str, bytes]], *, force: bool = False) -> Result:
        if self.fail:
            raise self.fail
        self.calls.append((name, files, force))
        verdicts = [self.check_photo(data, fn) for fn, data in files]
        kept = sum(v.accepted for v in verdicts)
        return Result(name, verdicts, kept >= 5, f"{name}: {kept} photos", kept, kept)

    def close(self) -> None:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(app, port: int | None = None) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 in a thread; yields its base URL."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
