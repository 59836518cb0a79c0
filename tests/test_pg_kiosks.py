"""Several kiosks on one PostgreSQL, end to end with the real weights (issue acceptance).

``ATTENDANCE_STORE`` is set everywhere. ``call_preprocess`` at kiosk A puts A's people (crops
and embeddings) in the store; ``face_recognizer`` at kiosks B, C and D, started in empty
workspaces, marks them from a video; ``attendance report --csv`` anywhere shows one row per
person, and the stranger in the video is never recorded. Three recognisers (separate
processes) read the same video at once and write exactly one row per person.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from attendance import cli as attendance_cli
from attendance import preprocess_cli
from attendance.demo import build_video, enrol, load_photo, pretty_name
from common.config import load_config
from store.factory import upgrade_store

ENROLLED = ("ben_afflek", "jerry_seinfeld")
STRANGER = "mindy_kaling"


@pytest.mark.weights
@pytest.mark.sample
def test_people_enrolled_at_one_kiosk_are_marked_once_at_two_others(
    tmp_path: Path, pg_url: str, cache_dir, sample_dir, embedder, detector, use_detector,
    monkeypatch, capsys,
) -> None:  # fmt: skip
    from model.embedder import Embedder

    monkeypatch.setenv("ATTENDANCE_STORE", pg_url)
    monkeypatch.setenv("ATTENDANCE_CACHE_DIR", str(cache_dir))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setattr(Embedder, "from_config", classmethod(lambda cls, cfg: embedder))
    use_detector(detector)
    roots = {name: tmp_path / name for name in "ABCD"}
    for root in roots.values():
        root.mkdir()
    a = load_config(roots["A"])
    assert upgrade_store(a)[1]

    enrol(a, sample_dir, ENROLLED, limit=6)
    assert preprocess_cli.main(["--workspace", str(roots["A"]), "-q"]) == 0
    assert "published to postgresql://" in capsys.readouterr().out
    with psycopg.connect(pg_url) as conn:
        (model,) = conn.execute("SELECT model_id, threshold, meta FROM model_versions").fetchall()
    assert model == (embedder.model_id, a.threshold, {"version": "pretrained", "dim": 128})

    video = tmp_path / "door.mp4"
    scenes = [
        (pretty_name(person), person != STRANGER, [load_photo(sorted(files)[0])])
        for person in ("ben_afflek", STRANGER, "jerry_seinfeld")
        for files in [list((sample_dir / "val" / person).glob("*.jpg"))]
    ]
    build_video(video, scenes, fps=12.0, hold=1.5)
    # three kiosks read the same video at once, each in its own process
    env = {**os.environ, "ATTENDANCE_STORE": pg_url, "ATTENDANCE_CACHE_DIR": str(cache_dir)}
    env.pop("DISPLAY", None)
    runs = {
        kiosk: subprocess.Popen(
            [sys.executable, "-m", "recognizer.cli", "--workspace", str(roots[kiosk]),
             "--source", str(video), "--headless", "--continuous"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            cwd=Path(__file__).resolve().parents[1],
        )
        for kiosk in "BCD"
    }  # fmt: skip
    marked = {}
    for kiosk, run in runs.items():
        out, _ = run.communicate(timeout=600)
        assert run.returncode == 0, out
        events = [line for line in out.splitlines() if " present " in line or " seen " in line]
        marked[kiosk] = sorted({line.split("  ")[1] for line in events})
        assert pretty_name(STRANGER) not in out
    people = sorted(pretty_name(person) for person in ENROLLED)
    assert marked == {"B": people, "C": people, "D": people}
    for kiosk in "BCD":  # nothing of the store is kept in the kiosks' workspaces
        assert sorted(p.name for p in roots[kiosk].iterdir()) == []
    with psycopg.connect(pg_url) as conn:
        firsts = conn.execute(
            "SELECT EmpName, COUNT(*) FROM events WHERE Action = 'present' GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert firsts == [(name, 1) for name in people]  # one first sighting each, of 3 kiosks

    report = tmp_path / "report.csv"
    code = attendance_cli.main(["report", "--workspace", str(roots["C"]), "--csv", str(report)])
    assert code == 0
    with report.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["name"] for r in rows) == people
    assert {r["status"] for r in rows} == {"Present"}
