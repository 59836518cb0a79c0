"""The PostgreSQL schema as numbered migrations, applied by ``attendance db upgrade``.

Each migration is a list of statements run in one transaction, recorded in
``schema_migrations``. :func:`upgrade` takes an advisory lock first, so two admins upgrading
at once apply each migration once. Kiosks never change the schema: they check the version
(:func:`check_version`) and refuse a store that is older (upgrade it) or newer (upgrade the
program) than :data:`SCHEMA_VERSION`.

Column names follow the SQLite store (``EmpName``, ``Date`` ... fold to lower case), so the
same queries read both. Notifications, sent by triggers and delivered at commit, let running
recognisers and dashboards apply changes without polling tables:

- ``attendance_gallery``: payload = the identity whose crops or embeddings changed;
- ``attendance_rows``: the attendance table or the audit trail changed.

Migration 4 adds the dashboard's tables (``site_users``, ``site_sessions``, ``site_api_tokens``)
and the kiosks' heartbeats (``kiosks``), used by :mod:`store.pg_site`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

GALLERY_CHANNEL = "attendance_gallery"
ROWS_CHANNEL = "attendance_rows"
_LOCK_KEY = 0x46414345  # pg_advisory_xact_lock key of schema upgrades ("FACE")


@dataclass(frozen=True)
class Migration:
    """One schema step: ``version`` (1, 2, ...), a name, and its statements."""

    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "people, crops, embeddings, attendance, events, model versions",
        (
            """CREATE TABLE people (
                identity text PRIMARY KEY,
                created  timestamptz NOT NULL DEFAULT now()
            )""",
            # the aligned 160x160 crops as PNG bytes: any kiosk can embed them for its model
            """CREATE TABLE crops (
                relpath  text PRIMARY KEY,
                identity text NOT NULL REFERENCES people (identity) ON DELETE CASCADE,
                sha256   text NOT NULL,
                size     bigint NOT NULL,
                mtime_ns bigint NOT NULL,
                png      bytea NOT NULL,
                created  timestamptz NOT NULL DEFAULT now(),
                CHECK (relpath LIKE identity || '/%')
            )""",
            "CREATE INDEX crops_by_identity ON crops (identity)",
            "CREATE INDEX crops_by_sha ON crops (sha256)",
            # one vector per crop content and model (little-endian float32, dim values)
            """CREATE TABLE embeddings (
                model_id text NOT NULL,
                sha256   text NOT NULL,
                dim      integer NOT NULL CHECK (dim > 0),
                vector   bytea NOT NULL,
                created  timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (model_id, sha256)
            )""",
            # people removed: a workspace still holding their old crops does not bring them back
            """CREATE TABLE removed_people (
                identity   text PRIMARY KEY,
                removed_at timestamptz NOT NULL DEFAULT now()
            )""",
            """CREATE TABLE attendance (
                EmpName  text NOT NULL,
                Date     text NOT NULL CHECK (Date ~ '^[0-9]{4}-[0-1][0-9]-[0-3][0-9]$'),
                Status   text NOT NULL CHECK (Status IN ('Present', 'Absent')),
                Time     text,
                LastSeen text,
                PRIMARY KEY (EmpName, Date)
            )""",
            "CREATE INDEX attendance_by_date ON attendance (Date)",
            """CREATE TABLE events (
                id        bigserial PRIMARY KEY,
                Timestamp text NOT NULL,
                EmpName   text NOT NULL,
                Distance  double precision,
                Source    text NOT NULL,
                Action    text NOT NULL
            )""",
            "CREATE INDEX events_by_time ON events (Timestamp)",
            "CREATE INDEX events_by_name ON events (EmpName)",
            """CREATE TABLE model_versions (
                model_id  text PRIMARY KEY,
                threshold double precision,
                meta      jsonb NOT NULL DEFAULT '{}'::jsonb,
                updated   timestamptz NOT NULL DEFAULT now()
            )""",
            f"""CREATE FUNCTION attendance_notify_gallery() RETURNS trigger
                LANGUAGE plpgsql AS $$
                DECLARE who text;
                BEGIN
                    IF TG_TABLE_NAME = 'embeddings' THEN
                        FOR who IN SELECT DISTINCT c.identity FROM crops c
                                   WHERE c.sha256 = COALESCE(NEW.sha256, OLD.sha256) LOOP
                            PERFORM pg_notify('{GALLERY_CHANNEL}', who);
                        END LOOP;
                    ELSE
                        PERFORM pg_notify('{GALLERY_CHANNEL}',
                                          COALESCE(NEW.identity, OLD.identity));
                    END IF;
                    RETURN NULL;
                END $$""",
            """CREATE TRIGGER crops_notify AFTER INSERT OR UPDATE OR DELETE ON crops
                FOR EACH ROW EXECUTE FUNCTION attendance_notify_gallery()""",
            """CREATE TRIGGER embeddings_notify AFTER INSERT OR UPDATE OR DELETE ON embeddings
                FOR EACH ROW EXECUTE FUNCTION attendance_notify_gallery()""",
            f"""CREATE FUNCTION attendance_notify_rows() RETURNS trigger
                LANGUAGE plpgsql AS $$
                BEGIN
                    PERFORM pg_notify('{ROWS_CHANNEL}', TG_TABLE_NAME);
                    RETURN NULL;
                END $$""",
            """CREATE TRIGGER attendance_notify AFTER INSERT OR UPDATE OR DELETE ON attendance
                FOR EACH STATEMENT EXECUTE FUNCTION attendance_notify_rows()""",
            """CREATE TRIGGER events_notify AFTER INSERT OR UPDATE OR DELETE ON events
                FOR EACH STATEMENT EXECUTE FUNCTION attendance_notify_rows()""",
        ),
    ),
    Migration(
        2,
        "crops belong to the workspace that published them",
        (
            # origin: the workspace that published a crop (host:path); it manages only its
            # own, so two workspaces enrolling one person (even with equal file names) add up.
            # Crops stored before have no known origin ('').
            "ALTER TABLE crops ADD COLUMN origin text NOT NULL DEFAULT ''",
            "ALTER TABLE crops ALTER COLUMN origin DROP DEFAULT",
            "ALTER TABLE crops DROP CONSTRAINT crops_pkey",
            "ALTER TABLE crops ADD PRIMARY KEY (origin, relpath)",
        ),
    ),
    Migration(
        3,
        "a removal remembers whether the history was purged",
        # sightings arriving later (an offline kiosk's journal) must not bring back a purged
        # person's attendance
        ("ALTER TABLE removed_people ADD COLUMN purged boolean NOT NULL DEFAULT false",),
    ),
    Migration(
        4,
        "dashboard users, sessions, API tokens and kiosk heartbeats",
        # store.pg_site. Timestamps are ISO-8601 UTC text in one form (store.sqlite_site), so
        # text order is time order; COLLATE "C" makes it byte order whatever the database's
        # locale (and sorts names as SQLite does). The roles are those of this version.
        (
            """CREATE TABLE site_users (
                name          text COLLATE "C" PRIMARY KEY
                              CHECK (char_length(name) BETWEEN 1 AND 64),
                role          text NOT NULL CHECK (role IN ('admin', 'viewer')),
                password_hash text NOT NULL CHECK (password_hash <> ''),
                created       text COLLATE "C" NOT NULL
            )""",
            """CREATE TABLE site_sessions (
                token_sha256 text COLLATE "C" PRIMARY KEY
                             CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
                user_name    text COLLATE "C" NOT NULL
                             REFERENCES site_users (name) ON DELETE CASCADE,
                csrf         text NOT NULL CHECK (csrf <> ''),
                created      text COLLATE "C" NOT NULL,
                expires      text COLLATE "C" NOT NULL CHECK (expires > created)
            )""",
            "CREATE INDEX site_sessions_by_user ON site_sessions (user_name)",
            "CREATE INDEX site_sessions_by_expiry ON site_sessions (expires)",
            """CREATE TABLE site_api_tokens (
                name         text COLLATE "C" PRIMARY KEY
                             CHECK (char_length(name) BETWEEN 1 AND 64),
                token_sha256 text COLLATE "C" NOT NULL UNIQUE
                             CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
                role         text NOT NULL CHECK (role IN ('admin', 'viewer')),
                created      text COLLATE "C" NOT NULL
            )""",
            """CREATE TABLE kiosks (
                kiosk         text COLLATE "C" PRIMARY KEY
                              CHECK (char_length(kiosk) BETWEEN 1 AND 100),
                host          text NOT NULL,
                source        text NOT NULL,
                source_state  text NOT NULL,
                fps           double precision NOT NULL
                              CHECK (fps >= 0 AND fps < 'Infinity'::double precision),
                model_version text NOT NULL,
                started       text COLLATE "C" NOT NULL,
                last_seen     text COLLATE "C" NOT NULL,
                day           text NOT NULL CHECK (day ~ '^[0-9]{4}-[0-1][0-9]-[0-3][0-9]$'),
                marked        integer NOT NULL CHECK (marked >= 0),
                unknown       integer NOT NULL CHECK (unknown >= 0)
            )""",
        ),
    ),
    Migration(
        5,
        "a kiosk may write only the heartbeat rows it created",
        # row-level security: every role reads all rows; a role inserts and updates only the
        # rows it owns (the owner of the table, who runs the migrations, is not restricted);
        # the admin role's right to forget any kiosk is granted with the roles (role_grants)
        (
            "ALTER TABLE kiosks ADD COLUMN owner text NOT NULL DEFAULT current_user",
            "ALTER TABLE kiosks ENABLE ROW LEVEL SECURITY",
            "CREATE POLICY kiosks_read ON kiosks FOR SELECT USING (true)",
            "CREATE POLICY kiosks_insert_own ON kiosks FOR INSERT "
            "WITH CHECK (owner = current_user)",
            "CREATE POLICY kiosks_update_own ON kiosks FOR UPDATE "
            "USING (owner = current_user) WITH CHECK (owner = current_user)",
        ),
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1].version

_CREATE_LEDGER = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


def current_version(conn: psycopg.Connection) -> int | None:
    """The store's schema version; ``None`` when it has no schema at all (``conn``: psycopg)."""
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not row[0]:
        return None
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
    return int(row[0])


