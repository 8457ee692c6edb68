"""The agency registry on real SQLite and PostgreSQL: onboarding, validation,
key rotation, disabling, and the cached directory of the hot path."""

from __future__ import annotations

from typing import Any

import pytest

from broker.agencies.service import AgencyDirectory, AgencyService, validate_oin
from broker.core.errors import Conflict, InvalidRequest, NotFound
from broker.crypto.keys import generate_jwk, public_only
from broker.db.session import Database
from broker.reference import ReferenceData
from broker.settings import Settings

REFERENCE = ReferenceData.load(Settings().policy_dir)
OIN = "00000001800014844000"
OTHER_OIN = "00000001800006185000"


def jwks(sig_kind: str = "Ed25519", enc_kind: str = "X25519") -> dict[str, Any]:
    return {
        "keys": [
            public_only(generate_jwk(sig_kind, use="sig")),
            public_only(generate_jwk(enc_kind, use="enc")),
        ]
    }


@pytest.fixture
def service(database: Database) -> AgencyService:
    return AgencyService(database, REFERENCE)


async def add(service: AgencyService, oin: str = OIN, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "oin": oin,
        "name": "Politie Eenheid Amsterdam",
        "party_type": "politie",
        "jwks": jwks(),
    }
    values.update(overrides)
    return await service.add(**values)


# ----------------------------------------------------------------- onboarding


async def test_add_get_and_list(service: AgencyService) -> None:
    doc = jwks("P-256", "P-256")
    view = await add(service, jwks=doc, endpoint_url="http://127.0.0.1:9/politie", name="  P  ")
    assert view.oin == OIN
    assert view.name == "P"
    assert view.party_type == "politie"
    assert view.active
    assert view.adapter_kind == "partner_api"
    assert view.endpoint_url == "http://127.0.0.1:9/politie"
    assert [k.kid for k in view.keys] == [k["kid"] for k in doc["keys"]]
    assert [k.kid for k in view.signing_keys()] == [doc["keys"][0]["kid"]]
    enc = view.encryption_key()
    assert enc is not None
    assert enc.kid == doc["keys"][1]["kid"]
    assert all("d" not in k.jwk for k in view.keys)

    assert await service.get(OIN) == view
    await add(service, OTHER_OIN, party_type="veilig_thuis", name="Veilig Thuis")
    assert [v.oin for v in await service.list()] == [OTHER_OIN, OIN]  # ordered by OIN
    as_json = (await service.get(OTHER_OIN)).to_json()
    assert as_json["party_type"] == "veilig_thuis"
    assert {k["use"] for k in as_json["keys"]} == {"sig", "enc"}


async def test_unknown_agency_is_not_found(service: AgencyService) -> None:
    enc = public_only(generate_jwk("X25519", use="enc"))
    calls = [
        lambda: service.get(OIN),
        lambda: service.set_active(OIN, False),
        lambda: service.set_endpoint(OIN, None),
        lambda: service.add_key(OIN, enc),
        lambda: service.remove_key(OIN, "kid"),
    ]
    for call in calls:
        with pytest.raises(NotFound):
            await call()
    assert await service.list() == []


