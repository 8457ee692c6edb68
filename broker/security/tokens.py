"""OAuth 2.0 client credentials with private_key_jwt (RFC 7523) and the
broker's short-lived access tokens.

Every failure raises AuthenticationFailed, rendered with one generic message
so a caller learns nothing about which check failed.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from broker.agencies.service import AgencyDirectory, AgencyView
from broker.core.canonical import canonical_json
from broker.core.errors import AuthenticationFailed, ErrorCode, StorageUnavailable
from broker.crypto.keys import ACCEPTED_JWS_ALGS, BrokerKeyring, signing_alg
from broker.crypto.signers import SIGNATURE_ALG, compact_jws_async
from broker.db.session import Database
from broker.security.models import UsedAssertion

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALLOWED_ALGS = ACCEPTED_JWS_ALGS
LEEWAY_SECONDS = 30
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - a media type, not a secret
VERIFIED_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated agency behind an access token."""

    oin: str
    party_type: str
    token_id: str


class TokenService:
    def __init__(
        self,
        *,
        db: Database,
        directory: AgencyDirectory,
        keyring: BrokerKeyring,
        issuer: str,
        token_endpoint: str,
        ttl_seconds: int = 300,
        assertion_max_lifetime: int = 300,
    ) -> None:
        self._db = db
        self._directory = directory
        self._keyring = keyring
        self._issuer = issuer
        self._audience = issuer.rstrip("/") + "/v1"
        self._token_endpoint = token_endpoint
        self._ttl = ttl_seconds
        self._max_lifetime = assertion_max_lifetime
        # Verified access tokens: token -> (exp, sub, jti).
        self._verified: dict[str, tuple[float, str, str]] = {}

    @property
    def ttl(self) -> int:
        return self._ttl

    async def exchange_assertion(self, form: dict[str, str]) -> dict[str, Any]:
        """Handles a token request body; returns the RFC 6749 token response."""
        if form.get("grant_type") != "client_credentials":
            raise AuthenticationFailed(ErrorCode.INVALID_CLIENT)
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise AuthenticationFailed(ErrorCode.INVALID_CLIENT)
        assertion = form.get("client_assertion", "")
        agency, claims = await self._verify_assertion(assertion)
        if form.get("client_id") not in (None, agency.oin):
            raise AuthenticationFailed(ErrorCode.INVALID_CLIENT)
        await self._consume_jti(agency.oin, str(claims["jti"]), int(claims["exp"]))
        now = int(time.time())
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": agency.oin,
            "party": agency.party_type,
            "iat": now,
            "exp": now + self._ttl,
            "jti": str(uuid.uuid4()),
            "scope": "exchange",
        }
        # Signed by the keyring's active key, wherever it lives (file or HSM).
        token = await compact_jws_async(
            self._keyring.signer, canonical_json(claims), typ=ACCESS_TOKEN_TYPE
        )
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self._ttl,
            "scope": "exchange",
        }

    async def _verify_assertion(self, assertion: str) -> tuple[AgencyView, dict[str, Any]]:
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthenticationFailed(ErrorCode.INVALID_CLIENT) from exc
        if header.get("alg") not in ALLOWED_ALGS:
            raise AuthenticationFailed(ErrorCode.INVALID_CLIENT)
        issuer = unverified.get("iss")
        if not isinstance(issuer, str) or unverified.get("sub") != issuer:
            raise AuthenticationFailed(ErrorCode.INVALID_CLIENT)
        agency = await self._directory.get(issuer)
        if agency is None or not agency.active:
            raise AuthenticationFailed(ErrorCode.INVALID_CLIENT)
        kid = header.get("kid")
        candidates = [
            k
            for k in agency.signing_keys()
            if (kid is None or k.kid == kid) and k.alg == signing_alg(header["alg"])
        ]
        for key in candidates:
            try:
                claims: dict[str, Any] = jwt.decode(
                    assertion,
                    jwt.PyJWK(key.jwk).key,
                    algorithms=[header["alg"]],
                    audience=self._token_endpoint,
                    issuer=agency.oin,
                    leeway=LEEWAY_SECONDS,
                    options={"require": ["iss", "sub", "aud", "exp", "jti"]},
                )
            except jwt.PyJWTError:
                continue
            now = time.time()
            if int(claims["exp"]) > now + self._max_lifetime + LEEWAY_SECONDS:
                raise AuthenticationFailed(ErrorCode.INVALID_CLIENT)
            iat = claims.get("iat")
            if iat is not None and float(iat) > now + LEEWAY_SECONDS:
                raise AuthenticationFailed(ErrorCode.INVALID_CLIENT)
            jti = claims["jti"]
            if not isinstance(jti, str) or not 8 <= len(jti) <= 256:
                raise AuthenticationFailed(ErrorCode.INVALID_CLIENT)
            return agency, claims
        raise AuthenticationFailed(ErrorCode.INVALID_CLIENT)

    async def _consume_jti(self, issuer: str, jti: str, exp: int) -> None:
        """Records the assertion id; a second use (at any instance) is refused."""
        expires = datetime.fromtimestamp(exp + LEEWAY_SECONDS, UTC)
        try:
            async with self._db.sessions() as session:
                session.add(UsedAssertion(issuer=issuer, jti=jti, expires_at=expires))
                try:
                    await session.commit()
                except IntegrityError as exc:
                    raise AuthenticationFailed(ErrorCode.INVALID_CLIENT) from exc
                await session.execute(
                    delete(UsedAssertion).where(UsedAssertion.expires_at < datetime.now(UTC))
                )
                await session.commit()
        except SQLAlchemyError as exc:
            raise StorageUnavailable() from exc

    async def authenticate(self, authorization: str | None) -> Principal:
        """Verifies a Bearer access token and that its agency is still active."""
        if not authorization or not authorization.startswith("Bearer "):
            raise AuthenticationFailed()
        token = authorization.removeprefix("Bearer ").strip()
        cached = self._verified.get(token)
        if cached is not None and time.time() < cached[0]:
            sub, jti = cached[1], cached[2]
        else:
            sub, jti = self._verify_access_token(token)
        agency = await self._directory.get(sub)
        if agency is None or not agency.active:
            raise AuthenticationFailed()
        return Principal(oin=agency.oin, party_type=agency.party_type, token_id=jti)

    def _verify_access_token(self, token: str) -> tuple[str, str]:
        """Checks signature, audience, issuer and expiry once per token; the
        result is kept until the token expires, so a partner that reuses its
        token pays for the signature check once (the agency's state is still
        checked on every call)."""
        self._verified.pop(token, None)
        try:
            header = jwt.get_unverified_header(token)
            key = self._keyring.verification_key(str(header.get("kid")))
            claims = jwt.decode(
                token,
                key,
                algorithms=[SIGNATURE_ALG],  # the broker's own tokens
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["sub", "exp", "jti"]},
            )
        except Exception as exc:
            raise AuthenticationFailed() from exc
        sub, jti, exp = str(claims["sub"]), str(claims["jti"]), float(claims["exp"])
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            now = time.time()
            for stale in [t for t, v in self._verified.items() if v[0] <= now]:
                del self._verified[stale]
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                self._verified.clear()
        self._verified[token] = (exp, sub, jti)
        return sub, jti
