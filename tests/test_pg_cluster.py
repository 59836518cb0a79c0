"""The throwaway PostgreSQL server of ``tests/pg.py`` (fixtures ``pg_server``, ``pg_url``)."""

from __future__ import annotations

import re
import socket
import subprocess

import psycopg
import pytest
from pg import HOST, PgCluster


def _query(url: str, query: str) -> list[tuple]:
    """All rows of ``query`` on database ``url``."""
    with psycopg.connect(url, connect_timeout=10) as conn:
        return conn.execute(query).fetchall()


def _user_tables(url: str) -> list[tuple]:
    """The tables outside the system schemas of database ``url``."""
    return _query(
        url,
        "SELECT schemaname, tablename FROM pg_tables "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
    )


def _other_local_addresses() -> set[tuple[int, str]]:
    """``(family, address)`` pairs of this machine other than 127.0.0.1: the rest of 127/8,
    ``::1`` and the host's own addresses where the resolver knows them."""
    found = {(socket.AF_INET, "127.0.0.2")}  # on Linux all of 127.0.0.0/8 is local
    if socket.has_ipv6:
        found.add((socket.AF_INET6, "::1"))
    for family, address in ((socket.AF_INET, "192.0.2.99"), (socket.AF_INET6, "2001:db8::1")):
        try:  # the source address of the default route; no packet is sent
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((address, 9))
                found.add((family, probe.getsockname()[0]))
        except OSError:
            pass
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, proto=socket.IPPROTO_TCP)
    except OSError:
        infos = []
    found.update((info[0], info[4][0]) for info in infos)
    return {(family, address) for family, address in found if address != HOST}


def _refused(family: int, address: str, port: int) -> bool:
    """Whether a TCP connection to ``address:port`` fails (refused, unreachable)."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        try:
            sock.connect((address, port))
        except OSError:
            return True
        return False


def test_server_runs_the_installed_major_version(pg_server: PgCluster) -> None:
    out = subprocess.run([str(pg_server.bindir / "postgres"), "--version"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    installed = int(re.search(r"PostgreSQL\)? (\d+)", out).group(1))
    [(version, number)] = _query(
        pg_server.superuser_url(), "SELECT version(), current_setting('server_version_num')"
    )
    assert version.startswith(f"PostgreSQL {installed}.")
    assert int(number) // 10000 == installed
    assert pg_server.superuser_url() == f"postgresql://postgres@127.0.0.1:{pg_server.port}/postgres"


def test_new_databases_are_distinct_and_empty(pg_server: PgCluster, pg_url: str) -> None:
    second = pg_server.new_database()
    assert second != pg_url
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE mine (x int)")
    assert _user_tables(pg_url) == [("public", "mine")]
    assert _user_tables(second) == []
    [(name, encoding, collate)] = _query(
        second,
        "SELECT current_database(), pg_encoding_to_char(encoding), datcollate "
        "FROM pg_database WHERE datname = current_database()",
    )
    assert second.endswith(f"/{name}") and (encoding, collate) == ("UTF8", "C")


def test_new_database_quotes_its_name(pg_server: PgCluster) -> None:
    url = pg_server.new_database('odd "name"; DROP')
    assert _query(url, "SELECT current_database()") == [('odd "name"; DROP',)]
    pg_server.drop_database('odd "name"; DROP')


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_restart_keeps_committed_data_and_the_port(
    pg_server: PgCluster, pg_url: str, mode: str
) -> None:
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (1), (2)")
    port = pg_server.port
    pg_server.restart(mode)  # "immediate" is a crash: recovery replays the WAL
    assert pg_server.port == port
    assert _query(pg_url, "SELECT x FROM kept ORDER BY x") == [(1,), (2,)]


def test_stopped_server_refuses_then_starts_again(pg_server: PgCluster, pg_url: str) -> None:
    pg_server.stop()
    with pytest.raises(psycopg.OperationalError):
        _query(pg_url, "SELECT 1")
    pg_server.start()
    assert _query(pg_url, "SELECT 1") == [(1,)]


def test_listens_on_127_0_0_1_only(pg_server: PgCluster) -> None:
    settings = _query(
        pg_server.superuser_url(),
        "SELECT current_setting('listen_addresses'), current_setting('unix_socket_directories')",
    )
    assert settings == [("127.0.0.1", str(pg_server.socket_dir))]
    assert not _refused(socket.AF_INET, HOST, pg_server.port)
    others = _other_local_addresses()
    assert others  # at least 127.0.0.2
    accepted = [address for family, address in others if not _refused(family, address,
                                                                      pg_server.port)]  # fmt: skip
    assert accepted == []
