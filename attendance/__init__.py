"""Shared pieces of facenet-attendance: configuration, safe paths, CLI, sample data."""

import os as _os

# TensorFlow's C++ start-up chatter is noise for users; real errors still surface.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