def upgrade(
    conn: psycopg.Connection, migrations: tuple[Migration, ...] = MIGRATIONS
) -> list[Migration]:
    """Apply the migrations the store lacks, each in its own transaction; return them.

    Refuses (``ValueError``) a store whose schema is newer than ``migrations`` know.
    """
    applied: list[Migration] = []
    for migration in migrations:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            conn.execute(_CREATE_LEDGER)
            version = current_version(conn) or 0
            newest = migrations[-1].version if migrations else 0
            if version > newest:
                raise ValueError(
                    f"the store's schema is version {version}, newer than this program's "
                    f"{newest}; upgrade facenet-attendance"
                )
            if migration.version <= version:
                continue
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
        log.info("applied schema migration %d: %s", migration.version, migration.name)
        applied.append(migration)
    return applied


# --- least privilege ----------------------------------------------------------------------------
_ROLE_RE = r"^[a-z_][a-z0-9_]{0,62}$"
GALLERY_TABLES = ("people", "crops", "embeddings", "removed_people", "model_versions")
SITE_TABLES = ("site_users", "site_sessions", "site_api_tokens", "kiosks")


def role_grants(kiosk: str, admin: str) -> list[str]:
    """The GRANT statements of the two roles (run by the database owner after ``upgrade``).

    - ``kiosk`` (each recogniser): reads people, crops, embeddings and model versions; adds
      attendance rows and events and updates a day's status and times (not who or which
      day); inserts and updates the heartbeat rows it created in ``kiosks`` (row-level
      security: another kiosk's row is refused); deletes nothing, and cannot see the
      dashboard's users, sessions or API tokens.
      Crops it embeds for a new model stay in its memory (it may not store embeddings).
    - ``admin`` (enrolment, removal, reports, ``close-day``, the dashboard): every change to
      every table.

    Role names must be plain lower-case identifiers (``ValueError`` otherwise).
    """
    import re

    for role in (kiosk, admin):
        if not re.match(_ROLE_RE, role) or role == "public" or role.startswith("pg_"):
            raise ValueError(
                f"role name {role!r}: use lower-case letters, digits and _ (e.g. kiosk), "
                "not public or pg_*"
            )
    if kiosk == admin:
        raise ValueError(f"role name {kiosk!r}: the kiosk and admin roles must differ")
    delete_policy = '"' + f"kiosks_delete_{admin}"[:63] + '"'  # identifiers: 63 bytes
    kiosk, admin = f'"{kiosk}"', f'"{admin}"'
    gallery = ", ".join(GALLERY_TABLES)
    return [
        f"GRANT USAGE ON SCHEMA public TO {kiosk}, {admin}",
        f"GRANT SELECT ON schema_migrations, {gallery} TO {kiosk}",
        f"GRANT SELECT, INSERT, UPDATE (Status, Time, LastSeen) ON attendance TO {kiosk}",
        f"GRANT SELECT, INSERT ON events TO {kiosk}",
        f"GRANT USAGE ON SEQUENCE events_id_seq TO {kiosk}",
        f"GRANT SELECT, INSERT, UPDATE ON kiosks TO {kiosk}",
        f"GRANT SELECT ON schema_migrations TO {admin}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {gallery}, attendance, events TO {admin}",
        f"GRANT USAGE ON SEQUENCE events_id_seq TO {admin}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(SITE_TABLES)} TO {admin}",
        # row-level security on kiosks (migration 5): the admin forgets any kiosk's row
        f"DROP POLICY IF EXISTS {delete_policy} ON kiosks",
        f"CREATE POLICY {delete_policy} ON kiosks FOR DELETE TO {admin} USING (true)",
    ]
