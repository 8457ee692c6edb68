"""Wires the broker together: the one place that picks implementations."""

from __future__ import annotations

import gc
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

import structlog
from fastapi import FastAPI

from adapters._http import client_tls_context, use_client_tls
from adapters.brp.client import BrpRegister
from adapters.healthcare.adapter import FhirAdapter
from adapters.municipality import MunicipalityAdapter
from adapters.partner_api.adapter import PartnerApiAdapter
from adapters.police import PoliceAdapter
from adapters.raad import RaadAdapter
from adapters.veilig_thuis import VeiligThuisAdapter
from audit.log import AuditWriter
from broker.agencies.service import AgencyDirectory
from broker.agreements.replication import UploadReplica
from broker.agreements.service import AgreementService
from broker.breakglass.service import BreakGlassService
from broker.cluster.changes import AGENCIES, AGREEMENTS, ChangeFeed
from broker.consent.service import ConsentService
from broker.core.clock import Clock, dutch_date, system_clock
from broker.core.protocols import PartnerAdapter, PolicyEngine, SubjectRegister
from broker.crypto.jose import Sealer
from broker.crypto.keys import (
    BrokerKeyring,
    Pseudonymizer,
    load_or_create_pseudonym_key,
    open_keyring,
)
from broker.db.session import Database
from broker.exchange.service import ExchangeService
from broker.information_duties.service import InformationDutyService
from broker.logging import configure_logging
from broker.middleware import BodyLimit, RequestContext
from broker.policy.loader import PolicySet, load_policy_set
from broker.policy.opa_engine import OpaEngine
from broker.policy.regopy_engine import RegopyEngine
from broker.policy.regorus_engine import RegorusEngine
from broker.policy.validate import assert_valid
from broker.policy.watcher import PolicyWatcher
from broker.publications.delivery import WebhookWorker
from broker.publications.service import PublicationService
from broker.retention.service import RetentionService
from broker.retention.vault import open_vault
from broker.review.service import ReviewService, build_review
from broker.security.tokens import TokenService
from broker.settings import EngineKind, Settings
from broker.signals.service import SignalService
from broker.subject_access.service import SubjectAccessService
from broker.transparency.checkpoint import CheckpointSigner
from broker.transparency.receipts import ReceiptSigner

log = structlog.get_logger("app")


@dataclass
class Services:
    settings: Settings
    db: Database
    keyring: BrokerKeyring
    policy_set: PolicySet
    engine: PolicyEngine
    directory: AgencyDirectory
    register: SubjectRegister
    adapters: dict[str, PartnerAdapter]
    audit: AuditWriter
    tokens: TokenService
    exchanges: ExchangeService
    watcher: PolicyWatcher
    agreements: AgreementService
    consents: ConsentService
    breakglass: BreakGlassService
    checkpoints: CheckpointSigner
    subject_access: SubjectAccessService
    review: ReviewService
    changes: ChangeFeed
    publications: PublicationService
    webhooks: WebhookWorker
    retention: RetentionService
    signals: SignalService
    information_duties: InformationDutyService

    def use_policy_set(self, policy_set: PolicySet) -> None:
        self.policy_set = policy_set
        self.exchanges.policy_set = policy_set

    async def aclose(self) -> None:
        await self.information_duties.stop()
        await self.signals.stop()
        await self.retention.stop()
        await self.webhooks.stop()
        await self.changes.stop()
        await self.watcher.stop()
        await self.audit.stop()
        for adapter in self.adapters.values():
            await adapter.aclose()
        await self.register.aclose()
        await self.engine.aclose()
        await self.db.dispose()
        self.keyring.close()


def build_engine(
    settings: Settings, policy_set: PolicySet
) -> RegopyEngine | RegorusEngine | OpaEngine:
    if settings.policy_engine is EngineKind.OPA:
        assert settings.opa_url is not None  # enforced by Settings
        return OpaEngine(settings.opa_url, policy_set)
    if settings.policy_engine is EngineKind.REGORUS:
        return RegorusEngine(policy_set, threads=settings.policy_threads)
    return RegopyEngine(policy_set, threads=settings.policy_threads)


def adapter_tls(settings: Settings) -> ssl.SSLContext | None:
    """The client TLS context of the adapter settings; ``None`` when none is configured
    (Python's default verifying context applies)."""
    if settings.adapter_tls_cert is None and settings.adapter_tls_ca is None:
        return None
    password = settings.adapter_tls_key_password
    return client_tls_context(
        cert=settings.adapter_tls_cert,
        key=settings.adapter_tls_key,
        ca=settings.adapter_tls_ca,
        key_password=password.get_secret_value() if password is not None else None,
    )


