"""Versioned model store, the active model, and ``attendance model list | use``."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from attendance.cli import main as cli_main
from common.config import Config, load_config, read_toml
from model.versions import (
    META_NAME,
    WEIGHTS_NAME,
    VersionError,
    get_version,
    list_versions,
    remove_version,
    resolve_active,
    resolve_version,
    save_version,
    use_version,
    verify_version,
)

TENSORS = {"Bottleneck/kernel": np.arange(12, dtype=np.float32).reshape(3, 4)}


def _save(cfg: Config, **meta):
    return save_version(cfg, TENSORS, {"metrics": {"before": {"eer": 0.5},
                                                   "after": {"eer": 0.75}}, **meta})  # fmt: skip


def test_save_versions_atomically_and_list_them(workspace):
    first, second = _save(workspace), _save(workspace)
    assert (first.version, second.version) == ("v1", "v2")
    for found in (first, second):
        assert sorted(p.name for p in found.path.iterdir()) == [META_NAME, "weights.json",
                                                                WEIGHTS_NAME]  # fmt: skip
        meta = json.loads((found.path / META_NAME).read_text())
        assert meta["model_id"] == found.model_id and meta["version"] == found.version
        assert found.model_id == f"facenet-ft-{found.version}@{meta['weights_sha256'][:12]}"
    assert [v.version for v in list_versions(workspace)] == ["v1", "v2"]
    with np.load(first.weights_path, allow_pickle=False) as data:
        np.testing.assert_array_equal(data["Bottleneck/kernel"], TENSORS["Bottleneck/kernel"])
    assert not [p for p in workspace.models_dir.iterdir() if p.name.startswith(".")]


def test_interrupted_save_leaves_no_version(workspace, monitor_save_failure):
    with pytest.raises(OSError, match="disk full"):
        _save(workspace)
    assert list_versions(workspace) == []
    assert [p.name for p in workspace.models_dir.iterdir()] == []
    # a leftover from a crash (old staging folder) is cleaned by the next save
    stale = workspace.models_dir / ".staging-crashed"
    stale.mkdir()
    old = time.time() - 7200
    os.utime(stale, (old, old))
    monitor_save_failure.undo()
    assert _save(workspace).version == "v1" and not stale.exists()


@pytest.fixture
def monitor_save_failure(monkeypatch):
    import model.weights

    def failing(path, tensors):
        path.write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(model.weights, "save_npz", failing)
    return monkeypatch


def test_broken_versions_are_skipped_and_named(workspace, caplog):
    _save(workspace)
    broken = workspace.models_dir / "v2"
    broken.mkdir()
    (broken / META_NAME).write_text("{ nope")
    (workspace.models_dir / "notes").mkdir()
    assert [v.version for v in list_versions(workspace)] == ["v1"]
    assert "v2" in caplog.text
    with pytest.raises(VersionError, match="unreadable metadata"):
        get_version(workspace, "v2")
    with pytest.raises(VersionError, match="does not exist"):
        get_version(workspace, "v7")
    for bad in ("../v1", "latest", "v0", "V1", ""):
        with pytest.raises(VersionError, match="not a model version"):
            get_version(workspace, bad)
    assert _save(workspace).version == "v3"  # never reuses the broken folder's name


def test_resolve_active_for_pretrained_and_versions(workspace, tmp_path):
    from model.weights import PRETRAINED_MODEL_ID

    weights = tmp_path / "explicit.npz"
    np.savez(weights, **TENSORS)
    cfg = workspace.replace(weights=str(weights))
    assert resolve_active(cfg) == (weights, PRETRAINED_MODEL_ID)
    saved = _save(cfg)
    assert resolve_version(cfg, "v1") == (saved.weights_path, saved.model_id)
    assert resolve_active(cfg.replace(model_version="v1")) == (saved.weights_path, saved.model_id)
    with open(saved.weights_path, "ab") as handle:  # truncated/replaced weights are refused
        handle.write(b"junk")
    with pytest.raises(VersionError, match="size differs"):
        resolve_version(cfg, "v1")
    with pytest.raises(VersionError, match="does not exist"):
        resolve_active(cfg.replace(model_version="v9"))


def test_use_writes_the_workspace_config_and_verifies(workspace):
    from model.weights import PRETRAINED_MODEL_ID

    saved = _save(workspace)
    assert use_version(workspace, "v1") == saved.model_id
    assert load_config(workspace.root, env={}).model_version == "v1"
    assert use_version(workspace, "pretrained") == PRETRAINED_MODEL_ID
    assert read_toml(workspace.root)["model_version"] == "pretrained"
    data = bytearray(saved.weights_path.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    saved.weights_path.write_bytes(bytes(data))
    with pytest.raises(VersionError, match="corrupt"):
        verify_version(saved)
    with pytest.raises(VersionError, match="corrupt"):
        use_version(workspace, "v1")
    assert read_toml(workspace.root)["model_version"] == "pretrained"  # unchanged


def test_model_cli_list_and_use(workspace, capsys):
    _save(workspace)
    _save(workspace, forced=True, base={"version": "v1"})
    root = str(workspace.root)
    assert cli_main(["model", "list", "--workspace", root]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["VERSION", "CREATED", "MODEL"]
    assert lines[1].startswith("*") and "pretrained" in lines[1]
    assert "v1" in lines[2] and "0.500->0.750" in lines[2]
    assert "forced" in lines[3] and "from v1" in lines[3]
    assert "-->-" in lines[2]  # figures a version does not have

    assert cli_main(["model", "use", "v2", "--workspace", root]) == 0
    assert "active model: v2" in capsys.readouterr().out
    assert read_toml(workspace.root)["model_version"] == "v2"
    assert cli_main(["model", "list", "--workspace", root]) == 0
    assert capsys.readouterr().out.splitlines()[3].startswith("*")

    assert cli_main(["model", "use", "v5", "--workspace", root]) == 2
    assert "v5" in capsys.readouterr().err
    assert cli_main(["model", "use", "--workspace", root]) == 2
    assert "needs a version" in capsys.readouterr().err
    assert read_toml(workspace.root)["model_version"] == "v2"


@pytest.mark.weights
def test_embedder_loads_an_active_fine_tuned_version(workspace):
    """The lead's ``Embedder.from_config`` honours ``model_version`` through this module."""
    from model.embedder import Embedder
    from model.weights import PRETRAINED_MODEL_ID, load_npz, resolve_weights

    tensors = load_npz(resolve_weights(workspace))
    tensors["Bottleneck/kernel"] = tensors["Bottleneck/kernel"][:, ::-1].copy()
    saved = save_version(workspace, tensors, {"note": "permuted bottleneck"})
    use_version(workspace, saved.version)
    cfg = load_config(workspace.root, env={})
    embedder = Embedder.from_config(cfg)
    assert embedder.model_id.startswith(saved.model_id)
    assert PRETRAINED_MODEL_ID not in embedder.model_id
    np.testing.assert_array_equal(
        embedder.model.get_layer("Bottleneck").kernel.numpy(), tensors["Bottleneck/kernel"]
    )


