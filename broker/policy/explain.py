"""Plain-language explanations of item decisions (the same text the API, the
CLI and privacy officers see)."""

from __future__ import annotations

from broker.core.types import ItemDecision, ReasonCode
from broker.policy.loader import PolicySet


def explain(
    item: ItemDecision,
    *,
    agreement_id: str,
    purpose_id: str,
    recipient: str,
    provider: str,
    policy_set: PolicySet,
) -> str:
    agreement = policy_set.agreements.get(agreement_id)
    purpose = agreement.purposes.get(purpose_id) if agreement else None
    title = agreement.source.get("title_en", agreement_id) if agreement else agreement_id
    reference = policy_set.reference
    element = reference.elements.get(item.element)
    element_name = f"{item.element} ({element.name_nl})" if element else item.element
    bases = ", ".join(
        reference.legal_bases[b].citation if b in reference.legal_bases else b
        for b in item.legal_basis_ids
    )
    match item.reason:
        case ReasonCode.ALLOW_STATUTORY_BASIS:
            return (
                f"Allowed: agreement {agreement_id} ('{title}'), purpose {purpose_id}, lets "
                f"{provider} give {element_name} to {recipient} without consent, on the basis "
                f"of {bases}."
            )
        case ReasonCode.ALLOW_CONSENT:
            return (
                f"Allowed on consent record {item.consent_id}, which covers {element_name} "
                f"for purpose {purpose_id} and was given by everyone whose consent the age "
                f"rules require; basis {bases}."
            )
        case ReasonCode.ALLOW_BREAK_GLASS:
            return (
                f"Allowed under acute-danger declaration {item.acute_declaration_id}: "
                f"{element_name} is on the agreement's acute-danger list for {recipient}; "
                f"basis {bases}."
            )
        case ReasonCode.DENY_AGREEMENT_NOT_IN_FORCE:
            return (
                f"Denied: agreement {agreement_id} is not in force on the request date "
                "(unknown, not active, or outside its validity period)."
            )
        case ReasonCode.DENY_UNKNOWN_PURPOSE:
            return f"Denied: agreement {agreement_id} has no purpose {purpose_id}."
        case ReasonCode.DENY_PURPOSE_MISMATCH:
            providers = ", ".join(purpose.get("providers", [])) if purpose else ""
            recipients = ", ".join(purpose.get("recipients", [])) if purpose else ""
            return (
                f"Denied: under purpose {purpose_id} only {providers} may provide and only "
                f"{recipients} may receive; this request is from {recipient} to {provider}."
            )
        case ReasonCode.DENY_ELEMENT_NOT_ALLOWED:
            return (
                f"Denied: {element_name} is not on the list of elements that {recipient} may "
                f"receive under purpose {purpose_id} of agreement {agreement_id}."
            )
        case ReasonCode.DENY_PRECONDITION_FAILED:
            descriptions = {
                p.get("id"): p.get("description", p.get("id"))
                for p in (purpose.get("preconditions", []) if purpose else [])
            }
            failed = "; ".join(
                f"{pid}: {descriptions.get(pid, pid)}" for pid in item.failed_preconditions
            )
            return f"Denied: a precondition of purpose {purpose_id} does not hold ({failed})."
        case ReasonCode.DENY_CONSENT_MISSING:
            return (
                f"Denied: purpose {purpose_id} needs consent and no consent record covers "
                f"{element_name} for this person."
            )
        case ReasonCode.DENY_CONSENT_INCOMPLETE:
            return (
                f"Denied: consent record {item.consent_id} was not given by everyone whose "
                "consent the age and parental-authority rules require on the request date."
            )
        case ReasonCode.DENY_CONSENT_WITHDRAWN:
            return f"Denied: consent record {item.consent_id} was withdrawn before this request."
        case ReasonCode.DENY_BREAK_GLASS_EXPIRED:
            return (
                f"Denied: the acute-danger declaration has expired; {recipient} is a recipient "
                f"under purpose {purpose_id} only while a declaration is valid."
            )
    return item.reason.value  # pragma: no cover - every reason code is handled above
