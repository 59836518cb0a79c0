"""Versioned fine-tuned models and the active model of a workspace.

Layout: ``<cfg.models_dir>/<version>/`` holds ``weights.npz`` (every tensor of the full network
keyed ``"Layer/weight"``, like the converted pretrained weights), its checksum sidecar
``weights.json`` and ``meta.json`` (model id, hashes, hyper-parameters, before/after metrics,
date). Versions are named ``v1``, ``v2``, ...; a version is staged in a hidden temp folder and
renamed into place, so a crash leaves either a complete version or none.

The active model is ``cfg.model_version``: ``"pretrained"`` or a version name. ``use`` writes it
into the workspace's ``attendance.toml``, together with the threshold recorded for the model
(:mod:`model.thresholds`). :func:`resolve_active` is what
``Embedder.from_config`` needs: the weight file and the model id that keys stored embeddings.
:func:`remove_version` deletes a version that is not active: its folder is first renamed aside
(atomic: the version is gone at once), then deleted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from common.config import CONFIG_FILENAME, ENV_PREFIX, Config, read_toml, write_config_values
from common.errors import UserError
from common.fsutil import atomic_write_text, sha256_file
from model.thresholds import (
    CALIBRATED,
    IN_USE,
    ThresholdError,
    ThresholdRecord,
    as_far,
    as_threshold,
    forget_threshold,
    read_thresholds,
    record_threshold,
)

log = logging.getLogger(__name__)

PRETRAINED = "pretrained"
WEIGHTS_NAME = "weights.npz"
META_NAME = "meta.json"
META_FORMAT = 1
_VERSION_RE = re.compile(r"^v([1-9][0-9]{0,8})$")
_TEMP_PREFIX = ".staging-"
_REMOVING_PREFIX = ".removing-"  # a version renamed aside, being deleted
_STALE_TEMP_SECONDS = 3600.0
# The threshold in effect when attendance.toml sets none (the class default, not a loaded
# configuration's value, which may come from the environment).
_CONFIG_THRESHOLD = next(f.default for f in fields(Config) if f.name == "threshold")


class VersionError(UserError):
    """A model version is unknown, incomplete or corrupt."""


@dataclass(frozen=True)
class ModelSwitch:
    """What :func:`switch_version` did."""

    version: str
    model_id: str
    threshold: float  # the threshold now written for the workspace (or kept)
    record: ThresholdRecord | None  # the incoming model's record; None: threshold kept


@dataclass(frozen=True)
class ModelVersion:
    """One stored fine-tuned model."""

    version: str
    path: Path  # the version folder
    meta: dict[str, Any]

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_NAME

    @property
    def model_id(self) -> str:
        return str(self.meta["model_id"])

    @property
    def created(self) -> str:
        return str(self.meta.get("created", ""))

    @property
    def number(self) -> int:
        return version_number(self.version)


def finetuned_model_id(version: str, weights_sha256: str) -> str:
    """The model id of a fine-tuned version: its name and the hash of its weights."""
    return f"facenet-ft-{version}@{weights_sha256[:12]}"


def version_number(version: str) -> int:
    """``7`` for ``"v7"``; :class:`VersionError` for anything that is not a version name."""
    match = _VERSION_RE.match(version)
    if not match:
        raise VersionError(
            f"{version!r} is not a model version (expected 'pretrained' or v1, v2, ...); "
            "run `attendance model list`"
        )
    return int(match.group(1))


def _read_meta(folder: Path) -> dict[str, Any]:
    path = folder / META_NAME
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VersionError(f"{folder}: no {META_NAME}; the version is incomplete") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise VersionError(f"{path}: unreadable metadata ({exc})") from None
    if not isinstance(meta, dict) or not {"model_id", "weights_sha256"} <= set(meta):
        raise VersionError(f"{path}: metadata lacks model_id/weights_sha256")
    return meta


def get_version(cfg: Config, version: str) -> ModelVersion:
    """The stored version ``version`` of the workspace; :class:`VersionError` if unusable."""
    version_number(version)
    folder = cfg.models_dir / version
    if not folder.is_dir():
        raise VersionError(
            f"model version {version!r} does not exist in {cfg.models_dir}; "
            "run `attendance model list`, or `attendance model use pretrained`"
        )
    meta = _read_meta(folder)
    if not (folder / WEIGHTS_NAME).is_file():
        raise VersionError(f"{folder}: {WEIGHTS_NAME} is missing; the version is unusable")
    return ModelVersion(version, folder, meta)


def list_versions(cfg: Config) -> list[ModelVersion]:
    """Every complete stored version, oldest first (broken ones are logged and skipped)."""
    root = cfg.models_dir
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        if not (child.is_dir() and _VERSION_RE.match(child.name)):
            continue
        try:
            found.append(get_version(cfg, child.name))
        except VersionError as exc:
            log.warning("skipping model version %s: %s", child.name, exc)
    return sorted(found, key=lambda v: v.number)


def resolve_version(cfg: Config, version: str) -> tuple[Path, str]:
    """``(weights_path, model_id)`` of ``version`` (``"pretrained"`` or a stored version)."""
    if version == PRETRAINED:
        from model.weights import PRETRAINED_MODEL_ID, resolve_weights

        return resolve_weights(cfg), PRETRAINED_MODEL_ID
    found = get_version(cfg, version)
    size = found.meta.get("weights_bytes")
    if size is not None and found.weights_path.stat().st_size != size:
        raise VersionError(
            f"{found.weights_path}: size differs from its metadata (truncated or replaced); "
            "run `attendance model use pretrained` or another version"
        )
    return found.weights_path, found.model_id


def resolve_active(cfg: Config) -> tuple[Path, str]:
    """``(weights_path, model_id)`` of the workspace's active model (``cfg.model_version``)."""
    return resolve_version(cfg, cfg.model_version)


