"""The one configuration object.

Sources, lowest priority first: defaults < ``attendance.toml`` in the workspace
< environment variables ``ATTENDANCE_<FIELD>`` < command-line overrides.
Unknown keys and out-of-range values are rejected with a one-line message echoing them and
naming where they were set (the file and line, the environment variable, the flag).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from common.errors import UserError
from common.urls import redact_url

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

CONFIG_FILENAME = "attendance.toml"
ENV_PREFIX = "ATTENDANCE_"
# ATTENDANCE_* variables that are not configuration keys: the workspace root, a local copy
# of the weights/sample sdist, and where tests save screenshots.
ENV_NOT_CONFIG = frozenset({"ROOT", "SDIST", "TEST_ARTIFACTS"})
APP_NAME = "facenet-attendance"
# Crop methods of preprocessing: 5-point similarity alignment, or MTCNN box plus margin.
ALIGNMENTS = ("landmarks", "margin")
# Face detectors by name (built by preprocess.detectors.make_detector).
DETECTORS = ("mtcnn",)
# How the recogniser compares a face with the gallery: per-identity mean, or every crop.
MATCH_MODES = ("nearest", "template")
# Liveness check of the recogniser (recognizer.liveness_gate): "auto" is passive for cameras
# and streams, off for video files and folders of photos.
LIVENESS_MODES = ("auto", "off", "passive", "challenge")
# Where the recogniser detects (recognizer.live_detection): beside the loop or in it.
DETECT_ASYNC_MODES = ("auto", "on", "off")
# URL schemes of the shared store (the key ``store``); empty means the workspace's SQLite files.
STORE_SCHEMES = ("postgresql://", "postgres://")


class ConfigError(UserError, ValueError):
    """A configuration value is unknown, malformed or out of range."""


def _default_cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir(APP_NAME))


@dataclass(frozen=True)
class Config:
    """Every tunable of the product. Paths are absolute once loaded."""

    # --- workspace and data -------------------------------------------------
    root: Path = field(default_factory=Path.cwd)
    images_dir: Path = Path("images")
    pre_images_dir: Path = Path("pre_images")
    db_path: Path = Path("attendance.db")
    gallery_path: Path = Path("gallery.sqlite")
    # --- model --------------------------------------------------------------
    weights: Path | None = None  # explicit weight file (.h5 checkpoint or converted .npz)
    cache_dir: Path = field(default_factory=_default_cache_dir)
    model_version: str = "pretrained"  # active model: "pretrained" or a fine-tuned version id
    embed_batch: int = 32
    # Average the embeddings of a crop and its mirror image. Off by default: on the sample data
    # it gained nothing with landmark alignment and it halves embedding throughput.
    flip_average: bool = False
    # --- preprocessing ------------------------------------------------------
    detector: str = "mtcnn"  # face detector, by name (preprocess.detectors)
    alignment: str = "landmarks"  # "landmarks" (5-point similarity) or "margin" (box + margin)
    margin: int = 32  # pixels of margin around the MTCNN box for alignment="margin" (at 160 px)
    min_face_px: int = 20  # smallest face side, in input pixels, that preprocessing accepts
    min_detection_score: float = 0.90
    # Enrolment photos with several faces: the largest is enrolled only if its box area is at
    # least this many times the next one's, else the photo is refused ("crop the photo to one
    # person"). bench/bench_group_photos.py: in 105 real group frames the largest face reaches
    # 3.26x the next (median 1.37), and the sample's 2 two-person photos 1.10 and 1.73; 4 (a
    # background face at most half the main face's side) is above all of them with margin.
    min_dominant_ratio: float = 4.0
    # Photos with more pixels are refused from their header, before decoding. 50 MP is above
    # every phone and most DSLR cameras (12-48 MP) and decodes in well under 1 GB of memory.
    max_image_pixels: int = 50_000_000
    # How long call_preprocess waits for another run holding pre_images/.lock before it fails.
    lock_timeout_seconds: float = 60.0
    # --- matching -----------------------------------------------------------
    # Euclidean distance on unit vectors; beyond it: Unknown. What `evaluate --calibrate` (FAR
    # 1e-3, template matching) gives on people this project never trained or tuned on: 0.786
    # on att+bbt+sample, 0.805 with hard24 too (bench/bench_open_set.py). The former default
    # 1.0 let 6.2% of hard24's stranger photos pass as an employee; 0.80 lets none of 890 pass
    # and still accepts 79% of their genuine photos per photo (98% of people on one of 3).
    threshold: float = 0.80
    # Target stranger accept rate of threshold calibration (`evaluate --calibrate`, and the
    # threshold each fine-tuned model version is saved with).
    calibrate_far: float = 1e-3
    match_mode: str = "template"  # "template" (per identity mean) or "nearest" (per image)
    # --- recogniser ---------------------------------------------------------
    # Cameras the recogniser watches when no --source is given: camera indexes, stream URLs,
    # video files (several run in one process, sharing the models). In the environment or
    # --set: a TOML array, e.g. ["0", "rtsp://host/stream"]. Passwords in URLs are never shown.
    sources: tuple[str, ...] = field(default=(), repr=False)
    # The smallest face the recogniser looks for, in source pixels: frames are shrunk for
    # detection so a face this large is still found (preprocess.regions). 40 covers an
    # entrance camera at 1080p with people 2-5 m away; a kiosk whose people stand close can
    # set 80 and detect on a copy a third the size (per side).
    detect_min_face_px: int = 40
    # Detection beside the frame loop ("on": a worker thread on the newest frame, tracks
    # followed by optical flow in between), or in it ("off": every detect_every-th frame);
    # "auto" is on for cameras and streams, off for video files and folders (whose results
    # then do not depend on the machine's speed); "on" plays a video file in real time, as a
    # camera would deliver it.
    detect_async: str = "auto"
    # Live cameras: the whole frame is scanned for new faces at least this often (frame
    # time); between scans only the regions around followed faces are re-detected.
    full_scan_seconds: float = 0.5
    # Detection looks at every n-th frame (async: at most; tracks coast, or follow the faces by
    # optical flow, in between).
    detect_every: int = 3
    detect_width: int = 320  # the scanner shrinks its frames to this width for detection
    confirm_k: int = 3  # an identity is marked after winning k ...
    confirm_m: int = 5  # ... of the last m observations of one track
    refresh_seconds: float = 1.0  # re-embed a confirmed track at most this often
    # A track whose fresh embedding lies farther than this from its previous one is another
    # face (someone stepped into the box): it ends and a new track starts, with no votes.
    # bench/bench_track_jump.py: on real clips one person's looks stay within 0.84 of the
    # first. 2.0 (the largest distance of unit vectors) never splits.
    track_jump: float = 0.9
    # A track missed in two detection rounds and not detected for longer than this (frame
    # time) ends: whoever appears there next is judged afresh, at any frame rate.
    track_gap_seconds: float = 0.4
    cooldown_seconds: float = 60.0  # continuous mode: per-person quiet period between events
    # A photo or a screen held up to the camera must not mark anyone present. "passive"
    # watches each face for a device or paper border (bench/bench_liveness.py); "challenge"
    # also asks it, in the window, for a random head movement; "auto" is passive for cameras
    # and streams and off for video files and folders; "off" trusts every face.
    liveness: str = "auto"
    liveness_challenge_seconds: float = 5.0  # challenge: time to make the asked movement
    db_timeout_seconds: float = 10.0
    # --- where the data lives ------------------------------------------------
    # "" keeps people, embeddings and attendance in the workspace's SQLite files (db_path,
    # gallery_path): one machine. A URL postgresql://user@host:5432/db shares them between
    # kiosks; the password comes from the URL, PGPASSWORD or ~/.pgpass and is never shown.
    store: str = field(default="", repr=False)
    # Dashboard users, sessions, API tokens and kiosk heartbeats when the store is SQLite.
    site_db_path: Path = Path("site.sqlite")
    # --- kiosks ---------------------------------------------------------------
    # This recogniser's name on the dashboard's Kiosks page ("" = the host name). Two
    # recognisers must not share a name: each would overwrite the other's heartbeat.
    kiosk_name: str = ""
    heartbeat_seconds: float = 5.0  # a running recogniser reports its state this often
    # --- web dashboard (attendance serve) ---------------------------------------
    web_host: str = "127.0.0.1"  # only this machine; 0.0.0.0 behind a reverse proxy with HTTPS
    web_port: int = 8000
    session_hours: float = 12.0  # a sign-in lasts this long
    login_attempts: int = 5  # failed sign-ins per user name and per client address ...
    login_window_seconds: float = 300.0  # ... within this window, before further tries wait
    upload_min_files: int = 5  # an enrolment by upload takes this many photos ...
    upload_max_files: int = 35  # ... up to this many
    upload_max_bytes: int = 15_000_000  # per photo (the pixel limit is max_image_pixels)
    # --- scanner ------------------------------------------------------------
    # Enrolment checks (scanner.enrol.check_shots): another enrolled person whose photos lie
    # within this mean distance of the new shots is a suspected duplicate, and a group of
    # shots this far from the rest is someone else. Not the recognition threshold: a looser
    # cut here catches more duplicates and flags fewer poses of the same person.
    enrol_check_distance: float = 1.0
    target_shots: int = 35
    min_shots: int = 30
    min_sharpness: float = 60.0  # variance of the Laplacian on the face
    min_scan_face_px: int = 80
    scan_pose_step: float = 6.0  # auto capture: degrees of yaw/pitch between kept shots
    # Auto capture of someone who barely moves: after this many seconds of good frames without
    # a new pose, the pose step is halved (down to scan_pose_step_min); 0 never relaxes it.
    # bench/bench_auto_enrol.py: on real webcam clips of people talking but barely moving, 2 s
    # and 1 degree reach 35 shots in 10-15 s where the fixed 6 degree step stalls at 8-17.
    scan_relax_seconds: float = 2.0
    scan_pose_step_min: float = 1.0  # the floor of that relaxation: shots never repeat a pose
    # --- training -----------------------------------------------------------
    train_identities: int = 4  # P identities per batch
    train_images: int = 4  # K images per identity
    train_margin: float = 0.2
    train_epochs: int = 10
    learning_rate: float = 1e-4
    trainable_from: str = "Block8_1"  # freeze everything before this block
    # A fine-tuned model must beat the current one on a held-out metric by at least this much
    # (one genuine pair among hundreds does not count); any loss at all rejects it.
    train_min_gain: float = 0.005
    # A fine-tune is judged on people it never saw: the workspace's held-out identities plus
    # the identity folders of reference_dir (photos of people who are not enrolled). With fewer
    # than train_min_identities of them, `train` does not activate anything.
    reference_dir: Path | None = None
    # bench/bench_train_generalisation.py: with 15 people or fewer some intervals are degenerate
    # (zero width); a fine-tune's 5-point loss of TAR@1e-3 on unseen people is shown in 1 of 20
    # random sets of 20 people, 6 of 20 sets of 30, 7 of 20 of 45 and on all 71; an 11-point
    # loss in 9 of 20 sets of 20, 15 of 20 of 30 and 20 of 20 of 45.
    train_min_identities: int = 30
    # Regularisers that keep the fine-tuned model close to the one it starts from:
    # L2-SP (squared distance of the trainable weights from their starting values) and
    # distillation (squared distance of each training embedding from the starting model's).
    # bench/bench_train_generalisation.py, TAR@1e-3 on people training never saw (judges / test
    # people), trained on 5 people: none -5.1/-5.0 points, L2-SP 1.0 -3.0/-2.1, distillation 1.0
    # -1.5/-1.4, distillation 10 +0.4/+0.8; on 25 people: -7.3/-11.5, +1.5/+1.1, +1.6/-0.7,
    # +0.9/-0.7. Of the settings that change the model, distillation 10 has the smallest worst
    # case (training only the last layer changes almost nothing).
    train_l2sp: float = 0.0
    train_distill: float = 10.0
    seed: int = 0

    # ------------------------------------------------------------------------
    def __post_init__(self) -> None:
        _validate(self)

    @property
    def models_dir(self) -> Path:
        """Where fine-tuned model versions live (inside the workspace)."""
        return self.root / "models"

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes`` applied (validated)."""
        return load_config(self.root, overrides=changes, env={}, base=self)


