"""Stand-alone verifier for the broker's audit log: checkpoints and proofs.

Copy this one file: it needs only the Python standard library and
``cryptography``. It checks

* a checkpoint in the C2SP signed-note / tlog-checkpoint format, signed with
  Ed25519 (``verify_checkpoint``),
* an RFC 9162 inclusion proof (``verify_inclusion``, section 2.1.3.2),
* an RFC 9162 consistency proof (``verify_consistency``, section 2.1.4.2),
* a signed release receipt (``verify_receipt``): a JWS compact token, EdDSA
  (Ed25519), checked with the broker's public JWK or JWKS (``/oauth/jwks``);
  it returns the payload, whose ``audit`` object names the leaf indices and the
  tree size to ask inclusion proofs for (docs/receipts.md),
* a witness cosignature (C2SP tlog-cosignature, ``cosignature/v1``) by an
  agency over a checkpoint (``verify_cosignature``),
* fork evidence (``prove_fork``): two checkpoints signed by the broker that no
  single append-only log can have produced.

Hashes are raw 32-byte SHA-256 digests; the broker's JSON and checkpoints carry
them base64-encoded (standard alphabet, padded). A leaf hash is
SHA-256(0x00 || entry bytes), an interior node SHA-256(0x01 || left || right).

Example::

    cp = verify_checkpoint(text, key_name="broker.example/audit", public_key=raw32)
    verify_inclusion(leaf, proof["index"], cp.size, hashes, cp.root_hash)
    receipt = verify_receipt(token, jwks)  # jwks: the JSON of /oauth/jwks
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "COSIGNATURE_TYPE",
    "RECEIPT_TYPE",
    "RECEIPT_VERSIONS",
    "Checkpoint",
    "Cosignature",
    "ForkEvidence",
    "VerificationError",
    "cosignature_key_id",
    "cosigned_message",
    "key_id",
    "leaf_hash",
    "node_hash",
    "parse_checkpoint_body",
    "parse_verifier_key",
    "prove_fork",
    "verify_checkpoint",
    "verify_consistency",
    "verify_cosignature",
    "verify_inclusion",
    "verify_receipt",
]

ED25519_SIGNATURE_TYPE = 0x01
COSIGNATURE_TYPE = 0x04  # C2SP tlog-cosignature: cosignature/v1, Ed25519
_DASH = "\u2014 "  # EM DASH and a space open every signature line
RECEIPT_TYPE = "release-receipt+jws"
RECEIPT_VERSIONS = frozenset({1, 2})  # 2: an exchange that asked several providers


class VerificationError(Exception):
    """The checkpoint or proof does not verify."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def key_id(key_name: str, public_key: bytes) -> bytes:
    """The C2SP signed-note key ID of an Ed25519 key:
    the first 4 bytes of SHA-256(key name || 0x0A || 0x01 || public key)."""
    return hashlib.sha256(
        key_name.encode("utf-8") + b"\n" + bytes([ED25519_SIGNATURE_TYPE]) + public_key
    ).digest()[:4]


def parse_verifier_key(vkey: str) -> tuple[str, bytes]:
    """Parses a note verifier key ``<name>+<hex key id>+<base64(0x01 || key)>``;
    returns (key name, raw public key)."""
    try:
        name, hex_id, b64 = vkey.strip().split("+", 2)
        raw = _b64(b64)
        kid = bytes.fromhex(hex_id)
    except ValueError as exc:
        raise VerificationError("malformed verifier key") from exc
    if len(raw) != 33 or raw[0] != ED25519_SIGNATURE_TYPE:
        raise VerificationError("the verifier key is not an Ed25519 key")
    if key_id(name, raw[1:]) != kid:
        raise VerificationError("the verifier key's id does not match")
    return name, raw[1:]


def _b64(text: str) -> bytes:
    """Strict base64: only the canonical encoding of the bytes is accepted."""
    try:
        data = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise VerificationError("malformed base64") from exc
    if base64.b64encode(data).decode("ascii") != text:
        raise VerificationError("non-canonical base64")
    return data


