# Unit tests of agr-ggz-vt-kindcheck (GGZ asks Veilig Thuis "is this household known?"),
# run by `broker policy test`. Each test asks the shared decision procedure for a decision
# with a complete input document (broker/core/types.py PolicyInput.to_document).
package agreements.agr_ggz_vt_kindcheck.v1_0_test

import rego.v1

agreement_id := "agr-ggz-vt-kindcheck"

# 2026-04-07T11:00:00+02:00
now_ns := 1775552400000000000

client := {"key": "P10", "kind": "person", "birth_date": "1983-07-30", "age": 42, "authority_holders": []}

base := {
	"agreement": agreement_id,
	"purpose": "kindcheck_bekendheid",
	"provider": "veilig_thuis",
	"recipient": "ggz",
	"request_time_ns": now_ns,
	"request_date": "2026-04-07",
	"context": {},
	"subjects": [client],
	"items": [],
	"consents": [],
	"acute_declaration": null,
}

decide(request) := d if {
	d := data.broker.decision.result with input as object.union(base, request)
}

items(elements) := [{"element": e, "subject": "P10"} | some e in elements]

reasons(request) := {i.reason | some i in decide(request).items}

# ------------------------------------------------------------ kindcheck_bekendheid
positive_kindcheck := {
	"kindcheck_decision": "meldcode_stappen_volgen",
	"minor_children_count": 1,
	"requester_role": "behandelaar",
}

bekendheid := {"purpose": "kindcheck_bekendheid", "context": positive_kindcheck}

test_bekendheid_allows_boolean_answer_only if {
	d := decide(object.union(bekendheid, {"items": items(["vt.report_exists"])}))
	d.items[0].reason == "allow_statutory_basis"
	d.items[0].legal_basis_ids == ["wmo_5_2_6", "wmo_vt_verwerking", "wmo_4_1_1", "meldcode_plicht"]
	d.obligations.response_form == "boolean_only"
}

test_bekendheid_denies_content if {
	d := decide(object.union(bekendheid, {"items": items(["vt.report", "vt.case_status", "vt.contact_person"])}))
	[i.reason | some i in d.items] == ["deny_element_not_allowed", "deny_element_not_allowed", "deny_element_not_allowed"]
}

test_bekendheid_meldcode_officer_may_ask if {
	reasons(object.union(bekendheid, {
		"context": {"requester_role": "aandachtsfunctionaris"},
		"items": items(["vt.report_exists"]),
	})) == {"allow_statutory_basis"}
}

# "at least one minor child, or this is unknown": no count given counts as unknown.
test_bekendheid_unknown_number_of_children_is_enough if {
	reasons({
		"context": {"kindcheck_decision": "meldcode_stappen_volgen", "requester_role": "behandelaar"},
		"items": items(["vt.report_exists"]),
	}) == {"allow_statutory_basis"}
}

test_bekendheid_no_children_fails if {
	d := decide(object.union(bekendheid, {
		"context": {"minor_children_count": 0},
		"items": items(["vt.report_exists"]),
	}))
	d.items[0].reason == "deny_precondition_failed"
	d.items[0].failed_preconditions == ["client_cares_for_minors"]
}

# A routine query at intake without parent signals (scenario S05-R5).
test_bekendheid_routine_query_fails if {
	d := decide(object.union(bekendheid, {
		"context": {"kindcheck_decision": "afgesloten_geen_zorg", "minor_children_count": 2, "requester_role": "secretariaat"},
		"items": items(["vt.report_exists"]),
	}))
	d.items[0].reason == "deny_precondition_failed"
	d.items[0].failed_preconditions == ["kindcheck_positive", "requester_is_treating_professional"]
	d.items[0].legal_basis_ids == []
}

test_bekendheid_only_ggz_receives if {
	reasons(object.union(bekendheid, {"recipient": "politie", "items": items(["vt.report_exists"])})) == {"deny_purpose_mismatch"}
}

test_bekendheid_only_veilig_thuis_answers if {
	reasons(object.union(bekendheid, {"provider": "ggz", "items": items(["vt.report_exists"])})) == {"deny_purpose_mismatch"}
}

