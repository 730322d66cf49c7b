"""JwtVerifier against a real local JWKS endpoint: claims, algorithms, key rotation, caching."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import jwt
import pytest

from chat_service.errors import Unauthenticated
from chat_service.services.jwt_tokens import JwtIdentity, JwtVerifier, looks_like_jwt
from tests.jwks_server import JwksServer

SECRET = "test-hs256-secret-that-is-long-enough-0123456789"
ISSUER = "https://idp.example.com/"
AUDIENCE = "chat-service"

MakeVerifier = Callable[..., JwtVerifier]


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims; an override of None leaves that claim out."""
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "tenant": "acme", "role": "agent"}
    merged = {**base, "iat": now, "exp": now + 300, **overrides}
    return {name: value for name, value in merged.items() if value is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(payload: dict[str, Any], secret: str | bytes, **header: Any) -> str:
    """An HS256 token signed by hand, so that any key (even a PEM) can be the secret."""
    key = secret.encode() if isinstance(secret, str) else secret
    segments = [{"alg": "HS256", "typ": "JWT", **header}, payload]
    signing_input = ".".join(b64(json.dumps(segment).encode()) for segment in segments)
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


async def rejected(verifier: JwtVerifier, token: str) -> str:
    """The detail of the Unauthenticated that ``token`` gets; it never quotes the token."""
    with pytest.raises(Unauthenticated) as caught:
        await verifier.verify(token)
    detail = caught.value.detail
    assert detail
    for segment in token.split("."):
        assert len(segment) < 8 or segment not in detail
    return detail


@pytest.fixture
async def idp() -> AsyncIterator[JwksServer]:
    async with JwksServer() as server:
        yield server


@pytest.fixture
async def make_verifier(idp: JwksServer) -> AsyncIterator[MakeVerifier]:
    made: list[JwtVerifier] = []

    def make(**overrides: Any) -> JwtVerifier:
        options: dict[str, Any] = {
            "algorithms": ["HS256", "RS256", "ES256"],
            "secret": SECRET,
            "jwks_url": idp.url,
            "issuer": ISSUER,
            "audience": AUDIENCE,
        }
        made.append(JwtVerifier(**{**options, **overrides}))
        return made[-1]

    yield make
    for verifier in made:
        await verifier.aclose()


# -- HS256 and claims ------------------------------------------------------------------------


async def test_hs256_token_gives_identity(make_verifier: MakeVerifier, idp: JwksServer) -> None:
    verifier = make_verifier()
    library_signed = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert await verifier.verify(library_signed) == JwtIdentity("acme", "agent", "user-1")
    # The hand-signing helper used for the algorithm-confusion test makes valid tokens too.
    assert await verifier.verify(hs256(claims(role="admin"), SECRET)) == JwtIdentity(
        "acme", "admin", "user-1"
    )
    assert idp.fetches == 0  # HS256 never needs the JWKS


async def test_configured_claim_names_are_used(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier(
        tenant_claim="https://example.com/tenant",
        role_claim="https://example.com/role",
        subject_claim="oid",
    )
    payload = claims(
        tenant="wrong", role="wrong", sub="wrong", oid="object-7",
        **{"https://example.com/tenant": 42, "https://example.com/role": "admin"},
    )  # fmt: skip
    token = jwt.encode(payload, SECRET, algorithm="HS256")
    assert await verifier.verify(token) == JwtIdentity(
        tenant="42", role="admin", subject="object-7"
    )
    token = jwt.encode(claims(oid="object-7"), SECRET, algorithm="HS256")
    assert (
        await rejected(verifier, token) == "token has no valid 'https://example.com/tenant' claim"
    )


async def test_issuer_and_audience_are_optional(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier(issuer="", audience="")
    token = jwt.encode(claims(iss="https://other.example/", aud=None), SECRET, algorithm="HS256")
    assert (await verifier.verify(token)).subject == "user-1"


async def test_leeway_accepts_small_clock_skew(make_verifier: MakeVerifier) -> None:
    now = int(time.time())
    late = jwt.encode(claims(exp=now - 10), SECRET, algorithm="HS256")
    early = jwt.encode(claims(nbf=now + 10, iat=now + 10), SECRET, algorithm="HS256")
    lenient, strict = make_verifier(leeway_seconds=30), make_verifier(leeway_seconds=0)
    assert (await lenient.verify(late)).tenant == "acme"
    assert (await lenient.verify(early)).tenant == "acme"
    assert await rejected(strict, late) == "token has expired"
    assert await rejected(strict, early) == "token is not yet valid"


@pytest.mark.parametrize(
    ("overrides", "detail"),
    [
        # Times as offsets from when the test runs (not from collection: a long run
        # would carry "120 s from now" into the past).
        ({"exp": -120}, "token has expired"),
        ({"nbf": 120}, "token is not yet valid"),
        ({"iat": 120}, "token is not yet valid"),
        ({"iss": "https://evil.example/"}, "token issuer is not accepted"),
        ({"iss": None}, "token has no 'iss' claim"),
        ({"aud": "another-service"}, "token audience is not accepted"),
        ({"aud": None}, "token has no 'aud' claim"),
        ({"exp": None}, "token has no 'exp' claim"),
        ({"exp": "tomorrow"}, "token is malformed"),
        ({"tenant": None}, "token has no valid 'tenant' claim"),
        ({"tenant": ""}, "token has no valid 'tenant' claim"),
        ({"tenant": True}, "token has no valid 'tenant' claim"),
        ({"role": None}, "token has no valid 'role' claim"),
        ({"role": " "}, "token has no valid 'role' claim"),
        ({"role": ["admin"]}, "token has no valid 'role' claim"),
        ({"sub": None}, "token has no valid 'sub' claim"),
        ({"sub": 12}, "token is not valid"),
    ],
)
async def test_invalid_claims_are_rejected(
    make_verifier: MakeVerifier, overrides: dict[str, Any], detail: str
) -> None:
    now = int(time.time())
    overrides = {
        name: now + value if name in {"exp", "nbf", "iat"} and type(value) is int else value
        for name, value in overrides.items()
    }
    token = jwt.encode(claims(**overrides), SECRET, algorithm="HS256")
    assert await rejected(make_verifier(), token) == detail


async def test_tampered_payload_is_rejected(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier()
    header, _, signature = jwt.encode(claims(), SECRET, algorithm="HS256").split(".")
    forged = f"{header}.{b64(json.dumps(claims(tenant='other')).encode())}.{signature}"
    assert await rejected(verifier, forged) == "token signature is not valid"

    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    header_end = token.index(".") + 1
    middle = header_end + 10
    flipped = "A" if token[middle] != "A" else "B"
    tampered = token[:middle] + flipped + token[middle + 1 :]
    assert await rejected(verifier, tampered) in {
        "token signature is not valid",
        "token is malformed",
    }


async def test_wrong_secret_is_rejected(make_verifier: MakeVerifier) -> None:
    token = jwt.encode(claims(), SECRET + "-but-not-quite", algorithm="HS256")
    assert await rejected(make_verifier(), token) == "token signature is not valid"


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "not a token at all", "e30.e30.e30"])
async def test_malformed_tokens_are_rejected(make_verifier: MakeVerifier, token: str) -> None:
    assert await rejected(make_verifier(), token) in {
        "token is malformed",
        "token algorithm is not accepted",
    }


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_unsigned_token_is_rejected(make_verifier: MakeVerifier, alg: str) -> None:
    header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    token = f"{header}.{b64(json.dumps(claims()).encode())}."
    assert await rejected(make_verifier(), token) == "token algorithm is not accepted"
    library_made = jwt.encode(claims(), None, algorithm="none")
    assert await rejected(make_verifier(), library_made) == "token algorithm is not accepted"


async def test_hs256_token_is_rejected_when_only_rs256_is_accepted(
    make_verifier: MakeVerifier,
) -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    verifier = make_verifier(algorithms=["RS256"], secret="")
    assert await rejected(verifier, token) == "token algorithm is not accepted"


async def test_public_key_is_never_an_hmac_secret(
    make_verifier: MakeVerifier, idp: JwksServer
) -> None:
    kid = idp.add_key("RS256")
    pem = idp.key(kid).public_pem()
    confused = hs256(claims(), pem, kid=kid)
    verifier = make_verifier(algorithms=["HS256", "RS256"])
    assert await verifier.verify(idp.sign(claims(), kid))  # the JWKS key is known
    assert await rejected(verifier, confused) == "token signature is not valid"
    assert await rejected(verifier, hs256(claims(), pem)) == "token signature is not valid"
    verifier = make_verifier(algorithms=["RS256"], secret="")
    assert await rejected(verifier, confused) == "token algorithm is not accepted"


async def test_disabled_verifier_rejects_everything(make_verifier: MakeVerifier) -> None:
    verifier = make_verifier(algorithms=[])
    assert not verifier.enabled
    assert make_verifier().enabled
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert await rejected(verifier, token) == "JWT bearer tokens are not accepted"


@pytest.mark.parametrize(
    "options",
    [
        {"algorithms": ["HS512"], "secret": SECRET},
        {"algorithms": ["none"]},
        {"algorithms": ["HS256"]},
        {"algorithms": ["RS256"]},
        {"algorithms": ["ES256"], "secret": SECRET},
    ],
)
def test_incomplete_configuration_is_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011  (the message names what is missing)
        JwtVerifier(**options)


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (jwt.encode({"a": 1}, SECRET, algorithm="HS256"), True),
        ("eyJhbGciOiJub25lIn0.e30.", True),
        ("abc.def.ghi", True),
        ("abc.def", False),
        ("abc.def.ghi.jkl", False),
        ("a+b.c/d.e", False),
        ("", False),
        ("opaque-api-token_0123456789", False),
        ("abc.def.ghi\n", False),
    ],
)
def test_looks_like_jwt(token: str, expected: bool) -> None:
    assert looks_like_jwt(token) is expected


