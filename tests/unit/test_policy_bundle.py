"""The signed OPA bundle: layout, determinism and signature (OPA's formats)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import jwt
import pytest

from broker.core.errors import PolicyInvalid
from broker.crypto.keys import BundleSigningKey
from broker.policy.bundle import (
    build_bundle,
    file_hash,
    minimal_roots,
    opa_json,
    package_path,
    read_tarball,
)
from broker.policy.loader import PolicySet, load_policy_set
from tests.scenarios.scenario_data import POLICY_ROOT


@pytest.fixture(scope="module")
def policy_set() -> PolicySet:
    # As the broker enforces it: here every agreement version counts as signed.
    loaded = load_policy_set(POLICY_ROOT)
    return loaded.with_enforced(frozenset(a.content_hash for a in loaded.all_versions()))


@pytest.fixture
def key(tmp_path: Path) -> BundleSigningKey:
    return BundleSigningKey.load_or_create(tmp_path / "keys")


def members(tarball: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        return tar.getmembers()


def under(roots: list[str], path: str) -> bool:
    return any(path == r or path.startswith(r + "/") for r in roots)


def opa_digest(name: str, content: bytes) -> str:
    """OPA's file digest, computed independently: JSON files over their value
    re-encoded compactly with sorted keys, other files over their bytes."""
    if name.rsplit("/", 1)[-1] in ("data.json", ".manifest"):
        value = json.loads(content)
        content = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        content = content.encode("utf-8")  # type: ignore[assignment]
    return hashlib.sha256(content).hexdigest()


def signature_claims(files: dict[str, bytes], public_jwk: dict[str, Any]) -> dict[str, Any]:
    document = json.loads(files[".signatures.json"])
    assert len(document["signatures"]) == 1  # OPA takes exactly one JWT
    token = document["signatures"][0]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    assert header["kid"] == public_jwk["kid"]
    key = jwt.PyJWKSet.from_dict({"keys": [public_jwk]})[header["kid"]]
    claims: dict[str, Any] = jwt.decode(token, key.key, algorithms=["ES256"])
    return claims


def test_layout_manifest_and_roots(policy_set: PolicySet, key: BundleSigningKey) -> None:
    bundle = build_bundle(policy_set, key)
    tarball = bundle.tarball()
    infos = members(tarball)
    names = [m.name for m in infos]
    assert names == sorted(names)
    assert all(m.isfile() and m.mode == 0o644 and m.mtime == 0 for m in infos)
    assert all(m.uid == 0 and m.gid == 0 and not m.uname and not m.gname for m in infos)
    expected = {"/.manifest", "/.signatures.json", "/broker/agreements/data.json"}
    expected |= {"/" + name for name in policy_set.modules()}
    assert set(names) == expected

    files = read_tarball(tarball)
    manifest = json.loads(files[".manifest"])
    assert manifest["revision"] == policy_set.bundle_hash == bundle.revision
    roots = manifest["roots"]
    assert roots == list(bundle.roots)
    assert "broker/decision" in roots
    assert "broker/agreements" in roots
    for i, one in enumerate(roots):  # OPA refuses overlapping roots
        assert not any(under([one], other) or under([other], one) for other in roots[i + 1 :])
    for name, content in files.items():
        if name.endswith(".rego"):
            source = content.decode("utf-8")
            assert source == policy_set.modules()[name]
            assert under(roots, package_path(source, name)), name
        elif name.endswith("data.json"):
            assert under(roots, name.removesuffix("/data.json")), name
    # The data files hold exactly the data document the embedded engines use.
    assert {"broker": {"agreements": json.loads(files["broker/agreements/data.json"])}} == (
        policy_set.data_document()
    )


def test_unsigned_agreements_are_marked_in_the_data(key: BundleSigningKey) -> None:
    loaded = load_policy_set(POLICY_ROOT)
    nothing_signed = loaded.with_enforced(frozenset())
    bundle = build_bundle(nothing_signed, key)
    data = json.loads(bundle.files["broker/agreements/data.json"])
    assert data == nothing_signed.data_document()["broker"]["agreements"]
    assert b'"status":"unsigned"' in bundle.files["broker/agreements/data.json"]
    assert bundle.revision != build_bundle(loaded, key).revision


def test_the_same_policy_set_gives_the_same_bytes(
    policy_set: PolicySet, key: BundleSigningKey, tmp_path: Path
) -> None:
    first = build_bundle(policy_set, key).tarball()
    again = build_bundle(policy_set, BundleSigningKey.load_or_create(tmp_path / "keys"))
    assert again.tarball() == first
    header = gzip.GzipFile(fileobj=io.BytesIO(first))
    header.read()
    assert header.mtime == 0
    other = build_bundle(policy_set.with_enforced(frozenset()), key)
    assert other.revision != policy_set.bundle_hash
    assert other.tarball() != first


def test_signature_verifies_and_covers_every_file(
    policy_set: PolicySet, key: BundleSigningKey
) -> None:
    files = read_tarball(build_bundle(policy_set, key).tarball())
    claims = signature_claims(files, key.public_jwk())
    assert claims["keyid"] == key.kid
    assert "scope" not in claims  # as `opa sign` makes it; OPA is configured without one
    listed = {f["name"]: f for f in claims["files"]}
    assert set(listed) == set(files) - {".signatures.json"}
    for name, entry in listed.items():
        assert entry["algorithm"] == "SHA-256"
        assert entry["hash"] == opa_digest(name, files[name]) == file_hash(name, files[name])
    # The published key is a plain P-256 key that OPA takes as PEM.
    assert key.public_jwk()["kty"] == "EC"
    assert "d" not in key.public_jwk()
    assert key.public_pem().startswith("-----BEGIN PUBLIC KEY-----")
    assert (
        jwt.decode(
            json.loads(files[".signatures.json"])["signatures"][0],
            key.public_pem(),
            algorithms=["ES256"],
        )["files"]
        == claims["files"]
    )


@pytest.mark.parametrize("name", ["lib/decision.rego", "broker/agreements/data.json", ".manifest"])
def test_tampering_with_a_file_is_detected(
    policy_set: PolicySet, key: BundleSigningKey, name: str
) -> None:
    files = read_tarball(build_bundle(policy_set, key).tarball())
    listed = {f["name"]: f["hash"] for f in signature_claims(files, key.public_jwk())["files"]}
    if name.endswith(".rego"):
        files[name] += b"\n# edited\n"
    else:
        value = json.loads(files[name])
        value["extra"] = True
        files[name] = json.dumps(value).encode()
    assert opa_digest(name, files[name]) != listed[name]


def test_reformatted_json_keeps_its_hash(policy_set: PolicySet, key: BundleSigningKey) -> None:
    # OPA hashes a JSON file's value, not its whitespace or key order.
    files = read_tarball(build_bundle(policy_set, key).tarball())
    data = files["broker/agreements/data.json"]
    pretty = json.dumps(json.loads(data), indent=2).encode()
    assert file_hash("broker/agreements/data.json", pretty) == file_hash(
        "broker/agreements/data.json", data
    )


def test_a_forged_signature_does_not_verify(
    policy_set: PolicySet, key: BundleSigningKey, tmp_path: Path
) -> None:
    files = read_tarball(build_bundle(policy_set, key).tarball())
    other = BundleSigningKey.load_or_create(tmp_path / "other")
    token = json.loads(files[".signatures.json"])["signatures"][0]
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, other.public_pem(), algorithms=["ES256"])


def test_json_is_encoded_as_go_does() -> None:
    assert opa_json({"b": [1, 2.5, None], "a": "<x> & é \u2028 \n"}) == (
        '{"a":"<x> & é \\u2028 \\n","b":[1,2.5,null]}'.encode()
    )
    with pytest.raises(PolicyInvalid):
        opa_json({"a": "\b"})
    with pytest.raises(PolicyInvalid):
        opa_json({"a": float("nan")})
    assert file_hash("data.json", b'{"n": 1.50}') == hashlib.sha256(b'{"n":1.50}').hexdigest()


def test_minimal_roots_do_not_overlap() -> None:
    assert minimal_roots({"broker", "broker/agreements", "agreements/x", "brokers"}) == (
        "agreements/x",
        "broker",
        "brokers",
    )
    with pytest.raises(PolicyInvalid):
        package_path("# no package here\n", "x.rego")
