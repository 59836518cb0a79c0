"""The FaceNet encoder: architecture, pretrained weights, embedding, evaluation, training."""

import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
