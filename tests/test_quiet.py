"""A clean terminal: TensorFlow's start-up lines are held back unless --verbose is given."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from common import quiet

REPO = Path(__file__).resolve().parent.parent
NOISE_MARKERS = ("I0000", "cuda", "oneDNN", "absl::InitializeLog")
ABSL_LINE = b"I0000 00:00:1796018265.293722   18264 port.cc:153] oneDNN custom operations are on.\n"


def run_python(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the repository's Python as a user's terminal would (no TF log-level variable)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def noise_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if any(m in line for m in NOISE_MARKERS)]


@pytest.fixture
def face_less_workspace(tmp_path: Path) -> Path:
    """A workspace with one photo without a face: preprocessing must start MTCNN/TensorFlow."""
    folder = tmp_path / "ws" / "images" / "Nobody"
    folder.mkdir(parents=True)
    noise = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / "0001.jpg"), noise)
    return tmp_path / "ws"


def test_a_command_that_starts_tensorflow_prints_no_start_up_lines(face_less_workspace):
    args = ("-m", "attendance.cli", "preprocess", "--workspace", str(face_less_workspace))
    quiet_run = run_python(*args, cwd=face_less_workspace)
    assert quiet_run.returncode == 0, quiet_run.stderr[-2000:]
    assert "rejected Nobody/0001.jpg: no face found" in quiet_run.stdout  # TF really ran
    assert noise_lines(quiet_run.stderr) == []
    # --verbose shows them (the same start-up, on a fresh manifest)
    for path in (face_less_workspace / "pre_images").glob(".manifest*"):
        path.unlink()
    verbose_run = run_python(*args, "--verbose", cwd=face_less_workspace)
    assert verbose_run.returncode == 0, verbose_run.stderr[-2000:]
    assert any(line.startswith("I0000") for line in verbose_run.stderr.splitlines())


def test_help_and_the_helper_before_a_plain_tensorflow_import_are_quiet(tmp_path):
    helped = run_python("-m", "attendance.cli", "embed", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "--out" in helped.stdout
    assert noise_lines(helped.stderr) == []
    code = (
        "from common.quiet import import_tensorflow\n"
        "import_tensorflow()\n"
        "import tensorflow as tf, keras\n"
        "print(float(tf.reduce_sum(tf.ones((2, 2)))))\n"
    )
    ran = run_python("-c", code, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.strip() == "4.0"
    assert noise_lines(ran.stderr) == [], ran.stderr
    shown = run_python(
        "-c", "from common import quiet\nquiet.set_verbose(True)\n" + code, cwd=tmp_path
    )
    assert shown.returncode == 0 and noise_lines(shown.stderr)


def test_noise_is_held_back_and_everything_else_passes(capfd, monkeypatch):
    monkeypatch.setattr(quiet, "_verbose", False)
    with quiet.quiet_stderr():
        os.write(2, ABSL_LINE)
        os.write(2, b"\rprogress 50%" + ABSL_LINE)  # a progress bar's unfinished line first
        os.write(2, b"UserWarning: something real\n")
        print("python's stderr still works", file=sys.stderr)
    err = capfd.readouterr().err
    assert "I0000" not in err and "oneDNN" not in err
    assert "UserWarning: something real" in err and "python's stderr still works" in err
    assert "progress 50%" in err
    os.write(2, b"after\n")  # fd 2 is restored
    assert capfd.readouterr().err == "after\n"


def test_a_failing_start_up_prints_what_was_held_back(capfd, monkeypatch):
    monkeypatch.setattr(quiet, "_verbose", False)
    with pytest.raises(ModuleNotFoundError), quiet.quiet_stderr():
        os.write(2, ABSL_LINE)
        os.write(2, b"F0000 00:00:1.5   7 loader.cc:12] cannot load libtensorflow.so\n")
        import no_such_module_for_the_quiet_test  # noqa: F401
    err = capfd.readouterr().err
    assert "oneDNN custom operations" in err and "cannot load libtensorflow.so" in err


def test_verbose_leaves_stderr_alone(capfd, monkeypatch):
    monkeypatch.setattr(quiet, "_verbose", True)
    with quiet.quiet_stderr():
        os.write(2, ABSL_LINE)
    assert capfd.readouterr().err == ABSL_LINE.decode()


def test_fatal_lines_pass_through_at_once(tmp_path):
    """A C++ fatal error (``F…``) aborts without a Python exception: its line is passed
    through as it is written, not held back with the noise (the abort here comes a moment
    later, as it does after TensorFlow's own fatal message is formatted and flushed)."""
    script = (
        "import os, time\n"
        "from common import quiet\n"
        "with quiet.quiet_stderr():\n"
        "    os.write(2, b'I0000 00:00:1.5   7 port.cc:153] oneDNN noise\\n')\n"
        "    os.write(2, b'F0000 00:00:1.5   7 cpu_feature_guard.cc:1] needs AVX\\n')\n"
        "    time.sleep(1)\n"
        "    os.abort()\n"
    )
    aborted = run_python("-c", script, cwd=tmp_path)
    assert aborted.returncode != 0
    assert "needs AVX" in aborted.stderr and "oneDNN noise" not in aborted.stderr
