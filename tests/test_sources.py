"""Frame sources: video files, folders, live captures with reconnection, a real HTTP stream."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from common import sources
from common.errors import UserError
from common.sources import (
    FolderSource,
    Frame,
    LiveSource,
    SourceError,
    VideoFileSource,
    open_source,
    redact_url,
)


def write_video(path: Path, n: int, fps: float = 10.0, size=(64, 48)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((size[1], size[0], 3), (i * 20) % 256, np.uint8))
    writer.release()


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(sources, "BACKOFF_BASE_SECONDS", 0.01)
    monkeypatch.setattr(sources, "BACKOFF_MAX_SECONDS", 0.05)


# --------------------------------------------------------------------------- files
def test_video_file_yields_every_frame_then_ends(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, 12, fps=10.0)
    with open_source(str(path)) as source:
        assert isinstance(source, VideoFileSource)
        assert source.fps == pytest.approx(10.0)
        assert source.describe() == "video clip.mp4"
        frames = list(source)
    assert [f.index for f in frames] == list(range(12))
    assert [f.timestamp for f in frames] == pytest.approx([i / 10 for i in range(12)])
    first = frames[0]
    assert isinstance(first, Frame) and first.source == "video clip.mp4"
    assert first.image.dtype == np.uint8 and first.image.shape == (48, 64, 3)
    assert abs(int(frames[5].image.mean()) - 100) <= 6  # content in order (lossy codec)
    assert list(source) == []  # closed: nothing more, no error


def test_folder_in_natural_order_as_bgr_skipping_unreadable(tmp_path, caplog):
    folder = tmp_path / "shots"
    folder.mkdir()
    red = np.zeros((20, 30, 3), np.uint8)
    red[..., 2] = 255  # BGR red
    cv2.imwrite(str(folder / "frame10.png"), red)
    cv2.imwrite(str(folder / "frame2.png"), np.full((20, 30, 3), 50, np.uint8))
    (folder / "frame3.jpg").write_bytes(b"this is not a jpeg")
    (folder / "notes.txt").write_text("ignored", encoding="utf-8")
    (folder / "sub").mkdir()
    with (
        caplog.at_level(logging.WARNING, logger="common.sources"),
        open_source(str(folder)) as source,
    ):
        assert isinstance(source, FolderSource)
        assert source.describe() == "folder shots"
        frames = list(source)
    assert [f.index for f in frames] == [0, 1]
    assert frames[0].image.mean() == pytest.approx(50, abs=1)
    assert tuple(frames[1].image[0, 0]) == (0, 0, 255)  # red stays red: BGR out
    assert frames[1].timestamp == pytest.approx(1 / sources.FOLDER_FPS)
    assert source.skipped == [folder / "frame3.jpg"]
    assert "frame3.jpg" in caplog.text


@pytest.mark.parametrize(
    ("make", "spec", "message"),
    [
        (None, "missing.mp4", "missing.mp4: no such file or folder; pass --source"),
        ("empty-dir", "empty", "no images"),
        ("garbage", "broken.mp4", "cannot read it as a video"),
        (None, "ftp://example.org/x", "unsupported scheme 'ftp'"),
        (None, "  ", "--source is empty"),
    ],
)
def test_unopenable_sources_give_one_clear_line(tmp_path, monkeypatch, make, spec, message):
    monkeypatch.chdir(tmp_path)
    if make == "empty-dir":
        (tmp_path / "empty").mkdir()
    elif make == "garbage":
        (tmp_path / "broken.mp4").write_bytes(b"\x00not a video at all" * 10)
    with pytest.raises(SourceError) as info:
        open_source(spec)
    assert isinstance(info.value, UserError)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_missing_camera_and_bad_indices():
    with pytest.raises(SourceError, match=r"^camera 9 is not available; pass --source FILE"):
        open_source("9")
    with pytest.raises(SourceError, match="camera index -1 is negative"):
        open_source(-1)
    with pytest.raises(SourceError):
        open_source(True)  # type: ignore[arg-type]


def test_cli_prints_one_line_for_a_missing_camera(tmp_path):
    """The real console entry point: no traceback, exit 2, before any model is loaded."""
    proc = subprocess.run(
        [sys.executable, "-m", "recognizer.cli", "--source", "7", "--headless"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert lines == [
        "error: camera 7 is not available; pass --source FILE|URL|DIR or another camera index"
    ]
    assert "Traceback" not in proc.stderr


def test_redact_url_hides_passwords():
    assert (
        redact_url("rtsp://admin:s3cret@10.0.0.5:554/live") == "rtsp://admin:***@10.0.0.5:554/live"
    )
    assert redact_url("http://cam.local/video") == "http://cam.local/video"


# --------------------------------------------------------------------------- live sources
class FakeCapture:
    """A capture delivering ``frames`` frames, then failing reads (a dropped stream)."""

    def __init__(self, frames: int, start: int = 0, delay: float = 0.0, opened: bool = True):
        self.remaining = frames
        self.value = start
        self.delay = delay
        self.opened = opened
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.opened and not self.released

    def read(self):
        if self.delay:
            time.sleep(self.delay)
        if self.released or self.remaining <= 0:
            return False, None
        self.remaining -= 1
        self.value += 1
        return True, np.full((4, 4, 3), self.value % 256, np.uint8)

    def get(self, prop):
        return 25.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self) -> None:
        self.released = True


class Opener:
    """Hands out captures from a script (``None`` = the device is still away)."""

    def __init__(self, captures):
        self.captures = list(captures)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if not self.captures:
            return FakeCapture(0, opened=False)
        cap = self.captures.pop(0)
        return cap if cap is not None else FakeCapture(0, opened=False)


def test_live_source_reconnects_after_a_drop_with_backoff(caplog):
    opener = Opener([FakeCapture(5, delay=0.002), None, FakeCapture(4, start=100, delay=0.002)])
    with caplog.at_level(logging.WARNING, logger="common.sources"):
        source = LiveSource(opener, "stream test", max_retries=3)
        values = []
        with pytest.raises(SourceError, match="stream test was lost and did not come back after 3"):
            for frame in source:
                values.append(int(frame.image[0, 0, 0]))
        source.close()
    assert source.fps == 25.0
    assert source.reconnects == 1
    assert opener.calls == 1 + 2 + 3  # first open, 2 attempts to come back, 3 failed at the end
    assert any(v > 100 for v in values) and any(v <= 5 for v in values)
    assert values == sorted(values)
    text = caplog.text
    assert "lost the signal after 5 frames" in text
    assert "reconnecting in" in text and "attempt 2 of 3" in text and "reconnected" in text


def test_live_source_without_reconnect_ends_cleanly():
    source = LiveSource(Opener([FakeCapture(3, delay=0.002)]), "camera 0", reconnect=False)
    with source:
        frames = list(source)
    assert 1 <= len(frames) <= 3
    assert [f.index for f in frames] == sorted(f.index for f in frames)


def test_decoder_error_counts_as_a_drop(caplog):
    class Exploding(FakeCapture):
        def read(self):
            if self.remaining <= 0:
                raise cv2.error("corrupt packet")
            return super().read()

    source = LiveSource(Opener([Exploding(3, delay=0.002)]), "camera 0", reconnect=False)
    with caplog.at_level(logging.WARNING, logger="common.sources"), source:
        frames = list(source)
    assert 1 <= len(frames) <= 3 and "read failed" in caplog.text


def test_live_source_drops_stale_frames_for_a_slow_consumer():
    source = LiveSource(Opener([FakeCapture(400, delay=0.001)]), "camera 0", reconnect=False)
    with source:
        frames = []
        for frame in source:
            frames.append(frame)
            time.sleep(0.02)  # a slow recogniser
    indices = [f.index for f in frames]
    assert len(frames) < 200 and max(indices) >= 300  # skipped ahead instead of lagging
    assert indices == sorted(set(indices))
    assert frames[-1].timestamp >= frames[0].timestamp


class BlockingCapture(FakeCapture):
    """A capture whose ``read`` hangs until ``proceed`` is set (a stream read waiting on
    the network), recording a ``release`` that comes while a read is in flight."""

    def __init__(self) -> None:
        super().__init__(0)
        self.in_read = threading.Event()
        self.proceed = threading.Event()
        self.reading = False
        self.releases = 0
        self.released_during_read = False

    def read(self):
        self.reading = True
        self.in_read.set()
        self.proceed.wait(10.0)
        self.reading = False
        return False, None

    def release(self) -> None:
        self.released_during_read |= self.reading
        self.releases += 1
        super().release()


def test_close_never_releases_during_a_read(caplog):
    cap = BlockingCapture()
    source = LiveSource(Opener([cap]), "stream slow", reconnect=False, close_timeout=0.05)
    assert cap.in_read.wait(10.0)
    with caplog.at_level(logging.WARNING, logger="common.sources"):
        source.close()  # the reader is stuck in read(): close gives up waiting...
    assert cap.releases == 0  # ...without pulling the capture from under it
    assert "stream slow: the reader is still busy" in caplog.text
    with pytest.raises(StopIteration):
        next(source)
    cap.proceed.set()  # the read returns: the reader sees the stop and releases
    source.close_timeout = 10.0
    source.close()
    assert cap.releases == 1 and not cap.released_during_read


def test_a_capture_opened_during_close_is_released(caplog):
    opening, closed = threading.Event(), threading.Event()
    late = FakeCapture(100)

    def opener():
        if not opening.is_set() and opener.calls:  # the reconnection attempt
            opening.set()
            closed.wait(10.0)  # a slow open that outlasts close()
            return late
        opener.calls += 1
        return FakeCapture(0)  # the first capture drops at once

    opener.calls = 0
    source = LiveSource(opener, "stream flaky", backoff=(0.001, 0.001), close_timeout=0.05)
    assert opening.wait(10.0)
    with caplog.at_level(logging.WARNING, logger="common.sources"):
        source.close()
    assert "still busy" in caplog.text and not late.released
    closed.set()  # the open completes after close() returned
    source.close_timeout = 10.0
    source.close()
    assert late.released
    assert source.reconnects == 0  # a capture opened after the stop does not count


def test_close_is_idempotent_and_releases_once():
    class Counting(FakeCapture):
        releases = 0

        def release(self) -> None:
            self.releases += 1
            super().release()

    cap = Counting(10**6, delay=0.001)  # never ends by itself
    source = LiveSource(Opener([cap]), "camera 0", reconnect=False)
    assert next(source).image.shape == (4, 4, 3)
    source.close()
    assert cap.releases == 1
    source.close()
    with source:  # __exit__ closes a third time
        pass
    assert cap.releases == 1
    with pytest.raises(StopIteration):
        next(source)


def test_live_source_that_never_opens():
    with pytest.raises(SourceError, match="^camera 3 is away$"):
        LiveSource(Opener([None]), "camera 3", unavailable="camera 3 is away")


class MJPEGHandler(BaseHTTPRequestHandler):
    """An IP camera: multipart MJPEG, ``frames`` frames per connection, then it hangs up."""

    frames = 15

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        for i in range(self.frames):
            ok, jpg = cv2.imencode(".jpg", np.full((48, 64, 3), 10 * i, np.uint8))
            data = jpg.tobytes()
            head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data)
            try:
                self.wfile.write(head + data + b"\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return
            time.sleep(0.01)

    def log_message(self, *args) -> None:
        pass


def test_real_http_stream_reconnects_then_gives_up_when_the_camera_is_gone(caplog):
    server = ThreadingHTTPServer(("127.0.0.1", 0), MJPEGHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/video.mjpg"
    count = 0
    with (
        caplog.at_level(logging.WARNING, logger="common.sources"),
        open_source(url, max_retries=2) as source,
    ):
        assert source.describe() == f"stream {url}"
        with pytest.raises(SourceError, match="was lost and did not come back after 2"):
            for frame in source:
                assert frame.image.shape == (48, 64, 3)
                count += 1
                if count == 20:  # second connection running: the camera goes away
                    server.shutdown()
                    server.server_close()
    assert source.reconnects >= 1
    assert count >= 20
    assert "reconnected" in caplog.text


def test_unreachable_stream_fails_at_once():
    with pytest.raises(SourceError, match="cannot be opened; check the URL"):
        open_source("http://127.0.0.1:9/none.mjpg")


def test_replay_plays_a_file_in_real_time_from_the_first_frame_asked_for(tmp_path):
    from common.sources import replay_source

    path = tmp_path / "clip.mp4"
    write_video(path, 20, fps=20.0)
    with replay_source(path) as source:
        assert source.describe() == "replay clip.mp4" and source.fps == pytest.approx(20.0)
        time.sleep(0.3)  # nothing plays before the first frame is asked for
        first = next(source)
        assert first.index == 0
        started = time.monotonic()
        rest = list(source)
        elapsed = time.monotonic() - started
    assert elapsed >= 0.8  # 19 more frames at 20 fps: about 0.95 s
    assert [f.index for f in rest] == list(range(1, 20))  # a fast consumer misses none


def test_replay_drops_frames_for_a_slow_consumer_and_closes_unstarted(tmp_path):
    from common.sources import replay_source

    path = tmp_path / "clip.mp4"
    write_video(path, 30, fps=30.0)
    with replay_source(path) as source:
        indexes = []
        for frame in source:
            indexes.append(frame.index)
            time.sleep(0.1)  # a third of the frame rate
    assert indexes[-1] >= 25 and len(indexes) <= 15  # it kept pace with the clock, dropping
    unstarted = replay_source(path)
    started = time.monotonic()
    unstarted.close()  # its reader waits for the first frame asked for: it must still stop
    assert time.monotonic() - started < 2.0
    with pytest.raises(sources.SourceError, match="no such file"):
        replay_source(tmp_path / "missing.mp4")
