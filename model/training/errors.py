"""The one error of training: :class:`TrainError`, a :class:`~common.errors.UserError` raised
when training cannot run on this data or with these settings, so the command line reports it
as a message (exit status 2) instead of a traceback."""

from __future__ import annotations

from common.errors import UserError


class TrainError(UserError):
    """Training cannot run on this data or with these settings."""
