"""What the SQLite stores share: one-line errors, short write transactions, WAL, versions.

:class:`SQLiteFile` is a mixin for a store class that sets ``path``, ``timeout`` and
``_conn`` (an ``isolation_level=None`` connection) and names what it holds in ``KIND`` and
what to do with a damaged file in ``CORRUPT_ADVICE``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from store.records import DatabaseCorrupt, DatabaseError, DatabaseLocked, DatabaseUnwritable

log = logging.getLogger(__name__)


class SQLiteFile:
    """Error translation, transactions and set-up helpers of one SQLite store file."""

    KIND = "a database of this program"  # "not <KIND>" when the file is something else
    CORRUPT_ADVICE = "move it aside (it is left untouched) and run again to start a new one"
    SETTING = "db_path"  # the configuration key that names the file
    MISSING = "nothing recorded yet"  # why a missing file is refused with create=False
    FILE_MODE: int | None = None  # permissions of a new file (None: SQLite's, after umask)
    path: Path
    timeout: float
    _conn: sqlite3.Connection

    def _open(self, path: str | Path, timeout: float, create: bool) -> None:
        """Open (``create``: or make) the file, then :meth:`_setup` it; one-line errors."""
        self.path = Path(path)
        self.timeout = float(timeout)
        if self.path.is_dir():
            raise DatabaseError(
                f"{self.path} is a folder, not a database file; set {self.SETTING} to a file name",
                self.path,
            )
        if not self.path.exists():
            if not create:
                raise DatabaseError(f"{self.path} does not exist: {self.MISSING}", self.path)
            what = f"the folder of {self.path}"
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                what = str(self.path)
                if self.FILE_MODE is not None:  # SQLite gives -wal and -shm the same mode
                    os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, self.FILE_MODE))
            except OSError as exc:
                raise DatabaseUnwritable(
                    f"cannot create {what} ({exc.strerror}); "
                    "check the workspace path and its permissions",
                    self.path,
                ) from None
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._translate(exc, "opening it") from None
        try:
            self._setup()
        except BaseException:
            self._conn.close()
            raise

    def _setup(self) -> None:
        """Configure the connection and create or check the schema (each store's own)."""
        raise NotImplementedError

    def _translate(self, exc: sqlite3.Error, doing: str) -> DatabaseError:
        """Turn an sqlite3 error into a one-line :class:`DatabaseError` saying what to do."""
        text = str(exc)
        low = f"{text} {getattr(exc, 'sqlite_errorname', '')}".lower()
        if "locked" in low or "busy" in low:
            return DatabaseLocked(
                f"{self.path} stayed locked by another program for more than "
                f"{self.timeout:g} s while {doing}; close the other program or raise "
                "db_timeout_seconds, then try again",
                self.path,
            )
        if any(key in low for key in ("not a database", "malformed", "corrupt", "notadb")):
            return DatabaseCorrupt(
                f"{self.path} is damaged or not {self.KIND} ({text}); {self.CORRUPT_ADVICE}",
                self.path,
            )
        if any(
            key in low
            for key in ("readonly", "read-only", "unable to open", "i/o", "full", "permission")
        ):
            return DatabaseUnwritable(
                f"cannot write {self.path} while {doing} ({text}); check the permissions of "
                "the file and its folder and the free disk space",
                self.path,
            )
        return DatabaseError(f"{self.path}: {doing} failed ({text})", self.path)

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error as exc:  # the transaction may already be gone
                log.debug("rollback of %s failed: %s", self.path, exc)

    @contextmanager
    def _transaction(self, doing: str) -> Iterator[sqlite3.Connection]:
        """One short write transaction: ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on error."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._translate(exc, doing) from None
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise self._translate(exc, doing) from None
        except BaseException:
            self._rollback()
            raise

    def _read(self, sql: str, params: Iterable[object] = (), doing: str = "reading") -> list:
        try:
            return self._conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise self._translate(exc, doing) from None

    def _user_version(self) -> int:
        return int(self._read("PRAGMA user_version", doing="opening it")[0][0])

    def _enable_wal(self) -> None:
        """Switch to WAL; a fresh file opened by two processes at once may need a retry."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc).lower() or time.monotonic() > deadline:
                    raise self._translate(exc, "opening it") from None
                time.sleep(0.01)
            except sqlite3.Error as exc:
                raise self._translate(exc, "opening it") from None
        if str(mode).lower() != "wal":
            log.warning(
                "%s: WAL journal unavailable (mode %s); concurrency is reduced", self.path, mode
            )