def verify_version(found: ModelVersion) -> None:
    """Check the weights file against the sha256 recorded in its metadata."""
    actual = sha256_file(found.weights_path)
    if actual != found.meta["weights_sha256"]:
        raise VersionError(
            f"{found.weights_path}: sha256 {actual[:12]} does not match the recorded "
            f"{str(found.meta['weights_sha256'])[:12]}; the version is corrupt"
        )


def model_id_of(cfg: Config, version: str) -> str:
    """The model id of ``version`` without touching its weights (only its metadata is read).

    :class:`VersionError` if ``version`` is not ``"pretrained"`` or a usable stored version.
    """
    if version == PRETRAINED:
        from model.weights import PRETRAINED_MODEL_ID

        return PRETRAINED_MODEL_ID
    return get_version(cfg, version).model_id


def use_version(cfg: Config, version: str) -> str:
    """Make ``version`` the workspace's active model; returns its model id.

    See :func:`switch_version`, which also says which threshold is now in effect.
    """
    return switch_version(cfg, version).model_id


def _written_threshold(cfg: Config) -> float | None:
    """The threshold ``attendance.toml`` sets for the workspace, environment aside.

    The file's ``threshold``, or the :class:`Config` default when the file has none (never
    ``cfg.threshold``: that includes ``ATTENDANCE_THRESHOLD`` and ``--set`` overrides, which
    are not the workspace's setting). None if the file's value is not a threshold.
    """
    written = read_toml(cfg.root).get("threshold", _CONFIG_THRESHOLD)
    return as_threshold(written)


def _threshold_from_meta(found: ModelVersion) -> tuple[float, float | None, str, float | None]:
    """``(threshold, far, calibrated_on, tar)`` saved in a version's metadata.

    :class:`ValueError` if its ``"threshold"`` is missing, null or not a distance in [0, 2].
    """
    meta = found.meta
    threshold = as_threshold(meta.get("threshold"))
    if threshold is None:
        raise ValueError(f"its {META_NAME} has no usable threshold ({meta.get('threshold')!r})")
    params = meta.get("hyperparameters")
    far = as_far(params.get("calibrate_far")) if isinstance(params, dict) else None
    tar = meta.get("threshold_tar")  # the genuine share at the saved threshold
    tar = tar if isinstance(tar, (int, float)) and not isinstance(tar, bool) else None
    tar = tar if tar is not None and 0.0 <= tar <= 1.0 else None
    return threshold, far, f"{found.version}'s {META_NAME}", tar


