"""JWE recipe: seal a JSON payload to a partner's registered encryption key.

Compact serialisation, ECDH-ES+A256KW with A256GCM, so any stock JOSE library
(Java nimbus-jose-jwt, Node jose, Python joserfc/jwcrypto) can decrypt it.
Partner keys are parsed once and cached by (agency, kid).
"""

from __future__ import annotations

from typing import Any

import orjson
from joserfc import jwe
from joserfc.jwk import ECKey, OKPKey

from broker.crypto.keys import CONTENT_ENC, ENCRYPTION_ALG, PartnerKey


class Sealer:
    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], ECKey | OKPKey] = {}

    def _key(self, owner: str, key: PartnerKey) -> ECKey | OKPKey:
        cache_key = (owner, key.kid)
        parsed = self._cache.get(cache_key)
        if parsed is None:
            public = {k: v for k, v in key.jwk.items() if k != "d"}
            parsed = (OKPKey if public["kty"] == "OKP" else ECKey).import_key(public)
            self._cache[cache_key] = parsed
        return parsed

    def seal(self, owner: str, key: PartnerKey, payload: Any) -> str:
        header = {
            "alg": ENCRYPTION_ALG,
            "enc": CONTENT_ENC,
            "kid": key.kid,
            "cty": "application/json",
        }
        # Compact JSON; the plaintext is not signed, so it need not be canonical.
        token: str = jwe.encrypt_compact(header, orjson.dumps(payload), self._key(owner, key))
        return token

    def forget(self, owner: str) -> None:
        for k in [k for k in self._cache if k[0] == owner]:
            del self._cache[k]
