"""Mutual TLS between the broker's adapters and provider systems, over real HTTPS on loopback.

The test makes its own PKI with ``cryptography``: a CA that issues the simulators' server
certificate and the broker's client certificate, and an unrelated CA with its own client
certificate. The simulators run as their own process serving HTTPS that requires a client
certificate of the first CA. The adapters (partner API, FHIR, BRP register) fetch through the
one client TLS context; a missing client certificate, a client certificate of another CA and
a CA bundle that does not know the server each give per-item ``unavailable`` (the register:
``RegisterUnavailable``), never a crash. The broker wired from settings exchanges end to end
over mTLS on both databases."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import ValidationError

from adapters._http import TlsConfigError, client_tls, client_tls_context, use_client_tls
from adapters.brp.client import BrpRegister
from adapters.healthcare.adapter import FhirAdapter
from adapters.partner_api import PartnerApiAdapter
from broker.app import adapter_tls
from broker.core.errors import RegisterUnavailable
from broker.core.protocols import FetchItem, FetchRequest
from broker.core.types import ItemStatus, ResponseForm, SubjectKind
from broker.settings import Settings
from tests.conftest import broker_settings, register_partners, serve_broker

P = SubjectKind.PERSON
FATHER, CLIENT = "999990007", "999990111"  # P01 (police history), P10 (GGZ client)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lindeburg test PKI (fictional)"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


@dataclass
class Issued:
    cert: Path
    key: Path


@dataclass
class Ca:
    name: x509.Name
    key: ec.EllipticCurvePrivateKey
    pem: Path

    @classmethod
    def create(cls, folder: Path, cn: str) -> Ca:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(_name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        pem = folder / f"{cn}.ca.pem"
        pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(_name(cn), key, pem)

    def issue(self, folder: Path, cn: str, *, server: bool) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        cert_path, key_path = folder / f"{cn}.pem", folder / f"{cn}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return Issued(cert_path, key_path)


@dataclass
class Pki:
    ca: Ca
    server: Issued
    client: Issued
    other_ca: Ca
    other_client: Issued


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, other = Ca.create(folder, "chain-ca"), Ca.create(folder, "other-ca")
    return Pki(
        ca=ca,
        server=ca.issue(folder, "partner-sim", server=True),
        client=ca.issue(folder, "broker-client", server=False),
        other_ca=other,
        other_client=other.issue(folder, "intruder-client", server=False),
    )


@pytest.fixture(scope="module")
def tls_sims(
    pki: Pki, start_sim: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The simulators of politie, veilig_thuis and ggz (FHIR) plus the register, as their own
    process, serving HTTPS that requires a client certificate of the chain CA."""
    process = start_sim(
        tmp_path_factory.mktemp("tls-sim"),
        "--parties",
        "politie,veilig_thuis,ggz",
        "--tls-cert",
        str(pki.server.cert),
        "--tls-key",
        str(pki.server.key),
        "--tls-client-ca",
        str(pki.ca.pem),
    )
    yield process.urls
    assert process.stop() == 0


@pytest.fixture
def _no_installed_context() -> Iterator[None]:
    before = client_tls()
    use_client_tls(None)
    yield
    use_client_tls(before)


def fetch_request(element: str, bsn: str, recipient: str = "veilig_thuis") -> FetchRequest:
    return FetchRequest(
        exchange_id="exch-mtls",
        request_id="req-mtls",
        agreement_id="agr-test",
        purpose_id="purpose-test",
        recipient_party=recipient,
        response_form=ResponseForm.FULL,
        items=(FetchItem(element=element, bsn=bsn, subject_kind=P),),
    )


@pytest.fixture
async def good_context(pki: Pki) -> ssl.SSLContext:
    return client_tls_context(cert=pki.client.cert, key=pki.client.key, ca=pki.ca.pem)


async def _fetch_status(url: str, element: str = "police.suspect_history_dv") -> ItemStatus:
    adapter = PartnerApiAdapter(timeout=2.0, retries=1, backoff_base=0.01, breaker_threshold=50)
    try:
        [item] = await adapter.fetch(url, fetch_request(element, FATHER))
        return item.status
    finally:
        await adapter.aclose()


@pytest.mark.usefixtures("_no_installed_context")
async def test_adapters_fetch_over_mtls(
    tls_sims: dict[str, Any], good_context: ssl.SSLContext
) -> None:
    police = tls_sims["parties"]["politie"]
    assert police.startswith("https://")
    use_client_tls(good_context)  # what the broker does once at start-up

    assert await _fetch_status(police) is ItemStatus.RELEASED

    fhir = FhirAdapter(timeout=3.0, retries=1, backoff_base=0.01)
    try:
        [item] = await fhir.fetch(
            tls_sims["fhir"]["ggz"], fetch_request("health.ggz_treatment_involvement", CLIENT)
        )
        assert item.status in {ItemStatus.RELEASED, ItemStatus.NOT_FOUND}
        assert item.status is not ItemStatus.UNAVAILABLE
    finally:
        await fhir.aclose()

    register = BrpRegister(tls_sims["brp"], timeout=2.0)
    try:
        records = await register.lookup([FATHER])
        assert records[FATHER].birth_date is not None
    finally:
        await register.aclose()


