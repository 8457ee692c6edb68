"""Time-based one-time passwords (RFC 6238 over RFC 4226 HOTP), standard library only.

HMAC-SHA-1, 6 digits, 30-second steps: what every authenticator app reads from
an ``otpauth://totp/`` URI. ``verify`` accepts the current step and one step
either side (clock drift) and returns the step it matched, so the caller can
refuse a step it accepted before (no code is used twice)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from urllib.parse import quote, urlencode

DIGITS = 6
PERIOD = 30
DRIFT_STEPS = 1
ISSUER = "Chain broker"


def new_secret() -> str:
    """A fresh 160-bit secret, base32 without padding (as authenticator apps expect)."""
    return base64.b32encode(secrets.token_bytes(20)).decode("ascii").rstrip("=")


def _key(secret: str) -> bytes:
    text = secret.strip().replace(" ", "").upper()
    return base64.b32decode(text + "=" * (-len(text) % 8))


def hotp(secret: str, counter: int, digits: int = DIGITS) -> str:
    """RFC 4226: dynamic truncation of HMAC-SHA-1(key, counter)."""
    mac = hmac.new(_key(secret), struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    code = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(code % 10**digits).zfill(digits)


def step_at(unix_seconds: float) -> int:
    return int(unix_seconds // PERIOD)


def totp(secret: str, unix_seconds: float) -> str:
    return hotp(secret, step_at(unix_seconds))


def verify(secret: str, code: str, unix_seconds: float) -> int | None:
    """The time step ``code`` is valid for (now, or one step either side), else None."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isascii() or not code.isdigit():
        return None
    now = step_at(unix_seconds)
    matched: int | None = None
    for step in range(now - DRIFT_STEPS, now + DRIFT_STEPS + 1):
        # Compare every candidate in constant time; do not stop at the first match.
        if hmac.compare_digest(hotp(secret, step), code) and matched is None:
            matched = step
    return matched


def provisioning_uri(secret: str, account: str, issuer: str = ISSUER) -> str:
    """The ``otpauth://totp/`` URI (Key URI Format) for an authenticator app."""
    label = quote(f"{issuer}:{account}", safe=":@")
    query = urlencode(
        {
            "secret": secret,
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": DIGITS,
            "period": PERIOD,
        },
        quote_via=quote,
    )
    return f"otpauth://totp/{label}?{query}"
