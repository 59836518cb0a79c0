"""A private Xvfb server for the real-window tests (``tests/test_window.py``,
``tests/test_scanner_window.py``).

Needs the Debian packages ``xvfb``, ``xdotool`` and ``imagemagick`` (for ``import``).
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator

TOOLS = ("Xvfb", "xdotool", "import")


def _read_line(fd: int, timeout: float) -> str:
    """One line from pipe ``fd`` (what Xvfb's ``-displayfd`` announces), within ``timeout``."""
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"Xvfb did not announce its display within {timeout:.0f} s"
        chunk = os.read(fd, 32)
        if not chunk:  # the server exited
            break
        data += chunk
    return data.decode().strip()


@contextlib.contextmanager
def xvfb_display(screen: str = "1024x768x24", timeout: float = 30.0) -> Iterator[str]:
    """Start a private Xvfb server with one ``screen`` (``WxHxDEPTH``); yield its display name
    (e.g. ``":7"``) once it accepts clients; stop it afterwards."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    assert not missing, f"install {missing} (apt-get install xvfb xdotool imagemagick)"
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(  # -displayfd: Xvfb picks a free display and reports it
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", screen, "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    try:
        number = _read_line(read_fd, timeout)
        assert number.isdigit(), f"Xvfb reported display {number!r} (exit code {server.poll()})"
        name = f":{number}"
        env = {**os.environ, "DISPLAY": name}
        deadline = time.monotonic() + timeout
        while subprocess.run(["xdotool", "getdisplaygeometry"], env=env, capture_output=True,
                             check=False).returncode != 0:  # fmt: skip
            assert server.poll() is None, "Xvfb exited at start-up"
            assert time.monotonic() < deadline, "Xvfb did not come up"
            time.sleep(0.2)
        yield name
    finally:
        os.close(read_fd)
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
