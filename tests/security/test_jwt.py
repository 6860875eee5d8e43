"""Bearer tokens (``oversync_sa/litestar/jwt.py``): every bad token is ``401
authentication_failed`` before any database work, for an HS256 and for an RS256 configuration.

The service behind the app is never bootstrapped and its engine points nowhere, so an answer
other than 401 for a bad token would have to come from a route that skipped authentication.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any, Final

import httpx
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.ext.asyncio import create_async_engine

from oversync_sa.litestar import JWTConfig, issue_token
from oversync_sa.server import ServiceConfig, SyncService
from tests.http.http_support import SECRET, SOURCE, app_client, make_app

Client = httpx.AsyncClient

#: One route needing an actor; each refusal is also checked on connect and capabilities
#: (tests/http/test_http_auth.py runs the HS256 basics over every route).
PROBE: Final = "/sync/pull"


def _rsa_pair() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


PRIVATE, PUBLIC = _rsa_pair()
OTHER_PRIVATE, _ = _rsa_pair()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_signed_hs256(claims: dict[str, Any], key: bytes) -> str:
    """An HS256 token signed with ``key`` by hand: pyjwt refuses to use a PEM as an HMAC
    secret, which is exactly the algorithm-confusion forgery an attacker would build."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = hmac.new(key, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "iat": now, "nbf": now, "exp": now + 300, **overrides}


def _tampered(token: str) -> str:
    """The same signature over a payload naming another user."""
    header, _, signature = token.split(".")
    return f"{header}.{_b64(json.dumps(_claims(sub='mallory')).encode())}.{signature}"


def _offline_service() -> SyncService:
    engine = create_async_engine("postgresql+asyncpg://unused@127.0.0.1:1/none")
    return SyncService(engine, ServiceConfig())


@pytest.fixture
async def hs256() -> AsyncIterator[Client]:
    async with app_client(make_app(_offline_service())) as client:
        yield client


@pytest.fixture
async def rs256() -> AsyncIterator[Client]:
    app = make_app(_offline_service(), jwt=JWTConfig(key=PUBLIC, algorithm="RS256"))
    async with app_client(app) as client:
        yield client


@pytest.fixture
async def with_issuer() -> AsyncIterator[Client]:
    app = make_app(_offline_service(), jwt=JWTConfig(key=SECRET, issuer="trusted-issuer"))
    async with app_client(app) as client:
        yield client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Oversync-Source-ID": SOURCE}


async def _assert_refused(client: Client, request_headers: dict[str, str], message: str) -> None:
    for method, path in (("GET", PROBE), ("POST", "/sync/connect"),
                         ("GET", "/sync/capabilities")):
        resp = await client.request(method, path, headers=request_headers)
        assert resp.status_code == 401, (method, path, resp.text)
        assert resp.json() == {"error": "authentication_failed", "message": message}


HS256_REFUSED: Final = [
    ("forged-signature", _tampered(issue_token("alice", SECRET))),
    ("other-secret", issue_token("alice", "another-secret-of-at-least-32-bytes")),
    ("expired", issue_token("alice", SECRET, now=time.time() - 3600)),
    ("not-yet-valid", pyjwt.encode(_claims(nbf=int(time.time()) + 3600), SECRET)),
    ("alg-none", pyjwt.encode(_claims(), None, algorithm="none")),
    ("alg-none-with-signature", pyjwt.encode(_claims(), None, algorithm="none") + "c2ln"),
    ("rs256-token", issue_token("alice", PRIVATE, algorithm="RS256")),
    ("hs512", pyjwt.encode(_claims(), SECRET * 2, algorithm="HS512")),
    ("missing-sub", pyjwt.encode({k: v for k, v in _claims().items() if k != "sub"}, SECRET)),
    ("blank-sub", pyjwt.encode(_claims(sub="  "), SECRET)),
    ("missing-exp", pyjwt.encode({k: v for k, v in _claims().items() if k != "exp"}, SECRET)),
    ("not-a-jwt", "abc.def.ghi"),
    ("truncated", issue_token("alice", SECRET).rsplit(".", 1)[0]),
]