def switch_version(cfg: Config, version: str) -> ModelSwitch:
    """Make ``version`` the active model, with its own threshold (in ``attendance.toml``).

    A stored version is verified (checksum) first. The threshold the workspace's
    ``attendance.toml`` sets (its ``threshold``, or the default if it has none; environment and
    command-line overrides do not count) is recorded for the outgoing model
    (``cfg.model_version``, source "in use") unless it equals the record the model already has,
    so switching back restores it, hand edits included, and a calibrated record that is still
    in use stays calibrated. The incoming model's record is then looked up; a stored version
    without one falls back on the threshold its ``meta.json`` was saved with (recorded, source
    "calibrated"). ``model_version`` and that threshold are written in one atomic write; a
    model with neither keeps the current threshold (with a warning to calibrate it).
    """
    found: ModelVersion | None = None
    if version == PRETRAINED:
        model_id = model_id_of(cfg, PRETRAINED)
    else:
        found = get_version(cfg, version)
        verify_version(found)
        model_id = found.model_id
    records = read_thresholds(cfg)
    written = _written_threshold(cfg)
    # the model the file names: an environment override must not get the file's threshold
    leaving = read_toml(cfg.root).get("model_version", PRETRAINED)
    leaving = leaving if isinstance(leaving, str) else cfg.model_version
    try:
        outgoing = model_id_of(cfg, leaving)
    except VersionError as exc:
        log.warning("the threshold of the outgoing model is not recorded: %s", exc)
    else:
        known = records.get(outgoing)
        if written is None:
            log.warning(
                "the threshold of %s is not recorded: %s has no usable threshold",
                leaving, CONFIG_FILENAME,
            )  # fmt: skip
        elif known is None or known.threshold != written:
            records[outgoing] = record_threshold(cfg, outgoing, written, far=None, source=IN_USE)
    record = records.get(model_id)
    if record is None and found is not None:
        try:
            threshold, far, calibrated_on, tar = _threshold_from_meta(found)
        except ValueError as exc:
            log.debug("no threshold to fall back on for %s: %s", version, exc)
        else:
            log.info(
                "no threshold is recorded for %s (%s); using %.4f, saved with the version "
                "in its %s",
                version, model_id, threshold, META_NAME,
            )  # fmt: skip
            record = record_threshold(
                cfg, model_id, threshold, far=far, source=CALIBRATED,
                calibrated_on=calibrated_on, tar=tar,
            )  # fmt: skip
    kept = written if written is not None else cfg.threshold
    values: dict[str, str | float] = {"model_version": version}
    if record is not None:
        values["threshold"] = record.threshold
    else:
        log.warning(
            "no threshold is recorded for %s (%s); keeping threshold %.4f, which may not suit "
            "it: run `attendance evaluate DIR --calibrate` with this model active",
            version, model_id, kept,
        )  # fmt: skip
    write_config_values(cfg.root, values)
    for key in ("model_version", "threshold"):
        if os.environ.get(ENV_PREFIX + key.upper()):
            log.warning(
                "%s%s is set in the environment and overrides the workspace setting",
                ENV_PREFIX, key.upper(),
            )  # fmt: skip
    threshold = record.threshold if record is not None else kept
    return ModelSwitch(version, model_id, threshold, record)


def _remove_stale_staging(root: Path) -> None:
    now = time.time()
    for child in root.glob(_TEMP_PREFIX + "*"):
        try:
            if now - child.stat().st_mtime > _STALE_TEMP_SECONDS:
                shutil.rmtree(child)
                log.info("removed the leftover of an interrupted save: %s", child)
        except OSError as exc:
            log.warning("cannot remove leftover %s: %s", child, exc)