#: Keys whose values may hold a password (stream URLs): never echoed in errors.
SECRET_KEYS = frozenset({"sources"})
PATH_KEYS = frozenset(
    {
        "images_dir", "pre_images_dir", "db_path", "gallery_path", "weights", "cache_dir",
        "reference_dir", "site_db_path",
    }
)  # fmt: skip
#: Path keys whose default is None (unset), rather than a path.
OPTIONAL_PATH_KEYS = frozenset({"weights", "reference_dir"})
_CHOICES = {
    "alignment": ALIGNMENTS,
    "detector": DETECTORS,
    "match_mode": MATCH_MODES,
    "liveness": LIVENESS_MODES,
    "detect_async": DETECT_ASYNC_MODES,
}
# (minimum, maximum) inclusive
_RANGES: dict[str, tuple[float, float]] = {
    "embed_batch": (1, 1024),
    "margin": (0, 160),
    "min_face_px": (8, 4096),
    "min_detection_score": (0.0, 1.0),
    "min_dominant_ratio": (1.0, 1000.0),
    # Pillow itself refuses images above ~179 MP as decompression bombs
    "max_image_pixels": (4096, 150_000_000),
    "lock_timeout_seconds": (0.0, 86400.0),
    "threshold": (0.0, 2.0),
    "calibrate_far": (1e-6, 0.5),
    "detect_width": (64, 4096),
    "detect_min_face_px": (8, 4096),
    "full_scan_seconds": (0.0, 60.0),
    "detect_every": (1, 100),
    "confirm_k": (1, 100),
    "confirm_m": (1, 100),
    "refresh_seconds": (0.0, 3600.0),
    "track_jump": (0.3, 2.0),  # below ~0.6 one person's own looks would split tracks
    "track_gap_seconds": (0.0, 3600.0),
    "cooldown_seconds": (0.0, 86400.0),
    "liveness_challenge_seconds": (1.0, 60.0),
    "db_timeout_seconds": (0.0, 3600.0),
    "enrol_check_distance": (0.1, 2.0),
    "target_shots": (1, 1000),
    "min_shots": (1, 1000),
    "min_sharpness": (0.0, 1e6),
    "min_scan_face_px": (8, 4096),
    "scan_pose_step": (0.0, 90.0),
    "scan_relax_seconds": (0.0, 3600.0),
    "scan_pose_step_min": (0.1, 90.0),
    "train_identities": (2, 1000),
    "train_images": (2, 1000),
    "train_margin": (0.0, 2.0),
    "train_epochs": (1, 10000),
    "learning_rate": (0.0, 1.0),
    "train_min_gain": (0.0, 1.0),
    "train_min_identities": (5, 100000),
    "train_l2sp": (0.0, 1e6),
    "train_distill": (0.0, 1e6),
    "seed": (0, 2**31 - 1),
    "heartbeat_seconds": (0.5, 3600.0),
    "web_port": (1, 65535),
    "session_hours": (0.05, 24.0 * 90),
    "login_attempts": (1, 1000),
    "login_window_seconds": (1.0, 86400.0),
    "upload_min_files": (1, 1000),
    "upload_max_files": (1, 1000),
    "upload_max_bytes": (10_000, 500_000_000),
}


