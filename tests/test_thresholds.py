"""Per-model thresholds: records, ``model use`` switching them, ``model list``, calibration."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from test_evaluate import FakeDetector, FakeEmbedder, write_dataset
from test_versions import TENSORS, _save

import common.fsutil
from attendance.cli import main as cli_main
from common.config import Config, ConfigError, load_config, read_toml, write_config_values
from common.errors import UserError
from model.evaluation.calibration import calibrate
from model.thresholds import (
    THRESHOLDS_NAME,
    ThresholdError,
    forget_threshold,
    read_thresholds,
    record_threshold,
    threshold_for,
)
from model.versions import remove_version, save_version, switch_version, use_version
from model.weights import PRETRAINED_MODEL_ID

DEFAULT = Config.threshold  # the shipped threshold


def _reload(cfg):
    """The workspace configuration as the next command would load it (no environment)."""
    return load_config(cfg.root, overrides={"cache_dir": str(cfg.cache_dir)}, env={})


def _write_spy(monkeypatch):
    """Record every atomic write of attendance.toml (path, text)."""
    writes: list[str] = []
    real = common.fsutil.atomic_write_text

    def spy(path, text):
        if str(path).endswith("attendance.toml"):
            writes.append(text)
        return real(path, text)

    monkeypatch.setattr(common.fsutil, "atomic_write_text", spy)
    return writes


# --- common.config.write_config_values -----------------------------------------------------


def test_write_config_values_sets_several_keys_in_one_write(tmp_path, monkeypatch):
    path = tmp_path / "attendance.toml"
    path.write_text("# mine\nthreshold = 1.0  # tuned\n\nconfirm_k = 2\n")
    writes = _write_spy(monkeypatch)
    write_config_values(tmp_path, {"model_version": "v3", "threshold": 0.875})
    assert len(writes) == 1
    assert path.read_text() == '# mine\nthreshold = 0.875\n\nconfirm_k = 2\nmodel_version = "v3"\n'
    # one bad value: nothing at all is written
    for bad in ({"model_version": "v4", "threshold": 2.5}, {"model_version": "v4", "nope": 1}):
        with pytest.raises(ConfigError):
            write_config_values(tmp_path, bad)
    assert len(writes) == 1 and read_toml(tmp_path)["model_version"] == "v3"


# --- model.thresholds -------------------------------------------------------------------------


def test_records_round_trip_keyed_by_model_id(workspace):
    assert read_thresholds(workspace) == {} and threshold_for(workspace, "m1") is None
    first = record_threshold(workspace, "m1", 0.8734, far=1e-3, source="calibrated",
                             calibrated_on="12 identities, 340 strangers", tar=0.97)  # fmt: skip
    record_threshold(workspace, "m2", 1.0, far=None, source="in use")
    assert threshold_for(workspace, "m1") == first
    assert (first.threshold, first.far, first.source, first.tar) == (0.8734, 1e-3, "calibrated",
                                                                     0.97)  # fmt: skip
    assert first.calibrated_on == "12 identities, 340 strangers"
    assert first.updated.endswith("Z") and first.updated[:2] == "20"
    data = json.loads((workspace.models_dir / THRESHOLDS_NAME).read_text())
    assert data["format"] == 1 and sorted(data["models"]) == ["m1", "m2"]
    assert data["models"]["m2"] == {**data["models"]["m2"], "threshold": 1.0, "far": None,
                                    "source": "in use", "tar": None}  # fmt: skip
    replaced = record_threshold(workspace, "m1", 0.9, far=0.01, source="calibrated")
    assert read_thresholds(workspace) == {"m1": replaced, "m2": threshold_for(workspace, "m2")}
    for bad in (
        {"threshold": 2.5, "far": None, "source": "in use"},
        {"threshold": float("nan"), "far": None, "source": "in use"},
        {"threshold": 0.9, "far": 0.0, "source": "calibrated"},
        {"threshold": 0.9, "far": None, "source": "guessed"},
    ):
        with pytest.raises(ThresholdError):
            record_threshold(workspace, "m3", **bad)
    assert forget_threshold(workspace, "m1") is True
    assert forget_threshold(workspace, "m1") is False
    assert list(read_thresholds(workspace)) == ["m2"]
    assert sorted(p.name for p in workspace.models_dir.iterdir()) == [THRESHOLDS_NAME]


@pytest.mark.parametrize(
    "text",
    ["{ nope", "[]", '{"format": 1}', '{"format": 9, "models": {}}',
     '{"format": 1, "models": {"m1": {"threshold": "high", "far": null, "source": "in use"}}}'],
)  # fmt: skip
def test_a_corrupt_record_file_is_named(workspace, text):
    path = workspace.models_dir / THRESHOLDS_NAME
    path.parent.mkdir(parents=True)
    path.write_text(text)
    for action in (
        lambda: read_thresholds(workspace),
        lambda: record_threshold(workspace, "m1", 0.9, far=None, source="in use"),
    ):
        with pytest.raises(ThresholdError, match="delete or restore") as caught:
            action()
        assert str(path) in str(caught.value) and isinstance(caught.value, UserError)
    assert path.read_text() == text  # not overwritten


# --- model use / remove -----------------------------------------------------------------------


def test_use_writes_the_version_and_its_threshold_in_one_write(workspace, monkeypatch):
    saved = _save(workspace)
    record_threshold(workspace, saved.model_id, 0.8734, far=1e-3, source="calibrated")
    writes = _write_spy(monkeypatch)
    assert use_version(workspace, "v1") == saved.model_id
    assert len(writes) == 1
    assert 'model_version = "v1"' in writes[0] and "threshold = 0.8734" in writes[0]
    cfg = _reload(workspace)
    assert (cfg.model_version, cfg.threshold) == ("v1", 0.8734)


def test_switching_back_restores_the_threshold_that_was_in_use(workspace, caplog):
    saved = _save(workspace)
    write_config_values(workspace.root, {"threshold": 0.95})
    cfg = _reload(workspace)
    record_threshold(cfg, saved.model_id, 0.8, far=1e-3, source="calibrated")
    switch = switch_version(cfg, "v1")
    assert (switch.threshold, switch.record.source) == (0.8, "calibrated")
    kept = threshold_for(cfg, PRETRAINED_MODEL_ID)
    assert (kept.threshold, kept.source, kept.far) == (0.95, "in use", None)
    cfg = _reload(workspace)
    assert cfg.threshold == 0.8
    with caplog.at_level(logging.WARNING):
        assert switch_version(cfg, "pretrained").threshold == 0.95
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not warnings  # both models have a threshold: nothing to warn about
    assert _reload(workspace).threshold == 0.95
    # v1's calibrated record is not replaced by the "in use" one
    assert threshold_for(cfg, saved.model_id).source == "calibrated"


def test_a_version_without_a_record_keeps_the_threshold_and_warns(workspace, caplog):
    saved = _save(workspace)
    write_config_values(workspace.root, {"threshold": 0.95})
    with caplog.at_level(logging.WARNING, logger="model.versions"):
        switch = switch_version(_reload(workspace), "v1")
    assert switch.record is None and switch.threshold == 0.95
    assert "no threshold is recorded for v1" in caplog.text
    assert "attendance evaluate DIR --calibrate" in caplog.text
    assert threshold_for(workspace, saved.model_id) is None
    assert read_toml(workspace.root) == {"threshold": 0.95, "model_version": "v1"}


def test_an_environment_threshold_override_is_named(workspace, caplog, monkeypatch):
    saved = _save(workspace)
    record_threshold(workspace, saved.model_id, 0.85, far=1e-3, source="calibrated")
    monkeypatch.setenv("ATTENDANCE_THRESHOLD", "0.7")
    with caplog.at_level(logging.WARNING, logger="model.versions"):
        use_version(workspace, "v1")
    assert "ATTENDANCE_THRESHOLD is set in the environment and overrides" in caplog.text
    assert read_toml(workspace.root)["threshold"] == 0.85


def test_a_hand_edited_threshold_is_remembered_when_switching_away(workspace):
    saved = _save(workspace)
    record_threshold(workspace, saved.model_id, 0.85, far=1e-3, source="calibrated")
    assert switch_version(_reload(workspace), "v1").threshold == 0.85
    write_config_values(workspace.root, {"threshold": 0.7})  # the user tunes it by hand
    switch_version(_reload(workspace), "pretrained")
    edited = threshold_for(workspace, saved.model_id)
    assert (edited.threshold, edited.source, edited.far) == (0.7, "in use", None)
    switch = switch_version(_reload(workspace), "v1")
    assert switch.threshold == 0.7 and _reload(workspace).threshold == 0.7  # not back to 0.85
    # unchanged since the last switch: the record is left alone
    switch_version(_reload(workspace), "pretrained")
    assert threshold_for(workspace, saved.model_id) == edited
    # a calibrated record still in use stays calibrated, even when re-selecting the same model
    record_threshold(workspace, saved.model_id, 0.85, far=1e-3, source="calibrated")
    switch_version(_reload(workspace), "v1")
    calibrated = threshold_for(workspace, saved.model_id)
    switch_version(_reload(workspace), "v1")
    assert threshold_for(workspace, saved.model_id) == calibrated
    assert calibrated.source == "calibrated"
    # `model use v1` while on v1 keeps a hand edit instead of resetting it
    write_config_values(workspace.root, {"threshold": 0.75})
    assert switch_version(_reload(workspace), "v1").threshold == 0.75
    assert threshold_for(workspace, saved.model_id).threshold == 0.75


def test_without_a_threshold_in_the_file_the_default_is_what_was_in_use(workspace):
    saved = _save(workspace)
    record_threshold(workspace, saved.model_id, 0.8, far=1e-3, source="calibrated")
    record_threshold(workspace, PRETRAINED_MODEL_ID, 0.9, far=1e-3, source="calibrated")
    write_config_values(workspace.root, {"confirm_k": 2})  # a file, without threshold
    switch_version(_reload(workspace), "v1")
    kept = threshold_for(workspace, PRETRAINED_MODEL_ID)
    assert (kept.threshold, kept.source) == (DEFAULT, "in use")  # the default was in effect


@pytest.mark.parametrize("in_file", [0.95, None])
def test_an_environment_threshold_override_is_not_recorded(workspace, monkeypatch, in_file):
    saved = _save(workspace)
    record_threshold(workspace, saved.model_id, 0.7, far=1e-3, source="calibrated")
    if in_file is not None:
        write_config_values(workspace.root, {"threshold": in_file})
    monkeypatch.setenv("ATTENDANCE_THRESHOLD", "0.5")
    cfg = load_config(workspace.root, overrides={"cache_dir": str(workspace.cache_dir)})
    assert cfg.threshold == 0.5  # the override is in effect for this command
    switch_version(cfg, "v1")
    kept = threshold_for(workspace, PRETRAINED_MODEL_ID)
    assert (kept.threshold, kept.source) == (in_file or DEFAULT, "in use")  # not 0.5
    assert read_toml(workspace.root)["threshold"] == 0.7
    monkeypatch.delenv("ATTENDANCE_THRESHOLD")
    switch_version(_reload(workspace), "pretrained")
    assert _reload(workspace).threshold == (in_file or DEFAULT)


@pytest.mark.parametrize("hyperparameters", [{"calibrate_far": 0.01, "epochs": 3}, None])
def test_a_missing_record_falls_back_on_the_version_metadata(workspace, caplog,
                                                             hyperparameters):  # fmt: skip
    meta = {
        "threshold": 0.8734,
        "threshold_tar": 0.97,
        "metrics": {"after": {"genuine_accept": 0.5}},
    }
    if hyperparameters is not None:
        meta["hyperparameters"] = hyperparameters
    saved = _save(workspace, **meta)
    write_config_values(workspace.root, {"threshold": 0.95})
    assert threshold_for(workspace, saved.model_id) is None  # e.g. thresholds.json deleted
    with caplog.at_level(logging.INFO, logger="model.versions"):
        switch = switch_version(_reload(workspace), "v1")
    far = None if hyperparameters is None else 0.01
    assert (switch.threshold, switch.record.source, switch.record.far) == (0.8734, "calibrated",
                                                                           far)  # fmt: skip
    assert switch.record.tar == 0.97
    assert threshold_for(workspace, saved.model_id) == switch.record  # recorded
    assert _reload(workspace).threshold == 0.8734
    said = [r for r in caplog.records if r.name == "model.versions" and "meta.json" in r.message]
    assert [r.levelno for r in said] == [logging.INFO]
    assert "no threshold is recorded for v1" in said[0].message and "0.8734" in said[0].message
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # the record wins over the metadata once there is one
    switch_version(_reload(workspace), "pretrained")
    record_threshold(workspace, saved.model_id, 0.9, far=1e-3, source="calibrated")
    assert switch_version(_reload(workspace), "v1").threshold == 0.9


@pytest.mark.parametrize("bad", [None, 2.5, -0.1, True, "0.8", float("nan")])
def test_an_unusable_metadata_threshold_keeps_the_threshold(workspace, caplog, bad):
    saved = _save(workspace, threshold=bad, hyperparameters={"calibrate_far": 0.01})
    write_config_values(workspace.root, {"threshold": 0.95})
    with caplog.at_level(logging.WARNING, logger="model.versions"):
        switch = switch_version(_reload(workspace), "v1")
    assert switch.record is None and switch.threshold == 0.95
    assert "no threshold is recorded for v1" in caplog.text
    assert threshold_for(workspace, saved.model_id) is None
    assert read_toml(workspace.root)["threshold"] == 0.95


def test_removal_forgets_and_a_reused_name_does_not_inherit(workspace):
    old = _save(workspace)
    record_threshold(workspace, old.model_id, 0.8, far=1e-3, source="calibrated")
    record_threshold(workspace, "other-model", 0.9, far=1e-3, source="calibrated")
    remove_version(workspace, "v1")
    assert threshold_for(workspace, old.model_id) is None
    assert list(read_thresholds(workspace)) == ["other-model"]
    # a record of the old v1 left behind (e.g. restored from a backup) must not apply either
    record_threshold(workspace, old.model_id, 0.8, far=1e-3, source="calibrated")
    new = save_version(workspace, {k: v + 1 for k, v in TENSORS.items()}, {})
    assert new.version == "v1" and new.model_id != old.model_id
    switch = switch_version(workspace, "v1")
    assert switch.record is None and switch.threshold == workspace.threshold
    assert "threshold" not in read_toml(workspace.root)


def test_model_cli_list_shows_and_use_prints_the_threshold(workspace, capsys):
    saved = _save(workspace)
    record_threshold(workspace, saved.model_id, 0.8734, far=1e-3, source="calibrated")
    root = str(workspace.root)
    assert cli_main(["model", "list", "--workspace", root]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["VERSION", "CREATED", "MODEL", "ID", "THRESHOLD"]
    column = lines[0].index("THRESHOLD")
    assert lines[1][column:].split()[0] == "-"  # pretrained: none recorded yet
    assert lines[2][column:].startswith("0.8734 @1e-3 ")

    assert cli_main(["model", "use", "v1", "--workspace", root]) == 0
    out = capsys.readouterr().out
    assert f"active model: v1 ({saved.model_id}); threshold 0.8734 (calibrated at FAR 1e-3)" in out
    assert cli_main(["model", "list", "--workspace", root]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1][lines[0].index("THRESHOLD") :].startswith(f"{DEFAULT:.4f} in-use ")

    assert cli_main(["model", "use", "pretrained", "--workspace", root]) == 0
    out = capsys.readouterr().out
    assert f"threshold {DEFAULT:.4f} (in use when last active)" in out
    remove_version(workspace, "v1")
    _save(workspace)
    assert cli_main(["model", "use", "v1", "--workspace", root]) == 0
    assert f"threshold {DEFAULT:.4f} kept (none recorded" in capsys.readouterr().out


# --- calibration ------------------------------------------------------------------------------


def test_calibrate_records_the_threshold_for_the_active_model(workspace, caplog):
    genuine, stranger = np.array([0.2, 0.5, 0.9]), np.array([0.95, 0.7, 1.3, 1.2, 0.6123456])
    result = calibrate(workspace, genuine, stranger, far=0.2)
    record = threshold_for(workspace, PRETRAINED_MODEL_ID)
    assert result["model_id"] == PRETRAINED_MODEL_ID
    assert (record.threshold, record.far, record.source) == (0.6999, 0.2, "calibrated")
    assert record.tar == pytest.approx(2 / 3)
    assert record.calibrated_on == "3 genuine and 5 stranger decisions (template)"

    saved = _save(workspace)
    active = workspace.replace(model_version="v1")
    calibrate(active, genuine, stranger, far=0.01, dataset="sample/val")
    record = threshold_for(workspace, saved.model_id)
    assert (record.threshold, record.far) == (0.6123, 0.01)
    assert record.calibrated_on.startswith("sample/val: 3 genuine")
    assert threshold_for(workspace, PRETRAINED_MODEL_ID).threshold == 0.6999  # untouched

    # the active version's weights are gone: the toml is written, nothing recorded, a warning
    saved.weights_path.unlink()
    forget_threshold(workspace, saved.model_id)
    with caplog.at_level(logging.WARNING, logger="model.evaluation"):
        calibrate(active, genuine, stranger, far=0.2)
    assert "not recorded for model v1" in caplog.text
    assert threshold_for(workspace, saved.model_id) is None
    assert read_toml(workspace.root)["threshold"] == 0.6999


def test_calibrate_fails_before_writing_on_a_corrupt_record_file(workspace):
    path = workspace.models_dir / THRESHOLDS_NAME
    path.parent.mkdir(parents=True)
    path.write_text("{ nope")
    with pytest.raises(ThresholdError, match=str(path)):
        calibrate(workspace, np.array([0.2]), np.array([1.0, 1.1]), far=0.4)
    assert "threshold" not in read_toml(workspace.root)


def test_evaluate_cli_calibrates_at_the_configured_far_for_the_active_model(
    tmp_path, workspace, use_detector, monkeypatch, capsys
):
    import model.embedder

    monkeypatch.setattr(
        model.embedder.Embedder, "from_config", classmethod(lambda c, cfg: FakeEmbedder())
    )
    use_detector(FakeDetector())
    dataset = write_dataset(tmp_path / "data", {"ann": 6, "bob": 5, "cyd": 6, "dee": 4})
    saved = _save(workspace)
    write_config_values(workspace.root, {"model_version": "v1", "calibrate_far": 0.25})
    root = str(workspace.root)
    assert cli_main(["evaluate", str(dataset), "--calibrate", "--workspace", root, "-q"]) == 0
    assert "for FAR 0.25 " in capsys.readouterr().out
    record = threshold_for(workspace, saved.model_id)
    assert record.far == 0.25 and record.threshold == read_toml(workspace.root)["threshold"]
    assert threshold_for(workspace, PRETRAINED_MODEL_ID) is None
    # an explicit --far wins over the setting
    assert cli_main(["evaluate", str(dataset), "--calibrate", "--far", "0.1", "--workspace",
                     root, "-q"]) == 0  # fmt: skip
    assert threshold_for(workspace, saved.model_id).far == 0.1


def test_an_environment_model_override_does_not_get_the_files_threshold(workspace, monkeypatch):
    """The file names v1, the environment v2: leaving, the file's threshold belongs to v1, the
    model the file names, and v2's calibrated record is left alone."""
    v1, v2, _ = _save(workspace), _save(workspace), _save(workspace)
    record_threshold(workspace, v2.model_id, 0.6, far=1e-3, source="calibrated")
    write_config_values(workspace.root, {"model_version": "v1", "threshold": 0.9})
    monkeypatch.setenv("ATTENDANCE_MODEL_VERSION", "v2")
    cfg = load_config(workspace.root, overrides={"cache_dir": str(workspace.cache_dir)})
    assert cfg.model_version == "v2"
    switch_version(cfg, "v3")
    assert threshold_for(workspace, v2.model_id).threshold == 0.6  # not overwritten with 0.9
    assert threshold_for(workspace, v1.model_id).threshold == 0.9