# --- attendance model remove --------------------------------------------------------------


def test_remove_deletes_a_version_atomically_and_list_no_longer_shows_it(workspace, monkeypatch):
    first, second = _save(workspace), _save(workspace)
    size = sum(p.stat().st_size for p in first.path.iterdir())
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src, dst):
        renames.append((os.path.basename(src), os.path.basename(dst)))
        # at the moment of the rename the version is complete: nothing was deleted before it
        assert sorted(os.listdir(src)) == [META_NAME, "weights.json", WEIGHTS_NAME]
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    assert remove_version(workspace, "v1") == size
    assert renames and renames[0][0] == "v1" and renames[0][1].startswith(".removing-v1-")
    assert not first.path.exists() and second.path.is_dir()
    assert [v.version for v in list_versions(workspace)] == ["v2"]
    assert sorted(p.name for p in workspace.models_dir.iterdir()) == ["v2"]  # nothing aside


def test_remove_refuses_the_active_pretrained_and_unknown_versions(workspace, monkeypatch):
    _save(workspace)
    _save(workspace)
    use_version(workspace, "v2")
    cfg = load_config(workspace.root, env={})
    with pytest.raises(VersionError, match=r"^v2 is the active model; switch first"):
        remove_version(cfg, "v2")
    # the file still names v2 even when the environment overrides it
    monkeypatch.setenv("ATTENDANCE_MODEL_VERSION", "pretrained")
    overridden = load_config(workspace.root)
    assert overridden.model_version == "pretrained"
    with pytest.raises(VersionError, match="v2 is the active model"):
        remove_version(overridden, "v2")
    with pytest.raises(VersionError, match="pretrained model is not stored"):
        remove_version(cfg, "pretrained")
    for bad in ("v9", "../v1", "latest"):
        with pytest.raises(VersionError, match="does not exist|not a model version"):
            remove_version(cfg, bad)
    assert [v.version for v in list_versions(cfg)] == ["v1", "v2"]


