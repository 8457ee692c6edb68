"""The broker's one settings object (environment variables with prefix BROKER_)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class EngineKind(StrEnum):
    EMBEDDED = "embedded"  # regopy (Microsoft rego-cpp), the default
    REGORUS = "regorus"  # regorus (Rust), faster; held equal to regopy by a differential test
    OPA = "opa"


class KeyBackend(StrEnum):
    FILE = "file"  # private JWKs in keys_dir, the default
    PKCS11 = "pkcs11"  # key pairs inside a PKCS#11 token (HSM); private keys never leave it


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BROKER_", extra="ignore")

    environment: Environment = Environment.DEVELOPMENT
    public_url: str = Field(
        default="http://127.0.0.1:8080",
        description="Base URL partners use; the token audience is {public_url}/oauth/token",
    )
    database_url: str = Field(default=f"sqlite:///{PROJECT_ROOT / 'var' / 'broker.db'}")
    database_pool_size: int = 10
    keys_dir: Path = PROJECT_ROOT / "var" / "keys"
    key_backend: KeyBackend = Field(
        default=KeyBackend.FILE,
        description="Where the broker's signing keys live: file (keys_dir) or pkcs11 (HSM)",
    )
    pkcs11_module: Path | None = Field(
        default=None, description="The PKCS#11 module (.so) of the HSM, e.g. libsofthsm2.so"
    )
    pkcs11_token_label: str | None = Field(default=None, description="The token's label")
    pkcs11_pin: SecretStr | None = Field(default=None, description="The token's user PIN")
    pkcs11_key_label: str = Field(
        default="broker-signing",
        min_length=1,
        pattern=r"^[^/]+$",
        description="Label of the broker's key pairs in the token (<label>/<UTC time>)",
    )
    policy_dir: Path = PROJECT_ROOT / "policies"
    policy_engine: EngineKind = EngineKind.EMBEDDED
    policy_threads: int = Field(
        default=2,
        ge=0,
        description="Threads evaluating Rego in the embedded engines (0: on the event loop)",
    )
    policy_poll_seconds: float = Field(
        default=2.0, description="How often policy files are checked for changes (0: never)"
    )
    change_poll_seconds: float = Field(
        default=1.0,
        description=(
            "How often the change versions other instances bump are polled (0: never); "
            "on PostgreSQL changes also arrive at once by LISTEN/NOTIFY"
        ),
    )
    opa_url: str | None = None
    register_url: str = "http://127.0.0.1:9100"
    pseudonym_key: SecretStr | None = Field(
        default=None,
        description="HMAC key for subject pseudonyms; generated into keys_dir in development",
    )
    access_token_ttl_seconds: int = 300
    assertion_max_lifetime_seconds: int = 300
    max_body_bytes: int = 256 * 1024
    max_items_per_request: int = 500
    adapter_timeout_seconds: float = 2.0
    adapter_retries: int = 2
    register_timeout_seconds: float = 2.0
    adapter_tls_cert: Path | None = Field(
        default=None,
        description="PEM client certificate (with intermediates; may hold the key too) the "
        "broker presents to provider systems and the register (mutual TLS)",
    )
    adapter_tls_key: Path | None = Field(
        default=None, description="PEM private key of adapter_tls_cert"
    )
    adapter_tls_key_password: SecretStr | None = Field(
        default=None, description="Password of an encrypted adapter_tls_key"
    )
    adapter_tls_ca: Path | None = Field(
        default=None,
        description="PEM CA bundle that verifies providers' server certificates (replaces "
        "the system trust store for adapter calls)",
    )
    audit_batch_max: int = 512
    log_origin: str = Field(
        default="broker.example/audit",
        min_length=1,
        pattern=r"^[^\s+]+$",
        description="Origin line and key name of the audit log's signed checkpoints",
    )
    agreement_admins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "OINs allowed to upload agreement versions (POST /v1/agreements); "
            "comma-separated in BROKER_AGREEMENT_ADMINS"
        ),
    )
    break_glass_review_sla_hours: int = Field(
        default=120,
        ge=1,
        description="Hours within which a privacy officer reviews an acute declaration (P5D)",
    )
    privacy_officers: str = Field(
        default="",
        pattern=r"^([0-9]{20}(,[0-9]{20})*)?$",
        description="Comma-separated OINs of the agencies whose privacy officers review "
        "acute declarations (GET/POST /v1/review/acute-declarations)",
    )
    webhook_poll_seconds: float = Field(
        default=1.0,
        ge=0,
        description="How often due webhook deliveries are looked for (0: no delivery worker)",
    )
    webhook_max_attempts: int = Field(
        default=8, ge=1, description="Webhook attempts per message before it is left to polling"
    )
    webhook_backoff_seconds: float = Field(
        default=2.0, gt=0, description="First retry delay; doubles per attempt, with jitter"
    )
    webhook_backoff_max_seconds: float = Field(default=300.0, gt=0)
    webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    retention_kek: SecretStr | None = Field(
        default=None,
        description="Key-encryption key (64 hex digits) wrapping the retention keys; "
        "generated into keys_dir (retention-kek.key) when unset",
    )
    retention_default_period: str = Field(
        default="P1Y",
        pattern=r"^P(\d+Y)?(\d+M)?(\d+W)?(\d+D)?$",
        description="Retention (ISO 8601) of records whose decision names none (refusals)",
    )
    retention_run_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="How often due retention keys are destroyed inside the app (0: never; "
        "then run `broker retention run` from a scheduler)",
    )
    information_duty_run_seconds: float = Field(
        default=300.0,
        ge=0,
        description="How often lapsed information-duty embargoes are lifted inside the app "
        "(0: never; then run `broker duties run` from a scheduler)",
    )
    signal_expiry_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="How often signals past their end date are removed inside the app (0: "
        "never; then run `broker signals expire` from a scheduler)",
    )
    review_local_accounts: bool = Field(
        default=True,
        description="Offer the review page's local sign-in (password + TOTP) next to OIDC",
    )
    review_oidc_issuer: str | None = Field(
        default=None,
        description="OpenID Connect issuer for privacy officers' sign-in on /review "
        "(unset: local accounts only)",
    )
    review_oidc_client_id: str | None = Field(default=None, description="The broker's client id")
    review_oidc_client_auth: Literal["client_secret_basic", "private_key_jwt"] = Field(
        default="client_secret_basic", description="Client authentication at the token endpoint"
    )
    review_oidc_client_secret: SecretStr | None = Field(
        default=None, description="Client secret (client_secret_basic)"
    )
    review_oidc_client_key_file: Path | None = Field(
        default=None,
        description="Private JWK (RSA, EC P-256 or Ed25519; JSON file) for private_key_jwt",
    )
    review_oidc_redirect_uri: str | None = Field(
        default=None, description="Redirect URI; default {public_url}/review/oidc/callback"
    )
    review_oidc_scopes: str = Field(default="openid", description="Scopes asked for")
    review_oidc_algorithms: str = Field(
        default="RS256,ES256,EdDSA",
        pattern=r"^(RS256|ES256|EdDSA)(,(RS256|ES256|EdDSA))*$",
        description="ID token signature algorithms accepted (comma-separated)",
    )
    review_oidc_role_claim: str | None = Field(
        default=None,
        description="Claim (dotted path) whose privacy_officer:<OIN> / privacy_officer:broker "
        "values admit officers not registered by subject",
    )
    review_oidc_role_prefix: str = Field(default="privacy_officer:", min_length=1)
    review_oidc_display_name: str = Field(
        default="your organisation's sign-in", max_length=80, description="Shown on the button"
    )
    review_oidc_timeout_seconds: float = Field(default=5.0, gt=0)
    log_format: str = "console"
    log_level: str = "INFO"

    @field_validator("agreement_admins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple) and not all(
            isinstance(oin, str) and len(oin) == 20 and oin.isascii() and oin.isdigit()
            for oin in value
        ):
            raise ValueError("BROKER_AGREEMENT_ADMINS must be 20-digit OINs, comma-separated")
        return value

    @model_validator(mode="after")
    def _production_refuses_placeholders(self) -> Settings:
        if self.environment is Environment.PRODUCTION:
            if self.pseudonym_key is None or len(self.pseudonym_key.get_secret_value()) < 32:
                raise ValueError("BROKER_PSEUDONYM_KEY must be set (32+ characters) in production")
            if self.database_url.startswith("sqlite"):
                raise ValueError("production needs PostgreSQL (BROKER_DATABASE_URL)")
        if self.key_backend is KeyBackend.PKCS11 and not (
            self.pkcs11_module and self.pkcs11_token_label and self.pkcs11_pin
        ):
            raise ValueError(
                "BROKER_KEY_BACKEND=pkcs11 needs BROKER_PKCS11_MODULE, "
                "BROKER_PKCS11_TOKEN_LABEL and BROKER_PKCS11_PIN"
            )
        if self.adapter_tls_key is not None and self.adapter_tls_cert is None:
            raise ValueError("BROKER_ADAPTER_TLS_KEY needs BROKER_ADAPTER_TLS_CERT")
        if self.policy_engine is EngineKind.OPA and not self.opa_url:
            raise ValueError("BROKER_OPA_URL is required when BROKER_POLICY_ENGINE=opa")
        self._review_oidc_complete()
        return self

    def _review_oidc_complete(self) -> None:
        if not self.review_oidc_issuer:
            return
        if not self.review_oidc_client_id:
            raise ValueError("BROKER_REVIEW_OIDC_ISSUER needs BROKER_REVIEW_OIDC_CLIENT_ID")
        if self.review_oidc_client_auth == "client_secret_basic" and not (
            self.review_oidc_client_secret
        ):
            raise ValueError("client_secret_basic needs BROKER_REVIEW_OIDC_CLIENT_SECRET")
        if self.review_oidc_client_auth == "private_key_jwt" and not (
            self.review_oidc_client_key_file
        ):
            raise ValueError("private_key_jwt needs BROKER_REVIEW_OIDC_CLIENT_KEY_FILE")
        if self.environment is Environment.PRODUCTION and not (
            self.review_oidc_issuer.startswith("https://")
        ):
            raise ValueError("BROKER_REVIEW_OIDC_ISSUER must be an https URL in production")

    @property
    def token_endpoint(self) -> str:
        return self.public_url.rstrip("/") + "/oauth/token"

    @property
    def async_database_url(self) -> str:
        url = self.database_url
        if url.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
        if url.startswith("postgresql://"):
            return "postgresql+psycopg://" + url.removeprefix("postgresql://")
        return url

    @property
    def sync_database_url(self) -> str:
        url = self.database_url
        if url.startswith("postgresql://"):
            return "postgresql+psycopg://" + url.removeprefix("postgresql://")
        return url

    @property
    def privacy_officer_oins(self) -> frozenset[str]:
        """The OINs in ``privacy_officers`` (there is no privacy-officer role yet)."""
        return frozenset(o for o in self.privacy_officers.split(",") if o)
