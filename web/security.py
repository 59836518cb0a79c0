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
    """Failed sign-ins per key (a user name, a client address) in a sliding window.

    In memory, per server process: a restart forgets the failures (documented in README).
    """

    def __init__(
        self, attempts: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.attempts = attempts
        self.window = window
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def retry_after(self, *keys: str) -> float:
        """Seconds until any of ``keys`` may try again (0 = now)."""
        now = self._clock()
        wait = 0.0
        with self._lock:
            for key in keys:
                times = self._recent(key, now)
                if len(times) >= self.attempts:
                    wait = max(wait, times[-self.attempts] + self.window - now)
                if not times:
                    self._failures.pop(key, None)
        return wait

    def failed(self, *keys: str) -> None:
        now = self._clock()
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)

    def succeeded(self, key: str) -> None:
        """Forget a user name's failures (not the address's: one success does not lift them)."""
        with self._lock:
            self._failures.pop(key, None)