async def build_services(settings: Settings, *, clock: Clock = system_clock) -> Services:
    db = Database(settings.async_database_url, pool_size=settings.database_pool_size)
    keyring = open_keyring(settings)  # file keys or a PKCS#11 token (BROKER_KEY_BACKEND)
    pseudonym_key = (
        settings.pseudonym_key.get_secret_value().encode()
        if settings.pseudonym_key is not None
        else load_or_create_pseudonym_key(settings.keys_dir)
    )
    audit = AuditWriter(db, batch_max=settings.audit_batch_max)
    await audit.start()
    agreements = AgreementService(db, audit)
    assert_valid(settings.policy_dir)  # refuse to start on an invalid policy set
    loaded = load_policy_set(settings.policy_dir)
    replica = UploadReplica(db, lambda: services.policy_set, agreements.upload_lock)
    if await replica.sync(loaded):  # versions uploaded at other instances
        assert_valid(settings.policy_dir)
        loaded = load_policy_set(settings.policy_dir)
    policy_set = await agreements.enforce(loaded, dutch_date(clock()))
    engine = build_engine(settings, policy_set)
    directory = AgencyDirectory(db)
    # One client TLS context (mTLS certificate, provider CAs) for every adapter session.
    use_client_tls(adapter_tls(settings))
    register = BrpRegister(settings.register_url, timeout=settings.register_timeout_seconds)
    adapters: dict[str, PartnerAdapter] = {
        "partner_api": PartnerApiAdapter(
            timeout=settings.adapter_timeout_seconds, retries=settings.adapter_retries
        ),
        "fhir": FhirAdapter(
            timeout=settings.adapter_timeout_seconds, retries=settings.adapter_retries
        ),
        # Source systems with their own REST API, mapped declaratively (adapters/sdk/).
        **{
            adapter.kind: adapter
            for adapter in (
                cls(timeout=settings.adapter_timeout_seconds, retries=settings.adapter_retries)
                for cls in (PoliceAdapter, RaadAdapter, VeiligThuisAdapter, MunicipalityAdapter)
            )
        },
    }
    tokens = TokenService(
        db=db,
        directory=directory,
        keyring=keyring,
        issuer=settings.public_url.rstrip("/"),
        token_endpoint=settings.token_endpoint,
        ttl_seconds=settings.access_token_ttl_seconds,
        assertion_max_lifetime=settings.assertion_max_lifetime_seconds,
    )
    pseudonymizer = Pseudonymizer(pseudonym_key)
    breakglass = BreakGlassService(
        db=db,
        audit=audit,
        pseudonymizer=pseudonymizer,
        review_sla=timedelta(hours=settings.break_glass_review_sla_hours),
        privacy_officers=settings.privacy_officer_oins,
        clock=clock,
    )
    vault = open_vault(settings, db)  # retention keys (crypto-shredding)
    consents = ConsentService(
        db=db, audit=audit, pseudonymizer=pseudonymizer, retention=vault, clock=clock
    )
    information_duties = InformationDutyService(
        db=db,
        audit=audit,
        privacy_officers=settings.privacy_officer_oins,
        interval=settings.information_duty_run_seconds,
        clock=clock,
    )
    exchanges = ExchangeService(
        engine=engine,
        policy_set=policy_set,
        directory=directory,
        register=register,
        adapters=adapters,
        audit=audit,
        pseudonymizer=pseudonymizer,
        sealer=Sealer(),
        consents=consents,
        declarations=breakglass,
        duties=information_duties,
        receipts=ReceiptSigner(keyring, settings.log_origin),
        retention=vault,
        clock=clock,
    )
    watcher = PolicyWatcher(
        settings.policy_dir,
        engine,
        interval=settings.policy_poll_seconds,
        enforce=agreements.enforce,
        fingerprint=agreements.fingerprint,
        sync=replica.sync,
        clock=clock,
    )
    await watcher.prime()
    services = Services(
        settings=settings,
        db=db,
        keyring=keyring,
        policy_set=policy_set,
        engine=engine,
        directory=directory,
        register=register,
        adapters=adapters,
        audit=audit,
        tokens=tokens,
        exchanges=exchanges,
        watcher=watcher,
        agreements=agreements,
        consents=consents,
        breakglass=breakglass,
        checkpoints=CheckpointSigner(db, keyring, settings.log_origin),
        subject_access=SubjectAccessService(
            db=db,
            audit=audit,
            pseudonymizer=pseudonymizer,
            register=register,
            reference=lambda: services.policy_set.reference,
            privacy_officers=settings.privacy_officer_oins,
            clock=clock,
            log_origin=settings.log_origin,
        ),
        review=build_review(
            db=db,
            audit=audit,
            pseudonymizer=pseudonymizer,
            breakglass=breakglass,
            keyring=keyring,
            log_origin=settings.log_origin,
            keys_dir=settings.keys_dir,
            clock=clock,
            settings=settings,
        ),
        changes=ChangeFeed(db, poll_seconds=settings.change_poll_seconds),
        publications=PublicationService(
            db=db,
            engine=engine,
            policy_set=lambda: services.policy_set,
            directory=directory,
            register=register,
            audit=audit,
            pseudonymizer=pseudonymizer,
            sealer=Sealer(),
            consents=consents,
            clock=clock,
            retention=vault,
        ),
        webhooks=WebhookWorker(
            db=db,
            keyring=keyring,
            audit=audit,
            poll_seconds=settings.webhook_poll_seconds,
            max_attempts=settings.webhook_max_attempts,
            backoff_seconds=settings.webhook_backoff_seconds,
            backoff_max_seconds=settings.webhook_backoff_max_seconds,
            timeout_seconds=settings.webhook_timeout_seconds,
            clock=clock,
        ),
        retention=RetentionService(
            db, audit, vault, interval=settings.retention_run_seconds, clock=clock
        ),
        signals=SignalService(
            db=db,
            audit=audit,
            pseudonymizer=pseudonymizer,
            register=register,
            directory=directory,
            policy_set=lambda: services.policy_set,
            sealer=Sealer(),
            clock=clock,
            interval=settings.signal_expiry_seconds,
        ),
        information_duties=information_duties,
    )
    watcher.subscribe(services.use_policy_set)
    watcher.start()
    # Changes made at other instances: reload agreements, drop cached agencies.
    services.changes.subscribe(AGREEMENTS, watcher.wake)
    services.changes.subscribe(AGENCIES, directory.invalidate)
    await services.changes.start()
    services.publications.on_stored = services.webhooks.wake
    services.webhooks.start()
    services.retention.start()
    services.signals.on_stored = services.webhooks.wake
    services.signals.start()
    services.information_duties.start()
    return services