def _check_value(name: str, value: Any) -> None:
    """Refuse ``value`` if it is not one of key ``name``'s choices or outside its range."""
    choices = _CHOICES.get(name)
    if choices is not None and value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(choices)}")
    bounds = _RANGES.get(name)
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        raise ConfigError(f"{name}={value!r} is out of range [{bounds[0]}, {bounds[1]}]")


def _validate(cfg: Config) -> None:
    for name in (*_CHOICES, *_RANGES):
        _check_value(name, getattr(cfg, name))
    if cfg.confirm_k > cfg.confirm_m:
        raise ConfigError(f"confirm_k={cfg.confirm_k} must not exceed confirm_m={cfg.confirm_m}")
    if cfg.min_shots > cfg.target_shots:
        raise ConfigError(
            f"min_shots={cfg.min_shots} must not exceed target_shots={cfg.target_shots}"
        )
    if cfg.store and not cfg.store.startswith(STORE_SCHEMES):
        raise ConfigError(
            f"store={redact_url(cfg.store)!r} is not a PostgreSQL URL; use "
            "postgresql://user@host:port/database, or leave it empty for the workspace's "
            "SQLite files"
        )
    if cfg.upload_min_files > cfg.upload_max_files:
        raise ConfigError(
            f"upload_min_files={cfg.upload_min_files} must not exceed "
            f"upload_max_files={cfg.upload_max_files}"
        )
    if len(cfg.kiosk_name) > 100 or any(not ch.isprintable() for ch in cfg.kiosk_name):
        raise ConfigError(
            f"kiosk_name={cfg.kiosk_name[:100]!r}: use at most 100 printable characters"
        )
    if not cfg.web_host or any(ch.isspace() or ch in "/@" for ch in cfg.web_host):
        raise ConfigError(f"web_host={cfg.web_host!r} is not a host name or address")
    if not cfg.model_version or "/" in cfg.model_version or "\\" in cfg.model_version:
        raise ConfigError(f"model_version={cfg.model_version!r} is not a valid version name")


