"""OpenID Connect sign-in for privacy officers (the review page's relying party).

The authorization-code flow (OpenID Connect Core 1.0 §3.1) with PKCE (RFC 7636,
``S256``), ``state`` and ``nonce``, against one configured issuer:

* the provider's metadata come from ``<issuer>/.well-known/openid-configuration``
  (its ``issuer`` must equal the configured one) and its keys from ``jwks_uri``;
  both are cached for an hour, the keys fetched again when an ID token names a
  key id the cache does not hold;
* ``start`` makes a random ``state``, ``nonce`` and code verifier, keeps them in
  a short-lived HMAC-signed, HttpOnly cookie (``SameSite=Lax``: the provider's
  redirect back is a cross-site navigation) and sends the browser to the
  provider's authorization endpoint;
* ``finish`` checks the returned ``state`` against that cookie, redeems the code
  at the token endpoint (client authentication ``client_secret_basic`` or
  ``private_key_jwt``, RFC 7523) with the code verifier, and validates the ID
  token with PyJWT: signature by a provider key with an allowed algorithm
  (RS256, ES256, EdDSA; never ``none`` or HMAC), ``iss``, ``aud`` (and ``azp``),
  ``exp``, ``iat`` (against the broker's clock), ``nonce``, and ``at_hash``
  when present;
* the subject is mapped to an officer account by ``AccountService``: an account
  registered for this issuer and subject, or (with a role claim configured) one
  made from the claim's ``privacy_officer:<OIN>`` / ``privacy_officer:broker``
  values. The session is the same server-side session as a local sign-in.

Every refusal is audited (``officer_login``, ``method`` ``oidc``, with the
reason) and shown to the person with one generic message. A provider that
cannot be reached is ``ProviderUnavailable``: no session, a clear error page.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote_plus, urlencode

import httpx
import jwt
import orjson
import structlog
from jwt import PyJWK

from broker.core.clock import Clock, system_clock
from broker.core.errors import (
    AuthenticationFailed,
    BrokerError,
    ErrorCode,
    KeyError_,
    TooManyAttempts,
)
from broker.review.accounts import AccountService, Scope, SignedIn

if TYPE_CHECKING:
    from broker.settings import Settings

log = structlog.get_logger("review.oidc")

ALLOWED_ALGORITHMS = ("RS256", "ES256", "EdDSA")
FLOW_COOKIE = "broker_review_oidc"
FLOW_LIFETIME = 600  # seconds from start to callback
METADATA_TTL = 3600.0
JWKS_REFRESH_MIN = 10.0  # at most one fetch per this many seconds for an unknown kid
LEEWAY = 60  # seconds of clock skew accepted on exp / iat / nbf
MAX_TOKEN_AGE = 600  # an ID token issued longer ago than this is refused
ClientAuth = Literal["client_secret_basic", "private_key_jwt"]


class ProviderUnavailable(BrokerError):
    """The identity provider cannot be reached or answered nonsense: nobody is signed in."""

    status = 503
    code = ErrorCode.IDENTITY_PROVIDER_UNAVAILABLE
    title = "The identity provider cannot be reached; nobody was signed in"


class _Refused(Exception):
    """A sign-in refused for ``reason`` (audited; the person sees a generic message)."""

    def __init__(self, reason: str, check: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.check = check


@dataclass(frozen=True, slots=True)
class OidcConfig:
    issuer: str
    client_id: str
    redirect_uri: str
    client_auth: ClientAuth = "client_secret_basic"
    client_secret: str | None = None
    client_key: dict[str, Any] | None = None  # private JWK for private_key_jwt
    scopes: str = "openid"
    algorithms: tuple[str, ...] = ALLOWED_ALGORITHMS
    role_claim: str | None = None
    role_prefix: str = "privacy_officer:"
    display_name: str = "your organisation's sign-in"
    timeout: float = 5.0

    def __post_init__(self) -> None:
        if not set(self.algorithms) <= set(ALLOWED_ALGORITHMS) or not self.algorithms:
            raise KeyError_(f"OIDC algorithms are a subset of {', '.join(ALLOWED_ALGORITHMS)}")
        if self.client_auth == "client_secret_basic" and not self.client_secret:
            raise KeyError_("client_secret_basic needs BROKER_REVIEW_OIDC_CLIENT_SECRET")
        if self.client_auth == "private_key_jwt" and not self.client_key:
            raise KeyError_("private_key_jwt needs BROKER_REVIEW_OIDC_CLIENT_KEY_FILE")


def oidc_config(settings: Settings) -> OidcConfig | None:
    """The relying party's configuration, or None when no issuer is configured."""
    if not settings.review_oidc_issuer:
        return None
    key: dict[str, Any] | None = None
    if settings.review_oidc_client_key_file is not None:
        try:
            key = json.loads(Path(settings.review_oidc_client_key_file).read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise KeyError_("the OIDC client key file is not a readable private JWK") from exc
    secret = settings.review_oidc_client_secret
    return OidcConfig(
        issuer=settings.review_oidc_issuer,
        client_id=settings.review_oidc_client_id or "",
        redirect_uri=settings.review_oidc_redirect_uri
        or settings.public_url.rstrip("/") + "/review/oidc/callback",
        client_auth=settings.review_oidc_client_auth,
        client_secret=secret.get_secret_value() if secret is not None else None,
        client_key=key,
        scopes=settings.review_oidc_scopes,
        algorithms=tuple(a.strip() for a in settings.review_oidc_algorithms.split(",") if a),
        role_claim=settings.review_oidc_role_claim,
        role_prefix=settings.review_oidc_role_prefix,
        display_name=settings.review_oidc_display_name,
        timeout=settings.review_oidc_timeout_seconds,
    )


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64u_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def code_challenge(verifier: str) -> str:
    """RFC 7636 ``S256``: BASE64URL(SHA-256(ASCII(code_verifier)))."""
    return _b64u(hashlib.sha256(verifier.encode("ascii")).digest())


def _jwk_alg(jwk: dict[str, Any]) -> str:
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "RSA":
        return "RS256"
    if kty == "EC" and crv == "P-256":
        return "ES256"
    if kty == "OKP" and crv == "Ed25519":
        return "EdDSA"
    raise KeyError_("the OIDC client key is RSA, EC P-256 or Ed25519")


def _fits(jwk: dict[str, Any], alg: str) -> bool:
    if jwk.get("use") not in (None, "sig") or jwk.get("alg") not in (None, alg):
        return False
    try:
        return _jwk_alg(jwk) == alg
    except KeyError_:
        return False


def roles_scope(claims: dict[str, Any], claim: str, prefix: str) -> Scope:
    """The scope a role claim grants: ``<prefix><OIN>`` values name agencies,
    ``<prefix>broker`` makes the broker's own officer. ``claim`` may be a dotted
    path (``realm_access.roles``); the value a list or a space-separated string."""
    value: Any = claims
    for part in claim.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, str):
        values = value.split()
    elif isinstance(value, list):
        values = [v for v in value if isinstance(v, str)]
    else:
        values = []
    agencies: set[str] = set()
    broker = False
    for role in values:
        if not role.startswith(prefix):
            continue
        rest = role[len(prefix) :]
        if rest == "broker":
            broker = True
        elif len(rest) == 20 and rest.isascii() and rest.isdigit():
            agencies.add(rest)
    return Scope(tuple(sorted(agencies)), broker)