@pytest.mark.usefixtures("_no_installed_context")
async def test_explicit_context_overrides_the_installed_one(
    tls_sims: dict[str, Any], good_context: ssl.SSLContext
) -> None:
    from adapters._http import new_session

    session = new_session(
        max_connections=2, max_connections_per_host=2, headers={}, ssl_context=good_context
    )
    try:
        async with session.get(tls_sims["brp"] + "/_sim/stats") as resp:
            assert resp.status == 200
    finally:
        await session.close()


@pytest.mark.usefixtures("_no_installed_context")
async def test_without_client_certificate_items_are_unavailable(
    tls_sims: dict[str, Any], pki: Pki
) -> None:
    # Trusts the server, presents no certificate: the server ends the handshake.
    use_client_tls(client_tls_context(ca=pki.ca.pem))
    assert await _fetch_status(tls_sims["parties"]["politie"]) is ItemStatus.UNAVAILABLE
    register = BrpRegister(tls_sims["brp"], timeout=2.0, retries=0)
    try:
        with pytest.raises(RegisterUnavailable):
            await register.lookup([FATHER])
    finally:
        await register.aclose()


@pytest.mark.usefixtures("_no_installed_context")
async def test_client_certificate_of_another_ca_is_refused(
    tls_sims: dict[str, Any], pki: Pki
) -> None:
    use_client_tls(
        client_tls_context(cert=pki.other_client.cert, key=pki.other_client.key, ca=pki.ca.pem)
    )
    assert await _fetch_status(tls_sims["parties"]["politie"]) is ItemStatus.UNAVAILABLE


@pytest.mark.usefixtures("_no_installed_context")
async def test_wrong_ca_bundle_does_not_trust_the_provider(
    tls_sims: dict[str, Any], pki: Pki
) -> None:
    # A valid client certificate, but the CA bundle does not know the server's issuer.
    use_client_tls(
        client_tls_context(cert=pki.client.cert, key=pki.client.key, ca=pki.other_ca.pem)
    )
    assert await _fetch_status(tls_sims["parties"]["politie"]) is ItemStatus.UNAVAILABLE
    # Without any CA bundle the system store applies: the test CA is unknown there too.
    use_client_tls(client_tls_context(cert=pki.client.cert, key=pki.client.key))
    assert await _fetch_status(tls_sims["parties"]["veilig_thuis"]) is ItemStatus.UNAVAILABLE


def test_settings_build_one_context(pki: Pki, tmp_path: Path) -> None:
    assert adapter_tls(Settings(keys_dir=tmp_path)) is None
    context = adapter_tls(
        Settings(
            keys_dir=tmp_path,
            adapter_tls_cert=pki.client.cert,
            adapter_tls_key=pki.client.key,
            adapter_tls_ca=pki.ca.pem,
        )
    )
    assert context is not None and context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    with pytest.raises(ValidationError, match="ADAPTER_TLS_KEY"):
        Settings(keys_dir=tmp_path, adapter_tls_key=pki.client.key)
    with pytest.raises(TlsConfigError, match="client certificate") as missing:
        client_tls_context(cert=tmp_path / "absent.pem", key=pki.client.key)
    assert "BEGIN" not in str(missing.value)
    with pytest.raises(TlsConfigError, match="client certificate"):
        client_tls_context(cert=pki.client.cert, key=pki.other_client.key)  # not its key
    with pytest.raises(TlsConfigError, match="CA bundle"):
        client_tls_context(ca=tmp_path / "absent-ca.pem")


@pytest.fixture
async def mtls_broker(
    database_url: str, tls_sims: dict[str, Any], pki: Pki, tmp_path: Path
) -> AsyncIterator[Any]:
    before = client_tls()
    settings = broker_settings(
        database_url,
        tls_sims,
        tmp_path,
        adapter_tls_cert=pki.client.cert,
        adapter_tls_key=pki.client.key,
        adapter_tls_ca=pki.ca.pem,
    )
    # Every demo agency (the agreement is in force once all its signatories signed);
    # the police and Veilig Thuis systems run over mTLS.
    partners = await register_partners(settings, tls_sims)
    try:
        async with serve_broker(settings) as broker:
            yield broker, partners
    finally:
        use_client_tls(before)


async def test_broker_exchanges_over_mtls(mtls_broker: Any) -> None:
    """Settings -> one context -> the register lookup and the provider fetch both use it."""
    from broker.partner_kit import PartnerClient

    broker, partners = mtls_broker
    vt = partners["veilig_thuis"]
    client = PartnerClient(broker.base_url, vt["oin"], {"keys": vt["keys"]})
    try:
        response = await client.exchange(
            {
                "agreement_id": "agr-vt-politie-hg",
                "purpose_id": "informatie_voor_veiligheidsbeoordeling",
                "provider": {"party": "politie"},
                "subjects": [FATHER],
                "elements": ["police.suspect_history_dv"],
                "context": {"vt_case_status": "veiligheidsbeoordeling"},
            }
        )
        assert response.status_code == 200, response.text
        [item] = response.json()["items"]
        assert item["status"] == "released", item["reason"]
        released = client.decrypt(response.json()["payload"])
        assert [i["element"] for i in released["items"]] == ["police.suspect_history_dv"]
    finally:
        await client.aclose()
