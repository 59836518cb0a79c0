"""The site store (dashboard users, sessions, API tokens, kiosk heartbeats) on both engines.

Every contract test runs twice (``backend``): on the workspace's SQLite file and on a fresh
database of a throwaway PostgreSQL server (``tests/pg.py``). Stores are built only through
:func:`store.factory.open_site_store`. What belongs to one engine (SQLite files that cannot be
used, PostgreSQL role grants) is tested at the end.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import inspect
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from test_pg_store import make_roles

from common.config import Config
from store import interfaces
from store.factory import open_site_store, store_grants, upgrade_store
from store.records import (
    ApiToken,
    DatabaseCorrupt,
    DatabaseError,
    Heartbeat,
    Session,
    StoreError,
    User,
)

START = dt.datetime(2024, 5, 1, 9, 0, tzinfo=dt.timezone.utc)
HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"


def at(minutes: float = 0) -> str:
    """ISO-8601 UTC, ``minutes`` after 09:00 on 2024-05-01 (the callers' format)."""
    return (START + dt.timedelta(minutes=minutes)).isoformat()


def sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def user(name: str, role: str = "viewer", password_hash: str = HASH) -> User:
    return User(name, role, password_hash, at())


def session(secret: str, name: str, created: float = 0, minutes: float = 60) -> Session:
    """The session of cookie token ``secret`` for user ``name``, from ``created`` minutes for
    ``minutes`` minutes."""
    return Session(sha(secret), name, f"csrf-{secret}", at(created), at(created + minutes))


def heartbeat(kiosk: str = "door 1", **changes: object) -> Heartbeat:
    beat = Heartbeat(
        kiosk=kiosk,
        host="pi-01",
        source="rtsp://camera.local/stream",
        source_state="running",
        fps=7.25,
        model_version="pretrained",
        started=at(),
        last_seen=at(1),
        day="2024-05-01",
        marked=3,
        unknown=1,
    )
    return dataclasses.replace(beat, **changes)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, workspace: Config) -> Config:
    """A workspace on its SQLite files, or on a fresh PostgreSQL database (schema applied)."""
    if request.param == "sqlite":
        return workspace
    cfg = workspace.replace(store=request.getfixturevalue("pg_url"))
    before, applied = upgrade_store(cfg)
    assert before is None and applied
    return cfg


def test_what_the_factory_builds_implements_the_protocol(backend: Config) -> None:
    with open_site_store(backend) as store:
        for name, member in vars(interfaces.SiteStore).items():
            if name.startswith("_") or not callable(member):
                continue
            actual = getattr(type(store), name, None)
            assert actual is not None, f"{type(store).__name__} lacks {name}"
            expected = inspect.signature(member).parameters
            assert list(inspect.signature(actual).parameters) == list(expected), name
        assert store.describe()


# --------------------------------------------------------------------------- users
def test_users_are_added_found_listed_and_removed(backend: Config) -> None:
    with open_site_store(backend) as store:
        assert store.users() == []
        for name in ("bob", "Zoe", "ada"):
            assert store.add_user(user(name, "admin" if name == "ada" else "viewer"))
        assert not store.add_user(user("ada", "viewer", "$argon2id$other"))  # exists: unchanged
        assert store.user("ada") == user("ada", "admin")
        assert store.user("ADA") is None  # exact match
        assert [u.name for u in store.users()] == ["Zoe", "ada", "bob"]  # by name, bytewise
        assert store.remove_user("bob") and not store.remove_user("bob")
        assert store.user("bob") is None
    with open_site_store(backend) as again:  # committed, seen by another connection
        assert again.users() == [user("Zoe"), user("ada", "admin")]