@dataclass(frozen=True, slots=True)
class _Flow:
    state: str
    nonce: str
    verifier: str
    started: float


class OidcRelyingParty:
    def __init__(
        self,
        config: OidcConfig,
        accounts: AccountService,
        *,
        session_key: bytes,
        clock: Clock = system_clock,
        transport: httpx.AsyncBaseTransport | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._accounts = accounts
        self._flow_key = hmac.new(session_key, b"broker-review-oidc-flow/v1", "sha256").digest()
        self._clock = clock
        self._transport = transport
        self._monotonic = monotonic
        self._metadata: tuple[float, dict[str, Any]] | None = None
        self._jwks: tuple[float, list[dict[str, Any]]] | None = None

    @property
    def display_name(self) -> str:
        return self.config.display_name

    # ---------------------------------------------------------- provider documents
    def _http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=self.config.timeout, follow_redirects=False, transport=self._transport
        )

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with self._http() as http:
                response = await http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            log.warning("review.oidc_unreachable", url=url, error=type(exc).__name__)
            raise ProviderUnavailable() from exc
        if response.status_code != 200:
            log.warning("review.oidc_bad_status", url=url, status=response.status_code)
            raise ProviderUnavailable()
        try:
            document = response.json()
        except ValueError as exc:
            raise ProviderUnavailable() from exc
        if not isinstance(document, dict):
            raise ProviderUnavailable()
        return document

    async def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (cached for an hour)."""
        now = self._monotonic()
        if self._metadata is not None and now - self._metadata[0] < METADATA_TTL:
            return self._metadata[1]
        issuer = self.config.issuer.rstrip("/")
        document = await self._get_json(issuer + "/.well-known/openid-configuration")
        if document.get("issuer") != self.config.issuer:
            log.warning("review.oidc_issuer_mismatch")
            raise ProviderUnavailable()
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(document.get(name), str):
                raise ProviderUnavailable()
        methods = document.get("code_challenge_methods_supported")
        if isinstance(methods, list) and "S256" not in methods:
            log.warning("review.oidc_no_pkce_s256")
            raise ProviderUnavailable()
        self._metadata = (now, document)
        return document

    async def _keys(self, *, refresh: bool = False) -> list[dict[str, Any]]:
        now = self._monotonic()
        if self._jwks is not None:
            age = now - self._jwks[0]
            if age < METADATA_TTL and not (refresh and age >= JWKS_REFRESH_MIN):
                return self._jwks[1]
        document = await self._get_json(str((await self.metadata())["jwks_uri"]))
        keys = document.get("keys")
        if not isinstance(keys, list):
            raise ProviderUnavailable()
        found = [k for k in keys if isinstance(k, dict)]
        self._jwks = (now, found)
        return found

    async def _key_for(self, kid: Any, alg: str) -> dict[str, Any]:
        for refresh in (False, True):
            keys = [k for k in await self._keys(refresh=refresh) if _fits(k, alg)]
            if isinstance(kid, str):
                keys = [k for k in keys if k.get("kid") == kid]
            if len(keys) == 1:
                return keys[0]
            if len(keys) > 1:
                raise _Refused("id_token_invalid", "ambiguous_key")
        raise _Refused("id_token_invalid", "unknown_key")

    # ---------------------------------------------------------- the flow cookie
    def _mac(self, payload: str) -> str:
        return _b64u(hmac.new(self._flow_key, payload.encode("ascii"), "sha256").digest())

    def _flow_cookie(self, flow: _Flow) -> str:
        payload = _b64u(
            orjson.dumps({"s": flow.state, "n": flow.nonce, "v": flow.verifier, "t": flow.started})
        )
        return f"{payload}.{self._mac(payload)}"

    def _read_flow(self, cookie: str | None) -> _Flow | None:
        if not cookie or cookie.count(".") != 1 or len(cookie) > 1024:
            return None
        payload, mac = cookie.split(".")
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            data = orjson.loads(_b64u_decode(payload))
            return _Flow(str(data["s"]), str(data["n"]), str(data["v"]), float(data["t"]))
        except (ValueError, KeyError, TypeError):
            return None

    # ---------------------------------------------------------- the flow
    async def start(self) -> tuple[str, str]:
        """The provider's authorization URL and the flow cookie to set."""
        metadata = await self.metadata()
        flow = _Flow(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            verifier=secrets.token_urlsafe(48),  # 64 characters (RFC 7636: 43-128)
            started=self._clock().timestamp(),
        )
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.config.client_id,
                "redirect_uri": self.config.redirect_uri,
                "scope": self.config.scopes,
                "state": flow.state,
                "nonce": flow.nonce,
                "code_challenge": code_challenge(flow.verifier),
                "code_challenge_method": "S256",
            }
        )
        endpoint = str(metadata["authorization_endpoint"])
        separator = "&" if "?" in endpoint else "?"
        return f"{endpoint}{separator}{query}", self._flow_cookie(flow)

    async def finish(
        self,
        *,
        flow_cookie: str | None,
        params: dict[str, str],
        address: str,
        request_id: str | None,
    ) -> SignedIn:
        """The callback: checks, redeems the code, validates the ID token and opens
        the session. Raises AuthenticationFailed / TooManyAttempts (audited) or
        ProviderUnavailable."""
        if self._accounts.address_blocked(address):
            await self._accounts.external_failed(
                method="oidc", reason="address_throttled", address=address, request_id=request_id
            )
            raise TooManyAttempts()
        try:
            claims = await self._verify(flow_cookie, params)
        except _Refused as refused:
            detail = {"check": refused.check} if refused.check else None
            await self._accounts.external_failed(
                method="oidc",
                reason=refused.reason,
                address=address,
                request_id=request_id,
                detail=detail,
            )
            raise AuthenticationFailed() from None
        claim_scope = (
            roles_scope(claims, self.config.role_claim, self.config.role_prefix)
            if self.config.role_claim
            else None
        )
        return await self._accounts.external_login(
            issuer=self.config.issuer,
            subject=str(claims["sub"]),
            claim_scope=claim_scope,
            address=address,
            request_id=request_id,
        )

    async def _verify(self, flow_cookie: str | None, params: dict[str, str]) -> dict[str, Any]:
        flow = self._read_flow(flow_cookie)
        state = params.get("state", "")
        if flow is None or not state or not hmac.compare_digest(state, flow.state):
            raise _Refused("bad_state")
        if self._clock().timestamp() - flow.started > FLOW_LIFETIME:
            raise _Refused("flow_expired")
        if "error" in params:
            raise _Refused("provider_refused", params["error"][:64])
        code = params.get("code")
        if not code:
            raise _Refused("bad_response", "no_code")
        tokens = await self._redeem(code, flow.verifier)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise _Refused("bad_response", "no_id_token")
        access_token = tokens.get("access_token")
        return await self.validate_id_token(
            id_token,
            nonce=flow.nonce,
            access_token=access_token if isinstance(access_token, str) else None,
        )

    def _client_assertion(self, token_endpoint: str) -> str:
        key = self.config.client_key or {}
        alg = _jwk_alg(key)
        now = int(self._clock().timestamp())
        claims = {
            "iss": self.config.client_id,
            "sub": self.config.client_id,
            "aud": token_endpoint,
            "jti": secrets.token_urlsafe(24),
            "iat": now,
            "exp": now + 60,
        }
        headers = {"kid": key["kid"]} if "kid" in key else None
        return jwt.encode(claims, PyJWK(key, algorithm=alg), algorithm=alg, headers=headers)

    async def _redeem(self, code: str, verifier: str) -> dict[str, Any]:
        endpoint = str((await self.metadata())["token_endpoint"])
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.config.redirect_uri,
            "code_verifier": verifier,
        }
        headers = {"Accept": "application/json"}
        if self.config.client_auth == "client_secret_basic":
            # RFC 6749 §2.3.1: both parts form-encoded before base64.
            user = quote_plus(self.config.client_id)
            password = quote_plus(self.config.client_secret or "")
            basic = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {basic}"
        else:
            form["client_id"] = self.config.client_id
            form["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            form["client_assertion"] = self._client_assertion(endpoint)
        try:
            async with self._http() as http:
                response = await http.post(endpoint, data=form, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("review.oidc_unreachable", url=endpoint, error=type(exc).__name__)
            raise ProviderUnavailable() from exc
        if response.status_code >= 500:
            raise ProviderUnavailable()
        if response.status_code != 200:
            error = ""
            with contextlib.suppress(ValueError, AttributeError):
                error = str(response.json().get("error", ""))[:64]
            raise _Refused("token_refused", error or str(response.status_code))
        try:
            tokens = response.json()
        except ValueError as exc:
            raise _Refused("bad_response", "token_not_json") from exc
        if not isinstance(tokens, dict):
            raise _Refused("bad_response", "token_not_json")
        return tokens

    async def validate_id_token(
        self, token: str, *, nonce: str, access_token: str | None = None
    ) -> dict[str, Any]:
        """The ID token's claims, once every check passed; _Refused otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _Refused("id_token_invalid", "malformed") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.config.algorithms:
            raise _Refused("id_token_invalid", "algorithm")
        jwk = await self._key_for(header.get("kid"), alg)
        try:
            key = PyJWK(jwk, algorithm=alg)
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.config.client_id,
                issuer=self.config.issuer,
                options={
                    "require": ["iss", "sub", "aud", "exp", "iat"],
                    # Times are checked below against the broker's clock.
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidSignatureError as exc:
            raise _Refused("id_token_invalid", "signature") from exc
        except jwt.InvalidAudienceError as exc:
            raise _Refused("id_token_invalid", "audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise _Refused("id_token_invalid", "issuer") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise _Refused("id_token_invalid", "missing_claim") from exc
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise _Refused("id_token_invalid", "malformed") from exc
        self._check_claims(claims, alg=alg, nonce=nonce, access_token=access_token)
        return claims

    def _check_claims(
        self, claims: dict[str, Any], *, alg: str, nonce: str, access_token: str | None
    ) -> None:
        """Times (the broker's clock), azp, nonce, sub and at_hash of a signed ID token."""
        now = self._clock().timestamp()
        exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
        if not isinstance(exp, int | float) or not isinstance(iat, int | float):
            raise _Refused("id_token_invalid", "times")
        if exp <= now - LEEWAY:
            raise _Refused("id_token_invalid", "expired")
        if iat > now + LEEWAY or iat < now - MAX_TOKEN_AGE:
            raise _Refused("id_token_invalid", "issued_at")
        if nbf is not None and (not isinstance(nbf, int | float) or nbf > now + LEEWAY):
            raise _Refused("id_token_invalid", "not_before")
        aud = claims["aud"]
        azp = claims.get("azp")
        if (isinstance(aud, list) and len(aud) > 1 and azp is None) or (
            azp is not None and azp != self.config.client_id
        ):
            raise _Refused("id_token_invalid", "authorized_party")
        got_nonce = claims.get("nonce")
        if not isinstance(got_nonce, str) or not hmac.compare_digest(got_nonce, nonce):
            raise _Refused("id_token_invalid", "nonce")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 255:
            raise _Refused("id_token_invalid", "subject")
        at_hash = claims.get("at_hash")
        if at_hash is not None and access_token is not None:
            digest = (hashlib.sha512 if alg == "EdDSA" else hashlib.sha256)(
                access_token.encode("ascii", "replace")
            ).digest()
            if not isinstance(at_hash, str) or not hmac.compare_digest(
                at_hash, _b64u(digest[: len(digest) // 2])
            ):
                raise _Refused("id_token_invalid", "at_hash")
