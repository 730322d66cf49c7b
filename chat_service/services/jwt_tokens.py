"""Verification of bearer JWTs issued by a company's identity provider.

HS256 tokens are checked with a shared secret; RS256 and ES256 tokens with the public keys that
the identity provider publishes as a JWK set (JWKS), fetched over HTTP and cached. PyJWT does all
of the cryptography and the registered-claim checks; this module chooses the key, keeps the JWKS
cache fresh, and turns every failure into ``Unauthenticated`` with a short detail that never
quotes the token.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from jwt.types import Options

from chat_service.config import JWT_ALGORITHMS
from chat_service.errors import Unauthenticated

log = logging.getLogger(__name__)

SUPPORTED_ALGORITHMS = frozenset(JWT_ALGORITHMS)
_JWKS_ALGORITHMS = frozenset({"RS256", "ES256"})
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_KEYS_UNAVAILABLE = "the identity provider's signing keys could not be fetched"

# Most specific first: InvalidSignatureError is a kind of DecodeError.
_DETAILS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "token has expired"),
    (jwt.ImmatureSignatureError, "token is not yet valid"),
    (jwt.InvalidSignatureError, "token signature is not valid"),
    (jwt.InvalidIssuerError, "token issuer is not accepted"),
    (jwt.InvalidAudienceError, "token audience is not accepted"),
    (jwt.InvalidIssuedAtError, "token issue time is not valid"),
    (jwt.InvalidAlgorithmError, "token algorithm is not accepted"),
    (jwt.DecodeError, "token is malformed"),
)


@dataclass(frozen=True, slots=True)
class JwtIdentity:
    """Who a verified token speaks for.

    Attributes:
        tenant: The tenant claim, as a string.
        role: The role claim, such as ``"agent"`` or ``"admin"``.
        subject: The subject claim: the user's id at the identity provider.
    """

    tenant: str
    role: str
    subject: str


def looks_like_jwt(token: str) -> bool:
    """Whether ``token`` has the shape of a JWT: three base64url segments joined by dots.

    This is a cheap syntactic check for telling JWTs from other kinds of bearer token; it
    proves nothing about the token.
    """
    return _JWT_SHAPE.fullmatch(token) is not None


class _FetchError(Exception):
    """A JWKS fetch failed; the message says why, for the log."""


class JwtVerifier:
    """Verifies JWTs with a shared secret (HS256) or the identity provider's JWKS (RS256, ES256).

    The algorithm in a token's header picks the key source, so an HS256 token is only ever
    checked against the secret and an RS256 or ES256 token only against JWKS keys of that type:
    a public key can never be misused as an HMAC secret.

    The JWKS is fetched lazily, kept for ``jwks_cache_seconds`` and fetched again early when a
    token names a key id that is not cached (no more often than ``jwks_min_refresh_seconds``).
    Concurrent verifications share one fetch. When a fetch fails the keys already cached stay
    in use.
    """

    def __init__(
        self,
        *,
        algorithms: Sequence[str],
        secret: str = "",
        jwks_url: str = "",
        issuer: str = "",
        audience: str = "",
        tenant_claim: str = "tenant",
        role_claim: str = "role",
        subject_claim: str = "sub",
        leeway_seconds: float = 30.0,
        jwks_cache_seconds: float = 300.0,
        jwks_min_refresh_seconds: float = 10.0,
        http_timeout_seconds: float = 5.0,
    ) -> None:
        """Configure the verifier; nothing is fetched yet.

        Args:
            algorithms: Accepted ``alg`` values, a subset of HS256, RS256 and ES256. Empty
                disables JWTs.
            secret: The HS256 shared secret; required when HS256 is accepted.
            jwks_url: Where the JWKS is published; required when RS256 or ES256 is accepted.
            issuer: The required ``iss``; empty means the issuer is not checked.
            audience: An ``aud`` the token must name; empty means the audience is not checked.
            tenant_claim: The claim holding the tenant.
            role_claim: The claim holding the role.
            subject_claim: The claim holding the subject.
            leeway_seconds: Clock skew allowed for ``exp``, ``nbf`` and ``iat``.
            jwks_cache_seconds: How long fetched keys are used before they are fetched again.
            jwks_min_refresh_seconds: The least time between fetches caused by unknown key ids,
                and the wait before the scheduled fetch is retried after a failure.
            http_timeout_seconds: Timeout of a JWKS request.

        Raises:
            ValueError: An algorithm is not supported, or its secret or JWKS URL is missing.
        """
        unsupported = set(algorithms) - SUPPORTED_ALGORITHMS
        if unsupported:
            raise ValueError(f"unsupported JWT algorithms: {sorted(unsupported)}")
        if "HS256" in algorithms and not secret:
            raise ValueError("HS256 needs a secret")
        if _JWKS_ALGORITHMS.intersection(algorithms) and not jwks_url:
            raise ValueError("RS256 and ES256 need a JWKS URL")
        self._algorithms = frozenset(algorithms)
        self._secret = secret
        self._jwks_url = jwks_url
        self._issuer = issuer
        self._audience = audience
        self._tenant_claim = tenant_claim
        self._role_claim = role_claim
        self._subject_claim = subject_claim
        self._leeway = leeway_seconds
        self._cache_seconds = jwks_cache_seconds
        self._min_refresh = jwks_min_refresh_seconds
        self._http_timeout = http_timeout_seconds
        self._client: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()
        self._keys: tuple[jwt.PyJWK, ...] = ()
        self._generation = 0  # completed fetches, so that waiters can tell one happened
        self._last_miss_fetch = -math.inf
        self._refresh_at = -math.inf
        self._failed = False

    @property
    def enabled(self) -> bool:
        """Whether any algorithm is accepted, that is, whether JWTs are enabled at all."""
        return bool(self._algorithms)

    async def verify(self, token: str) -> JwtIdentity:
        """Check a token's signature and claims, and return who it speaks for.

        Raises:
            Unauthenticated: JWTs are disabled, or the token is malformed, badly signed,
                expired, not yet valid, for another issuer or audience, lacks a required
                claim, or its key cannot be found.
        """
        if not self.enabled:
            raise Unauthenticated("JWT bearer tokens are not accepted")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("token is malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise Unauthenticated("token algorithm is not accepted")
        key: jwt.PyJWK | str = (
            self._secret if alg == "HS256" else await self._jwks_key(alg, header.get("kid"))
        )
        required = ["exp"] + (["iss"] if self._issuer else []) + (["aud"] if self._audience else [])
        options: Options = {"require": required, "verify_aud": bool(self._audience)}
        try:
            claims = jwt.decode(
                token,
                key,
                # One algorithm, matching the key chosen above: never a symmetric and an
                # asymmetric one together (RFC 8725 §2.1).
                algorithms=[alg],
                options=options,
                issuer=self._issuer or None,
                audience=self._audience or None,
                leeway=self._leeway,
            )
        except jwt.MissingRequiredClaimError as error:
            raise Unauthenticated(f"token has no '{error.claim}' claim") from None
        except jwt.PyJWTError as error:
            detail = next((d for kind, d in _DETAILS if isinstance(error, kind)), None)
            raise Unauthenticated(detail or "token is not valid") from None
        return JwtIdentity(
            tenant=_claim(claims, self._tenant_claim, numeric=True),
            role=_claim(claims, self._role_claim),
            subject=_claim(claims, self._subject_claim),
        )

    async def aclose(self) -> None:
        """Close the HTTP client used for the JWKS, if one was opened."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def _jwks_key(self, alg: str, kid: object) -> jwt.PyJWK:
        refreshed = False
        if time.monotonic() >= self._refresh_at:
            await self._refresh(self._generation)
            refreshed = True
        generation = self._generation
        key, detail = self._find(alg, kid)
        # An unknown key id may mean the identity provider has rotated its keys. Fetch again,
        # but rate-limited, so that made-up key ids cannot make us hammer it; joining a fetch
        # that is already under way costs nothing.
        if (
            key is None
            and not refreshed
            and (
                self._lock.locked() or time.monotonic() - self._last_miss_fetch >= self._min_refresh
            )
        ):
            await self._refresh(generation, key_miss=True)
            key, detail = self._find(alg, kid)
        if key is None:
            raise Unauthenticated(_KEYS_UNAVAILABLE if self._failed else detail)
        return key

    def _find(self, alg: str, kid: object) -> tuple[jwt.PyJWK | None, str]:
        if kid is None:
            # Without a key id the key is only unambiguous if there is one of the right type.
            candidates = [key for key in self._keys if key.algorithm_name == alg]
            if len(candidates) == 1:
                return candidates[0], ""
            return None, "token has no key id"
        key = next((key for key in self._keys if key.key_id == kid), None)
        if key is None:
            return None, "token is signed with an unknown key id"
        if key.algorithm_name != alg:
            return None, "token algorithm does not match its key"
        return key, ""

    async def _refresh(self, seen_generation: int, *, key_miss: bool = False) -> None:
        """Fetch the JWKS, unless a fetch has completed since ``seen_generation`` was read."""
        async with self._lock:
            if self._generation != seen_generation:
                return  # another verification fetched while this one waited: single flight
            started = time.monotonic()
            if key_miss:
                self._last_miss_fetch = started
            try:
                keys = await self._fetch()
            except _FetchError as error:
                log.warning("JWKS fetch from %s failed: %s", self._jwks_url, error)
                # Keep the keys we have; retry on schedule no sooner than the miss rate limit.
                self._failed = True
                self._refresh_at = started + self._min_refresh
                return
            else:
                if not keys:
                    log.warning("JWKS at %s has no usable signing keys", self._jwks_url)
                self._keys, self._failed = keys, False
                self._refresh_at = started + self._cache_seconds
            finally:
                self._generation += 1

    async def _fetch(self) -> tuple[jwt.PyJWK, ...]:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._http_timeout)
        try:
            response = await self._client.get(
                self._jwks_url, headers={"Accept": "application/json"}
            )
        except httpx.HTTPError as error:
            raise _FetchError(f"{type(error).__name__}: {error}") from error
        if response.status_code != httpx.codes.OK:
            raise _FetchError(f"HTTP status {response.status_code}")
        try:
            document = response.json()
        except ValueError:
            raise _FetchError("the response is not JSON") from None
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise _FetchError("the response is not a JWK set")
        return tuple(key for entry in entries if (key := self._load_key(entry)) is not None)

    def _load_key(self, entry: object) -> jwt.PyJWK | None:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            return None
        if "alg" in entry and entry["alg"] not in self._algorithms:
            return None
        try:
            key = jwt.PyJWK(entry)
        # One malformed entry must not cost the other keys, and PyJWT raises more than its own
        # errors on some bad input (NotImplementedError, binascii.Error, ...).
        except Exception as error:
            log.warning("skipping JWKS key %r: %s", entry.get("kid"), type(error).__name__)
            return None
        return key if key.algorithm_name in self._algorithms - {"HS256"} else None


def _claim(claims: dict[str, Any], name: str, *, numeric: bool = False) -> str:
    value = claims.get(name)
    if numeric and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise Unauthenticated(f"token has no valid '{name}' claim")
    return value