def test_replacing_a_user_changes_role_and_hash_and_ends_only_their_sessions(
    backend: Config,
) -> None:
    with open_site_store(backend) as store:
        store.add_user(user("ada", "viewer"))
        store.add_user(user("bob"))
        store.add_session(session("ada-1", "ada"))
        store.add_session(session("ada-2", "ada"))
        store.add_session(session("bob-1", "bob"))
        promoted = User("ada", "admin", "$argon2id$new", at(30))
        assert store.add_user(promoted, replace=True)
        assert store.user("ada") == User("ada", "admin", "$argon2id$new", at())  # created kept
        assert store.session(sha("ada-1"), at(1)) is None
        assert store.session(sha("ada-2"), at(1)) is None
        assert store.session(sha("bob-1"), at(1)) == session("bob-1", "bob")
        assert store.add_user(user("cy"), replace=True)  # replace adds a new user too
        assert store.user("cy") == user("cy")


# --------------------------------------------------------------------------- sessions
def test_sessions_expire_and_expired_ones_are_purged_by_the_next_sign_in(backend: Config) -> None:
    with open_site_store(backend) as store:
        store.add_user(user("ada"))
        first = session("one", "ada", created=0, minutes=60)
        store.add_session(first)
        assert store.session(sha("one"), at(59)) == first
        assert store.session(sha("one"), at(60)) is None  # expires == now: expired
        assert store.session(sha("one"), at(61)) is None
        assert store.session(sha("two"), at(1)) is None  # never signed in
        store.add_session(session("two", "ada", created=90))  # the first expired at 60
        # a lookup at a time it was valid no longer finds it: deleted, not just hidden
        assert store.session(sha("one"), at(1)) is None
        assert store.session(sha("two"), at(91)) == session("two", "ada", created=90)
        store.add_session(session("three", "ada", created=100))  # "two" is valid until 150
        assert store.session(sha("two"), at(91)) is not None


def test_signing_out_is_idempotent_and_ends_only_that_session(backend: Config) -> None:
    with open_site_store(backend) as store:
        store.add_user(user("ada"))
        store.add_session(session("one", "ada"))
        store.add_session(session("two", "ada"))
        store.remove_session(sha("one"))
        store.remove_session(sha("one"))
        store.remove_session(sha("never"))
        assert store.session(sha("one"), at(1)) is None
        assert store.session(sha("two"), at(1)) == session("two", "ada")


def test_removing_a_user_removes_their_sessions(backend: Config) -> None:
    with open_site_store(backend) as store:
        store.add_user(user("ada"))
        store.add_user(user("bob"))
        store.add_session(session("ada-1", "ada"))
        store.add_session(session("bob-1", "bob"))
        assert store.remove_user("ada")
        store.add_user(user("ada"))  # the same name again does not bring the session back
        assert store.session(sha("ada-1"), at(1)) is None
        assert store.session(sha("bob-1"), at(1)) == session("bob-1", "bob")


def test_a_session_of_an_unknown_user_is_refused(backend: Config) -> None:
    with open_site_store(backend) as store:
        store.add_user(user("ada"))
        with pytest.raises(ValueError, match="user 'bob' does not exist"):
            store.add_session(session("bob-1", "bob"))
        assert store.session(sha("bob-1"), at(1)) is None


# --------------------------------------------------------------------------- API tokens
def test_api_tokens_are_added_found_by_hash_and_revoked(backend: Config) -> None:
    script = ApiToken("nightly report", sha("secret-1"), "viewer", at())
    kiosk = ApiToken("door kiosk", sha("secret-2"), "admin", at(5))
    with open_site_store(backend) as store:
        assert store.add_token(script) and store.add_token(kiosk)
        assert store.token(sha("secret-1")) == script
        assert store.token(sha("secret-2")) == kiosk
        assert store.token(sha("secret-3")) is None
        # a name that exists: False, and the stored token is unchanged
        assert not store.add_token(ApiToken("door kiosk", sha("secret-3"), "viewer", at()))
        assert store.token(sha("secret-3")) is None and store.token(sha("secret-2")) == kiosk
        with pytest.raises(ValueError, match="'copy'.*same secret"):  # a hash that exists
            store.add_token(ApiToken("copy", sha("secret-1"), "viewer", at()))
        assert store.tokens() == [kiosk, script]  # by name
        assert store.remove_token("door kiosk") and not store.remove_token("door kiosk")
        assert store.token(sha("secret-2")) is None and store.tokens() == [script]


