"""Canonical JSON (RFC 8785) and domain-separated hashes."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import rfc8785

_LEAVES = (str, int, bool, type(None))


def _plain(value: Any) -> bool:
    """True when ``value`` holds no floats and only ASCII object keys: then the
    C JSON encoder's output is byte-identical to RFC 8785 (property-tested)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if not key.isascii():
                    return False
                if not isinstance(child, _LEAVES) or isinstance(child, float):
                    stack.append(child)
        elif isinstance(item, list | tuple):
            stack.extend(c for c in item if not isinstance(c, _LEAVES))
        elif isinstance(item, float) or not isinstance(item, _LEAVES):
            return False
    return True


def canonical_json(value: Any) -> bytes:
    """RFC 8785 JSON Canonicalization Scheme bytes of ``value``."""
    if _plain(value):
        return canonical_json_plain(value)
    out: bytes = rfc8785.dumps(value)
    return out


def canonical_json_plain(value: Any) -> bytes:
    """RFC 8785 bytes of a document the caller built without floats and with
    ASCII keys only (audit entries): skips the check ``canonical_json`` makes.

    For such documents orjson's sorted compact output is byte-identical to RFC
    8785 (tests/property/test_canonical.py); integers beyond 64 bits, which orjson
    refuses, take the reference implementation."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
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