def folder_bytes(folder: Path) -> int:
    """Total size of the regular files under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def active_versions(cfg: Config) -> set[str]:
    """The version in use: ``cfg.model_version`` and the one ``attendance.toml`` names.

    Both count: the environment may override the file, which would still point at the version.
    """
    active = {cfg.model_version}
    written = read_toml(cfg.root).get("model_version")
    if isinstance(written, str):
        active.add(written)
    return active


def _finish_removals(root: Path) -> None:
    """Delete what interrupted removals left renamed aside."""
    for child in root.glob(_REMOVING_PREFIX + "*"):
        shutil.rmtree(child, ignore_errors=True)
        if not child.exists():
            log.info("finished an interrupted removal: %s", child.name)


def removable_folder(cfg: Config, version: str) -> Path:
    """The folder of stored version ``version`` (complete or not) if it may be removed.

    :class:`VersionError` for ``pretrained``, a name that is not a stored version, and the
    active model (:func:`active_versions`).
    """
    if version == PRETRAINED:
        raise VersionError(
            "the pretrained model is not stored in the workspace and cannot be removed; "
            "remove a fine-tuned version (v1, v2, ...)"
        )
    version_number(version)
    folder = cfg.models_dir / version
    if not folder.is_dir() or folder.is_symlink():
        raise VersionError(
            f"model version {version!r} does not exist in {cfg.models_dir}; "
            "run `attendance model list`"
        )
    if version in active_versions(cfg):
        raise VersionError(
            f"{version} is the active model; switch first (`attendance model use pretrained` "
            "or another version), then remove it"
        )
    return folder


def remove_version(cfg: Config, version: str) -> int:
    """Delete stored version ``version`` (even an incomplete one); the bytes freed.

    Refuses the active model (:func:`active_versions`); forgets its recorded threshold. The
    folder is renamed to a hidden name first, so the version disappears at once and completely;
    its files are deleted after that. If the deletion is interrupted, the next removal finishes
    it.
    """
    folder = removable_folder(cfg, version)
    _finish_removals(cfg.models_dir)
    size = folder_bytes(folder)
    try:
        model_id: str | None = str(_read_meta(folder)["model_id"])
    except VersionError:
        model_id = None  # a broken version: no model id to forget
    aside = Path(tempfile.mkdtemp(prefix=f"{_REMOVING_PREFIX}{version}-", dir=cfg.models_dir))
    try:
        os.replace(folder, aside)  # replaces the empty placeholder: one atomic rename
    except OSError as exc:
        aside.rmdir()
        raise VersionError(f"cannot remove {folder}: {exc.strerror or exc}") from None
    shutil.rmtree(aside, ignore_errors=True)
    if aside.exists():
        log.warning("%s could not be deleted completely; the next removal retries", aside)
    if model_id is not None:
        try:
            forget_threshold(cfg, model_id)
        except ThresholdError as exc:  # the version is gone already; do not fail for this
            log.warning("the threshold of %s is not forgotten: %s", version, exc)
    log.info("removed model version %s (%d bytes)", version, size)
    return size


def next_version_name(cfg: Config) -> str:
    """The name the next saved version gets (one above the highest existing folder)."""
    highest = 0
    if cfg.models_dir.is_dir():
        for child in cfg.models_dir.iterdir():
            match = _VERSION_RE.match(child.name)
            if match:
                highest = max(highest, int(match.group(1)))
    return f"v{highest + 1}"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_json(data: Any) -> str:
    """Pretty JSON of ``data``; numpy scalars and paths are converted."""
    return json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n"


def save_version(cfg: Config, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> ModelVersion:
    """Store a new version atomically and return it.

    ``meta`` is extended with ``version``, ``model_id``, ``weights_sha256``, ``weights_bytes``,
    ``created`` (UTC, ISO 8601) and ``format``.
    """
    from model.weights import save_npz

    root = cfg.models_dir
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(root)
    staging = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=root))
    try:
        digest = save_npz(staging / WEIGHTS_NAME, tensors)
        size = (staging / WEIGHTS_NAME).stat().st_size
        for _ in range(100):  # another process may take a name concurrently
            version = next_version_name(cfg)
            full = {
                **meta,
                "format": META_FORMAT,
                "version": version,
                "model_id": finetuned_model_id(version, digest),
                "weights_sha256": digest,
                "weights_bytes": size,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            atomic_write_text(staging / META_NAME, to_json(full))
            try:
                os.rename(staging, root / version)
            except OSError:
                if (root / version).exists():
                    continue
                raise
            log.info("saved model version %s (%s)", version, full["model_id"])
            return ModelVersion(version, root / version, full)
        raise VersionError(f"{root}: could not find a free version name")
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
