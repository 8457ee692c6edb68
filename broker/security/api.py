"""OAuth 2.0 token endpoint (client credentials + private_key_jwt) and the
broker's public keys."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request

from broker.core.errors import AuthenticationFailed, ErrorCode
from broker.crypto.keys import BundleSigningKey
from broker.deps import ServicesDep
from broker.exchange.schemas import Problem, TokenResponse
from broker.security.tokens import ALLOWED_ALGS

router = APIRouter(tags=["oauth"])

_FORM = "application/x-www-form-urlencoded"


@router.post(
    "/oauth/token",
    response_model=TokenResponse,
    responses={
        401: {
            "model": Problem,
            "content": {"application/problem+json": {}},
            "description": "invalid_client (one generic message)",
        },
        413: {
            "model": Problem,
            "content": {"application/problem+json": {}},
            "description": "Request body too large",
        },
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                _FORM: {
                    "schema": {
                        "type": "object",
                        "required": ["grant_type", "client_assertion_type", "client_assertion"],
                        "properties": {
                            "grant_type": {"type": "string", "enum": ["client_credentials"]},
                            "client_assertion_type": {
                                "type": "string",
                                "enum": ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"],
                            },
                            "client_assertion": {"type": "string"},
                            "client_id": {"type": "string"},
                            "scope": {"type": "string"},
                        },
                    }
                }
            },
        }
    },
    summary="Get an access token with a signed client assertion (RFC 7523)",
)
async def token(request: Request, services: ServicesDep) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != _FORM:
        raise AuthenticationFailed(ErrorCode.INVALID_CLIENT)
    raw = await request.body()
    try:
        form = dict(parse_qsl(raw.decode("ascii"), keep_blank_values=True, max_num_fields=10))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AuthenticationFailed(ErrorCode.INVALID_CLIENT) from exc
    return await services.tokens.exchange_assertion(form)


@router.get("/oauth/jwks", summary="The broker's public signing keys (JWKS)")
async def jwks(services: ServicesDep) -> dict[str, Any]:
    document = services.keyring.public_jwks()
    # The ES256 key that signs the OPA policy bundles, once one was made (broker.policy.bundle).
    bundle_key = BundleSigningKey.load(services.settings.keys_dir)
    if bundle_key is not None:
        document["keys"].append(bundle_key.public_jwk())
    return document


@router.get(
    "/.well-known/oauth-authorization-server",
    summary="OAuth 2.0 authorization server metadata (RFC 8414)",
)
async def metadata(services: ServicesDep) -> dict[str, Any]:
    base = services.settings.public_url.rstrip("/")
    return {
        "issuer": base,
        "token_endpoint": services.settings.token_endpoint,
        "jwks_uri": base + "/oauth/jwks",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ALLOWED_ALGS),
    }
