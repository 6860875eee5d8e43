"""Bearer-token verification: every rejection of SERVER.md §10.2 and algorithm pinning."""

from __future__ import annotations

import time

import jwt as pyjwt
import pytest

from oversync_sa.litestar.jwt import (
    EXAMPLE_ISSUER,
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
