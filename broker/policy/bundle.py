"""Builds a signed OPA bundle from the broker's active policy set.

The bundle is what an OPA server loads to decide like the embedded engines: the
shared Rego library and every agreement's Rego module, the data document the
Rego reads (``data.broker.agreements``, with unsigned agreements marked
``status: unsigned`` exactly as the embedded engines see them), a ``.manifest``
whose ``revision`` is the policy set's bundle hash and whose ``roots`` cover
every package and data path of the bundle, and ``.signatures.json`` in OPA's
bundle-signing format.

The signature is one JWT (ES256, the broker's bundle-signing key; see
``broker.crypto.keys.BundleSigningKey``) whose payload lists every file with its
``name``, ``hash`` and ``algorithm`` (SHA-256), and the ``keyid``; like ``opa
sign`` without a claims file it carries no ``scope``, so OPA is configured
without one (OPA requires the payload's scope to equal the configured scope).
As OPA computes them, the hash of a Rego file is the SHA-256 of its bytes, and
the hash of a JSON file (``data.json``, ``.manifest``) is the SHA-256 of its
value re-encoded as compact JSON with object keys sorted. The broker writes its
JSON files in exactly that form.

The tarball is deterministic: members sorted by name, fixed owner, mode and
modification time, a gzip header without name or time, and a deterministic
ECDSA signature (RFC 6979). The same policy set and key give the same bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import re
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from broker.core.errors import PolicyInvalid
from broker.crypto.keys import BundleSigningKey
from broker.policy.loader import PolicySet

HASH_ALGORITHM = "SHA-256"
MANIFEST = ".manifest"
SIGNATURES = ".signatures.json"
MTIME = 0  # every member's modification time (and the gzip header's)

_PACKAGE = re.compile(r"^package[ \t]+([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)", re.M)
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# The characters Go's encoding/json escapes with a backslash and a letter.
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


# ----------------------------------------------------------------- JSON as OPA hashes it
def _go_string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif ch in ("\b", "\f"):
            # Go releases differ in how they escape these two; refuse them rather
            # than sign a hash that some OPA releases would not reproduce.
            raise PolicyInvalid("bundle data holds a backspace or form-feed character")
        elif ch < " " or ch in ("\u2028", "\u2029"):
            out.append(f"\\u{ord(ch):04x}")
        elif "\ud800" <= ch <= "\udfff":
            raise PolicyInvalid("bundle data holds a lone UTF-16 surrogate")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _encode(value: Any, out: list[str]) -> None:
    if isinstance(value, Mapping):
        out.append("{")
        for i, key in enumerate(sorted(value)):
            if not isinstance(key, str):
                raise PolicyInvalid("bundle data has a non-string object key")
            if i:
                out.append(",")
            out.append(_go_string(key))
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        out.append(_scalar(value))


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return _go_string(value)
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return json.dumps(value)
    if isinstance(value, _Number):
        return value.literal
    raise PolicyInvalid(f"bundle data holds a value JSON cannot carry ({type(value).__name__})")


def opa_json(value: Any) -> bytes:
    """``value`` as compact JSON with sorted keys, strings escaped as Go's
    encoding/json does: the form OPA hashes structured bundle files in."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out).encode("utf-8")


@dataclass(frozen=True, slots=True)
class _Number:
    """A JSON number kept as its literal text (OPA hashes numbers as written)."""

    literal: str


def is_structured(name: str) -> bool:
    """The JSON files OPA parses before hashing (``IsStructuredDoc``; the broker
    writes no YAML data files)."""
    base = name.rsplit("/", 1)[-1]
    return base in ("data.json", MANIFEST)


def file_hash(name: str, content: bytes) -> str:
    """The hex SHA-256 digest OPA expects for bundle file ``name``."""
    if is_structured(name):
        value = json.loads(content, parse_int=_Number, parse_float=_Number)
        return hashlib.sha256(opa_json(value)).hexdigest()
    return hashlib.sha256(content).hexdigest()


