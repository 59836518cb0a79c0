"""URLs that may carry a password (camera streams, the PostgreSQL store): shown only redacted."""

from __future__ import annotations

import re

# a password given as a query parameter (libpq accepts ?password=...), up to the next & or #
_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&#]*")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe for logs and error messages): the
    one in the user part (the hosts are kept as written, several or malformed), and a
    ``password=`` query parameter."""
    url = _QUERY_PASSWORD.sub(r"\1***", url)
    head, sep, rest = url.partition("://")
    if not sep:
        return url
    # libpq ends the user and host part at the first "/" only: "?" and "#" may be in a password
    end = rest.find("/") if "/" in rest else len(rest)
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, hosts = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{head}{sep}{userinfo.split(':', 1)[0]}:***@{hosts}{tail}"
