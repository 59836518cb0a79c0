"""URLs that may carry a password (camera streams, the PostgreSQL store): shown only redacted."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe for logs and error messages)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # an unparsable netloc (bad port, brackets): show no credentials at all
        head, sep, tail = url.partition("://")
        return f"{head}{sep}***@{tail.rpartition('@')[2]}" if "@" in tail else url
    if password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port:
        host = f"{host}:{port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else f":***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))
