"""Embed a folder of identity subfolders and evaluate the model on it.

Modules, lowest first (each imports only the ones above it):

* :mod:`~model.evaluation.dataset` — finding the photos of a dataset folder and splitting them
  into gallery and probes;
* :mod:`~model.evaluation.crops` — detecting and aligning each photo's largest face, once;
* :mod:`~model.evaluation.embedded` — embedding the crops, and the npz of ``attendance embed``;
* :mod:`~model.evaluation.report` — the figures of each variant as a text table or JSON;
* :mod:`~model.evaluation.calibration` — the threshold for a target false accept rate, written
  to ``attendance.toml``;
* :mod:`~model.evaluation.plots` — ROC and distance histogram PNGs;
* :mod:`~model.evaluation.run` — ``attendance evaluate``: all of the above on one folder.

The metric maths itself is :mod:`model.metrics`.
"""

from __future__ import annotations

from common.errors import UserError


class EvaluationError(UserError):
    """The folder cannot be embedded or evaluated (missing, empty, too few identities)."""
