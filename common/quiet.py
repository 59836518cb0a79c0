"""Keep TensorFlow's start-up noise off the terminal (``--verbose`` shows it).

Importing TensorFlow, and its first look for devices, print lines such as
``I0000 00:00:… port.cc:153] oneDNN custom operations are on …`` and ``failed call to cuInit``
straight to file descriptor 2 from C++, where Python's logging cannot filter them.
:func:`import_tensorflow` runs that start-up once with fd 2 pointing into a pipe: lines in
absl's log format (and the few that belong to them) are held back, except fatal ``F`` lines
(a C++ abort must say why; one that aborts within microseconds of writing may still lose its
line to the pipe), anything else (a Python
warning, a log line from another thread) is passed through at once. If the start-up raises,
the held-back lines are printed as well, so a real failure is never hidden. Nothing is
disabled: oneDNN and GPUs behave exactly as without this module.

Call :func:`import_tensorflow` before the first ``import tensorflow``/``keras``/``mtcnn``;
:func:`set_verbose` (called by ``common.runner`` for ``-v``) turns the filtering off.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

#: absl/TensorFlow C++ log lines (``I0000 00:00:1712.5   123 port.cc:153] …``), the banner
#: absl prints before its first line, and the second line of the CPU-instructions notice. A
#: line may start with another writer's unfinished output (a progress bar's ``\r…``), so the
#: pattern is searched, not matched: what comes before it is passed through.
NOISE = re.compile(
    rb"(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w.\-]+:\d+\]"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|To enable the following instructions:.*rebuild TensorFlow)"
)

#: Variables with which a user asks TensorFlow for (possibly a lot of) debug output.
VERBOSE_LOGGING = ("TF_CPP_MAX_VLOG_LEVEL", "TF_CPP_VMODULE")

_verbose = False
_started = False
_lock = threading.Lock()


def set_verbose(verbose: bool) -> None:
    """Show TensorFlow's start-up lines (``True``) or hold them back (``False``, the default)."""
    global _verbose
    _verbose = bool(verbose)


def is_verbose() -> bool:
    """Whether start-up noise is shown."""
    return _verbose


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Run the block with TensorFlow's log lines on fd 2 held back (see the module docstring).

    Lines that are not noise reach the real stderr as they are written. When the block raises,
    the held-back lines are printed after it, before the exception propagates. With
    :func:`set_verbose` on, the block runs untouched.
    """
    if _verbose or any(os.environ.get(key) for key in VERBOSE_LOGGING):
        yield  # the user asked TensorFlow for more output: show it, unfiltered
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to keep clean
        saved = -1
    if saved < 0:
        yield
        return
    read_end, write_end = os.pipe()
    with contextlib.suppress(AttributeError, OSError):  # room for output written while
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 1 << 20)  # C++ holds the GIL (Linux)
    held: list[bytes] = []

    def pump() -> None:
        with os.fdopen(read_end, "rb") as pipe, contextlib.suppress(OSError):
            for line in pipe:  # until every copy of the write end is closed
                noise = NOISE.search(line)
                if noise is None:
                    _write_all(saved, line)
                    continue
                if noise.start():
                    _write_all(saved, line[: noise.start()])
                held.append(line[noise.start() :])

    reader = threading.Thread(target=pump, name="quiet-stderr", daemon=True)
    reader.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the reader sees end of file
        reader.join(timeout=10)
        if failed and held:
            _write_all(saved, b"".join(held))
        if not reader.is_alive():  # else it may still write to ``saved``: leave it open
            os.close(saved)
        log.debug("held back %d line(s) of TensorFlow start-up output", len(held))


def import_tensorflow() -> Any:
    """Import TensorFlow and let it find its devices, quietly and once; the module.

    Thread-safe; later calls return at once. Errors of the import propagate, with the
    output that was held back printed first.
    """
    global _started
    with _lock:
        if not _started:
            with quiet_stderr():
                import tensorflow as tf

                tf.config.list_physical_devices()  # the device search prints too (cuInit)
            _started = True
    import tensorflow as tf

    return tf
