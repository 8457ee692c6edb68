"""Agreements as partners see them: what is in force, what to sign, and signing."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator

from broker.agreements.replication import record_upload
from broker.agreements.upload import MAX_FILE_BYTES, Uploaded, upload_agreement
from broker.core.clock import dutch_date
from broker.core.errors import Forbidden
from broker.deps import CurrentAgency, ServicesDep, require_json
from broker.exchange.schemas import Problem, problem_responses
from broker.security.tokens import Principal

router = APIRouter(prefix="/v1/agreements", tags=["agreements"])
_bearer = HTTPBearer(auto_error=False, description="Access token from /oauth/token")


class SignatoryOut(BaseModel):
    party: str
    oin: str | None
    organisation: str | None
    signed: bool
    signed_by_oin: str | None
    signed_at: datetime | None


class AgreementOut(BaseModel):
    id: str
    version: str
    title: str
    status: str
    valid_from: str
    valid_until: str
    content_hash: str = Field(description="What signatories sign (canonical hash of the folder)")
    state: str = Field(description="in_force, unsigned, not_yet_valid, expired or status:<status>")
    purposes: list[str]
    signatories: list[SignatoryOut]


class SignatureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    jws: str = Field(
        min_length=16,
        max_length=8192,
        description=(
            "JWS compact (EdDSA, also named Ed25519 (RFC 9864), or ES256; kid = a registered "
            "signing key) over the canonical "
            'JSON {"agreement_id","version","content_hash","party","oin","signed_at"}'
        ),
    )


UploadFileName = Literal["agreement.yaml", "policy.rego", "policy_test.rego"]
# Three files of at most 256 KiB each, as JSON strings (escapes take more bytes).
UPLOAD_MAX_BODY_BYTES = 2 * 1024 * 1024


class AgreementUploadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    files: dict[UploadFileName, str] = Field(
        description=(
            "The agreement folder's files as UTF-8 text (at most 256 KiB each): "
            "agreement.yaml (required), policy.rego, policy_test.rego"
        ),
    )

    @field_validator("files")
    @classmethod
    def _text_files(cls, files: dict[UploadFileName, str]) -> dict[UploadFileName, str]:
        if "agreement.yaml" not in files:
            raise ValueError("agreement.yaml is required")
        for name, text in files.items():
            try:
                size = len(text.encode("utf-8"))
            except UnicodeEncodeError:
                raise ValueError(f"{name} is not UTF-8 text") from None
            if "\x00" in text:
                raise ValueError(f"{name} is not text (it holds a NUL character)")
            if size > MAX_FILE_BYTES:
                raise ValueError(f"{name} is larger than {MAX_FILE_BYTES // 1024} KiB")
        return files


class FieldError(BaseModel):
    field: str
    message: str


class UploadProblem(Problem):
    errors: list[str] | list[FieldError] = Field(
        default_factory=list,
        description=(
            "policy_invalid and policy_tests_failed: every fault as `file:line: message`; "
            "validation_failed: the fields at fault"
        ),
    )


_PROBLEMS = problem_responses(
    {
        401: "Missing or invalid access token",
        403: "Not a signatory, or the signature does not verify",
        404: "No such agreement",
        409: "Signed already",
        413: "Request body too large",
        415: "Request body is not application/json",
        422: "Invalid signature document",
        503: "Database or audit log unavailable",
    }
)


async def _list(services: ServicesDep) -> list[AgreementOut]:
    policy_set = services.policy_set
    statuses = await services.agreements.statuses(policy_set, dutch_date(services.exchanges.now()))
    return [
        AgreementOut(
            id=s.agreement.id,
            version=s.agreement.version,
            title=str(s.agreement.source.get("title", s.agreement.id)),
            status=str(s.agreement.source.get("status", "")),
            valid_from=str(s.agreement.source.get("valid_from", "")),
            valid_until=s.agreement.valid_until or "",
            content_hash=s.agreement.content_hash,
            state=s.state,
            purposes=sorted(s.agreement.purposes),
            signatories=[
                SignatoryOut(
                    party=e.party,
                    oin=e.oin,
                    organisation=e.organisation,
                    signed=e.signed_by_oin is not None,
                    signed_by_oin=e.signed_by_oin,
                    signed_at=e.signed_at,
                )
                for e in s.signatories
            ],
        )
        for s in statuses
    ]


@router.get(
    "",
    response_model=list[AgreementOut],
    responses={k: v for k, v in _PROBLEMS.items() if k in (401, 503)},
    dependencies=[Depends(_bearer)],
    summary="The agreements, their content hashes and who has signed them",
)
async def list_agreements(principal: CurrentAgency, services: ServicesDep) -> list[AgreementOut]:
    return await _list(services)


@router.post(
    "/{agreement_id}/signatures",
    status_code=201,
    response_model=AgreementOut,
    responses=_PROBLEMS,
    dependencies=[Depends(require_json), Depends(_bearer)],
    summary="Sign an agreement version as one of its signatories",
)
async def sign_agreement(
    agreement_id: str, body: SignatureIn, principal: CurrentAgency, services: ServicesDep
) -> AgreementOut:
    signer = await services.directory.get(principal.oin)
    if signer is None:
        raise Forbidden("The signing agency is not registered")
    row = await services.agreements.submit(body.jws, signer=signer, policy_set=services.policy_set)
    if row.agreement_id != agreement_id:
        raise Forbidden("The signature is for another agreement")
    await services.watcher.check()  # takes effect here at once, elsewhere on the next poll
    listed = await _list(services)
    return next(a for a in listed if a.id == agreement_id and a.version == row.version)


async def _agreement_admin(principal: CurrentAgency, services: ServicesDep) -> Principal:
    if principal.oin not in services.settings.agreement_admins:
        raise Forbidden("Only agreement administrators may upload agreements")
    return principal


AgreementAdmin = Annotated[Principal, Depends(_agreement_admin)]

_UPLOAD_PROBLEMS: dict[int | str, dict[str, object]] = {
    **{k: v for k, v in _PROBLEMS.items() if k in (401, 413, 415, 503)},
    403: dict(_PROBLEMS[403], description="Not an agreement administrator"),
    409: dict(
        _PROBLEMS[409],
        description="The version is the one in force already, or the folder is taken",
    ),
    422: {
        "model": UploadProblem,
        "content": {"application/problem+json": {}},
        "description": (
            "Invalid request body; or the policy set with the agreement does not validate "
            "(policy_invalid) or its Rego tests fail (policy_tests_failed), listed in errors"
        ),
    },
}


@router.post(
    "",
    status_code=201,
    response_model=AgreementOut,
    responses=_UPLOAD_PROBLEMS,
    dependencies=[Depends(require_json), Depends(_bearer)],
    summary="Upload a new agreement, or a new version of one (agreement administrators)",
    description=(
        "Validates the policy set with the folder and runs the folder's Rego tests; only "
        "when both pass is the folder installed and the set reloaded. The answer is the "
        "agreement as GET /v1/agreements lists it: a new version is `unsigned` until every "
        "signatory signed its content hash."
    ),
)
async def upload(
    body: AgreementUploadIn, principal: AgreementAdmin, services: ServicesDep
) -> AgreementOut:
    files = {str(name): text for name, text in body.files.items()}

    async def record(uploaded: Uploaded) -> int:
        return await record_upload(services.db, uploaded, files, principal.oin)

    uploaded = await upload_agreement(
        files,
        uploader=principal.oin,
        current=lambda: services.policy_set,
        watcher=services.watcher,
        audit=services.audit,
        lock=services.agreements.upload_lock,
        record=record,
    )
    listed = await _list(services)
    return next(
        a for a in listed if a.id == uploaded.agreement_id and a.version == uploaded.version
    )
