"""A minimal partner-side client, written only with stock libraries (PyJWT,
joserfc, httpx) to show what any partner does in its own language:

1. sign a client assertion (RFC 7523) with its private signing key,
2. trade it for an access token at /oauth/token,
3. POST /v1/exchanges with the token,
4. decrypt the JWE payload with its private encryption key.

Used by the demo, the benchmark and the tests; partners never need it.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from joserfc import jwe
from joserfc.jwk import ECKey, OKPKey

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class PartnerClient:
    base_url: str
    oin: str
    private_jwks: dict[str, Any]
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=10.0))
    _token: str | None = None
    _token_expires: float = 0.0

    def _key(self, use: str) -> dict[str, Any]:
        return next(k for k in self.private_jwks["keys"] if k.get("use") == use)

    def client_assertion(self, *, lifetime: int = 120, jti: str | None = None) -> str:
        sig = self._key("sig")
        now = int(time.time())
        return jwt.encode(
            {
                "iss": self.oin,
                "sub": self.oin,
                "aud": self.base_url.rstrip("/") + "/oauth/token",
                "iat": now,
                "exp": now + lifetime,
                "jti": jti or str(uuid.uuid4()),
            },
            jwt.PyJWK(sig).key,
            algorithm=sig["alg"],
            headers={"kid": sig["kid"]},
        )

    async def token(self) -> str:
        if self._token and time.time() < self._token_expires - 30:
            return self._token
        response = await self.http.post(
            self.base_url.rstrip("/") + "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.client_assertion(),
            },
        )
        response.raise_for_status()
        body = response.json()
        self._token = str(body["access_token"])
        self._token_expires = time.time() + int(body["expires_in"])
        return self._token

    async def exchange(self, request: dict[str, Any]) -> httpx.Response:
        token = await self.token()
        return await self.http.post(
            self.base_url.rstrip("/") + "/v1/exchanges",
            json=request,
            headers={"Authorization": f"Bearer {token}"},
        )

    def decrypt(self, payload: str) -> dict[str, Any]:
        enc = self._key("enc")
        key = (OKPKey if enc["kty"] == "OKP" else ECKey).import_key(enc)
        plaintext = jwe.decrypt_compact(payload, key).plaintext
        assert plaintext is not None
        data: dict[str, Any] = json.loads(plaintext)
        return data

    async def aclose(self) -> None:
        await self.http.aclose()
