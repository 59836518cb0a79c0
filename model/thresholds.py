"""The recognition threshold of each model, recorded per model id.

Every model (the pretrained one and each fine-tuned version) puts faces at its own distances,
so each gets its own threshold. They are kept in ``<cfg.models_dir>/thresholds.json``::

    {"format": 1, "models": {"<model id>": {"threshold": 0.8734, "far": 0.001,
     "source": "calibrated", "calibrated_on": "...", "tar": 0.97, "updated": "...Z"}}}

Records are keyed by model id, never by version name: a name can be reused after a removal,
a model id cannot (it contains the hash of the weights). ``source`` is ``"calibrated"`` (by
``attendance evaluate DIR --calibrate``, by training, or taken back from a version's
``meta.json`` when its record is missing) or ``"in use"`` (the threshold ``attendance.toml`` set
when ``attendance model use`` switched away from the model, if it differed from the record, so
switching back restores it, hand edits included; environment overrides are not recorded).

Writes are atomic (temp file and rename) and each read-modify-write holds an exclusive
``flock`` on the models folder, so concurrent writers do not lose each other's records.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.config import Config
from common.errors import UserError
from common.fsutil import atomic_write_text

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX: no lock
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

THRESHOLDS_NAME = "thresholds.json"
THRESHOLDS_FORMAT = 1
CALIBRATED = "calibrated"
IN_USE = "in use"
SOURCES = (CALIBRATED, IN_USE)


class ThresholdError(UserError):
    """The per-model threshold file is unreadable, or a threshold record is invalid."""


@dataclass(frozen=True)
class ThresholdRecord:
    """The threshold recorded for one model."""

    model_id: str
    threshold: float
    far: float | None  # the target stranger accept rate it was calibrated at
    source: str  # "calibrated" or "in use"
    calibrated_on: str = ""  # free text: what it was calibrated on
    tar: float | None = None  # genuine accept rate at the threshold, when calibrated
    updated: str = ""  # UTC, ISO 8601

    def to_json(self) -> dict[str, Any]:
        """The record's entry in ``thresholds.json`` (without the model id, its key)."""
        return {
            "threshold": self.threshold,
            "far": self.far,
            "source": self.source,
            "calibrated_on": self.calibrated_on,
            "tar": self.tar,
            "updated": self.updated,
        }

    def describe(self) -> str:
        """``"0.8734 (calibrated at FAR 1e-3)"`` or ``"1.0000 (in use when last active)"``."""
        if self.source == CALIBRATED:
            at = f" at FAR {format_far(self.far)}" if self.far is not None else ""
            return f"{self.threshold:.4f} (calibrated{at})"
        return f"{self.threshold:.4f} (in use when last active)"


def format_far(far: float) -> str:
    """A rate in short scientific notation: ``1e-3``, ``5e-2``, ``2.5e-4``."""
    mantissa, exponent = f"{far:e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def thresholds_path(cfg: Config) -> Path:
    """``<cfg.models_dir>/thresholds.json``."""
    return cfg.models_dir / THRESHOLDS_NAME


def _number(value: Any, low: float, high: float) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and low <= value <= high
    )


def as_threshold(value: Any) -> float | None:
    """``value`` as a threshold (a finite distance in [0, 2]), or None if it is not one."""
    return float(value) if _number(value, 0.0, 2.0) else None


def as_far(value: Any) -> float | None:
    """``value`` as a stranger accept rate (in (0, 1)), or None if it is not one."""
    return float(value) if _number(value, 0.0, 1.0) and 0.0 < value < 1.0 else None


def _check(threshold: Any, far: Any, source: Any, calibrated_on: Any, tar: Any) -> str | None:
    """What is wrong with a record's fields, or None."""
    if not _number(threshold, 0.0, 2.0):
        return f"threshold {threshold!r} is not a distance in [0, 2]"
    if far is not None and not (_number(far, 0.0, 1.0) and 0.0 < far < 1.0):
        return f"far {far!r} is not a rate in (0, 1)"
    if source not in SOURCES:
        return f"source {source!r} is not one of {', '.join(SOURCES)}"
    if not isinstance(calibrated_on, str):
        return f"calibrated_on {calibrated_on!r} is not text"
    if tar is not None and not _number(tar, 0.0, 1.0):
        return f"tar {tar!r} is not a rate in [0, 1]"
    return None