# One place wires every router and the lifespan: long by nature.
def create_app(  # noqa: PLR0915
    settings: Settings | None = None, *, clock: Clock = system_clock
) -> FastAPI:
    settings = settings or Settings()
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    from broker.operations.tracing import configure_tracing, framework_telemetry_off

    configure_tracing()  # off unless the OTEL_* environment asks for it

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await build_services(settings, clock=clock)
        app.state.services = services
        # Long-lived start-up objects leave the collector's view: fewer, shorter pauses.
        # Young-generation collections every 20k allocations instead of 700: the
        # request path allocates many short-lived objects that die young anyway.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 50)
        log.info(
            "broker.started",
            engine=services.engine.name,
            bundle=services.engine.bundle_hash,
            database=services.db.engine.dialect.name,
        )
        try:
            yield
        finally:
            await services.aclose()
            worker_stopped()

    from broker import problems
    from broker.agreements.api import UPLOAD_MAX_BODY_BYTES
    from broker.agreements.api import router as agreements_router
    from broker.breakglass.api import router as breakglass_router
    from broker.consent.api import router as consent_router
    from broker.exchange.api import router as exchange_router
    from broker.health import router as health_router
    from broker.information_duties.api import router as information_duties_router
    from broker.operations.api import router as operations_router
    from broker.operations.metrics import router as metrics_router
    from broker.operations.multiprocess import worker_stopped
    from broker.publications.api import router as publications_router
    from broker.review.web import router as review_router
    from broker.security.api import router as security_router
    from broker.signals.api import router as signals_router
    from broker.subject_access.api import router as subject_access_router
    from broker.transparency.api import router as transparency_router

    app = FastAPI(
        title="Child-protection chain exchange broker",
        version="0.1.0",
        description=(
            "Partners ask for family data with a stated purpose under a sharing agreement "
            "and receive, per element and subject, either the data (JWE-encrypted to their "
            "registered key) or a refusal with the reason and legal basis. Every decision "
            "is audit-logged before anything is released. Authenticate with OAuth 2.0 "
            "client credentials and private_key_jwt (RFC 7523) at /oauth/token."
        ),
        lifespan=lifespan,
        **framework_telemetry_off(),  # server spans are the broker's own (broker/middleware.py)
    )
    problems.install(app)
    app.include_router(security_router)
    app.include_router(exchange_router)
    app.include_router(publications_router)
    app.include_router(agreements_router)
    app.include_router(consent_router)
    app.include_router(breakglass_router)
    app.include_router(information_duties_router)
    app.include_router(signals_router)
    app.include_router(subject_access_router)
    app.include_router(transparency_router)
    app.include_router(operations_router)
    app.include_router(metrics_router)
    app.include_router(health_router)
    app.include_router(review_router)
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        routes={("POST", "/v1/agreements"): UPLOAD_MAX_BODY_BYTES},
    )
    app.add_middleware(RequestContext)
    return app