# ----------------------------------------------------------------- the bundle
@dataclass(frozen=True, slots=True)
class PolicyBundle:
    revision: str
    roots: tuple[str, ...]
    files: dict[str, bytes]  # bundle path without the leading "/" -> bytes

    def tarball(self) -> bytes:
        """The gzipped tar OPA loads; deterministic for the same files."""
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(self.files):
                content = self.files[name]
                info = tarfile.TarInfo("/" + name)
                info.size = len(content)
                info.mode = 0o644
                info.mtime = MTIME
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(content))
        packed = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=MTIME) as gz:
            gz.write(raw.getvalue())
        return packed.getvalue()


def read_tarball(data: bytes) -> dict[str, bytes]:
    """The files of a bundle tarball, by path without the leading "/"."""
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            extracted = tar.extractfile(member)
            if extracted is None:
                continue
            name = member.name.lstrip("/")
            if name in files:
                raise PolicyInvalid(f"bundle holds {name} twice")
            files[name] = extracted.read()
    return files


def package_path(source: str, module: str) -> str:
    """``package a.b.c`` of a Rego module as the data path ``a/b/c``."""
    m = _PACKAGE.search(source)
    if m is None:
        raise PolicyInvalid(f"{module}: no package declaration the bundle builder can read")
    return m.group(1).replace(".", "/")


def _check_path(name: str) -> None:
    parts = name.split("/")
    if not all(_SEGMENT.fullmatch(p) and p not in (".", "..") for p in parts):
        raise PolicyInvalid(f"{name}: not a path the bundle can hold")


def data_files(document: Mapping[str, Any]) -> dict[str, Any]:
    """The data document split into ``data.json`` files, one per second-level
    path (``broker/agreements/data.json`` holds ``data.broker.agreements``)."""
    files: dict[str, Any] = {}
    for top, value in document.items():
        if isinstance(value, Mapping) and value:
            for key, inner in value.items():
                files[f"{top}/{key}"] = inner
        else:
            files[str(top)] = value
    for path in files:
        _check_path(path)
    return files


def contains(root: str, path: str) -> bool:
    """Whether bundle root ``root`` covers ``path`` (whole segments)."""
    return root in ("", path) or path.startswith(root + "/")


def minimal_roots(paths: set[str]) -> tuple[str, ...]:
    """The fewest roots covering ``paths`` (a root inside another is dropped), so
    no two roots overlap, as OPA requires."""
    roots = {p for p in paths if not any(q != p and contains(q, p) for q in paths)}
    return tuple(sorted(roots))


def signed_token(files: Mapping[str, bytes], key: BundleSigningKey) -> str:
    """The JWT of ``.signatures.json``: every file's name, hash and algorithm."""
    payload = {
        "files": [
            {"name": name, "hash": file_hash(name, files[name]), "algorithm": HASH_ALGORITHM}
            for name in sorted(files)
        ],
        "keyid": key.kid,
        "iss": "chain-broker",
    }
    return key.sign_jws({"alg": key.alg, "kid": key.kid, "typ": "JWT"}, payload)


def build_bundle(policy_set: PolicySet, key: BundleSigningKey) -> PolicyBundle:
    """The signed OPA bundle of ``policy_set`` (modules, data, manifest)."""
    files: dict[str, bytes] = {}
    paths: set[str] = set()
    for name, source in sorted(policy_set.modules().items()):
        _check_path(name)
        if not name.endswith(".rego"):
            raise PolicyInvalid(f"{name}: a Rego module must end in .rego")
        files[name] = source.encode("utf-8")
        paths.add(package_path(source, name))
    for path, value in data_files(policy_set.data_document()).items():
        name = f"{path}/data.json"
        if name in files:
            raise PolicyInvalid(f"{name}: clashes with a module")
        files[name] = opa_json(value)
        paths.add(path)
    roots = minimal_roots(paths)
    manifest = {"revision": policy_set.bundle_hash, "roots": list(roots)}
    files[MANIFEST] = opa_json(manifest)
    token = signed_token(files, key)
    files[SIGNATURES] = opa_json({"signatures": [token]})
    return PolicyBundle(revision=policy_set.bundle_hash, roots=roots, files=files)