def test_remove_finishes_an_interrupted_removal_and_takes_broken_versions(workspace, monkeypatch):
    _save(workspace)
    broken = workspace.models_dir / "v2"
    broken.mkdir()
    (broken / META_NAME).write_text("{ nope")
    leftover = workspace.models_dir / ".removing-v7-crashed"
    (leftover / "sub").mkdir(parents=True)
    (leftover / "sub" / WEIGHTS_NAME).write_bytes(b"half deleted")
    assert remove_version(workspace, "v2") == len("{ nope")
    assert sorted(p.name for p in workspace.models_dir.iterdir()) == ["v1"]


def test_model_cli_remove_asks_and_refuses_in_one_line(workspace, capsys, monkeypatch):
    _save(workspace)
    _save(workspace)
    root = str(workspace.root)
    assert cli_main(["model", "use", "v2", "--workspace", root]) == 0
    capsys.readouterr()

    assert cli_main(["model", "remove", "v2", "--yes", "--workspace", root]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: v2 is the active model; switch first") and err.count("\n") == 1

    class Terminal:
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Terminal())
    questions: list[str] = []
    answers = iter(["n", "y"])

    def answer(prompt: str = "") -> str:
        questions.append(prompt)
        return next(answers)

    monkeypatch.setattr("builtins.input", answer)
    assert cli_main(["model", "remove", "v1", "--workspace", root]) == 1
    assert "nothing removed" in capsys.readouterr().out
    assert (workspace.models_dir / "v1").is_dir()
    assert cli_main(["model", "remove", "v1", "--workspace", root]) == 0
    assert "removed model version v1 (" in capsys.readouterr().out
    assert len(questions) == 2 and questions[0].startswith("Remove model version v1 (")
    assert questions[0].endswith("? [y/N] ")

    assert cli_main(["model", "list", "--workspace", root]) == 0
    listed = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [row[1] if row[0] == "*" else row[0] for row in listed] == ["pretrained", "v2"]

    monkeypatch.setattr("sys.stdin", None)  # no terminal: only --yes removes
    assert cli_main(["model", "use", "pretrained", "--workspace", root]) == 0
    assert cli_main(["model", "remove", "v2", "--workspace", root]) == 1
    assert "pass --yes" in capsys.readouterr().out and (workspace.models_dir / "v2").is_dir()
    assert cli_main(["model", "remove", "v2", "-y", "--workspace", root]) == 0
    assert not (workspace.models_dir / "v2").exists()
    assert cli_main(["model", "remove", "--workspace", root]) == 2
    assert "needs a version" in capsys.readouterr().err
    assert cli_main(["model", "list", "-y", "--workspace", root]) == 2
