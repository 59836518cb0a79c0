"""``attendance demo``: the README's main-job scenario, end to end with the real weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from attendance import demo, fetch
from attendance.demo import DEMO_MARKER, DemoError, claim_workspace, pretty_name, run_demo
from store.sqlite_attendance import SQLiteAttendanceStore

ENROLLED = ["Ben Afflek", "Elton John", "Jerry Seinfeld", "Madonna"]


@pytest.mark.weights
@pytest.mark.sample
def test_demo_marks_the_four_enrolled_once_and_never_the_stranger(
    tmp_path, workspace, embedder, detector
):
    lines: list[str] = []
    result = run_demo(
        workspace, tmp_path / "demo", embedder=embedder, detector=detector, out=lines.append
    )
    assert result.enrolled == ENROLLED and result.stranger == "Mindy Kaling"
    db_path = tmp_path / "demo" / "attendance.db"
    with SQLiteAttendanceStore(db_path, timeout=10.0, create=False) as db:
        rows = [(r.name, r.status) for r in db.rows()]
        logged = [(e.name, e.action) for e in db.events()]
    assert sorted(rows) == [(name, "Present") for name in ENROLLED]  # once each
    assert "Mindy Kaling" not in {name for name, _ in logged}
    replayed = result.replayed
    assert replayed in ENROLLED
    # the phone replay of step 5 was recognised and refused: one spoof event, nothing marked
    assert sorted(logged) == sorted(
        [(name, "present") for name in ENROLLED] + [(replayed, "spoof")]
    )
    assert result.replay_refused and not any(e.recorded for e in result.replay_events)
    strangers = [e for e in result.events if not e.recorded]
    assert strangers and {e.name for e in strangers} == {"Unknown"}
    assert result.as_expected
    assert [title for title, _ in result.steps][0].startswith("acquire")
    assert len(result.steps) == 6 and all(seconds >= 0 for _, seconds in result.steps)
    text = "\n".join(lines)
    for number in range(1, 7):
        assert f"[{number}/6]" in text and "done in" in text
    assert f"{replayed} replayed on a phone (liveness=passive): refused, not marked" in text
    assert "Mindy Kaling (not enrolled): never marked" in text
    assert (
        "demo OK: 4 enrolled people present once each, the stranger never, the phone replay refused"
        in text
    )
    assert result.video.is_file() and (tmp_path / "demo" / DEMO_MARKER).is_file()
    assert sorted(p.name for p in (tmp_path / "demo" / "images").iterdir()) == ENROLLED


def test_demo_refuses_a_folder_it_did_not_create(tmp_path, capsys):
    precious = tmp_path / "real-workspace"
    precious.mkdir()
    (precious / "attendance.db").write_bytes(b"precious data")
    code = demo.main(["--dir", str(precious)])
    err = capsys.readouterr().err
    assert code == 2
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [
        f"error: --dir {precious} is not empty and was not created by the demo; "
        "choose a new folder so no real data is touched"
    ]
    assert (precious / "attendance.db").read_bytes() == b"precious data"


def test_demo_workspace_is_reusable_and_its_database_reset(tmp_path, workspace):
    folder = claim_workspace(tmp_path / "d")
    assert claim_workspace(tmp_path / "d") == folder  # marker present: reused
    cfg = demo.demo_config(workspace, folder)
    assert cfg.db_path == folder / "attendance.db" and cfg.threshold == workspace.threshold
    for suffix in ("", "-wal", "-shm"):
        (folder / f"attendance.db{suffix}").write_bytes(b"x")
    demo.reset_attendance(cfg)
    assert not any(folder.glob("attendance.db*"))
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(DemoError, match="is a file"):
        claim_workspace(tmp_path / "file")


def test_demo_option_checks(tmp_path, workspace):
    with pytest.raises(DemoError, match="not one of"):
        run_demo(workspace, tmp_path / "x", stranger="nobody")
    with pytest.raises(DemoError, match="1 to 5"):
        run_demo(workspace, tmp_path / "x", photos=9)
    assert not (tmp_path / "x").exists()  # refused before touching the disk
    assert pretty_name("jerry_seinfeld") == "Jerry Seinfeld"


@pytest.mark.weights
@pytest.mark.sample
def test_fetch_prints_where_weights_and_sample_are(cache_dir, sample_dir, monkeypatch, capsys):
    monkeypatch.setenv("ATTENDANCE_CACHE_DIR", str(cache_dir))
    monkeypatch.delenv("ATTENDANCE_WEIGHTS", raising=False)
    assert fetch.main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"weights: {cache_dir}")
    assert Path(lines[0].split()[1]).is_file()
    assert lines[1] == f"sample photos: {sample_dir} (5 people, 93 train + 25 val)"
    assert lines[2].startswith(f"cache: {cache_dir} (ready in")
