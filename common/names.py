"""Identity names: validation, and the only way a user's name becomes a path."""

from __future__ import annotations

import unicodedata
from pathlib import Path

from common.errors import UserError

MAX_NAME_LENGTH = 100
MAX_NAME_BYTES = 240  # UTF-8 bytes: the folder name, with room for suffixes of temp folders
_FORBIDDEN = set('/\\:*?"<>|')


class InvalidName(UserError, ValueError):
    """A person's name cannot be used as an identity."""


def validate_name(raw: str) -> str:
    """Return the canonical (NFC, trimmed) identity for ``raw`` or raise :class:`InvalidName`.

    Unicode letters, digits, spaces, ``-``, ``_``, ``.``, ``'`` are welcome ("José Álvarez").
    Empty, hidden (leading dot), path-like or control-character names are refused.
    """
    name = unicodedata.normalize("NFC", raw or "").strip()
    if not name:
        raise InvalidName("the name is empty; type the person's name, e.g. 'Ada Lovelace'")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"the name {name[:20]!r}... is longer than {MAX_NAME_LENGTH} characters")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:  # a folder name: 255 bytes on Linux
        raise InvalidName(
            f"the name {name[:20]!r}... is too long for a folder name "
            f"({len(name.encode('utf-8'))} bytes, at most {MAX_NAME_BYTES}); shorten it"
        )
    if name.startswith("."):
        raise InvalidName(f"the name {name!r} starts with a dot (hidden); remove the dot")
    if name in (".", ".."):
        raise InvalidName(f"the name {name!r} is not allowed")
    bad = sorted({ch for ch in name if ch in _FORBIDDEN or unicodedata.category(ch)[0] == "C"})
    if bad:
        shown = ", ".join(repr(ch) for ch in bad)
        raise InvalidName(f"the name {name!r} contains {shown}; use letters, digits and spaces")
    return name


def person_dir(base: Path, raw_name: str) -> Path:
    """The folder of identity ``raw_name`` under ``base``, guaranteed to stay inside ``base``."""
    name = validate_name(raw_name)
    base = Path(base)
    path = base / name
    if path.resolve().parent != base.resolve():
        raise InvalidName(f"the name {name!r} would leave {base}; choose another name")
    return path


def list_identities(base: Path) -> list[str]:
    """Sorted valid identity folders under ``base`` (invalid ones are skipped by the caller)."""
    base = Path(base)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir())
