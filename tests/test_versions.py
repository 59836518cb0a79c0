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
    resolve_active,
    resolve_version,
    save_version,
    use_version,
    verify_version,
)

TENSORS = {"Bottleneck/kernel": np.arange(12, dtype=np.float32).reshape(3, 4)}


def _save(cfg: Config, **meta):
    return save_version(cfg, TENSORS, {"metrics": {"before": {"rank1": 0.5},
                                                   "after": {"rank1": 0.75}}, **meta})  # fmt: skip


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
