"""The broker's one error hierarchy.

Every error carries an HTTP status, a stable machine code and a safe message:
no secrets and no personal data ever go into ``message``. One exception handler
(broker.api.problems) renders them as RFC 9457 problem+json. Foreign exceptions
are wrapped where they enter the broker.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"
    VALIDATION_FAILED = "validation_failed"
    INVALID_BSN = "invalid_bsn"
    UNKNOWN_ELEMENT = "unknown_element"
    UNKNOWN_PROVIDER = "unknown_provider"
    AMBIGUOUS_PROVIDER = "ambiguous_provider"
    UNKNOWN_AGREEMENT = "unknown_agreement"
    UNKNOWN_PURPOSE = "unknown_purpose"
    UNKNOWN_PARTY = "unknown_party"
    CONSENT_NOT_APPLICABLE = "consent_not_applicable"
    ACUTE_DANGER_NOT_APPLICABLE = "acute_danger_not_applicable"
    NOT_DECLARABLE = "not_declarable"
    UNKNOWN_ACUTE_DECLARATION = "unknown_acute_declaration"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    ELEMENT_NOT_IN_SUBSCRIPTION = "element_not_in_subscription"
    NOT_A_PUBLISHER = "not_a_publisher"
    EVENT_ID_REUSED = "event_id_reused"
    INVALID_TIME = "invalid_time"
    SIGNALS_NOT_OFFERED = "signals_not_offered"
    NOT_A_SIGNAL_PARTY = "not_a_signal_party"
    SUBJECT_KIND_NOT_ALLOWED = "subject_kind_not_allowed"
    AGREEMENT_NOT_IN_FORCE = "agreement_not_in_force"
    NOT_A_CHILD = "not_a_child"
    SIGNAL_EXISTS = "signal_exists"
    INVALID_GIVER = "invalid_giver"
    INVALID_EVIDENCE = "invalid_evidence"
    ALREADY_WITHDRAWN = "already_withdrawn"
    ALREADY_REVIEWED = "already_reviewed"
    ALREADY_FULFILLED = "already_fulfilled"
    DUTY_EMBARGOED = "duty_embargoed"
    EMBARGO_NOT_APPLICABLE = "embargo_not_applicable"
    UNKNOWN_INVESTIGATION = "unknown_investigation"
    INVESTIGATION_ENDED = "investigation_ended"
    NOT_A_PRIVACY_OFFICER = "not_a_privacy_officer"
    CSRF_INVALID = "csrf_invalid"
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    INVALID_CLIENT = "invalid_client"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    POLICY_UNAVAILABLE = "policy_unavailable"
    POLICY_INVALID = "policy_invalid"
    POLICY_TESTS_FAILED = "policy_tests_failed"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    AUDIT_UNAVAILABLE = "audit_unavailable"
    REGISTER_UNAVAILABLE = "register_unavailable"
    IDENTITY_PROVIDER_UNAVAILABLE = "identity_provider_unavailable"
    ADAPTER_FAILED = "adapter_failed"
    KEY_ERROR = "key_error"
    KEY_UNAVAILABLE = "key_unavailable"
    AUDIT_CHAIN_BROKEN = "audit_chain_broken"
    RECORD_SHREDDED = "record_shredded"
    INTERNAL_ERROR = "internal_error"


class BrokerError(Exception):
    """Root of every error the broker raises on purpose."""

    status: int = 500
    code: ErrorCode = ErrorCode.INTERNAL_ERROR
    title: str = "Internal error"

    def __init__(
        self,
        message: str | None = None,
        *,
        field: str | None = None,
        code: ErrorCode | None = None,
        decision_id: str | None = None,
    ) -> None:
        self.message = message or self.title
        self.field = field
        if code is not None:
            self.code = code
        self.decision_id = decision_id
        super().__init__(self.message)

    def diagnostics(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        return f"{self.code}: {self.message}{where}"


class InvalidRequest(BrokerError):
    status = 422
    code = ErrorCode.VALIDATION_FAILED
    title = "The request is not valid"


class PayloadTooLarge(BrokerError):
    status = 413
    code = ErrorCode.PAYLOAD_TOO_LARGE
    title = "The request body is too large"


class UnsupportedMediaType(BrokerError):
    status = 415
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE
    title = "The request body must be application/json"


class AuthenticationFailed(BrokerError):
    """Always rendered with one generic message, whatever failed."""

    status = 401
    code = ErrorCode.UNAUTHORIZED
    title = "Authentication failed"

    def __init__(self, code: ErrorCode = ErrorCode.UNAUTHORIZED) -> None:
        super().__init__(self.title, code=code)


class Forbidden(BrokerError):
    status = 403
    code = ErrorCode.FORBIDDEN
    title = "Not allowed"


class NotFound(BrokerError):
    status = 404
    code = ErrorCode.NOT_FOUND
    title = "Not found"


class TooManyAttempts(BrokerError):
    status = 429
    code = ErrorCode.TOO_MANY_ATTEMPTS
    title = "Too many attempts; try again later"


class Conflict(BrokerError):
    status = 409
    code = ErrorCode.CONFLICT
    title = "Conflict"


class ServiceUnavailable(BrokerError):
    """A collaborator the broker needs is down: nothing is released."""

    status = 503
    code = ErrorCode.STORAGE_UNAVAILABLE
    title = "A required service is unavailable; nothing was released"


class PolicyUnavailable(ServiceUnavailable):
    code = ErrorCode.POLICY_UNAVAILABLE
    title = "The policy engine is unavailable; nothing was released"


class PolicyInvalid(BrokerError):
    status = 500
    code = ErrorCode.POLICY_INVALID
    title = "The policy set is invalid"


class AgreementRejected(BrokerError):
    """An uploaded agreement version that does not validate (``policy_invalid``) or
    whose Rego tests fail (``policy_tests_failed``); ``errors`` lists every fault as
    ``file:line: message``."""

    status = 422
    code = ErrorCode.POLICY_INVALID
    title = "The agreement is not valid"

    def __init__(self, message: str, *, errors: list[str], code: ErrorCode | None = None) -> None:
        super().__init__(message, field="files", code=code)
        self.errors = errors


class StorageUnavailable(ServiceUnavailable):
    code = ErrorCode.STORAGE_UNAVAILABLE
    title = "The database is unavailable; nothing was released"


class AuditUnavailable(ServiceUnavailable):
    code = ErrorCode.AUDIT_UNAVAILABLE
    title = "The audit log is unavailable; nothing was released"


class RegisterUnavailable(ServiceUnavailable):
    code = ErrorCode.REGISTER_UNAVAILABLE
    title = "The population register is unavailable; nothing was released"


class KeyError_(BrokerError):  # noqa: N801 - trailing underscore avoids shadowing the builtin
    status = 500
    code = ErrorCode.KEY_ERROR
    title = "Key material is missing or invalid"


class KeyUnavailable(ServiceUnavailable):
    """The signing device (PKCS#11 token) cannot be reached or refused to sign."""

    code = ErrorCode.KEY_UNAVAILABLE
    title = "The signing key is unavailable; nothing was released"


class RecordShredded(BrokerError):
    """A stored field whose retention key was destroyed: it can never be read again."""

    status = 410
    code = ErrorCode.RECORD_SHREDDED
    title = "The retention period ended; this detail was destroyed"


class AuditChainBroken(BrokerError):
    status = 500
    code = ErrorCode.AUDIT_CHAIN_BROKEN
    title = "The audit chain does not verify"

    def __init__(self, message: str, *, index: int) -> None:
        super().__init__(message)
        self.index = index
