"""The on-disk journal of unsaved sightings: one append-only, fsynced JSON-lines file per writer.

Used by :class:`store.pending.PendingWriter`. The journal format (version 1), one object per
line::

    {"v": 1, "id": "<uuid hex>", "name": ..., "when": "<ISO-8601>", "distance": 0.61,
     "source": "camera 0", "action": null}     # null: a sighting; else an audit event
    {"v": 1, "done": ["<id>", ...]}            # saved since (after a partial retry)

Each writer owns one journal file and holds an ``flock`` on it while it runs, so a starting
writer adopts only the journals of writers that stopped (the lock dies with its process), and
two starting writers never adopt the same one. A line that cannot be read (a torn last line,
an edited file) is reported with one warning naming the file and the line, kept aside in
``<journal>.corrupt`` beside it, and the other lines are replayed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import heapq
import json
import logging
import os
import stat
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.fsutil import atomic_write_bytes, fsync_dir
from common.names import validate_name
from store.records import (
    ATTENDANCE_ACTIONS,
    check_mark,
    local_time,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX: no journal (it relies on flock)
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

JOURNAL_VERSION = 1
JOURNAL_SUFFIX = ".jsonl"
CORRUPT_SUFFIX = ".corrupt"
STALE_TEMP_SECONDS = 10.0  # a hidden temp file older than this is a dead writer's


def _new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class PendingMark:
    """A sighting (or, with ``action``, an audit event) waiting to be written."""

    name: str
    when: dt.datetime
    distance: float | None
    source: str
    action: str | None = None  # None: mark_present; else log_event with this action
    id: str = field(default_factory=_new_id)  # unique: the journal's key
    replayed: bool = False  # read back from the journal of a run that stopped
    # a write of it failed in a way that may have committed anyway (a server that went away
    # after COMMIT, before its reply): checked against the audit trail before it is retried
    uncertain: bool = False

    def to_json(self) -> str:
        """This entry as one journal line (without the newline)."""
        return json.dumps(
            {
                "v": JOURNAL_VERSION,
                "id": self.id,
                "name": self.name,
                "when": self.when.isoformat(),
                "distance": self.distance,
                "source": self.source,
                "action": self.action,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PendingMark:
        """The entry of one parsed journal line; ``ValueError`` when anything is off."""
        ident, when, action = data.get("id"), data.get("when"), data.get("action")
        if not isinstance(ident, str) or not ident:
            raise ValueError("no entry id")
        if not isinstance(when, str):
            raise ValueError("no time")
        if action is not None and (
            not isinstance(action, str) or not action or action in ATTENDANCE_ACTIONS
        ):
            raise ValueError(f"action {action!r} is not an audit-event action")
        name = data.get("name")
        if not isinstance(name, str):
            raise ValueError(f"name {name!r} is not a string")
        distance = data.get("distance")
        if distance is not None and (
            isinstance(distance, bool) or not isinstance(distance, float | int)
        ):
            raise ValueError(f"distance {distance!r} is not a number")
        source = data.get("source")
        if not isinstance(source, str):
            raise ValueError(f"source {source!r} is not a string")
        return cls(
            validate_name(name),
            dt.datetime.fromisoformat(when),
            check_mark(distance, source),
            source,
            action,
            ident,
            replayed=True,
        )


# --------------------------------------------------------------------------- the journal
class SightingJournal:
    """One writer's append-only journal file in ``folder``, and the ones stopped writers left.

    The file is created at the first entry (a recogniser that records nobody leaves
    nothing behind) under a hidden name, locked with ``flock`` and only then renamed
    to ``*.jsonl``, so no other writer can adopt it while this one lives. Every append is
    fsynced, and so is the folder when a file is created or removed. A failure to journal
    (read-only folder, full disk) is logged once; saving to the store goes on without it.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path: Path | None = None
        self.broken: str | None = None  # why journalling stopped, if it did
        self._fd: int | None = None
        self._adopted: list[tuple[Path, int, bool]] = []  # (path, locked fd, may delete)
        if fcntl is None:  # pragma: no cover - non-POSIX
            self.broken = "journals need POSIX file locks"

    # -- this writer's file ------------------------------------------------------------------
    def append(self, marks: Sequence[PendingMark]) -> bool:
        """Append ``marks`` and fsync; False when they could not be journalled."""
        if not marks:
            return True
        data = "".join(mark.to_json() + "\n" for mark in marks).encode("utf-8")
        return self._write(data)

    def settle(self, saved: Sequence[str], remaining: int) -> None:
        """Record that the entries ``saved`` (ids) are in the store: truncate the file when
        nothing ``remaining`` is unsaved, else append a ``done`` line."""
        if self._fd is None or self.broken or not saved:
            return
        if remaining:
            self._write((json.dumps({"v": JOURNAL_VERSION, "done": list(saved)}) + "\n").encode())
            return
        try:
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
        except OSError as exc:
            self._fail(exc)

    def close(self, keep: bool) -> None:
        """Release the file: removed when ``keep`` is False (everything saved), else left for
        the next writer to replay. Idempotent."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if not keep and self.path is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
                fsync_dir(self.folder)
                with contextlib.suppress(OSError):
                    self.folder.rmdir()  # only when nothing else is in it
        except OSError as exc:
            log.warning("cannot remove the sighting journal %s (%s)", self.path, exc)
        finally:
            os.close(fd)  # releases the lock

    def _write(self, data: bytes) -> bool:
        if self.broken:
            return False
        try:
            if self._fd is None:
                self._create()
            assert self._fd is not None
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError as exc:
            self._fail(exc)
            return False
        return True

    def _create(self) -> None:
        """Create, lock and publish this writer's file (retried once if the folder vanished:
        another writer removes it when it is empty)."""
        for attempt in (1, 2):
            try:
                self.folder.mkdir()
                fsync_dir(self.folder.parent)
            except FileExistsError:
                pass
            name = f"{dt.datetime.now():%Y%m%dT%H%M%S}-{os.getpid()}-{_new_id()[:8]}"
            hidden = self.folder / f".{name}{JOURNAL_SUFFIX}.tmp"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
            try:
                fd = os.open(hidden, flags | getattr(os, "O_NOFOLLOW", 0), 0o666)
            except FileNotFoundError:
                if attempt == 2:
                    raise
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                path = self.folder / f"{name}{JOURNAL_SUFFIX}"
                os.replace(hidden, path)
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(hidden)
                raise
            fsync_dir(self.folder)
            self._fd, self.path = fd, path
            log.debug("journalling unsaved sightings in %s", path)
            return

    def _fail(self, exc: OSError) -> None:
        self.broken = f"{exc.strerror or exc}"
        where = self.path or self.folder
        log.warning(
            "cannot journal sightings in %s (%s); until they are saved they are kept in "
            "memory only",
            where,
            self.broken,
        )

    # -- journals left by writers that stopped -------------------------------------------------
    def adopt(self) -> list[PendingMark]:
        """Lock every journal in the folder whose writer is gone and read its unsaved
        entries (oldest first, each id once). The files stay until :meth:`release_adopted`."""
        if fcntl is None or not self.folder.is_dir():
            return []
        journals: list[list[PendingMark]] = []
        for path in sorted(self.folder.iterdir()):
            if path == self.path:
                continue
            if path.name.startswith(".") and path.name.endswith(JOURNAL_SUFFIX + ".tmp"):
                self._remove_stale_temp(path)
                continue
            if path.name.startswith(".") or path.suffix != JOURNAL_SUFFIX:
                continue
            fd = self._lock_orphan(path)
            if fd is None:
                continue
            try:
                with os.fdopen(os.dup(fd), "rb") as handle:
                    data = handle.read()
            except OSError as exc:
                log.warning(
                    "cannot read the sighting journal %s (%s); it is left as it is", path, exc
                )
                os.close(fd)
                continue
            marks, intact = self._parse(path, data)
            self._adopted.append((path, fd, intact))
            journals.append(marks)
        # each journal in its own order; several (concurrent recognisers) merged by time
        merged: list[PendingMark] = []
        seen: set[str] = set()  # an entry copied into a second journal is replayed once
        for mark in heapq.merge(*journals, key=lambda mark: local_time(mark.when)):
            if mark.id not in seen:
                seen.add(mark.id)
                merged.append(mark)
        return merged

    def release_adopted(self, delete: bool = True) -> list[Path]:
        """Unlock the adopted journals, deleting them when ``delete`` (their entries are saved
        or in this writer's journal now); return the ones deleted."""
        deleted: list[Path] = []
        for path, fd, may_delete in self._adopted:
            try:
                if delete and may_delete:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                    deleted.append(path)
            except OSError as exc:
                log.warning("cannot remove the replayed journal %s (%s)", path, exc)
            finally:
                os.close(fd)
        if deleted:
            fsync_dir(self.folder)
            if self._fd is None:
                with contextlib.suppress(OSError):
                    self.folder.rmdir()  # only when nothing else is in it
        self._adopted = []
        return deleted

    @property
    def adopted(self) -> list[Path]:
        """The journals adopted and not released yet."""
        return [path for path, _, _ in self._adopted]

    def _lock_orphan(self, path: Path) -> int | None:
        """A locked descriptor of ``path`` if it is a regular journal whose writer is gone."""
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return None  # its writer finished and removed it meanwhile
        if not stat.S_ISREG(info.st_mode):
            log.warning("%s is not a regular file; ignored (it is not a sighting journal)", path)
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot open the sighting journal %s (%s); it is left as it is", path, exc)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # a running writer's journal
            return None
        except OSError as exc:
            os.close(fd)
            log.warning("cannot lock the sighting journal %s (%s); it is left as it is", path, exc)
            return None
        if os.fstat(fd).st_nlink == 0:  # removed by its writer after we opened it
            os.close(fd)
            return None
        return fd

    def _remove_stale_temp(self, path: Path) -> None:
        """A hidden file left by a writer killed while creating its journal (empty). A young
        one may belong to a writer between creating and locking it: it is left alone."""
        try:
            if time.time() - os.lstat(path).st_mtime < STALE_TEMP_SECONDS:
                return
        except FileNotFoundError:
            return
        fd = self._lock_orphan(path)
        if fd is None:
            return
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        except OSError as exc:
            log.debug("cannot remove %s: %s", path, exc)
        finally:
            os.close(fd)

    @staticmethod
    def _parse(path: Path, data: bytes) -> tuple[list[PendingMark], bool]:
        """The unsaved entries of one journal's bytes, and whether the file may be deleted
        (False when its unreadable lines could not be kept aside)."""
        entries: dict[str, PendingMark] = {}
        done: set[str] = set()
        bad: list[bytes] = []
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                item = json.loads(raw.decode("utf-8"))
                if not isinstance(item, dict) or item.get("v") != JOURNAL_VERSION:
                    raise ValueError(f"not a version-{JOURNAL_VERSION} journal entry")
                if "done" in item:
                    ids = item["done"]
                    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                        raise ValueError("'done' is not a list of ids")
                    done.update(ids)
                else:
                    mark = PendingMark.from_json(item)
                    entries.setdefault(mark.id, mark)
            except (ValueError, TypeError, OverflowError) as exc:
                bad.append(raw)
                corrupt = path.with_name(path.name + CORRUPT_SUFFIX)
                log.warning(
                    "%s line %d is not a readable journal entry (%s); it is kept in %s and "
                    "the other entries are replayed",
                    path,
                    number,
                    _one_line(exc),
                    corrupt,
                )
        intact = True
        if bad:
            corrupt = path.with_name(path.name + CORRUPT_SUFFIX)
            try:
                atomic_write_bytes(corrupt, b"".join(line + b"\n" for line in bad))
            except OSError as exc:
                intact = False
                log.warning(
                    "cannot write %s (%s); %s is kept as it is", corrupt, exc.strerror, path
                )
        return [mark for key, mark in entries.items() if key not in done], intact


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]