def _parse(path: Path, text: str) -> dict[str, ThresholdRecord]:
    def corrupt(why: str) -> ThresholdError:
        return ThresholdError(
            f"{path}: unreadable threshold records ({why}); delete or restore the file "
            "(then recalibrate with `attendance evaluate DIR --calibrate`)"
        )

    try:
        data = json.loads(text)
    except ValueError as exc:
        raise corrupt(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise corrupt("no 'models' object")
    if data.get("format") != THRESHOLDS_FORMAT:
        raise corrupt(f"format {data.get('format')!r}, expected {THRESHOLDS_FORMAT}")
    records = {}
    for model_id, entry in data["models"].items():
        if not isinstance(entry, Mapping):
            raise corrupt(f"the entry of {model_id!r} is not an object")
        fields = {k: entry.get(k) for k in ("threshold", "far", "source", "tar")}
        fields["calibrated_on"] = entry.get("calibrated_on", "")
        problem = _check(**fields)
        if problem:
            raise corrupt(f"{model_id!r}: {problem}")
        records[model_id] = ThresholdRecord(
            model_id=model_id,
            threshold=float(fields["threshold"]),
            far=None if fields["far"] is None else float(fields["far"]),
            source=fields["source"],
            calibrated_on=fields["calibrated_on"],
            tar=None if fields["tar"] is None else float(fields["tar"]),
            updated=str(entry.get("updated", "")),
        )
    return records


def read_thresholds(cfg: Config) -> dict[str, ThresholdRecord]:
    """Every recorded threshold, by model id ({} when none was recorded yet).

    :class:`ThresholdError` naming the file if it cannot be read or parsed.
    """
    path = thresholds_path(cfg)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ThresholdError(
            f"{path}: cannot read threshold records ({exc}); delete or restore the file"
        ) from None
    return _parse(path, text)


def threshold_for(cfg: Config, model_id: str) -> ThresholdRecord | None:
    """The threshold recorded for ``model_id``, if any."""
    return read_thresholds(cfg).get(model_id)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` (a directory: no lock file is left behind)."""
    if fcntl is None:  # pragma: no cover - non-POSIX
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write(cfg: Config, records: Mapping[str, ThresholdRecord]) -> None:
    data = {
        "format": THRESHOLDS_FORMAT,
        "models": {mid: records[mid].to_json() for mid in sorted(records)},
    }
    atomic_write_text(thresholds_path(cfg), json.dumps(data, indent=2, sort_keys=True) + "\n")


def record_threshold(
    cfg: Config,
    model_id: str,
    threshold: float,
    *,
    far: float | None,
    source: str,
    calibrated_on: str = "",
    tar: float | None = None,
) -> ThresholdRecord:
    """Record (or replace) the threshold of ``model_id``; returns the new record."""
    if not isinstance(model_id, str) or not model_id:
        raise ThresholdError(f"{model_id!r} is not a model id")
    problem = _check(threshold, far, source, calibrated_on, tar)
    if problem:
        raise ThresholdError(f"cannot record the threshold of {model_id}: {problem}")
    record = ThresholdRecord(
        model_id=model_id,
        threshold=float(threshold),
        far=None if far is None else float(far),
        source=source,
        calibrated_on=calibrated_on,
        tar=None if tar is None else float(tar),
        updated=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    cfg.models_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cfg.models_dir):
        records = read_thresholds(cfg)
        records[model_id] = record
        _write(cfg, records)
    log.info("recorded threshold %s for %s", record.describe(), model_id)
    return record


def forget_threshold(cfg: Config, model_id: str) -> bool:
    """Delete the record of ``model_id``; whether there was one."""
    if not thresholds_path(cfg).is_file():
        return False
    with _locked(cfg.models_dir):
        records = read_thresholds(cfg)
        if records.pop(model_id, None) is None:
            return False
        _write(cfg, records)
    log.info("forgot the threshold of %s", model_id)
    return True
