"""Configuration layering, validation, identity names and atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from attendance.cli import main
from common.config import ConfigError, load_config, write_config_value
from common.fsutil import atomic_open, atomic_write_text, remove_stale_temps, sha256_file
from common.names import InvalidName, person_dir, validate_name
from common.runner import config_from_args

# --- configuration ------------------------------------------------------------------


def test_defaults_live_in_the_workspace(tmp_path):
    cfg = load_config(tmp_path, env={})
    assert cfg.root == tmp_path.resolve()
    assert cfg.images_dir == tmp_path.resolve() / "images"
    assert cfg.pre_images_dir == tmp_path.resolve() / "pre_images"
    assert cfg.db_path == tmp_path.resolve() / "attendance.db"
    assert cfg.weights is None and cfg.alignment == "landmarks"


def test_layering_defaults_toml_env_flags(tmp_path):
    (tmp_path / "attendance.toml").write_text(
        'threshold = 0.9\ndb_path = "data/a.db"\nconfirm_m = 7\n'
    )
    cfg = load_config(tmp_path, env={})
    assert cfg.threshold == 0.9 and cfg.db_path == tmp_path.resolve() / "data/a.db"
    cfg = load_config(tmp_path, env={"ATTENDANCE_THRESHOLD": "0.8"})
    assert cfg.threshold == 0.8 and cfg.confirm_m == 7
    cfg = load_config(tmp_path, env={"ATTENDANCE_THRESHOLD": "0.8"}, overrides={"threshold": "0.7"})
    assert cfg.threshold == 0.7


def test_root_from_environment(tmp_path):
    cfg = load_config(env={"ATTENDANCE_ROOT": str(tmp_path)})
    assert cfg.root == tmp_path.resolve()


@pytest.mark.parametrize(
    ("source", "pattern"),
    [
        ({"toml": "thresold = 1.0\n"}, "unknown configuration key 'thresold'"),
        ({"env": {"ATTENDANCE_COLOUR": "red"}}, "unknown environment variable ATTENDANCE_COLOUR"),
        ({"overrides": {"threshold": "3.5"}}, r"threshold=3.5 is out of range"),
        ({"overrides": {"threshold": "abc"}}, r"threshold='abc' is invalid"),
        ({"overrides": {"alignment": "funky"}}, r"alignment='funky' is not one of"),
        ({"overrides": {"confirm_k": 6, "confirm_m": 5}}, "confirm_k=6 must not exceed"),
        ({"overrides": {"flip_average": "maybe"}}, "flip_average='maybe' is invalid"),
        ({"overrides": {"detect_every": 2.5}}, "detect_every=2.5 is invalid"),
        ({"overrides": {"track_jump": 0.1}}, r"track_jump=0.1 is out of range \[0.3, 2.0\]"),
        ({"env": {"ATTENDANCE_TRACK_GAP_SECONDS": "-1"}}, r"track_gap_seconds=-1.0 is out of"),
        ({"overrides": {"enrol_check_distance": 0}}, r"enrol_check_distance=0.0 is out of"),
        ({"toml": "[recognizer]\nk = 1\n"}, "sections are not supported"),
        ({"toml": "threshold = = 1\n"}, "cannot read configuration"),
    ],
)
def test_bad_values_are_rejected_with_an_echo(tmp_path, source, pattern):
    if "toml" in source:
        (tmp_path / "attendance.toml").write_text(source["toml"])
    with pytest.raises(ConfigError, match=pattern):
        load_config(tmp_path, env=source.get("env", {}), overrides=source.get("overrides"))


def test_track_keys_at_their_bounds_are_accepted(tmp_path):
    cfg = load_config(tmp_path, env={}, overrides={"track_jump": 2.0, "track_gap_seconds": 0})
    assert (cfg.track_jump, cfg.track_gap_seconds) == (2.0, 0.0)  # never split; 2 misses end


def test_write_config_value_keeps_other_keys(tmp_path):
    (tmp_path / "attendance.toml").write_text('alignment = "margin"\n')
    write_config_value(tmp_path, "threshold", 0.95)
    cfg = load_config(tmp_path, env={})
    assert cfg.threshold == 0.95 and cfg.alignment == "margin"
    with pytest.raises(ConfigError, match="unknown configuration key"):
        write_config_value(tmp_path, "nonsense", 1)


def test_replace_validates(tmp_path):
    cfg = load_config(tmp_path, env={})
    assert cfg.replace(threshold=0.5).threshold == 0.5
    with pytest.raises(ConfigError):
        cfg.replace(threshold=-1)


def test_cli_set_and_weights_flags(tmp_path, monkeypatch):
    import argparse

    monkeypatch.chdir(tmp_path)
    workspace = tmp_path / "ws"
    args = argparse.Namespace(
        workspace=str(workspace), overrides=["threshold=0.75", "db_path=here.db"], weights="w.npz"
    )
    cfg = config_from_args(args)
    assert cfg.threshold == 0.75
    # paths typed on the command line are relative to the current directory ...
    assert cfg.weights == tmp_path.resolve() / "w.npz"
    assert cfg.db_path == tmp_path.resolve() / "here.db"
    # ... while the workspace's own defaults stay inside the workspace
    assert cfg.images_dir == workspace.resolve() / "images"
    args.overrides = ["threshold"]
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        config_from_args(args)


def test_non_config_environment_variables_are_not_rejected(tmp_path):
    env = {
        "ATTENDANCE_SDIST": "/x.tar.gz",
        "ATTENDANCE_TEST_ARTIFACTS": "/a",
        "ATTENDANCE_ROOT": "/",
    }
    assert load_config(tmp_path, env=env).root == tmp_path.resolve()


def test_write_config_value_keeps_comments_lines_and_mode(tmp_path):
    path = tmp_path / "attendance.toml"
    path.write_text('# our site\nalignment = "margin"  # chosen by hand\nthreshold = 0.9\n')
    path.chmod(0o644)
    write_config_value(tmp_path, "threshold", 0.95)
    write_config_value(tmp_path, "confirm_k", 2)
    assert path.read_text() == (
        '# our site\nalignment = "margin"  # chosen by hand\nthreshold = 0.95\nconfirm_k = 2\n'
    )
    assert path.stat().st_mode & 0o777 == 0o644


def test_cli_reports_config_errors_in_one_line(tmp_path, capsys):
    code = main(["close-day", "--workspace", str(tmp_path), "--set", "threshold=9"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == "error: --set threshold=9: threshold=9.0 is out of range [0.0, 2.0]\n"


@pytest.mark.parametrize(
    ("toml", "line", "message"),
    [
        ("# site\nthreshold = 0.9\nthresold = 1.0\n", 3,
         "unknown configuration key 'thresold' (did you mean 'threshold'? known keys: "),
        ('alignment = "margin"\n\nconfirm_k = "three"\n', 3,
         "confirm_k='three' is invalid: invalid literal for int()"),
        ("threshold = 0.9\n  detect_width = 5\n", 2,
         "detect_width=5 is out of range [64, 4096]"),
        ('alignment = "funky"\n', 1, "alignment='funky' is not one of landmarks, margin"),
        ('"flip_average" = "maybe"\n', 1, "flip_average='maybe' is invalid"),
        ("# ok\nthreshold = = 1\n", 2, "cannot read configuration: Invalid value; fix the TOML"),
        ("threshold = 1.0\n\n[recognizer]\nk = 1\n", 3, "sections are not supported"),
    ],
)  # fmt: skip
def test_errors_from_the_toml_name_the_file_and_line(tmp_path, capsys, toml, line, message):
    path = tmp_path / "attendance.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, env={})
    assert str(info.value).startswith(f"{path.resolve()}, line {line}: {message}")
    code = main(["close-day", "--workspace", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {path.resolve()}, line {line}: ")
    assert err.count("\n") == 1


def test_errors_from_the_environment_and_flags_name_their_source(tmp_path, capsys, monkeypatch):
    env = {"ATTENDANCE_THRESHOLD": "abc"}
    with pytest.raises(ConfigError, match=r"^environment variable ATTENDANCE_THRESHOLD: "
                       r"threshold='abc' is invalid"):  # fmt: skip
        load_config(tmp_path, env=env)
    with pytest.raises(ConfigError, match=r"^environment variable ATTENDANCE_CONFIRM_M: "
                       r"confirm_m=500 is out of range"):  # fmt: skip
        load_config(tmp_path, env={"ATTENDANCE_CONFIRM_M": "500"})
    with pytest.raises(ConfigError, match=r"^unknown environment variable ATTENDANCE_COLOUR='red'; "
                       r"unset it"):  # fmt: skip
        load_config(tmp_path, env={"ATTENDANCE_COLOUR": "red"})
    monkeypatch.setenv("ATTENDANCE_MIN_SHOTS", "many")
    code = main(["close-day", "--workspace", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: environment variable ATTENDANCE_MIN_SHOTS: ")
    monkeypatch.delenv("ATTENDANCE_MIN_SHOTS")
    code = main(["close-day", "--workspace", str(tmp_path), "--set", "match_mode=best guess"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: --set 'match_mode=best guess': match_mode='best guess' is not")
    code = main(["close-day", "--workspace", str(tmp_path), "--set", "colour=red"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --set colour=red: unknown configuration key")
    assert err.count("\n") == 1


def test_errors_between_two_keys_name_where_each_was_set(tmp_path, capsys):
    (tmp_path / "attendance.toml").write_text("threshold = 0.9\nconfirm_k = 6\n")
    code = main(["close-day", "--workspace", str(tmp_path), "--set", "confirm_m=5"])
    err = capsys.readouterr().err
    path = (tmp_path / "attendance.toml").resolve()
    assert code == 2 and err == (
        "error: confirm_k=6 must not exceed confirm_m=5 "
        f"(confirm_k from {path}, line 2; confirm_m from --set confirm_m=5)\n"
    )


def test_umbrella_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "scan", "preprocess", "recognize", "report", "evaluate", "train"):
        assert command in out


# --- names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["José Álvarez", "Ada Lovelace", "李小龙", "O'Brien-Smith", "J. Doe"]
)
def test_unicode_names_are_welcome(tmp_path, name):
    assert validate_name(f"  {name} ") == name
    assert person_dir(tmp_path, name) == tmp_path / name


def test_names_are_normalised_to_nfc():
    decomposed = "Jose\u0301"
    assert validate_name(decomposed) == "Jos\u00e9"


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        ("", "empty"),
        ("   ", "empty"),
        (".hidden", "starts with a dot"),
        ("..", "starts with a dot"),
        ("../../etc", "starts with a dot"),
        ("a/b", "contains '/'"),
        ("a\\b", "contains"),
        ("tab\there", "contains"),
        ("x" * 101, "longer than"),
        ("李" * 90, "too long for a folder name"),  # 90 characters, 270 bytes
    ],
)
def test_bad_names_are_refused(tmp_path, name, pattern):
    with pytest.raises(InvalidName, match=pattern):
        person_dir(tmp_path, name)


# --- atomic writes ---------------------------------------------------------------------


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]


def test_failed_atomic_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write(b"half")
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_stale_temps_are_cleaned(tmp_path):
    (tmp_path / ".f.bin.abc.tmp").write_bytes(b"x")
    (tmp_path / "keep.png").write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == 1
    assert sorted(os.listdir(tmp_path)) == ["keep.png"]


def test_sha256_file(tmp_path):
    path = Path(tmp_path) / "x"
    path.write_bytes(b"abc")
    assert sha256_file(path).startswith("ba7816bf")


def test_sources_is_a_list_of_cameras(tmp_path):
    (tmp_path / "attendance.toml").write_text('sources = ["0", " rtsp://cam/door ", ""]\n')
    assert load_config(tmp_path, env={}).sources == ("0", "rtsp://cam/door")
    env = {"ATTENDANCE_SOURCES": '["1", "rtsp://u:p,w@cam/lab"]'}
    assert load_config(tmp_path, env=env).sources == ("1", "rtsp://u:p,w@cam/lab")
    assert "p,w" not in repr(load_config(tmp_path, env=env))
    one = {"ATTENDANCE_SOURCES": "rtsp://u:p,w@cam/lab"}  # one source: never split on commas
    assert load_config(tmp_path, env=one).sources == ("rtsp://u:p,w@cam/lab",)
    with pytest.raises(ConfigError, match=r"ATTENDANCE_SOURCES: sources=\[\.\.\.\] is invalid"):
        load_config(tmp_path, env={"ATTENDANCE_SOURCES": '["rtsp://u:secret@cam"'})
    (tmp_path / "attendance.toml").write_text('sources = ["rtsp://u:secret@cam", 3]\n')
    with pytest.raises(ConfigError, match="line 1: sources=.* expected a list of strings") as err:
        load_config(tmp_path, env={})
    assert "secret" not in str(err.value)


def test_detection_keys_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="detect_async='sometimes' is not one of auto, on, off"):
        load_config(tmp_path, overrides={"detect_async": "sometimes"}, env={})
    with pytest.raises(ConfigError, match=r"detect_min_face_px=4 is out of range \[8, 4096\]"):
        load_config(tmp_path, overrides={"detect_min_face_px": 4}, env={})
    cfg = load_config(tmp_path, env={})
    assert (cfg.detect_min_face_px, cfg.detect_async, cfg.full_scan_seconds) == (40, "auto", 0.5)
