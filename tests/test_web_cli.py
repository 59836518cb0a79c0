"""``attendance user``, ``attendance token`` and ``attendance serve`` as a user runs them."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from web_support import add_user, free_port, sign_in

from attendance.cli import main
from common.config import Config
from store.factory import open_site_store

ROOT = Path(__file__).resolve().parents[1]


def run(cfg: Config, *argv: str, stdin: str = "", monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return main([*argv, "--workspace", str(cfg.root)])


def test_user_add_hashes_the_password_and_lists_roles(workspace, monkeypatch, capsys) -> None:
    assert (
        run(
            workspace,
            "user",
            "add",
            "ada",
            "--role",
            "admin",
            "--password-stdin",
            stdin="long enough password\n",
            monkeypatch=monkeypatch,
        )
        == 0
    )
    with open_site_store(workspace) as site:
        user = site.user("ada")
    assert user.role == "admin" and user.password_hash.startswith("$argon2id$")
    assert "long enough" not in user.password_hash
    # an existing user is not replaced by accident
    assert (
        run(
            workspace,
            "user",
            "add",
            "ada",
            "--password-stdin",
            stdin="another password\n",
            monkeypatch=monkeypatch,
        )
        == 2
    )
    assert "--replace" in capsys.readouterr().err
    # too short: refused, nothing stored
    assert (
        run(
            workspace,
            "user",
            "add",
            "bob",
            "--password-stdin",
            stdin="short\n",
            monkeypatch=monkeypatch,
        )
        == 2
    )
    assert "at least 8" in capsys.readouterr().err
    assert run(workspace, "user", "list", monkeypatch=monkeypatch) == 0
    out = capsys.readouterr().out
    assert "ada\tadmin" in out and "bob" not in out
    assert run(workspace, "user", "remove", "ada", monkeypatch=monkeypatch) == 0
    assert run(workspace, "user", "remove", "ada", monkeypatch=monkeypatch) == 2


def test_user_add_without_a_terminal_asks_for_password_stdin(workspace, monkeypatch, capsys):
    assert run(workspace, "user", "add", "ada", stdin="", monkeypatch=monkeypatch) == 2
    assert "--password-stdin" in capsys.readouterr().err


def test_token_add_prints_it_once_and_stores_its_hash(workspace, monkeypatch, capsys) -> None:
    assert run(workspace, "token", "add", "payroll", monkeypatch=monkeypatch) == 0
    secret = capsys.readouterr().out.strip()
    assert secret.startswith("att_") and len(secret) > 40
    with open_site_store(workspace) as site:
        (token,) = site.tokens()
    assert token.token_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert run(workspace, "token", "list", monkeypatch=monkeypatch) == 0
    assert secret not in capsys.readouterr().out
    assert run(workspace, "token", "add", "payroll", monkeypatch=monkeypatch) == 2
    assert run(workspace, "token", "remove", "payroll", monkeypatch=monkeypatch) == 0
    with open_site_store(workspace) as site:
        assert site.tokens() == []


def test_serve_binds_localhost_and_answers_healthz(workspace: Config) -> None:
    """... and stops promptly on Ctrl-C although a browser holds a live stream open."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "attendance.cli",
            "serve",
            "--port",
            str(port),
            "--workspace",
            str(workspace.root),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "attendance serve did not start"
                time.sleep(0.2)
        assert response.json() == {"status": "ok"}
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/today").status_code == 401
        listening = subprocess.run(
            ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True
        ).stdout
        if listening:  # iproute2 is there: only the loopback address listens
            assert [line.split()[3] for line in listening.splitlines()] == [f"127.0.0.1:{port}"]
        add_user(workspace, "boss", "viewer")
        stream_open = threading.Event()

        def watch() -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=True) as c:
                sign_in(c, "boss")
                with c.stream("GET", "/events/today", timeout=30) as stream:
                    for _ in stream.iter_lines():
                        stream_open.set()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        assert stream_open.wait(30)
    finally:
        stopped = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert time.monotonic() - stopped < 2.5, "a live stream held the shutdown"
    assert "nobody can sign in yet" in out and "CancelledError" not in out
    assert proc.returncode == 0, out


def test_serve_on_a_port_in_use_is_one_line(workspace: Config) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "attendance.cli", "serve", "--port", str(port),
             "--workspace", str(workspace.root)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    assert result.returncode == 2
    assert f"error: cannot listen on 127.0.0.1:{port}" in result.stderr
