"""``attendance token``: API tokens (see :mod:`attendance.user_cli`)."""

from attendance.user_cli import TOKEN_HELP as HELP
from attendance.user_cli import configure_tokens as configure
from attendance.user_cli import run_tokens as run

__all__ = ["HELP", "configure", "run"]