def verify_checkpoint(text: str | bytes, *, key_name: str, public_key: bytes) -> Checkpoint:
    """Checks that the note carries a valid Ed25519 signature by ``key_name``
    (other signatures are ignored) and parses its checkpoint body."""
    body, signatures = _split_note(text)
    message = body.encode("utf-8")
    wanted = key_id(key_name, public_key)
    verifier = Ed25519PublicKey.from_public_bytes(public_key)
    verified = False
    for name, blob in signatures:
        if name != key_name or len(blob) < 5 or blob[:4] != wanted:
            continue
        try:
            verifier.verify(blob[4:], message)
        except InvalidSignature as exc:
            raise VerificationError("the checkpoint signature is invalid") from exc
        verified = True
    if not verified:
        raise VerificationError(f"no signature by {key_name}")
    return _parse_body(body)


def _split_note(text: str | bytes) -> tuple[str, list[tuple[str, bytes]]]:
    """A signed note's body (newline-terminated) and its signature lines as
    (key name, decoded signature blob); raises on anything malformed."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise VerificationError("the note is not UTF-8") from exc
    body, sep, signatures = text.rpartition("\n\n")
    if not sep or not signatures.endswith("\n"):
        raise VerificationError("not a signed note")
    out = []
    for line in signatures[:-1].split("\n"):
        if not line.startswith(_DASH):
            raise VerificationError("malformed signature line")
        name, _, sig_b64 = line[len(_DASH) :].partition(" ")
        out.append((name, _b64(sig_b64)))
    return body + "\n", out


def _parse_body(body: str) -> Checkpoint:
    lines = body[:-1].split("\n")
    if len(lines) < 3:
        raise VerificationError("a checkpoint has an origin, a size and a root hash")
    origin, size_text, root_b64, *extensions = lines
    # ASCII digits only: str.isdigit() also takes digits int() refuses, such as "²".
    digits = size_text.isascii() and size_text.isdigit()
    if not digits or (size_text != "0" and size_text.startswith("0")):
        raise VerificationError("malformed tree size")
    root = _b64(root_b64)
    if len(root) != 32:
        raise VerificationError("the root hash is not 32 bytes")
    return Checkpoint(origin, int(size_text), root, tuple(extensions))


def parse_checkpoint_body(body: str) -> Checkpoint:
    """Parses an unsigned checkpoint body (``origin\\nsize\\nroot\\n``)."""
    if not body.endswith("\n") or "\n\n" in body:
        raise VerificationError("a checkpoint body is newline-terminated lines, no blank line")
    return _parse_body(body)


@dataclass(frozen=True, slots=True)
class Cosignature:
    checkpoint: Checkpoint
    timestamp: int  # seconds since the Unix epoch, as the witness signed it


def cosignature_key_id(key_name: str, public_key: bytes) -> bytes:
    """The key ID of a cosignature/v1 (Ed25519) witness key: the first 4 bytes
    of SHA-256(key name || 0x0A || 0x04 || public key)."""
    return hashlib.sha256(
        key_name.encode("utf-8") + b"\n" + bytes([COSIGNATURE_TYPE]) + public_key
    ).digest()[:4]


def cosigned_message(body: str, timestamp: int) -> bytes:
    """What a cosignature/v1 signs: ``cosignature/v1\\ntime <t>\\n`` + the checkpoint body."""
    if not 0 <= timestamp < 2**63:
        raise VerificationError("timestamp out of range")
    return f"cosignature/v1\ntime {timestamp}\n{body}".encode()


def verify_cosignature(text: str | bytes, *, key_name: str, public_key: bytes) -> Cosignature:
    """Checks that the note carries a valid cosignature/v1 by the witness
    ``key_name`` (signature line ``— <name> base64(key id || 8-byte big-endian
    timestamp || Ed25519 signature)``) and returns the checkpoint and time."""
    body, signatures = _split_note(text)
    wanted = cosignature_key_id(key_name, public_key)
    verifier = Ed25519PublicKey.from_public_bytes(public_key)
    for name, blob in signatures:
        if name != key_name or len(blob) != 4 + 8 + 64 or blob[:4] != wanted:
            continue
        timestamp = int.from_bytes(blob[4:12], "big")
        try:
            verifier.verify(blob[12:], cosigned_message(body, timestamp))
        except InvalidSignature as exc:
            raise VerificationError(f"the cosignature by {key_name} is invalid") from exc
        return Cosignature(_parse_body(body), timestamp)
    raise VerificationError(f"no cosignature by {key_name}")


@dataclass(frozen=True, slots=True)
class ForkEvidence:
    """Two checkpoints, both signed by the broker, that cannot both be heads of
    one append-only log. ``prefix_root`` is the root the newer tree has at the
    older size (shown by ``proof``); it differs from ``older.root_hash``."""

    older: Checkpoint
    newer: Checkpoint
    prefix_root: bytes
    proof: tuple[bytes, ...]


def prove_fork(
    note_a: str | bytes,
    note_b: str | bytes,
    proof: Sequence[bytes] = (),
    *,
    key_name: str,
    public_key: bytes,
    prefix_root: bytes | None = None,
) -> ForkEvidence:
    """Returns evidence that the broker signed inconsistent heads, or raises
    VerificationError when it did not (or the evidence is not conclusive).

    Both notes must verify as checkpoints by ``key_name``. Equal sizes with
    different roots are a fork on their own. Otherwise ``proof`` is an RFC 9162
    consistency proof from the smaller to the larger size that verifies
    against the larger checkpoint's root and the root ``prefix_root`` (the
    ``from_root`` of GET /v1/audit/proof/consistency; it may be omitted unless
    the smaller size is a power of two): the larger tree then provably starts
    with ``prefix_root``, and if that is not the smaller checkpoint's root the
    broker has signed two histories."""
    a = verify_checkpoint(note_a, key_name=key_name, public_key=public_key)
    b = verify_checkpoint(note_b, key_name=key_name, public_key=public_key)
    if a.origin != b.origin:
        raise VerificationError("the checkpoints are for different logs")
    older, newer = (a, b) if a.size <= b.size else (b, a)
    if older.size == newer.size:
        if older.root_hash == newer.root_hash:
            raise VerificationError("the checkpoints are consistent: no fork")
        return ForkEvidence(older, newer, newer.root_hash, ())
    if older.size == 0:
        raise VerificationError("every tree extends the empty tree: no fork")
    if prefix_root is None:
        if older.size & (older.size - 1) == 0:
            raise VerificationError("give prefix_root: the older size is a power of two")
        prefix_root = _prefix_root(older.size, newer.size, proof)
    try:
        verify_consistency(older.size, newer.size, prefix_root, newer.root_hash, proof)
    except VerificationError as exc:
        raise VerificationError(
            f"the consistency proof does not verify against the newer checkpoint ({exc}): "
            "no evidence (a broker that cannot prove consistency is suspect, but this "
            "proof proves nothing)"
        ) from exc
    if prefix_root == older.root_hash:
        raise VerificationError("the checkpoints are consistent: no fork")
    return ForkEvidence(older, newer, prefix_root, tuple(proof))


def _prefix_root(old_size: int, new_size: int, proof: Sequence[bytes]) -> bytes:
    """The old-size root an RFC 9162 consistency proof implies (old size not a
    power of two; the proof is checked against the new root afterwards)."""
    if not proof:
        raise VerificationError("the consistency proof is empty")
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            raise VerificationError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        fn >>= 1
        sn >>= 1
    return fr


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 section 2.1.3.2: ``leaf`` (a leaf hash) is entry ``index`` of the
    tree of ``size`` entries with ``root``. Raises VerificationError."""
    if not 0 <= index < size:
        raise VerificationError("index out of range")
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            raise VerificationError("the inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("the inclusion proof is too short")
    if r != root:
        raise VerificationError("the inclusion proof does not lead to the root")


def _trivially_consistent(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Handles the sizes RFC 9162's algorithm leaves out (0 or equal sizes)."""
    if not 0 <= old_size <= new_size:
        raise VerificationError("sizes out of range")
    if old_size == new_size:
        if proof or old_root != new_root:
            raise VerificationError("equal sizes need equal roots and an empty proof")
        return True
    if old_size == 0:
        if proof:
            raise VerificationError("a proof from the empty tree is empty")
        return True
    if not proof:
        raise VerificationError("the consistency proof is empty")
    return False


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 section 2.1.4.2: the tree of ``old_size`` entries with
    ``old_root`` is a prefix of the tree of ``new_size`` with ``new_root``."""
    if _trivially_consistent(old_size, new_size, old_root, new_root, proof):
        return
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root starts the path
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("the consistency proof is too short")
    if fr != old_root or sr != new_root:
        raise VerificationError("the consistency proof does not match the roots")


def _b64u(text: str) -> bytes:
    """Strict unpadded base64url (RFC 7515 section 2): canonical encodings only."""
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, binascii.Error) as exc:
        raise VerificationError("malformed base64url") from exc
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii") != text:
        raise VerificationError("non-canonical base64url")
    return data


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):
            raise VerificationError(f"duplicate member in the {what}")
        return out

    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise VerificationError(f"the {what} is not JSON") from exc
    if not isinstance(value, dict):
        raise VerificationError(f"the {what} is not a JSON object")
    return value


def _ed25519_keys(jwk_or_jwks: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    keys = jwk_or_jwks.get("keys") if "keys" in jwk_or_jwks else [jwk_or_jwks]
    if not isinstance(keys, list):
        raise VerificationError('a JWKS has a "keys" array')
    return [
        k
        for k in keys
        if isinstance(k, Mapping)
        and k.get("kty") == "OKP"
        and k.get("crv") == "Ed25519"
        and k.get("use", "sig") == "sig"
        and k.get("alg", "EdDSA") == "EdDSA"
    ]


def verify_receipt(token: str, jwk_or_jwks: Mapping[str, Any]) -> dict[str, Any]:
    """Checks a release receipt (JWS compact, EdDSA, ``typ`` release-receipt+jws)
    with the broker's public Ed25519 key: one JWK, or a JWKS in which the key
    named by the header's ``kid`` is used. Returns the payload (a dict); raises
    VerificationError. Retired keys stay in the broker's JWKS, so receipts signed
    before a key rotation keep verifying."""
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 3 or not all(parts):
        raise VerificationError("not a JWS in compact serialisation")
    header_b64, payload_b64, signature_b64 = parts
    header = _json_object(_b64u(header_b64), "JWS header")
    if header.get("alg") != "EdDSA":
        raise VerificationError("the receipt is not signed with EdDSA")
    if header.get("typ") != RECEIPT_TYPE:
        raise VerificationError("not a release receipt (typ)")
    if "crit" in header:
        raise VerificationError("unsupported critical header parameters")
    kid = header.get("kid")
    candidates = _ed25519_keys(jwk_or_jwks)
    if "keys" in jwk_or_jwks or "kid" in jwk_or_jwks:
        candidates = [k for k in candidates if k.get("kid") == kid]
    if not candidates:
        raise VerificationError(f"no Ed25519 signing key with kid {kid!r}")
    signature = _b64u(signature_b64)
    message = f"{header_b64}.{payload_b64}".encode("ascii")
    for jwk in candidates:
        try:
            public = Ed25519PublicKey.from_public_bytes(_b64u(str(jwk.get("x", ""))))
        except ValueError as exc:
            raise VerificationError("malformed Ed25519 JWK") from exc
        try:
            public.verify(signature, message)
        except InvalidSignature:
            continue
        break
    else:
        raise VerificationError("the receipt signature is invalid")
    payload = _json_object(_b64u(payload_b64), "receipt payload")
    if payload.get("v") not in RECEIPT_VERSIONS:
        raise VerificationError("unknown receipt version")
    return payload
