"""A real JWKS endpoint on 127.0.0.1 for tests: an identity provider whose keys can rotate.

    async with JwksServer() as idp:          # or `with JwksServer() as idp:` in sync code
        kid = idp.add_key("RS256")
        token = idp.sign({"sub": "u1", "exp": ...}, kid)
        verifier = JwtVerifier(algorithms=["RS256"], jwks_url=idp.url)

The server runs in a thread (``ThreadingHTTPServer``), counts the requests for the key set in
``fetches``, and can be told to fail (``fail_next``, ``fail_status``) or to answer slowly
(``delay_seconds``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

KeyKind = Literal["RS256", "ES256"]
JWKS_PATH = "/.well-known/jwks.json"


@dataclass(frozen=True)
class _Failure:
    status: int
    body: bytes


@dataclass(frozen=True)
class SigningKey:
    """A key pair: the private half signs, ``jwk`` is the public half as published."""

    kid: str
    kind: KeyKind
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    jwk: dict[str, Any]

    def public_pem(self) -> str:
        """The public key as PEM text (for algorithm-confusion tests)."""
        return (
            self.private_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )


class JwksServer:
    """A local identity provider's JWKS endpoint whose key set tests can change at runtime."""

    def __init__(self, *, path: str = JWKS_PATH) -> None:
        self.path = path
        self.fetches = 0
        self.fail_status: int | None = None  # while set, every fetch answers this status
        self.delay_seconds = 0.0
        self._lock = threading.Lock()
        self._keys: dict[str, SigningKey] = {}
        self._published: list[str] = []
        self._extra: list[Any] = []
        self._failures: list[_Failure] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start serving on a free port of 127.0.0.1."""
        if self._httpd is not None:
            raise RuntimeError("the JWKS server is already running")
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="jwks-server",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> JwksServer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> JwksServer:
        self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>``; handy as an issuer."""
        if self._httpd is None:
            raise RuntimeError("the JWKS server is not running")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def url(self) -> str:
        """The URL of the key set."""
        return self.origin + self.path

    # -- keys ------------------------------------------------------------------------------

    def add_key(
        self,
        kind: KeyKind = "RS256",
        *,
        kid: str | None = None,
        use: str | None = "sig",
        with_alg: bool = True,
        published: bool = True,
    ) -> str:
        """Generate a key pair, publish its public half, and return its kid.

        ``use=None`` or ``with_alg=False`` leave those members out of the JWK;
        ``published=False`` keeps a key that can sign but is not in the key set.
        """
        kid = kid or f"{kind.lower()}-{uuid.uuid4().hex[:12]}"
        private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
        if kind == "RS256":
            private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            jwk = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
        else:
            private_key = ec.generate_private_key(ec.SECP256R1())
            jwk = ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
        jwk = {**jwk, "kid": kid}
        if use is not None:
            jwk["use"] = use
        if with_alg:
            jwk["alg"] = kind
        with self._lock:
            self._keys[kid] = SigningKey(kid, kind, private_key, jwk)
        if published:
            self.publish(kid)
        return kid

    def publish(self, kid: str) -> None:
        """Put a key (back) into the key set."""
        with self._lock:
            if kid not in self._keys:
                raise KeyError(kid)
            if kid not in self._published:
                self._published.append(kid)

    def remove_key(self, kid: str) -> None:
        """Stop publishing a key (it can still sign, as a retired key could)."""
        with self._lock:
            self._published.remove(kid)

    def add_raw(self, entry: Any) -> None:
        """Publish an arbitrary entry in ``keys`` (a broken key, an encryption key, ...)."""
        with self._lock:
            self._extra.append(entry)

    def key(self, kid: str) -> SigningKey:
        """The key pair of ``kid``."""
        with self._lock:
            return self._keys[kid]

    def sign(
        self,
        claims: dict[str, Any],
        kid: str,
        alg: str | None = None,
        headers: dict[str, Any] | None = None,
        *,
        with_kid: bool = True,
    ) -> str:
        """A JWT of ``claims`` signed with the private key of ``kid`` (its kid in the header)."""
        key = self.key(kid)
        header = {"kid": kid} if with_kid else {}
        return jwt.encode(
            claims,
            key.private_key,
            algorithm=alg or key.kind,
            headers={**header, **(headers or {})},
        )

    def jwks(self) -> dict[str, Any]:
        """The key set as it is served now."""
        with self._lock:
            published = [self._keys[kid].jwk for kid in self._published]
            return {"keys": [*published, *self._extra]}

    # -- failures --------------------------------------------------------------------------

    def fail_next(self, status: int = 500, *, times: int = 1, body: bytes | None = None) -> None:
        """Answer the next ``times`` fetches with ``status`` (and ``body``, e.g. invalid JSON)."""
        failure = _Failure(status, b'{"error": "unavailable"}' if body is None else body)
        with self._lock:
            self._failures.extend([failure] * times)

    def _response(self) -> tuple[int, bytes]:
        with self._lock:
            self.fetches += 1
            if self._failures:
                failure = self._failures.pop(0)
                return failure.status, failure.body
            status = self.fail_status
        if status is not None:
            return status, b'{"error": "unavailable"}'
        return 200, json.dumps(self.jwks()).encode()


def _handler_for(server: JwksServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != server.path:
                self._send(404, b'{"error": "not found"}')
                return
            status, body = server._response()
            if server.delay_seconds:
                time.sleep(server.delay_seconds)
            self._send(status, body)

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output quiet

    return Handler
