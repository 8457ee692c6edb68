"""Canonical JSON (RFC 8785) and domain-separated hashes."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import rfc8785

_ENCODER = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
)


def _plain(value: Any) -> bool:
    """True when ``value`` holds no floats and only ASCII object keys: then the
    C JSON encoder's output is byte-identical to RFC 8785 (property-tested)."""
    if isinstance(value, dict):
        return all(k.isascii() and _plain(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    return not isinstance(value, float)


def canonical_json(value: Any) -> bytes:
    """RFC 8785 JSON Canonicalization Scheme bytes of ``value``."""
    if _plain(value):
        return _ENCODER.encode(value).encode("utf-8")
    out: bytes = rfc8785.dumps(value)
    return out


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962/9162 leaf hash: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962/9162 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()
