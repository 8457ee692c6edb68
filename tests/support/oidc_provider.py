"""A small OpenID Connect provider for tests, served over loopback HTTP.

It follows OpenID Connect Core 1.0 and Discovery 1.0 for the authorization-code
flow: discovery document, an authorization endpoint that signs in one
configured user without asking (and checks the request: client, redirect URI,
``openid`` scope, ``state``, ``nonce``, PKCE ``S256``), a token endpoint that
authenticates the client (``client_secret_basic`` or ``private_key_jwt``),
checks the code (one use, ten minutes, same client and redirect URI) and the
PKCE verifier, and issues an ID token signed with RS256, ES256 or EdDSA, and a
JWKS endpoint. Tokens are made and checked with joserfc, a JOSE library other
than the PyJWT the broker validates with.

Tests steer what goes wrong next: ``id_token_overrides`` (claims replaced or,
with value ``None``, removed), ``sign_with`` (``"good"``, ``"rogue"``: another
key under the same key id, ``"none"``: an unsigned token), ``alg``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote_plus, urlencode

import orjson
import uvicorn
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.conftest import free_port

Alg = Literal["RS256", "ES256", "EdDSA"]
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _new_key(alg: Alg, kid: str) -> RSAKey | ECKey | OKPKey:
    parameters = {"kid": kid, "use": "sig", "alg": alg}
    if alg == "RS256":
        return RSAKey.generate_key(2048, parameters=parameters)
    if alg == "ES256":
        return ECKey.generate_key("P-256", parameters=parameters)
    return OKPKey.generate_key("Ed25519", parameters=parameters)


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str
    user: dict[str, Any]
    expires: float


@dataclass
class OidcProvider:
    client_id: str = "chain-broker"
    client_secret: str | None = "s3cret: with/odd+chars"
    client_jwk: dict[str, Any] | None = None  # public JWK for private_key_jwt
    redirect_uris: list[str] = field(default_factory=list)
    user: dict[str, Any] = field(default_factory=lambda: {"sub": "officer-anna"})
    clock: Callable[[], float] = time.time
    alg: Alg = "RS256"
    id_token_overrides: dict[str, Any] = field(default_factory=dict)
    sign_with: Literal["good", "rogue", "none"] = "good"
    issuer: str = ""
    # The host name in the issuer URL ("localhost" makes the provider another
    # site than a broker on 127.0.0.1, as a real provider is).
    host: str = "127.0.0.1"
    # What the provider saw (for assertions).
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._keys = {a: _new_key(a, f"key-{a.lower()}") for a in ("RS256", "ES256", "EdDSA")}
        self._rogue = {a: _new_key(a, f"key-{a.lower()}") for a in ("RS256", "ES256", "EdDSA")}
        self._codes: dict[str, _Code] = {}
        self.app = Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/authorize", self._authorize),
                Route("/token", self._token, methods=["POST"]),
                Route("/jwks", self._jwks),
            ]
        )

    # ---------------------------------------------------------- endpoints
    async def _discovery(self, request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "private_key_jwt",
                ],
                "scopes_supported": ["openid", "profile"],
            }
        )

    async def _jwks(self, request: Request) -> Response:
        return JSONResponse({"keys": [k.as_dict(private=False) for k in self._keys.values()]})

    async def _authorize(self, request: Request) -> Response:
        q = dict(request.query_params)
        self.authorize_requests.append(q)
        redirect_uri = q.get("redirect_uri", "")
        if q.get("client_id") != self.client_id or redirect_uri not in self.redirect_uris:
            return PlainTextResponse("unknown client or redirect URI", status_code=400)

        def fail(error: str) -> Response:
            query = urlencode({"error": error, "state": q.get("state", "")})
            return RedirectResponse(f"{redirect_uri}?{query}", status_code=302)

        if q.get("response_type") != "code" or "openid" not in q.get("scope", "").split():
            return fail("invalid_request")
        if q.get("code_challenge_method") != "S256" or len(q.get("code_challenge", "")) != 43:
            return fail("invalid_request")
        if not q.get("state") or not q.get("nonce"):
            return fail("invalid_request")
        code = secrets.token_urlsafe(32)
        self._codes[code] = _Code(
            client_id=self.client_id,
            redirect_uri=redirect_uri,
            challenge=q["code_challenge"],
            nonce=q["nonce"],
            user=dict(self.user),
            expires=self.clock() + 600,
        )
        query = urlencode({"code": code, "state": q["state"]})
        return RedirectResponse(f"{redirect_uri}?{query}", status_code=302)

    def _client_ok(self, request: Request, form: dict[str, str]) -> bool:
        header = request.headers.get("authorization", "")
        if header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                return False
            return (
                self.client_secret is not None
                and unquote_plus(user) == self.client_id
                and secrets.compare_digest(unquote_plus(password), self.client_secret)
            )
        if form.get("client_assertion_type") == ASSERTION_TYPE and self.client_jwk:
            key = _import_public(self.client_jwk)
            try:
                token = jwt.decode(
                    form.get("client_assertion", ""), key, algorithms=["ES256", "EdDSA", "RS256"]
                )
                claims = token.claims
            except (JoseError, ValueError):
                return False
            now = self.clock()
            return (
                claims.get("iss") == self.client_id
                and claims.get("sub") == self.client_id
                and claims.get("aud") in (f"{self.issuer}/token", self.issuer)
                and isinstance(claims.get("exp"), int)
                and claims["exp"] > now
                and bool(claims.get("jti"))
            )
        return False

    async def _token(self, request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        self.token_requests.append(form)
        if not self._client_ok(request, form):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if form.get("grant_type") != "authorization_code":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        grant = self._codes.pop(form.get("code", ""), None)  # one use
        verifier = form.get("code_verifier", "")
        if (
            grant is None
            or grant.expires < self.clock()
            or grant.redirect_uri != form.get("redirect_uri")
            or _b64u(hashlib.sha256(verifier.encode()).digest()) != grant.challenge
        ):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        access_token = secrets.token_urlsafe(32)
        digest = (hashlib.sha512 if self.alg == "EdDSA" else hashlib.sha256)(
            access_token.encode()
        ).digest()
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.client_id,
            "exp": now + 300,
            "iat": now,
            "auth_time": now,
            "nonce": grant.nonce,
            "at_hash": _b64u(digest[: len(digest) // 2]),
            **grant.user,
        }
        for name, value in self.id_token_overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return JSONResponse(
            {
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": self._sign(claims),
            },
            headers={"Cache-Control": "no-store"},
        )

    def _sign(self, claims: dict[str, Any]) -> str:
        if self.sign_with == "none":
            header = _b64u(orjson.dumps({"alg": "none", "typ": "JWT"}))
            return f"{header}.{_b64u(orjson.dumps(claims))}."
        keys = self._rogue if self.sign_with == "rogue" else self._keys
        key = keys[self.alg]
        header = {"alg": self.alg, "kid": key.kid, "typ": "JWT"}
        return jwt.encode(header, claims, key, algorithms=[self.alg])

    # ---------------------------------------------------------- serving
    @asynccontextmanager
    async def serve(self) -> AsyncIterator[OidcProvider]:
        port = free_port()
        self.issuer = f"http://{self.host}:{port}"
        server = uvicorn.Server(
            uvicorn.Config(
                self.app, host="127.0.0.1", port=port, log_level="warning", access_log=False
            )
        )
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the OIDC provider did not start")
            await asyncio.sleep(0.02)
        try:
            yield self
        finally:
            server.should_exit = True
            await task


def _import_public(jwk: dict[str, Any]) -> RSAKey | ECKey | OKPKey:
    kty = jwk.get("kty")
    if kty == "RSA":
        return RSAKey.import_key(jwk)
    if kty == "EC":
        return ECKey.import_key(jwk)
    return OKPKey.import_key(jwk)
