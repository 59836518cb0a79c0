"""The base of every expected failure: the CLI prints its message as one line, no traceback."""


class UserError(Exception):
    """Bad input or environment that the user can fix; the message says what to do."""