# -- JWKS: RS256 and ES256 -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["RS256", "ES256"])
async def test_jwks_signed_token_gives_identity(
    make_verifier: MakeVerifier, idp: JwksServer, kind: Any
) -> None:
    kid = idp.add_key(kind)
    verifier = make_verifier(algorithms=[kind], secret="")
    for _ in range(3):
        identity = await verifier.verify(idp.sign(claims(), kid))
        assert identity == JwtIdentity("acme", "agent", "user-1")
    assert idp.fetches == 1
    assert await rejected(verifier, idp.sign(claims(exp=1), kid)) == "token has expired"


async def test_jwks_token_checks_algorithm_against_key(
    make_verifier: MakeVerifier, idp: JwksServer
) -> None:
    rsa_kid, ec_kid = idp.add_key("RS256"), idp.add_key("ES256")
    verifier = make_verifier(algorithms=["RS256", "ES256"])
    mislabelled = idp.sign(claims(), ec_kid, headers={"kid": rsa_kid})
    assert await rejected(verifier, mislabelled) == "token algorithm does not match its key"
    only_rsa = make_verifier(algorithms=["RS256"], secret="")
    assert await rejected(only_rsa, idp.sign(claims(), ec_kid)) == "token algorithm is not accepted"
    assert await only_rsa.verify(idp.sign(claims(), rsa_kid))


