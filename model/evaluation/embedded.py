"""Embeddings of a dataset folder, and the npz file ``attendance embed`` writes.

The npz holds plain arrays only (read with ``allow_pickle=False``); its array names,
:data:`NPZ_ARRAYS`, are stable because external tools read them.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.config import Config
from common.fsutil import atomic_open
from model.evaluation import EvaluationError
from model.evaluation.crops import crop_images
from model.evaluation.dataset import list_images

#: the stable array names of ``attendance embed`` files (external tools read them)
NPZ_ARRAYS = (
    "paths", "identities", "embeddings", "boxes", "scores", "failed_paths", "failed_reasons",
    "model_id", "alignment", "flip_average",
)  # fmt: skip


def with_flip(embedder: Any, flip_average: bool) -> Any:
    """``embedder`` itself, or a sibling sharing its network with flip averaging on/off."""
    if bool(embedder.flip_average) == flip_average:
        return embedder
    base_id = str(embedder.model_id).removesuffix("+flip")
    return type(embedder)(embedder.model, base_id, embedder.batch_size, flip_average)


@dataclass
class EmbeddedImages:
    """Unit-norm embeddings of a dataset folder, as written by ``attendance embed``."""

    paths: list[str]
    identities: list[str]
    embeddings: np.ndarray  # float32 (N, D)
    boxes: np.ndarray  # float32 (N, 4)
    scores: np.ndarray  # float32 (N,)
    failed_paths: list[str]
    failed_reasons: list[str]
    model_id: str
    alignment: str
    flip_average: bool

    def arrays(self) -> dict[str, np.ndarray]:
        """The npz arrays (unicode strings, no object arrays)."""
        return {
            "paths": np.array(self.paths, dtype=str),
            "identities": np.array(self.identities, dtype=str),
            "embeddings": np.asarray(self.embeddings, dtype=np.float32),
            "boxes": np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4),
            "scores": np.asarray(self.scores, dtype=np.float32),
            "failed_paths": np.array(self.failed_paths, dtype=str),
            "failed_reasons": np.array(self.failed_reasons, dtype=str),
            "model_id": np.array(self.model_id, dtype=str),
            "alignment": np.array(self.alignment, dtype=str),
            "flip_average": np.array(self.flip_average, dtype=bool),
        }

    def save(self, path: str | Path) -> Path:
        """Write the npz atomically (temp file in the same folder, then rename)."""
        path = Path(path)
        with atomic_open(path, "wb") as handle:
            np.savez(handle, **self.arrays())
        return path

    @classmethod
    def load(cls, path: str | Path) -> EmbeddedImages:
        """Read a file written by :meth:`save` (plain arrays only, object arrays refused)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [name for name in NPZ_ARRAYS if name not in data.files]
                if missing:
                    raise EvaluationError(f"{path}: not an embeddings file (no {missing[0]!r})")
                return cls(
                    paths=data["paths"].tolist(),
                    identities=data["identities"].tolist(),
                    embeddings=data["embeddings"],
                    boxes=data["boxes"],
                    scores=data["scores"],
                    failed_paths=data["failed_paths"].tolist(),
                    failed_reasons=data["failed_reasons"].tolist(),
                    model_id=str(data["model_id"]),
                    alignment=str(data["alignment"]),
                    flip_average=bool(data["flip_average"]),
                )
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise EvaluationError(f"{path}: cannot read embeddings ({exc})") from None


def embed_folder(
    root: Path, cfg: Config, detector: Any, embedder: Any, progress: bool | None = None
) -> EmbeddedImages:
    """Embeddings of every image under ``root`` with ``cfg.alignment`` and the embedder as given."""
    items = list_images(root)
    cropset = crop_images(items, detector, cfg, progress=progress)
    embeddings = embedder.embed(cropset.crops[cfg.alignment])
    return EmbeddedImages(
        paths=[item.relpath for item in cropset.items],
        identities=[item.identity for item in cropset.items],
        embeddings=np.asarray(embeddings, dtype=np.float32),
        boxes=cropset.boxes,
        scores=cropset.scores,
        failed_paths=[relpath for relpath, _ in cropset.failed],
        failed_reasons=[reason for _, reason in cropset.failed],
        model_id=str(embedder.model_id),
        alignment=cfg.alignment,
        flip_average=bool(embedder.flip_average),
    )
