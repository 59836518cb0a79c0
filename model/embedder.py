"""Turn aligned 160×160 RGB crops into unit-norm 128-d FaceNet embeddings."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from common.config import Config
from common.vectors import l2_normalize

log = logging.getLogger(__name__)

EMBEDDING_DIM = 128


def prewhiten(batch: np.ndarray) -> np.ndarray:
    """Per-image standardisation, as the network was trained: (x - mean) / max(std, 1/sqrt(n))."""
    x = np.asarray(batch, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    axes = tuple(range(1, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    std = x.std(axis=axes, keepdims=True)
    floor = np.float32(1.0 / np.sqrt(np.prod(x.shape[1:])))
    return ((x - mean) / np.maximum(std, floor)).astype(np.float32, copy=False)


class Embedder:
    """A loaded encoder with a compiled inference function.

    ``model_id`` names the weights and the embedding recipe (flip averaging), so stored
    embeddings are recomputed whenever either changes.
    """

    def __init__(self, model, model_id: str, batch_size: int, flip_average: bool):
        from common.quiet import import_tensorflow

        tf = import_tensorflow()
        self.model = model
        self.batch_size = int(batch_size)
        self.flip_average = bool(flip_average)
        self.model_id = f"{model_id}+flip" if self.flip_average else model_id
        self.input_size = int(model.input_shape[1])
        self.dim = int(model.output_shape[-1])
        spec = tf.TensorSpec((None, self.input_size, self.input_size, 3), tf.float32)
        self._infer = tf.function(lambda x: model(x, training=False), input_signature=[spec])

    @classmethod
    def from_config(cls, cfg: Config) -> Embedder:
        """The active model of ``cfg`` (pretrained, or a fine-tuned version), ready to embed."""
        from model.versions import resolve_active
        from model.weights import load_model

        if cfg.weights is not None and cfg.model_version != "pretrained":
            log.warning(
                "--weights/ATTENDANCE_WEIGHTS is ignored: the active model is the fine-tuned "
                "version %s (attendance model use pretrained to go back)",
                cfg.model_version,
            )
        path, model_id = resolve_active(cfg)
        log.info("loading FaceNet weights %s (%s)", Path(path).name, model_id)
        return cls(load_model(Path(path)), model_id, cfg.embed_batch, cfg.flip_average)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """Embeddings (N, dim), unit norm, of uint8 RGB crops (N, size, size, 3)."""
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        if crops.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(
                f"crops must be (N, {self.input_size}, {self.input_size}, 3), got {crops.shape}"
            )
        out = []
        for start in range(0, len(crops), self.batch_size):
            x = prewhiten(crops[start : start + self.batch_size])
            if self.flip_average:
                n = len(x)
                both = self._infer(np.concatenate([x, x[:, :, ::-1]])).numpy()
                out.append(both[:n] + both[n:])
            else:
                out.append(self._infer(x).numpy())
        return l2_normalize(np.concatenate(out))