# --------------------------------------------------------------------------- heartbeats
def test_heartbeats_are_upserted_and_listed_by_kiosk(backend: Config) -> None:
    later = Heartbeat(  # every field changed: a restarted recogniser, the next day
        kiosk="door 1",
        host="pi-02",
        source="0",
        source_state="error: camera unplugged",
        fps=0.0,
        model_version="v2",
        started=at(1440),
        last_seen=at(1441),
        day="2024-05-02",
        marked=0,
        unknown=5,
    )
    with open_site_store(backend) as store:
        store.beat(heartbeat("door 1"))
        store.beat(heartbeat("Annex"))
        store.beat(heartbeat("door 1"))  # the same beat again: still one row

        def report() -> None:  # a recogniser's heartbeat thread opens its own store
            with open_site_store(backend) as own:
                own.beat(later)

        thread = threading.Thread(target=report)
        thread.start()
        thread.join(timeout=60)
        assert not thread.is_alive()
        assert store.kiosks() == [heartbeat("Annex"), later]
        assert isinstance(store.kiosks()[1].fps, float)


def test_a_retired_kiosk_is_forgotten(backend: Config) -> None:
    with open_site_store(backend) as store:
        store.beat(heartbeat("door 1"))
        store.beat(heartbeat("door 2"))
        assert store.remove_kiosk("door 1") and not store.remove_kiosk("door 1")
        assert not store.remove_kiosk("never seen")
        assert store.kiosks() == [heartbeat("door 2")]