@pytest.mark.parametrize(
    "oin",
    [
        "0000000180001484400",  # 19 digits
        "000000018000148440001",  # 21 digits
        "0000000180001484400A",
        "OIN00001800014844000",
        "",
        " 00000001800014844000",
        "00000001800014844000 ",
        "0000000180001484400\u0669",  # an Arabic-Indic digit
    ],
)
async def test_invalid_oin_is_refused(service: AgencyService, oin: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        await add(service, oin)
    assert info.value.field == "oin"
    assert await service.list() == []


async def test_oin_with_trailing_newline_is_refused(service: AgencyService) -> None:
    # Regression: a pattern ending in ``$`` matched before a trailing newline, so
    # SQLite stored a 21-character OIN and PostgreSQL answered 503 instead of 422.
    with pytest.raises(InvalidRequest) as info:
        validate_oin(OIN + "\n")
    assert info.value.field == "oin"
    with pytest.raises(InvalidRequest):
        await add(service, OIN + "\n")
    assert await service.list() == []


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"party_type": "brandweer"}, "party_type"),
        ({"party_type": "Politie"}, "party_type"),
        ({"name": "   "}, "name"),
        ({"jwks": {"keys": []}}, "jwks"),
        ({"jwks": {"keys": [public_only(generate_jwk("Ed25519", use="sig"))]}}, "jwks"),
        ({"jwks": []}, "jwks"),
    ],
)
async def test_invalid_fields_are_named(
    service: AgencyService, overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        await add(service, **overrides)
    assert info.value.field == field
    assert info.value.status == 422


async def test_private_keys_are_refused(service: AgencyService) -> None:
    sig, enc = generate_jwk("Ed25519", use="sig"), generate_jwk("X25519", use="enc")
    with pytest.raises(InvalidRequest) as info:
        await add(service, jwks={"keys": [sig, public_only(enc)]})
    assert info.value.field == "jwks"
    assert "private" in info.value.message
    await add(service)
    with pytest.raises(InvalidRequest) as info:
        await service.add_key(OIN, generate_jwk("X25519", use="enc"))
    assert info.value.field == "jwk"
    assert len((await service.get(OIN)).keys) == 2


async def test_malformed_signing_key_is_an_invalid_request(service: AgencyService) -> None:
    # Regression: jwt.InvalidKeyError once escaped validate_public_jwk, so a
    # malformed Ed25519 key crashed onboarding.
    enc = public_only(generate_jwk("X25519", use="enc"))
    bad_sig = {"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "use": "sig"}
    with pytest.raises(InvalidRequest) as info:
        await add(service, jwks={"keys": [bad_sig, enc]})
    assert info.value.field == "jwks"


async def test_duplicate_oin_is_a_conflict(service: AgencyService) -> None:
    await add(service)
    with pytest.raises(Conflict):
        await add(service, name="Someone else", party_type="ggz")
    view = await service.get(OIN)
    assert (view.name, view.party_type) == ("Politie Eenheid Amsterdam", "politie")


# ----------------------------------------------------------------- changes


async def test_disable_enable_and_endpoint(service: AgencyService) -> None:
    await add(service)
    assert not (await service.set_active(OIN, False)).active
    assert not (await service.get(OIN)).active
    assert (await service.set_active(OIN, True)).active
    assert (await service.set_endpoint(OIN, "http://x.test")).endpoint_url == "http://x.test"
    assert (await service.set_endpoint(OIN, None)).endpoint_url is None


async def test_encryption_key_rotation(service: AgencyService) -> None:
    view = await add(service)
    old_enc = view.encryption_key()
    sig = view.signing_keys()[0]
    assert old_enc is not None

    new_jwk = public_only(generate_jwk("P-256", use="enc"))
    view = await service.add_key(OIN, new_jwk)
    new_enc = view.encryption_key()
    assert new_enc is not None
    assert new_enc.kid == new_jwk["kid"]  # the newest key encrypts
    assert [k.kid for k in view.keys] == [sig.kid, old_enc.kid, new_enc.kid]

    view = await service.remove_key(OIN, old_enc.kid)
    assert [k.kid for k in view.keys] == [sig.kid, new_enc.kid]
    assert view.encryption_key() == new_enc

    # The retired key is gone for good: it cannot be removed again nor re-added.
    with pytest.raises(NotFound):
        await service.remove_key(OIN, old_enc.kid)
    with pytest.raises(Conflict):
        await service.add_key(OIN, dict(old_enc.jwk))
    # The last key of a use stays.
    with pytest.raises(Conflict):
        await service.remove_key(OIN, new_enc.kid)
    with pytest.raises(Conflict):
        await service.remove_key(OIN, sig.kid)
    assert len((await service.get(OIN)).keys) == 2


async def test_signing_key_rotation(service: AgencyService) -> None:
    view = await add(service)
    old_sig = view.signing_keys()[0]
    new_sig = public_only(generate_jwk("P-256", use="sig"))
    view = await service.add_key(OIN, new_sig)
    assert [k.kid for k in view.signing_keys()] == [old_sig.kid, new_sig["kid"]]
    assert view.signing_keys()[1].alg == "ES256"
    view = await service.remove_key(OIN, old_sig.kid)
    assert [k.kid for k in view.signing_keys()] == [new_sig["kid"]]


async def test_duplicate_key_is_a_conflict(service: AgencyService) -> None:
    view = await add(service)
    with pytest.raises(Conflict):
        await service.add_key(OIN, view.keys[0].jwk)
    # Another agency may hold the same public key id (kids are per agency).
    shared = {"keys": [k.jwk for k in view.keys]}
    other = await add(service, OTHER_OIN, party_type="veilig_thuis", jwks=shared)
    assert [k.kid for k in other.keys] == [k.kid for k in view.keys]


async def test_remove_unknown_key_is_not_found(service: AgencyService) -> None:
    await add(service)
    with pytest.raises(NotFound):
        await service.remove_key(OIN, "no-such-kid")


# ----------------------------------------------------------------- directory


async def test_directory_caches_until_invalidated(
    database: Database, service: AgencyService
) -> None:
    await add(service)
    directory = AgencyDirectory(database, ttl_seconds=3600)
    cached = await directory.get(OIN)
    assert cached is not None
    assert cached.active
    assert [v.oin for v in await directory.providers_of("politie")] == [OIN]

    await service.set_active(OIN, False)
    await add(service, OTHER_OIN, party_type="politie", name="Politie 2")
    assert (await directory.get(OIN)) == cached  # still the cached view
    assert [v.oin for v in await directory.providers_of("politie")] == [OIN]

    directory.invalidate(OIN)
    fresh = await directory.get(OIN)
    assert fresh is not None
    assert not fresh.active
    # providers_of is cleared by any invalidation; disabled agencies provide nothing.
    assert [v.oin for v in await directory.providers_of("politie")] == [OTHER_OIN]


async def test_directory_caches_absence_and_expires(
    database: Database, service: AgencyService
) -> None:
    directory = AgencyDirectory(database, ttl_seconds=3600)
    assert await directory.get(OIN) is None
    assert await directory.providers_of("politie") == []
    await add(service)
    assert await directory.get(OIN) is None  # a cached "no such agency"
    directory.invalidate()
    assert (await directory.get(OIN)) is not None
    assert len(await directory.providers_of("politie")) == 1

    uncached = AgencyDirectory(database, ttl_seconds=0)
    assert (await uncached.get(OIN)).active  # type: ignore[union-attr]
    await service.set_active(OIN, False)
    assert not (await uncached.get(OIN)).active  # type: ignore[union-attr]
    assert await uncached.providers_of("politie") == []
