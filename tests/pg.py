"""A private, throwaway PostgreSQL server for the PostgreSQL store tests.

``pg_cluster()`` runs ``initdb`` into a fresh temporary folder and starts the server on a free
port of 127.0.0.1 only (its Unix socket stays inside that folder); on exit it stops the server
and removes the folder. Needs the server binaries (Debian package ``postgresql``, installed by
``scripts/test.sh``) and ``psycopg`` (3). PostgreSQL refuses to run as root, so under root the
binaries run as the unprivileged ``postgres`` user that the Debian package creates.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

HOST = "127.0.0.1"
SUPERUSER = "postgres"
RUN_AS = "postgres"  # the unprivileged account the binaries run as when we are root
TOOLS = ("initdb", "pg_ctl")
MISSING = (
    "PostgreSQL server binaries not found; install the Debian package postgresql "
    "(scripts/test.sh does)"
)
PORT_ATTEMPTS = 5
TIMEOUT = 60.0  # seconds for one initdb / pg_ctl call
SETTINGS = {  # speed over durability: the cluster is thrown away
    "listen_addresses": f"'{HOST}'",
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "100",
    "log_min_messages": "warning",
}


def _has_tools(bindir: Path) -> bool:
    """Whether ``bindir`` holds executable ``initdb`` and ``pg_ctl``."""
    return all(os.access(bindir / tool, os.X_OK) for tool in TOOLS)


def _version_key(path: Path) -> tuple[int, ...]:
    """``/usr/lib/postgresql/15/bin`` → ``(15,)``, for picking the highest installed version."""
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def find_bindir() -> Path:
    """The folder of the server binaries: ``pg_config --bindir`` if that holds them, else the
    highest ``/usr/lib/postgresql/*/bin`` that does, else wherever ``PATH`` finds ``initdb``."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()  # fmt: skip
        if out and _has_tools(Path(out)):
            return Path(out)
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    for bindir in debian:
        if _has_tools(bindir):
            return bindir
    found = [shutil.which(tool) for tool in TOOLS]
    if all(found) and Path(found[0]).parent == Path(found[1]).parent:
        return Path(found[0]).parent
    raise RuntimeError(MISSING)


def _run_as_user() -> pwd.struct_passwd | None:
    """The account to run the server binaries as: ``None`` (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(RUN_AS)
    except KeyError:
        raise RuntimeError(
            f"running as root, which PostgreSQL refuses, and there is no {RUN_AS!r} user to "
            "run it as; install the Debian package postgresql (it creates that user)"
        ) from None


def _wrapper(user: pwd.struct_passwd | None) -> list[str]:
    """The command prefix that runs a program as ``user`` (nothing when ``user`` is None)."""
    if user is None:
        return []
    if shutil.which("runuser"):
        return ["runuser", "-u", user.pw_name, "--"]
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups",
                "--"]  # fmt: skip
    raise RuntimeError("running as root and neither runuser nor setpriv is available")


def _check_reachable(path: Path, user: pwd.struct_passwd) -> None:
    """Fail clearly if ``user`` cannot traverse the folders above ``path`` (e.g. ``/root``)."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH and parent.stat().st_uid != user.pw_uid:
            raise RuntimeError(
                f"the {user.pw_name!r} user cannot enter {parent}; point TMPDIR elsewhere"
            )


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class PgCluster:
    """One throwaway PostgreSQL cluster in folder ``base``; see ``pg_cluster()``."""

    host = HOST

    def __init__(self, base: Path, bindir: Path, user: pwd.struct_passwd | None) -> None:
        self.base = base
        self.bindir = bindir
        self.user = user
        self.data = base / "data"
        self.socket_dir = base / "socket"
        self.log = base / "server.log"
        self.port = 0
        self.running = False
        self.startup_seconds = 0.0  # initdb + first start, for the curious
        self._names = itertools.count(1)

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run server binary ``tool`` (as the unprivileged user under root), output captured."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        cmd = [*_wrapper(self.user), str(self.bindir / tool), *args]
        done = subprocess.run(cmd, cwd=self.base, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT, check=False)  # fmt: skip
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{tool} failed (exit {done.returncode}): {done.stdout}{done.stderr}"
                f"{self.log_tail()}"
            )
        return done

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the server log (empty if there is none yet)."""
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\nserver log:\n" + "\n".join(text) if text else ""

    def init(self) -> None:
        """``initdb`` the cluster (trust authentication, UTF-8, C locale) and write the test
        settings into its ``postgresql.conf``."""
        self.socket_dir.mkdir()
        if self.user is not None:
            for path in (self.base, self.socket_dir):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")  # fmt: skip
        settings = {**SETTINGS, "unix_socket_directories": f"'{self.socket_dir}'"}
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/pg.py\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def start(self, port: int | None = None) -> None:
        """Start the server on ``port`` (default: the current one, or a free one on the first
        start, retried on a clash with another process); return once it accepts connections."""
        fixed = port or self.port
        for attempt in range(PORT_ATTEMPTS):
            self.port = fixed or free_port()
            done = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w",
                             "-t", str(int(TIMEOUT)), "-o", f"-p {self.port}", "start",
                             check=False)  # fmt: skip
            if done.returncode == 0:
                self.running = True
                return
            clash = "could not bind" in self.log_tail(5)  # another process took the port
            if fixed or not clash or attempt == PORT_ATTEMPTS - 1:
                raise RuntimeError(
                    f"pg_ctl start on port {self.port} failed (exit {done.returncode}): "
                    f"{done.stdout}{done.stderr}{self.log_tail()}"
                )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``mode``: ``smart``, ``fast`` or ``immediate``, a crash that the
        next start recovers from); the port is kept for the next ``start()``."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", str(int(TIMEOUT)),
                  "stop")  # fmt: skip
        self.running = False

    def restart(self, mode: str = "fast") -> None:
        """Stop and start again on the same port."""
        self.stop(mode)
        self.start()

    def url(self, dbname: str, user: str = SUPERUSER) -> str:
        """The connection URL of database ``dbname`` over TCP (names percent-encoded)."""
        return (
            f"postgresql://{quote(user, safe='')}@{self.host}:{self.port}/{quote(dbname, safe='')}"
        )

    def superuser_url(self) -> str:
        """The URL of the ``postgres`` database as the ``postgres`` superuser."""
        return self.url("postgres")

    def _admin(self, statement: object) -> None:
        """Run one ``psycopg.sql`` statement in the ``postgres`` database, autocommit."""
        import psycopg

        with psycopg.connect(self.superuser_url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(statement)

    def new_database(self, name: str | None = None) -> str:
        """Create a fresh, empty database (a unique ``test_<n>_<hex>`` name unless ``name``)
        from ``template0``; return its URL."""
        from psycopg import sql

        name = name or f"test_{next(self._names)}_{uuid.uuid4().hex[:8]}"
        self._admin(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` (if it exists), ending the sessions still connected to it."""
        from psycopg import sql

        self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextlib.contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    """``initdb`` and start a private PostgreSQL server listening on 127.0.0.1 only; yield its
    ``PgCluster`` (``.host``, ``.port``, ``.superuser_url()``, ``.new_database()``, ``.stop()``,
    ``.start()``, ``.restart()``); stop it at once and remove its folder afterwards."""
    bindir = find_bindir()
    user = _run_as_user()
    base = Path(tempfile.mkdtemp(prefix="pg-test-"))
    cluster = PgCluster(base, bindir, user)
    try:
        if user is not None:
            _check_reachable(base, user)
        started = time.monotonic()
        cluster.init()
        cluster.start()
        cluster.startup_seconds = time.monotonic() - started
        yield cluster
    finally:
        if cluster.running:
            cluster._run("pg_ctl", "-D", str(cluster.data), "-m", "immediate", "-w", "stop",
                         check=False)  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)