async def test_token_without_kid_needs_a_single_candidate_key(
    make_verifier: MakeVerifier, idp: JwksServer
) -> None:
    first = idp.add_key("RS256")
    idp.add_key("ES256")
    verifier = make_verifier(jwks_cache_seconds=0.0)
    assert await verifier.verify(idp.sign(claims(), first, with_kid=False))
    idp.add_key("RS256")
    token = idp.sign(claims(), first, with_kid=False)
    assert await rejected(verifier, token) == "token has no key id"


async def test_unusable_jwks_entries_are_skipped(
    make_verifier: MakeVerifier, idp: JwksServer
) -> None:
    idp.add_raw({"kty": "RSA", "kid": "broken", "n": "!!!", "e": "AQAB"})
    idp.add_raw({"kty": "EC", "kid": "odd-curve", "crv": "P-999", "x": "AA", "y": "AA"})
    idp.add_raw({"kty": "RSA", "kid": "none-alg", "alg": "none"})
    idp.add_raw({"kty": "oct", "kid": "shared", "k": b64(b"a-symmetric-key-in-the-jwks-0123")})
    idp.add_raw("not an object")
    encryption = idp.add_key("RS256", use="enc")
    good = idp.add_key("ES256", use=None, with_alg=False)
    verifier = make_verifier(jwks_min_refresh_seconds=60)
    assert await verifier.verify(idp.sign(claims(), good))
    detail = await rejected(verifier, idp.sign(claims(), encryption))
    assert detail == "token is signed with an unknown key id"
    jwks_secret = hs256(claims(), b"a-symmetric-key-in-the-jwks-0123", kid="shared")
    assert await rejected(verifier, jwks_secret) == "token signature is not valid"


async def test_key_rotation(make_verifier: MakeVerifier, idp: JwksServer) -> None:
    old = idp.add_key("RS256")
    verifier = make_verifier(jwks_min_refresh_seconds=0.0)
    old_token = idp.sign(claims(), old)
    assert await verifier.verify(old_token)
    assert idp.fetches == 1

    new = idp.add_key("ES256")
    assert (await verifier.verify(idp.sign(claims(sub="user-2"), new))).subject == "user-2"
    assert idp.fetches == 2
    assert await verifier.verify(old_token)  # both keys are cached now
    assert idp.fetches == 2

    idp.remove_key(old)
    newest = idp.add_key("RS256")
    assert await verifier.verify(idp.sign(claims(), newest))  # this refetch drops the old key
    assert idp.fetches == 3
    assert await rejected(verifier, old_token) == "token is signed with an unknown key id"


