"""Passwords, sessions, API tokens, CSRF tokens and the sign-in rate limit (no web framework).

- Passwords are hashed with Argon2id (``argon2-cffi``'s defaults, re-hashed when they change);
  an unknown user name costs the same hash check as a wrong password.
- Session cookies and API tokens are 256-bit random strings; the store keeps only their
  SHA-256 (a stolen database holds no usable credential).
- A session has its own random CSRF token, sent back in forms (``csrf_token``) and by scripts
  in the ``X-CSRF-Token`` header; compared in constant time.
- :class:`LoginLimiter` refuses further sign-in attempts for a user name or a client address
  after ``attempts`` failures within ``window`` seconds, before any password is checked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from common.errors import UserError
from store.records import ROLES, ApiToken, Session, User

TOKEN_PREFIX = "att_"  # API tokens start with this, so a leaked one is recognisable
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024  # Argon2 takes any length; this only bounds the work per request

_hasher = PasswordHasher()
# a real hash of a random password: verifying against it costs what a real check costs
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class PasswordError(UserError, ValueError):
    """A password that may not be used."""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso(when: dt.datetime) -> str:
    """The store's timestamp format: ISO-8601 UTC to the second (string order = time order)."""
    return when.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


def sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def check_password_rules(password: str) -> str:
    """``password`` if it may be used, else :class:`PasswordError` saying what to change."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordError(f"the password must have at most {MAX_PASSWORD_LENGTH} characters")
    return password


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UserError(f"role {role!r} is not one of {', '.join(ROLES)}")
    return role


def new_user(name: str, password: str, role: str) -> User:
    """A user record with the password hashed (Argon2id)."""
    check_password_rules(password)
    return User(
        name=name,
        role=check_role(role),
        password_hash=_hasher.hash(password),
        created=iso(utc_now()),
    )


def verify_password(user: User | None, password: str) -> bool:
    """Whether ``password`` is ``user``'s; an unknown user costs one hash check too."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        return _hasher.verify(user.password_hash if user else _DUMMY_HASH, password) and (
            user is not None
        )
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(user: User) -> bool:
    """Whether the stored hash uses weaker parameters than today's defaults."""
    try:
        return _hasher.check_needs_rehash(user.password_hash)
    except InvalidHashError:
        return False


def rehashed(user: User, password: str) -> User:
    return User(user.name, user.role, _hasher.hash(password), user.created)


def new_session(user: str, hours: float) -> tuple[str, Session]:
    """``(cookie value, record)``: the record holds the cookie's SHA-256 and a CSRF token."""
    token = secrets.token_urlsafe(32)
    now = utc_now()
    record = Session(
        token_sha256=sha256_hex(token),
        user=user,
        csrf=secrets.token_urlsafe(32),
        created=iso(now),
        expires=iso(now + dt.timedelta(hours=hours)),
    )
    return token, record


def new_api_token(name: str, role: str) -> tuple[str, ApiToken]:
    """``(token, record)``: the token is shown once; the record holds its SHA-256."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, ApiToken(
        name=name, token_sha256=sha256_hex(token), role=check_role(role), created=iso(utc_now())
    )


def same_secret(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a submitted CSRF token with the session's."""
    return bool(given) and hmac.compare_digest(str(given).encode(), expected.encode())


def new_csrf() -> str:
    return secrets.token_urlsafe(32)


class LoginLimiter:
    """Sign-in attempts per key in a sliding window, counted *before* the password is checked
    (so a burst of simultaneous attempts cannot slip past the limit).

    Keys and their limits: a user name from one address (``attempts``), and, more loosely
    (``spread`` times as many), a user name from anywhere and an address for any user name.
    A correct password takes back that attempt and clears the user's own failures. In memory,
    per server process: a restart forgets them (documented in README).
    """

    def __init__(
        self,
        attempts: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
        spread: int = 4,
    ) -> None:
        self.attempts = attempts
        self.window = window
        self.spread = spread
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def keys(self, user: str, address: str) -> list[tuple[str, int]]:
        """The keys of one attempt, with their limits."""
        user = user.strip().casefold()
        loose = self.attempts * self.spread
        return [(f"pair:{user}|{address}", self.attempts), (f"user:{user}", loose),
                (f"addr:{address}", loose)]  # fmt: skip

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def attempt(self, keys: list[tuple[str, int]]) -> float:
        """Count an attempt under every key, or (none counted) the seconds to wait first."""
        now = self._clock()
        with self._lock:
            wait = 0.0
            for key, limit in keys:
                times = self._recent(key, now)
                if len(times) >= limit:
                    wait = max(wait, times[-limit] + self.window - now)
            if wait > 0:
                return wait
            for key, _ in keys:
                self._failures[key].append(now)
            return 0.0

    def succeeded(self, keys: list[tuple[str, int]]) -> None:
        """The password was right: take this attempt back and forget the user's failures."""
        with self._lock:
            for key, _ in keys:
                times = self._failures.get(key)
                if key.startswith(("pair:", "user:")) or not times:
                    self._failures.pop(key, None)
                else:
                    times.pop()