# ------------------------------------------------------------ kindcheck_contact_professional
hour_ns := 3600000000000

# An answer the broker released earlier (input.prior_answers is broker-derived).
answer(value, hours_ago) := {
	"subject": "P10",
	"agreement": agreement_id,
	"purpose": "kindcheck_bekendheid",
	"element": "vt.report_exists",
	"answer": value,
	"answered_at_ns": now_ns - round(hours_ago * hour_ns),
	"exchange_id": "x-1",
}

contact := {"purpose": "kindcheck_contact_professional", "prior_answers": [answer(true, 0.33)]}

contact_reason(request) := reasons(object.union(contact, object.union(request, {"items": items(["vt.contact_person"])})))

test_contact_allowed_after_recent_yes if {
	d := decide(object.union(contact, {"items": items(["vt.contact_person"])}))
	d.items[0].reason == "allow_statutory_basis"
	d.obligations.response_form == "full"
}

test_contact_allowed_up_to_24_hours if {
	contact_reason({"prior_answers": [answer(true, 24)]}) == {"allow_statutory_basis"}
}

test_contact_denied_after_24_hours if {
	d := decide(object.union(contact, {"prior_answers": [answer(true, 24.5)], "items": items(["vt.contact_person"])}))
	d.items[0].reason == "deny_precondition_failed"
	d.items[0].failed_preconditions == ["prior_yes_answer"]
}

test_contact_denied_after_no if {
	contact_reason({"prior_answers": [answer(false, 0.08)]}) == {"deny_precondition_failed"}
}

test_contact_denied_without_prior_answer if {
	contact_reason({"prior_answers": []}) == {"deny_precondition_failed"}
}

# An input without the broker fact at all (e.g. a decision recorded before it existed).
test_contact_denied_when_fact_absent if {
	d := data.broker.decision.result with input as object.remove(
		object.union(base, object.union(contact, {"items": items(["vt.contact_person"])})),
		["prior_answers"],
	)
	d.items[0].reason == "deny_precondition_failed"
}

# The requester's own claim in the context does not count.
test_contact_forged_context_is_ignored if {
	contact_reason({
		"prior_answers": [],
		"context": {"prior_kindcheck_answer": true, "prior_kindcheck_age_hours": 0.1},
	}) == {"deny_precondition_failed"}
}

test_contact_answer_about_another_client_does_not_count if {
	other := object.union(answer(true, 0.1), {"subject": "P13"})
	contact_reason({"prior_answers": [other]}) == {"deny_precondition_failed"}
}

test_contact_answer_to_another_purpose_does_not_count if {
	other := object.union(answer(true, 0.1), {"purpose": "kindcheck_contact_professional"})
	contact_reason({"prior_answers": [other]}) == {"deny_precondition_failed"}
}

test_contact_answer_from_the_future_does_not_count if {
	contact_reason({"prior_answers": [answer(true, -1)]}) == {"deny_precondition_failed"}
}

# Every client named in the follow-up needs its own "yes".
test_contact_needs_a_yes_for_every_client if {
	second := {"key": "P13", "kind": "person", "birth_date": "1990-12-01", "age": 35, "authority_holders": []}
	d := decide(object.union(contact, {
		"subjects": [client, second],
		"items": [{"element": "vt.contact_person", "subject": "P10"}, {"element": "vt.contact_person", "subject": "P13"}],
	}))
	{i.reason | some i in d.items} == {"deny_precondition_failed"}
}

test_contact_purpose_gives_no_case_information if {
	reasons(object.union(contact, {"items": items(["vt.report_exists", "vt.case_status"])})) == {"deny_element_not_allowed"}
}

# ------------------------------------------------------------ agreement-wide
test_expired_covenant_denies_everything if {
	d := decide(object.union(bekendheid, {
		"request_time_ns": 1799744400000000000, # 2027-01-12T10:00:00+01:00
		"request_date": "2027-01-12",
		"items": items(["vt.report_exists", "vt.contact_person"]),
	}))
	every i in d.items {
		i.reason == "deny_agreement_not_in_force"
	}
	d.agreement_version == "1.0"
}