async def test_unknown_kid_refetch_is_rate_limited(
    make_verifier: MakeVerifier, idp: JwksServer
) -> None:
    known = idp.add_key("RS256")
    first, second = (idp.add_key("RS256", published=False) for _ in range(2))
    verifier = make_verifier(jwks_min_refresh_seconds=60)
    assert await verifier.verify(idp.sign(claims(), known))
    assert idp.fetches == 1
    for kid in (first, second):
        detail = await rejected(verifier, idp.sign(claims(), kid))
        assert detail == "token is signed with an unknown key id"
    assert idp.fetches == 2
    idp.publish(second)  # too soon: the verifier does not look again for a minute
    assert await rejected(verifier, idp.sign(claims(), second))
    assert idp.fetches == 2


@pytest.mark.parametrize("min_refresh", [0.0, 10.0])
@pytest.mark.parametrize("warm", [False, True])
async def test_concurrent_verifications_share_one_fetch(
    make_verifier: MakeVerifier, idp: JwksServer, min_refresh: float, warm: bool
) -> None:
    verifier = make_verifier(jwks_min_refresh_seconds=min_refresh)
    if warm:
        assert await verifier.verify(idp.sign(claims(), idp.add_key("ES256")))
    fetches = idp.fetches
    kid = idp.add_key("ES256")
    idp.delay_seconds = 0.1
    tokens = [idp.sign(claims(sub=f"user-{n}"), kid) for n in range(20)]
    identities = await asyncio.gather(*(verifier.verify(token) for token in tokens))
    assert [identity.subject for identity in identities] == [f"user-{n}" for n in range(20)]
    assert idp.fetches == fetches + 1


async def test_cache_expiry_refetches(make_verifier: MakeVerifier, idp: JwksServer) -> None:
    kid = idp.add_key("ES256")
    verifier = make_verifier(jwks_cache_seconds=0.2)
    token = idp.sign(claims(), kid)
    assert await verifier.verify(token)
    assert await verifier.verify(token)
    assert idp.fetches == 1
    await asyncio.sleep(0.3)
    assert await verifier.verify(token)
    assert idp.fetches == 2
    idp.remove_key(kid)
    await asyncio.sleep(0.3)
    assert await rejected(verifier, token) == "token is signed with an unknown key id"


async def test_failed_fetch_is_unauthenticated_and_logged(
    make_verifier: MakeVerifier, idp: JwksServer, caplog: pytest.LogCaptureFixture
) -> None:
    kid = idp.add_key("RS256")
    verifier = make_verifier(jwks_min_refresh_seconds=0.0)
    token = idp.sign(claims(), kid)
    for status, body in [(500, None), (404, None), (200, b"<html>not json</html>"), (200, b"[]")]:
        idp.fail_next(status, body=body)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="chat_service.services.jwt_tokens"):
            detail = await rejected(verifier, token)
        assert detail == "the identity provider's signing keys could not be fetched"
        assert "JWKS fetch from" in caplog.text
        assert token not in caplog.text
    assert idp.fetches == 4
    assert await verifier.verify(token)  # the provider is back


async def test_unreachable_jwks_is_unauthenticated(
    make_verifier: MakeVerifier, idp: JwksServer
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    verifier = make_verifier(jwks_url=f"http://127.0.0.1:{port}/jwks.json")
    token = idp.sign(claims(), idp.add_key("ES256"))
    detail = await rejected(verifier, token)
    assert detail == "the identity provider's signing keys could not be fetched"


async def test_cached_keys_survive_a_failing_provider(
    make_verifier: MakeVerifier, idp: JwksServer
) -> None:
    kid = idp.add_key("RS256")
    verifier = make_verifier(jwks_cache_seconds=0.1, jwks_min_refresh_seconds=0.0)
    token = idp.sign(claims(), kid)
    assert await verifier.verify(token)
    idp.fail_status = 500
    await asyncio.sleep(0.2)
    assert await verifier.verify(token)  # the refetch failed; the cached key still works
    assert idp.fetches == 2
    unknown = idp.sign(claims(), idp.add_key("RS256", published=False))
    detail = await rejected(verifier, unknown)
    assert detail == "the identity provider's signing keys could not be fetched"
    idp.fail_status = None
    assert await verifier.verify(token)