_FIELD_TYPES = {f.name: f for f in fields(Config)}


def _text_list(text: str) -> Any:
    """A list given as text (environment, ``--set``): a TOML array (``["0", "rtsp://…"]``), or
    else one item. Not split on commas: a stream URL's password may hold one."""
    if not text.strip().startswith("["):
        return [text]
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        raise ValueError('expected a list like ["0", "rtsp://host/stream"]') from None


def _coerce(name: str, value: Any, root: Path) -> Any:
    """Turn a raw value (TOML, environment string or flag) into the field's type."""
    if name not in _FIELD_TYPES:
        known = ", ".join(sorted(_FIELD_TYPES))
        close = difflib.get_close_matches(name, _FIELD_TYPES, n=1)
        guess = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown configuration key {name!r} ({guess}known keys: {known})")
    default = _FIELD_TYPES[name].default
    if default is dataclasses.MISSING:
        default = _FIELD_TYPES[name].default_factory()  # type: ignore[misc]
    try:
        if name in PATH_KEYS:
            if value is None or value == "":
                return None if name in OPTIONAL_PATH_KEYS else default
            path = Path(os.path.expanduser(str(value)))
            return path if path.is_absolute() else root / path
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if isinstance(default, int):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("expected an integer")
            return int(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return float(value)
        if isinstance(default, str):
            if not isinstance(value, str):
                raise ValueError("expected a string")
            return value
        if isinstance(default, tuple):  # a list of strings (from text: one, or a TOML array)
            items = _text_list(value) if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
                raise ValueError("expected a list of strings")
            return tuple(v.strip() for v in items if v.strip())
    except (TypeError, ValueError) as exc:
        shown = "[...]" if name in SECRET_KEYS else repr(value)  # URLs may hold passwords
        raise ConfigError(f"{name}={shown} is invalid: {exc}") from None
    raise ConfigError(f"{name}={value!r} cannot be set")  # pragma: no cover


def _read_toml_text(path: Path) -> tuple[dict[str, Any], str]:
    """``(data, text)`` of a TOML file; :class:`ConfigError` naming the file (and line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(getattr(exc, "msg", exc))
        lineno = getattr(exc, "lineno", None)
        where = re.search(r"\s*\(at line (\d+), column \d+\)$", message)
        if where:  # Python < 3.14 puts the position into the message only
            lineno = lineno or int(where.group(1))
            message = message[: where.start()]
        at = f", line {lineno}" if lineno else ""
        raise ConfigError(
            f"{path}{at}: cannot read configuration: {message}; fix the TOML syntax"
        ) from None
    for key, value in data.items():
        if isinstance(value, dict):
            raise ConfigError(
                f"{_where(path, text, key, section=True)}: sections are not supported "
                f"([{key}]); use flat keys"
            )
    return data, text


def _key_line(text: str, key: str, section: bool = False) -> int | None:
    """The 1-based line of ``text`` that sets ``key`` (or opens section ``[key]``), if found."""
    name = re.escape(key)
    quoted = rf"(?:{name}|\"{name}\"|'{name}')"
    pattern = re.compile(rf"^\s*\[\s*{quoted}\s*\]" if section else rf"^\s*{quoted}\s*=")
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return None


def _where(path: Path, text: str, key: str, section: bool = False) -> str:
    """``"<path>, line N"`` for the line setting ``key`` (just the path if it is not found)."""
    line = _key_line(text, key, section)
    return f"{path}, line {line}" if line else str(path)


def read_toml(root: Path) -> dict[str, Any]:
    """The workspace's ``attendance.toml`` as a flat dict ({} when absent)."""
    path = root / CONFIG_FILENAME
    if not path.exists():
        return {}
    return _read_toml_text(path)[0]


def _from_source(origin: str, key: str, raw: Any, root: Path) -> Any:
    """:func:`_coerce` and check one value; an error is prefixed with where it came from."""
    try:
        value = _coerce(key, raw, root)
        _check_value(key, value)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    return value


def _name_origins(exc: ConfigError, origins: Mapping[str, str]) -> ConfigError:
    """``exc`` with where each key it names (``key=``) was set, for errors between keys."""
    named = [k for k in origins if re.search(rf"\b{re.escape(k)}=", str(exc))]
    if not named:
        return exc
    where = "; ".join(f"{k} from {origins[k]}" for k in named)
    return ConfigError(f"{exc} ({where})")


def load_config(
    root: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    base: Config | None = None,
    labels: Mapping[str, str] | None = None,
) -> Config:
    """Build the configuration for workspace ``root`` (default: ``$ATTENDANCE_ROOT`` or cwd).

    Errors name where the offending value was set: ``attendance.toml`` and its line, the
    environment variable, or the override's entry in ``labels`` (how it was given on the
    command line, e.g. ``{"threshold": "--set threshold=9"}``).
    """
    env = os.environ if env is None else env
    if root is None:
        root = env.get(ENV_PREFIX + "ROOT") or Path.cwd()
    root = Path(os.path.expanduser(str(root))).resolve()
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}  # key -> where its value came from, for error messages
    if base is None:
        path = root / CONFIG_FILENAME
        if path.exists():
            data, text = _read_toml_text(path)
            for key, raw in data.items():
                origins[key] = _where(path, text, key)
                values[key] = _from_source(origins[key], key, raw, root)
        for name, raw in env.items():
            if not name.startswith(ENV_PREFIX) or name[len(ENV_PREFIX) :] in ENV_NOT_CONFIG:
                continue
            key = name[len(ENV_PREFIX) :].lower()
            if key not in _FIELD_TYPES:
                raise ConfigError(
                    f"unknown environment variable {name}={raw!r}; unset it (an "
                    f"{ENV_PREFIX}<KEY> variable must name a configuration key)"
                )
            origins[key] = f"environment variable {name}"
            values[key] = _from_source(origins[key], key, raw, root)
    for key, raw in (overrides or {}).items():
        if raw is not None:
            label = (labels or {}).get(key)
            if label:
                origins[key] = label
                values[key] = _from_source(label, key, raw, root)
            else:
                values[key] = _coerce(key, raw, root)
    values.pop("root", None)
    try:
        if base is not None:
            return dataclasses.replace(base, **values)
        defaults = {
            name: root / getattr(Config, name)
            for name in ("images_dir", "pre_images_dir", "db_path", "gallery_path", "site_db_path")
        }
        return Config(root=root, **{**defaults, **values})
    except ConfigError as exc:
        raise _name_origins(exc, origins) from None


def write_config_value(root: Path, key: str, value: float | int | str | bool) -> Path:
    """Set one key in the workspace's ``attendance.toml`` atomically (used by calibration).

    See :func:`write_config_values`.
    """
    return write_config_values(root, {key: value})


def write_config_values(root: Path, values: Mapping[str, float | int | str | bool]) -> Path:
    """Set several keys in the workspace's ``attendance.toml`` in one atomic write.

    Each key's line is replaced in place (or appended, in the order given); every other line,
    comments included, is kept as the user wrote it. Every key and value is checked before
    anything is written, so either all of them are set or none.
    """
    from common.fsutil import atomic_write_text

    for key, value in values.items():
        _check_value(key, _coerce(key, value, root))  # validates the key, type and range
    read_toml(root)  # refuse to touch a file that does not parse
    path = root / CONFIG_FILENAME
    if not values:
        return path
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    if not lines:
        lines = ["# facenet-attendance workspace configuration"]
    for key, value in values.items():
        line = f"{key} = {_toml_value(value)}"
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
        for i, existing in enumerate(lines):
            if pattern.match(existing):
                lines[i] = line
                break
        else:
            lines.append(line)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
