"""Atomic file writes, content hashes, and reading only what is safe to read.

Two rules for every file a stage reads:

- **Only regular files.** :func:`regular_file_problem` says why a path is not one (a FIFO, a
  socket, a device, a folder), checked with ``stat`` *before* anything is opened, because
  opening a FIFO blocks until a writer appears. :func:`read_regular_bytes` and
  :func:`sha256_file` check again on the open descriptor (opened non-blocking), so a file
  swapped for a FIFO in between cannot hang them either.
- **Paths read from a file stay inside their folder.** :func:`inside` joins a relative path
  taken from a manifest (or any derived file) to its base folder and refuses it unless the
  result, symlinks resolved, is inside that folder.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from common.errors import UserError

CHUNK = 1 << 20
# Read once at import: os.umask can only be read by setting it, which is not thread-safe.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class UnsafePath(UserError, ValueError):
    """A path read from a file is not a plain relative path inside its folder."""


class NotRegularFile(OSError):
    """A path names a FIFO, socket, device or folder: not a regular file.

    An :class:`OSError` (``strerror`` is the reason), so callers that report unreadable files
    report these the same way.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(errno.EINVAL, reason, str(path))


class FileTooLarge(OSError):
    """A regular file is larger than the caller reads (``strerror`` says by how much)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(errno.EFBIG, reason, str(path))


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISLNK, "a symbolic link"),
)


def file_kind(mode: int) -> str:
    """What an ``st_mode`` is, in words ("a regular file", "a FIFO (named pipe)", ...)."""
    if stat.S_ISREG(mode):
        return "a regular file"
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "not a regular file"


def regular_file_problem(path: str | Path, follow_symlinks: bool = True) -> str | None:
    """None if ``path`` is a regular file, else why not ("not a regular file (a FIFO ...)").

    Only ``stat``/``lstat`` is used: nothing is opened.
    """
    try:
        info = os.stat(path, follow_symlinks=follow_symlinks)
    except OSError as exc:
        return f"cannot read the file ({exc.strerror or exc})"
    except ValueError as exc:  # an embedded NUL
        return f"cannot read the file ({exc})"
    if stat.S_ISREG(info.st_mode):
        return None
    return f"not a regular file ({file_kind(info.st_mode)})"


@contextlib.contextmanager
def open_regular(path: str | Path, max_bytes: int | None = None) -> Iterator[IO[bytes]]:
    """Open ``path`` for reading in binary mode only if it is a regular file.

    Checked by ``stat`` before opening (a FIFO is never opened by this check) and by
    ``fstat`` on the descriptor, opened with ``O_NONBLOCK``, so a swap in between cannot
    block. ``max_bytes``: a larger file is refused. Raises :class:`NotRegularFile` or
    :class:`FileTooLarge` (both :class:`OSError`) or the :class:`OSError` of ``open``.
    """
    problem = regular_file_problem(path)
    if problem is not None and problem.startswith("not a regular file"):
        raise NotRegularFile(path, problem)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(path, f"not a regular file ({file_kind(info.st_mode)})")
        if max_bytes is not None and info.st_size > max_bytes:
            raise FileTooLarge(
                path, f"the file is {info.st_size} bytes, more than the {max_bytes} allowed"
            )
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        yield handle


def read_regular_bytes(path: str | Path, max_bytes: int | None = None) -> bytes:
    """The bytes of regular file ``path`` (see :func:`open_regular`)."""
    with open_regular(path, max_bytes) as handle:
        data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:  # grew while being read
        raise FileTooLarge(path, f"the file is more than the {max_bytes} bytes allowed")
    return data


def sha256_file(path: str | Path, max_bytes: int | None = None) -> str:
    """Hex sha256 of a regular file's bytes (a FIFO or device is refused, never opened).

    ``max_bytes``: a larger file is refused (:class:`FileTooLarge`) without being hashed.
    """
    digest = hashlib.sha256()
    size = 0
    with open_regular(path, max_bytes) as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
            size += len(block)
            if max_bytes is not None and size > max_bytes:  # grew while being read
                raise FileTooLarge(path, f"the file is more than the {max_bytes} bytes allowed")
    return digest.hexdigest()


def check_relpath(relpath: object, parts: int | None = None) -> str:
    """``relpath`` if it is a plain relative ``/``-separated path, else :class:`UnsafePath`.

    Refused: non-strings, empty, absolute, NUL, empty/``.``/``..`` components,
    the platform's other separator, and (when ``parts`` is given) another number of components.
    A lexical check only; :func:`inside` adds the check against the file system.
    """
    if not isinstance(relpath, str) or not relpath:
        raise UnsafePath(f"{relpath!r} is not a relative path")
    shown = repr(relpath)
    if "\0" in relpath:
        raise UnsafePath(f"{shown} contains a NUL character")
    if relpath.startswith("/") or os.path.isabs(relpath):
        raise UnsafePath(f"{shown} is an absolute path")
    other = {os.sep, os.altsep} - {None, "/"}  # "\\" on Windows
    if any(sep in relpath for sep in other):  # pragma: no cover - Windows
        raise UnsafePath(f"{shown} contains {sorted(other)[0]!r}")
    pieces = relpath.split("/")
    if any(piece in ("", ".", "..") for piece in pieces):
        raise UnsafePath(f"{shown} has an empty, '.' or '..' component")
    if parts is not None and len(pieces) != parts:
        raise UnsafePath(f"{shown} is not of the form {'/'.join(['name'] * (parts or 1))}")
    return relpath


def inside(base: str | Path, relpath: object, parts: int | None = None) -> Path:
    """``base / relpath``, refused (:class:`UnsafePath`) unless it stays inside ``base``.

    ``relpath`` must pass :func:`check_relpath`, and the joined path with every symbolic link
    resolved (in ``base``'s subfolders or the file itself) must lie strictly inside the
    resolved ``base``. The unresolved joined path is returned (for messages and for unlinking
    a link itself). Use it on every path read from a manifest or other derived file before
    it is read, written or deleted.
    """
    rel = check_relpath(relpath, parts)
    base = Path(base)
    path = base / rel
    try:
        root = base.resolve()
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise UnsafePath(f"{rel!r} cannot be resolved inside {base} ({exc})") from None
    if resolved == root or root not in resolved.parents:
        raise UnsafePath(f"{rel!r} leads outside {base} (to {resolved})")
    return path


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside ``path``; on clean exit fsync it and rename it into place.

    A crash at any point leaves either the old file or the new one, never a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, _mode_for(path))
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _mode_for(path: Path) -> int:
    """The permission bits the replaced file had, or the umask default for a new file."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_UMASK


def remove_stale_temps(folder: str | Path) -> int:
    """Delete temp files left by an interrupted :func:`atomic_open` in ``folder``."""
    count = 0
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    for tmp in folder.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            count += 1
    return count


def fsync_dir(folder: Path) -> None:
    """Make a rename or new file in ``folder`` durable (best effort)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