# --------------------------------------------------------------------------- input checks
INVALID: dict[str, tuple[Callable[[object], object], str]] = {
    "empty user name": (lambda s: s.add_user(user("")), "user name ''"),
    "user name with spaces": (lambda s: s.add_user(user(" ada")), "user name ' ada'"),
    "user name too long": (lambda s: s.add_user(user("a" * 65)), "user name 'aaaa"),
    "user name with a newline": (lambda s: s.add_user(user("a\nb")), "user name 'a\\nb'"),
    "user name not text": (lambda s: s.add_user(user(7)), "user name 7 "),
    "unknown role": (lambda s: s.add_user(user("cy", "root")), "role 'root'"),
    "empty password hash": (lambda s: s.add_user(user("cy", password_hash="")), "password_hash"),
    "naive timestamp": (
        lambda s: s.add_user(User("cy", "viewer", HASH, "2024-05-01T09:00:00")),
        "created '2024-05-01T09:00:00'",
    ),
    "timestamp not in UTC": (
        lambda s: s.add_user(User("cy", "viewer", HASH, "2024-05-01T11:00:00+02:00")),
        "created '2024-05-01T11:00:00+02:00'",
    ),
    "not a timestamp": (
        lambda s: s.add_token(ApiToken("t", sha("x"), "viewer", "yesterday")),
        "created 'yesterday'",
    ),
    "session hash in upper case": (
        lambda s: s.add_session(Session(sha("x").upper(), "ada", "c", at(), at(60))),
        "token_sha256 (64 characters)",
    ),
    "session ending before it starts": (
        lambda s: s.add_session(Session(sha("x"), "ada", "c", at(60), at(60))),
        f"expires '{at(60)}'",
    ),
    "empty csrf": (lambda s: s.add_session(Session(sha("x"), "ada", "", at(), at(1))), "csrf"),
    "bad lookup time": (lambda s: s.session(sha("x"), "now"), "now 'now'"),
    "token role": (lambda s: s.add_token(ApiToken("t", sha("x"), "owner", at())), "'owner'"),
    "token name": (lambda s: s.add_token(ApiToken("", sha("x"), "viewer", at())), "token name"),
    "kiosk name too long": (lambda s: s.beat(heartbeat("k" * 101)), "kiosk name 'kkkk"),
    "empty kiosk name": (lambda s: s.beat(heartbeat("")), "kiosk name ''"),
    "fps NaN": (lambda s: s.beat(heartbeat(fps=float("nan"))), "fps nan"),
    "fps infinite": (lambda s: s.beat(heartbeat(fps=float("inf"))), "fps inf"),
    "fps negative": (lambda s: s.beat(heartbeat(fps=-1.0)), "fps -1.0"),
    "count negative": (lambda s: s.beat(heartbeat(marked=-1)), "marked=-1"),
    "count not whole": (lambda s: s.beat(heartbeat(unknown=1.5)), "unknown 1.5"),
    "count a bool": (lambda s: s.beat(heartbeat(unknown=True)), "unknown True"),
    "day": (lambda s: s.beat(heartbeat(day="2024-13-01")), "day '2024-13-01'"),
    "host not text": (lambda s: s.beat(heartbeat(host=None)), "host None"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_values_are_refused_naming_them(backend: Config, case: str) -> None:
    call, named = INVALID[case]
    with open_site_store(backend) as store:
        store.add_user(user("ada"))
        with pytest.raises(ValueError, match=re.escape(named)) as e:
            call(store)
        assert "\n" not in str(e.value)
        assert store.users() == [user("ada")] and store.tokens() == [] and store.kiosks() == []


def test_a_token_or_hash_passed_where_a_hash_belongs_is_never_shown(backend: Config) -> None:
    with open_site_store(backend) as store:
        store.add_user(user("ada"))
        secret = "cookie-token-" + "A" * 51  # the token itself, 64 characters
        with pytest.raises(ValueError, match="token_sha256") as caught:
            store.add_session(Session(secret, "ada", "c", at(), at(60)))
        assert secret not in str(caught.value)


def test_lookups_of_names_or_hashes_no_row_can_have_find_nothing(backend: Config) -> None:
    """A login form may pass anything: no error, nothing found, nothing removed."""
    with open_site_store(backend) as store:
        store.add_user(user("ada"))
        store.beat(heartbeat("door 1"))
        for name in ("", " ada", "ada ", "a" * 65, None):
            assert store.user(name) is None  # type: ignore[arg-type]
            assert not store.remove_user(name)  # type: ignore[arg-type]
            assert not store.remove_token(name)  # type: ignore[arg-type]
            assert not store.remove_kiosk(name)  # type: ignore[arg-type]
        for token in ("", "not hex", sha("x").upper(), None):
            assert store.token(token) is None  # type: ignore[arg-type]
            assert store.session(token, at()) is None  # type: ignore[arg-type]
            store.remove_session(token)  # type: ignore[arg-type]
        assert store.users() == [user("ada")] and len(store.kiosks()) == 1


def test_timestamps_are_stored_in_one_utc_form_so_text_order_is_time_order(
    backend: Config,
) -> None:
    with open_site_store(backend) as store:
        store.add_user(User("ada", "viewer", HASH, "2024-05-01T09:00:00.123+00:00"))
        assert store.user("ada").created == "2024-05-01T09:00:00.123000+00:00"
        # 10:00:00.500000 written two ways: equal instants, so the session has expired then
        expires = "2024-05-01T10:00:00.500000+00:00"
        store.add_session(Session(sha("one"), "ada", "c", "2024-05-01T09:00:00+00:00", expires))
        assert store.session(sha("one"), "2024-05-01T10:00:00.499+00:00") is not None
        assert store.session(sha("one"), "2024-05-01T10:00:00.500+00:00") is None


# --------------------------------------------------------------------------- SQLite only
def test_sqlite_create_false_refuses_a_missing_file(workspace: Config) -> None:
    path = Path(workspace.site_db_path)
    with pytest.raises(DatabaseError, match="does not exist") as caught:
        open_site_store(workspace, create=False)
    assert str(path) in str(caught.value) and not path.exists()
    with open_site_store(workspace) as store:
        store.add_user(user("ada"))
    with open_site_store(workspace, create=False) as store:
        assert store.users() == [user("ada")]


def test_sqlite_a_folder_is_refused(workspace: Config) -> None:
    Path(workspace.site_db_path).mkdir(parents=True)
    with pytest.raises(DatabaseError, match="is a folder.*site_db_path"):
        open_site_store(workspace)


def test_sqlite_a_file_it_cannot_use_is_refused_and_left_untouched(workspace: Config) -> None:
    def site_file(name: str, *statements: str) -> Config:
        path = Path(workspace.root) / name
        conn = sqlite3.connect(path)
        try:
            for statement in statements:
                conn.execute(statement)
            conn.commit()
        finally:
            conn.close()
        return workspace.replace(site_db_path=path)

    attendance = site_file("attendance.sqlite", "CREATE TABLE attendance (EmpName TEXT)")
    with pytest.raises(DatabaseError, match="another program.*attendance.*site_db_path"):
        open_site_store(attendance)
    newer = site_file("newer.sqlite", "PRAGMA user_version = 7")
    with pytest.raises(DatabaseError, match="schema version 7, newer"):
        open_site_store(newer)
    damaged = Path(workspace.root) / "damaged.sqlite"
    damaged.write_bytes(b"not a database at all" * 100)
    with pytest.raises(DatabaseCorrupt, match="not a site database"):
        open_site_store(workspace.replace(site_db_path=damaged))
    assert damaged.read_bytes() == b"not a database at all" * 100


# --------------------------------------------------------------------------- PostgreSQL only
def test_the_kiosk_role_reports_heartbeats_but_cannot_see_the_dashboard(
    pg_url: str, workspace: Config
) -> None:
    """The grants of ``attendance db grants``: a kiosk upserts its heartbeat (and reads the
    kiosks), but cannot read users, sessions or tokens, nor forget a kiosk; the admin can."""
    admin_cfg = workspace.replace(store=pg_url)
    upgrade_store(admin_cfg)
    suffix = uuid.uuid4().hex[:8]  # roles are cluster-wide
    kiosk, admin = f"site_kiosk_{suffix}", f"site_admin_{suffix}"
    make_roles(pg_url, kiosk, admin, password="-pw")
    as_kiosk = workspace.replace(store=pg_url.replace("postgres@", f"{kiosk}:{kiosk}-pw@"))
    as_admin = workspace.replace(store=pg_url.replace("postgres@", f"{admin}:{admin}-pw@"))
    with open_site_store(as_admin) as store:
        assert store.add_user(user("ada", "admin"))
        assert store.add_token(ApiToken("script", sha("s"), "viewer", at()))
    with open_site_store(as_kiosk) as store:
        store.beat(heartbeat("door 1"))
        store.beat(heartbeat("door 1", marked=9))
        assert store.kiosks() == [heartbeat("door 1", marked=9)]
        for look in (
            store.users,
            lambda: store.user("ada"),
            lambda: store.token(sha("s")),
            lambda: store.session(sha("x"), at()),
            lambda: store.remove_kiosk("door 1"),
        ):
            with pytest.raises(StoreError, match="may not") as caught:
                look()
            assert f"{kiosk}-pw" not in str(caught.value)
    # another kiosk's credentials cannot rewrite door 1's heartbeat (row-level security)
    other = f"site_kiosk2_{suffix}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {other} LOGIN PASSWORD '{other}-pw'")
        for statement in store_grants(other, admin):
            conn.execute(statement)
    as_other = workspace.replace(store=pg_url.replace("postgres@", f"{other}:{other}-pw@"))
    with open_site_store(as_other) as store:
        with pytest.raises(StoreError, match="may not"):
            store.beat(heartbeat("door 1", marked=42))
        store.beat(heartbeat("door 2"))  # its own row: fine
        assert store.kiosks() == [heartbeat("door 1", marked=9), heartbeat("door 2")]
    with open_site_store(as_admin) as store:
        assert store.kiosks() == [heartbeat("door 1", marked=9), heartbeat("door 2")]
        assert store.remove_kiosk("door 1") and store.remove_kiosk("door 2")
        assert store.kiosks() == []
    with psycopg.connect(pg_url) as conn:  # the grants name only kiosks among the new tables
        granted = conn.execute(
            "SELECT DISTINCT table_name FROM information_schema.role_table_grants "
            "WHERE grantee = %s AND table_name IN "
            "('site_users', 'site_sessions', 'site_api_tokens', 'kiosks')",
            (kiosk,),
        ).fetchall()
    assert granted == [("kiosks",)]
