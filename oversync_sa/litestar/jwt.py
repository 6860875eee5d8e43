"""A ready JWT authentication for sync routes, for hosts without their own auth.

``Authorization: Bearer <jwt>`` is checked with pyjwt against exactly one configured algorithm
(HS256 with a shared secret, or RS256 with a public key), so ``alg=none`` and algorithm
confusion are refused. A valid token's trimmed ``sub`` becomes ``scope["user"]``, which
:func:`oversync_sa.litestar.actor.scope_user_id` reads.

Failures are ``401 authentication_failed`` JSON bodies; ``plain_text_errors=True`` gives the Go
example server's plain-text answers instead (SERVER.md §10.2).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final, Literal

import jwt as pyjwt
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from oversync_sa.errors import AuthenticationFailedError
from oversync_sa.litestar.responses import JSON_MEDIA_TYPE, encode_json, send_raw_response

__all__ = [
    "EXAMPLE_ISSUER",
    "JWTAuthMiddleware",
    "JWTConfig",
    "TokenError",
    "issue_token",
    "verify_token",
]

_log = logging.getLogger(__name__)

#: The ``iss`` claim of the example server's demo tokens.
EXAMPLE_ISSUER: Final = "go-oversync-examples"

_MISSING_HEADER = "Authorization header required"
_MALFORMED_HEADER = "Invalid authorization header format"
_INVALID_TOKEN = "Invalid token"


@dataclass(frozen=True, slots=True)
class JWTConfig:
    """How tokens are verified.

    ``key`` is the HS256 secret or the RS256 public key (PEM). ``issuer`` is enforced when set.
    ``leeway`` (seconds) absorbs clock skew on ``exp``/``nbf``/``iat``.
    """

    key: str | bytes
    algorithm: Literal["HS256", "RS256"] = "HS256"
    issuer: str | None = None
    leeway: float = 0.0
    plain_text_errors: bool = False
    required_claims: tuple[str, ...] = field(default=("sub", "exp"))


class TokenError(ValueError):
    """The token is not acceptable; the message is for logs, never for the client."""


def verify_token(token: str, config: JWTConfig) -> str:
    """The trimmed ``sub`` of a valid token, or :class:`TokenError`."""
    return _verify(token, config)[0]


def _verify(token: str, config: JWTConfig) -> tuple[str, int | None]:
    """:func:`verify_token`'s subject, and the token's ``exp`` (``None`` without one)."""
    options: pyjwt.types.Options = {"require": list(config.required_claims)}
    try:
        claims = pyjwt.decode(
            token,
            config.key,
            algorithms=[config.algorithm],
            issuer=config.issuer,
            leeway=config.leeway,
            options=options,
        )
    except pyjwt.PyJWTError as exc:
        raise TokenError(str(exc)) from None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject.strip():
        raise TokenError("token has no subject")
    expires = claims.get("exp")
    # pyjwt compared int(exp) (and refused a value int() cannot take), so the cache does too.
    return subject.strip(), None if expires is None else int(expires)


class _VerifiedTokens:
    """Tokens that verified, with their subject and expiry; least recently used out first.

    A device sends the same token with every request until it expires, and checking its
    signature and claims again (pyjwt) was about 7 % of a server worker's CPU under load. A hit
    needs the exact token text that verified, and only the expiry can change its verdict with
    time (``nbf``/``iat`` were already in the past), so a hit re-checks ``exp`` alone, with
    pyjwt's rule (``exp > now - leeway``).
    """

    __slots__ = ("_entries", "_leeway", "_limit")

    def __init__(self, leeway: float | timedelta, limit: int = 4096) -> None:
        self._entries: OrderedDict[str, tuple[str, int | None]] = OrderedDict()
        # pyjwt takes a timedelta too, and a JWTConfig may carry one.
        self._leeway = leeway.total_seconds() if isinstance(leeway, timedelta) else float(leeway)
        self._limit = limit

    def subject(self, token: str) -> str | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        subject, expires = entry
        if expires is not None and expires <= time.time() - self._leeway:
            del self._entries[token]
            return None
        self._entries.move_to_end(token)
        return subject

    def add(self, token: str, subject: str, expires: int | None) -> None:
        self._entries[token] = (subject, expires)
        if len(self._entries) > self._limit:
            self._entries.popitem(last=False)


def issue_token(
    user_id: str,
    key: str | bytes,
    *,
    ttl_seconds: int = 300,
    issuer: str = EXAMPLE_ISSUER,
    algorithm: Literal["HS256", "RS256"] = "HS256",
    now: float | None = None,
) -> str:
    """A token like the example server's ``/dummy-signin`` issues (``sub``, ``iss``, ``iat``,
    ``nbf``, ``exp``). For examples and tests; ``key`` is the secret or the RS256 private key.
    """
    issued = int(time.time() if now is None else now)
    claims = {
        "sub": user_id.strip(),
        "iss": issuer,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_seconds,
    }
    return pyjwt.encode(claims, key, algorithm=algorithm)


class JWTAuthMiddleware(ASGIMiddleware):
    """Checks the bearer token of every HTTP request it sees; ``OPTIONS`` passes untouched.

    Mount it on the sync router only, so ``/syncx/*`` and other routes stay open.
    """

    scopes = (ScopeType.HTTP,)

    def __init__(self, config: JWTConfig) -> None:
        self._config = config
        self._verified = _VerifiedTokens(config.leeway)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if scope.get("method") == "OPTIONS":
            await next_app(scope, receive, send)
            return
        header = _header(scope, b"authorization")
        if header is None:
            await self._reject(send, _MISSING_HEADER)
            return
        parts = header.split(" ")
        if len(parts) != 2 or parts[0] != "Bearer":
            await self._reject(send, _MALFORMED_HEADER)
            return
        token = parts[1]
        subject = self._verified.subject(token)
        if subject is None:
            try:
                subject, expires = _verify(token, self._config)
            except TokenError as exc:
                _log.debug("rejected bearer token: %s", exc)
                await self._reject(send, _INVALID_TOKEN)
                return
            self._verified.add(token, subject, expires)
        scope["user"] = subject
        await next_app(scope, receive, send)

    async def _reject(self, send: Send, message: str) -> None:
        if self._config.plain_text_errors:
            # Go's http.Error: the text plus a newline, and a content type that is not sniffed.
            await send_raw_response(
                send,
                401,
                f"{message}\n".encode(),
                "text/plain; charset=utf-8",
                extra_headers=((b"x-content-type-options", b"nosniff"),),
            )
            return
        body = encode_json(AuthenticationFailedError(message).to_body())
        await send_raw_response(send, 401, body, JSON_MEDIA_TYPE)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            text = value.decode("latin-1").strip()
            return text or None
    return None