@pytest.mark.parametrize("token", [pytest.param(t, id=case) for case, t in HS256_REFUSED])
async def test_hs256_config_refuses(hs256: Client, token: str) -> None:
    await _assert_refused(hs256, _bearer(token), "Invalid token")


async def test_numeric_sub_is_refused(hs256: Client) -> None:
    # pyjwt will not encode a non-string sub, so the token is signed by hand.
    token = _hand_signed_hs256(_claims(sub=42), SECRET.encode())
    await _assert_refused(hs256, _bearer(token), "Invalid token")


RS256_REFUSED: Final = [
    ("forged-signature", _tampered(issue_token("alice", PRIVATE, algorithm="RS256"))),
    ("other-private-key", issue_token("alice", OTHER_PRIVATE, algorithm="RS256")),
    ("expired", issue_token("alice", PRIVATE, algorithm="RS256", now=time.time() - 3600)),
    ("alg-none", pyjwt.encode(_claims(), None, algorithm="none")),
    ("hs256-with-shared-secret", issue_token("alice", SECRET)),
    # Algorithm confusion: HMAC keyed with the server's *public* key, which anyone may know.
    ("hs256-keyed-with-public-key", _hand_signed_hs256(_claims(), PUBLIC)),
]


@pytest.mark.parametrize("token", [pytest.param(t, id=case) for case, t in RS256_REFUSED])
async def test_rs256_config_refuses(rs256: Client, token: str) -> None:
    await _assert_refused(rs256, _bearer(token), "Invalid token")


async def test_valid_tokens_pass(hs256: Client, rs256: Client) -> None:
    """The refusals above are about the tokens: a good token of each kind gets through."""
    for client, token in ((hs256, issue_token("alice", SECRET)),
                          (rs256, issue_token("alice", PRIVATE, algorithm="RS256"))):
        resp = await client.get("/sync/capabilities", headers=_bearer(token))
        assert resp.status_code == 200, resp.text
        assert "features" in resp.json()


async def test_issuer_is_enforced_when_configured(with_issuer: Client) -> None:
    wrong = issue_token("alice", SECRET, issuer="someone-else")
    await _assert_refused(with_issuer, _bearer(wrong), "Invalid token")
    right = issue_token("alice", SECRET, issuer="trusted-issuer")
    assert (await with_issuer.get("/sync/capabilities", headers=_bearer(right))).status_code == 200


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "Authorization header required"),
        ("", "Authorization header required"),
        ("Bearer", "Invalid authorization header format"),
        ("bearer " + issue_token("alice", SECRET), "Invalid authorization header format"),
        ("Basic YWxpY2U6c2VjcmV0", "Invalid authorization header format"),
        ("Bearer  " + issue_token("alice", SECRET), "Invalid authorization header format"),
        ("Bearer a b", "Invalid authorization header format"),
        (issue_token("alice", SECRET), "Invalid authorization header format"),
    ],
    ids=["missing", "empty", "scheme-only", "lowercase-scheme", "basic", "double-space",
         "three-parts", "no-scheme"],
)
async def test_missing_or_malformed_header(
    hs256: Client, authorization: str | None, message: str
) -> None:
    request_headers = {"Oversync-Source-ID": SOURCE}
    if authorization is not None:
        request_headers["Authorization"] = authorization
    await _assert_refused(hs256, request_headers, message)


async def test_valid_token_without_source_header_is_400(hs256: Client) -> None:
    resp = await hs256.get(PROBE, headers={"Authorization": f"Bearer {issue_token('a', SECRET)}"})
    assert resp.status_code == 400
    assert resp.json() == {
        "error": "invalid_request", "message": "Oversync-Source-ID header is required"
    }
