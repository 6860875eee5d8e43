"""Bearer-token verification: every rejection of SERVER.md §10.2, algorithm pinning, and the
middleware's memory of tokens that verified."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt as pyjwt
import pytest
from litestar import Litestar, Request, get
from litestar.testing import TestClient

from oversync_sa.litestar import jwt as jwt_module
from oversync_sa.litestar.jwt import (
    EXAMPLE_ISSUER,
    JWTAuthMiddleware,
    JWTConfig,
    TokenError,
    issue_token,
    verify_token,
)

SECRET = "test-secret-of-sufficient-length-32b"
HS = JWTConfig(key=SECRET, issuer=EXAMPLE_ISSUER)


def _claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {"sub": "user-1", "iss": EXAMPLE_ISSUER, "iat": now, "nbf": now,
                                 "exp": now + 60}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def test_issued_token_verifies_with_example_claims() -> None:
    token = issue_token(" user-1 ", SECRET)
    claims = pyjwt.decode(token, SECRET, algorithms=["HS256"])
    assert set(claims) == {"sub", "iss", "iat", "nbf", "exp"}
    assert claims["exp"] - claims["iat"] == 300
    assert verify_token(token, HS) == "user-1"


def test_subject_is_trimmed() -> None:
    assert verify_token(pyjwt.encode(_claims(sub="  u  "), SECRET), HS) == "u"


@pytest.mark.parametrize(
    "claims",
    [
        _claims(exp=int(time.time()) - 10),
        _claims(nbf=int(time.time()) + 600),
        _claims(sub="   "),
        _claims(sub=None),
        _claims(exp=None),
        _claims(iss="someone-else"),
    ],
    ids=["expired", "not-yet-valid", "blank-sub", "no-sub", "no-exp", "wrong-issuer"],
)
def test_bad_claims_are_rejected(claims: dict[str, object]) -> None:
    with pytest.raises(TokenError):
        verify_token(pyjwt.encode(claims, SECRET), HS)


def test_bad_signature_is_rejected() -> None:
    with pytest.raises(TokenError):
        verify_token(pyjwt.encode(_claims(), "another-secret-of-sufficient-len"), HS)


def test_alg_none_is_rejected() -> None:
    with pytest.raises(TokenError):
        verify_token(pyjwt.encode(_claims(), None, algorithm="none"), HS)


def test_other_hmac_algorithm_is_rejected() -> None:
    with pytest.raises(TokenError):
        verify_token(pyjwt.encode(_claims(), SECRET, algorithm="HS512"), HS)


def test_garbage_is_rejected() -> None:
    with pytest.raises(TokenError):
        verify_token("not.a.jwt", HS)


def test_leeway_accepts_slightly_expired_token() -> None:
    token = pyjwt.encode(_claims(exp=int(time.time()) - 5), SECRET)
    assert verify_token(token, JWTConfig(key=SECRET, leeway=30)) == "user-1"


def test_rs256_verifies_and_refuses_hs256_confusion() -> None:
    # RS256 needs pyjwt's optional ``cryptography`` dependency (``pyjwt[crypto]``).
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    config = JWTConfig(key=public_pem, algorithm="RS256")
    assert verify_token(issue_token("u", private_pem, algorithm="RS256"), config) == "u"
    with pytest.raises(TokenError):
        verify_token(pyjwt.encode(_claims(), SECRET), config)


# ---------------------------------------------------------------- the middleware's verified tokens

@get("/whoami")
async def _whoami(request: Request[Any, Any, Any]) -> str:
    return str(request.scope.get("user"))


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token pyjwt is asked to verify, in order."""
    seen: list[str] = []
    real = pyjwt.decode

    def decode(token: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(jwt_module.pyjwt, "decode", decode)
    return seen


def _client(config: JWTConfig = HS) -> TestClient[Litestar]:
    return TestClient(Litestar([_whoami], middleware=[JWTAuthMiddleware(config)]))


def _get(client: TestClient[Litestar], token: str) -> tuple[int, str]:
    response = client.get("/whoami", headers={"Authorization": f"Bearer {token}"})
    return response.status_code, response.text


def test_a_verified_token_is_not_verified_again(counted: list[str]) -> None:
    token = pyjwt.encode(_claims(sub=" u1 "), SECRET)
    with _client() as client:
        assert _get(client, token) == (200, "u1")
        assert _get(client, token) == (200, "u1")
    assert counted == [token]


def test_a_rejected_token_is_checked_every_time(counted: list[str]) -> None:
    forged = pyjwt.encode(_claims(), "another-secret-of-sufficient-length")
    with _client() as client:
        assert _get(client, forged)[0] == 401
        assert _get(client, forged)[0] == 401
    assert counted == [forged, forged]


def test_a_remembered_token_is_refused_once_it_expires(
    counted: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    now = int(time.time())
    token = pyjwt.encode(_claims(exp=now + 30), SECRET)
    with _client(JWTConfig(key=SECRET, issuer=EXAMPLE_ISSUER, leeway=5)) as client:
        assert _get(client, token)[0] == 200
        monkeypatch.setattr(jwt_module.time, "time", lambda: now + 34.5)  # inside the leeway
        assert _get(client, token)[0] == 200
        assert counted == [token]
        monkeypatch.setattr(jwt_module.time, "time", lambda: now + 35.0)
        monkeypatch.setattr(pyjwt.api_jwt, "datetime", _frozen_datetime(now + 35))
        assert _get(client, token)[0] == 401
    assert counted == [token, token]  # forgotten, then refused by pyjwt itself


def test_a_timedelta_leeway_works_for_remembered_tokens(counted: list[str]) -> None:
    token = pyjwt.encode(_claims(), SECRET)
    config = JWTConfig(key=SECRET, issuer=EXAMPLE_ISSUER, leeway=timedelta(seconds=5))  # type: ignore[arg-type]
    with _client(config) as client:
        assert _get(client, token) == (200, "user-1")
        assert _get(client, token) == (200, "user-1")
    assert counted == [token]


def _frozen_datetime(at: float) -> Any:
    class Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return datetime.fromtimestamp(at, tz=UTC)

    return Frozen


def test_the_least_recently_used_token_is_forgotten_first() -> None:
    remembered = jwt_module._VerifiedTokens(leeway=0, limit=2)
    remembered.add("a", "ua", None)
    remembered.add("b", "ub", None)
    assert remembered.subject("a") == "ua"  # now b is the oldest
    remembered.add("c", "uc", None)
    assert remembered.subject("b") is None
    assert (remembered.subject("a"), remembered.subject("c")) == ("ua", "uc")
