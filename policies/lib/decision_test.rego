# Unit tests of the shared decision procedure (decision.rego) for paths that no shipped
# agreement reaches: the default consent rule, the any_authority_holder giver and an
# empty age band. They decide against a synthetic agreement put in place with
# `with data.broker.agreements as ...` (so `broker policy test` leaves these decisions
# out of the agreements' domain coverage). Loaded only by `broker policy test`.
package broker.decision_test

import rego.v1

# 2026-06-10T10:00:00+02:00
now_ns := 1781078400000000000

purpose := {
	"id": "met_toestemming",
	"providers": ["ggz"],
	"recipients": ["veilig_thuis"],
	"allowed_elements": {"veilig_thuis": ["health.ggz_treatment_involvement"]},
	"legal_basis_ids": ["avg_toestemming"],
	"consent": "required",
	"preconditions": [],
}

# No consent_rule: the library's default table applies.
synthetic := {
	"id": "agr-lib-test",
	"version": "0.1",
	"status": "active",
	"valid_from": "2026-01-01",
	"valid_until": "2026-12-31",
	"rego_package": "agr_lib_test_has_no_module",
	"rego_version": "v0_1",
	"content_hash": "sha256:lib-test",
	"purposes": {"met_toestemming": purpose},
}

with_rule(rule) := object.union(synthetic, {"consent_rule": rule})

person(key, age, holders) := {"key": key, "kind": "person", "birth_date": null, "age": age, "authority_holders": holders}

# The reason for one item of `subject` with one consent record given by `given_by`.
reason(agreement, subject, given_by) := r if {
	request := {
		"agreement": "agr-lib-test",
		"purpose": "met_toestemming",
		"provider": "ggz",
		"recipient": "veilig_thuis",
		"request_time_ns": now_ns,
		"request_date": "2026-06-10",
		"context": {},
		"subjects": [subject],
		"items": [{"element": "health.ggz_treatment_involvement", "subject": subject.key}],
		"consents": [{
			"id": "CNS-1",
			"subject": subject.key,
			"given_by": given_by,
			"agreement": "agr-lib-test",
			"purpose": "met_toestemming",
			"given_at_ns": now_ns - 1,
			"withdrawn_at_ns": null,
		}],
		"acute_declaration": null,
	}
	d := data.broker.decision.result with input as request with data.broker.agreements as {"agr-lib-test": {"versions": {"0.1": agreement}}}
	r := d.items[0].reason
}

test_default_rule_under_12_all_holders if {
	child := person("C1", 11, ["M", "F"])
	reason(synthetic, child, ["M"]) == "deny_consent_incomplete"
	reason(synthetic, child, ["M", "F"]) == "allow_consent"
}

test_default_rule_12_to_15_child_and_all_holders if {
	child := person("C1", 12, ["M", "F"])
	reason(synthetic, child, ["M", "F"]) == "deny_consent_incomplete"
	reason(synthetic, child, ["C1", "M", "F"]) == "allow_consent"
}

test_default_rule_16_and_17_child_alone if {
	reason(synthetic, person("C1", 16, ["M"]), ["C1"]) == "allow_consent"
	reason(synthetic, person("C1", 17, ["M"]), ["M"]) == "deny_consent_incomplete"
}

test_default_rule_adults_themselves if {
	reason(synthetic, person("A1", 18, []), ["A1"]) == "allow_consent"
	reason(synthetic, person("A1", 18, []), ["X"]) == "deny_consent_incomplete"
}

test_any_authority_holder if {
	agreement := with_rule({"age_0_11": ["any_authority_holder"], "age_12_15": [], "age_16_17": ["child"], "age_18_plus": ["subject"]})
	reason(agreement, person("C1", 8, ["M", "F"]), ["F"]) == "allow_consent"
	reason(agreement, person("C1", 8, ["M", "F"]), ["X"]) == "deny_consent_incomplete"
	reason(agreement, person("C1", 8, []), ["X"]) == "deny_consent_incomplete"
}

# A band that names no giver can never be complete (fails closed).
test_empty_band_fails_closed if {
	agreement := with_rule({"age_0_11": ["any_authority_holder"], "age_12_15": [], "age_16_17": ["child"], "age_18_plus": ["subject"]})
	reason(agreement, person("C1", 13, ["M"]), ["C1", "M"]) == "deny_consent_incomplete"
}

test_inactive_agreement_is_not_in_force if {
	reason(object.union(synthetic, {"status": "suspended"}), person("A1", 30, []), ["A1"]) == "deny_agreement_not_in_force"
}

test_unknown_agreement_is_not_in_force if {
	d := data.broker.decision.result with input as {
		"agreement": "agr-does-not-exist",
		"purpose": "met_toestemming",
		"provider": "ggz",
		"recipient": "veilig_thuis",
		"request_time_ns": now_ns,
		"request_date": "2026-06-10",
		"context": {},
		"subjects": [],
		"items": [{"element": "person.bsn", "subject": "A1"}],
		"consents": [],
		"acute_declaration": null,
	}
	d.items[0].reason == "deny_agreement_not_in_force"
	d.agreement_version == null
	d.agreement_hash == null
}

# ------------------------------------------------------------------ versions
# Two versions of the synthetic agreement with consecutive windows; 0.2 is open-ended.
v01 := object.union(synthetic, {"valid_until": "2026-06-30"})

v02 := object.union(synthetic, {
	"version": "0.2",
	"valid_from": "2026-07-01",
	"valid_until": null,
	"content_hash": "sha256:lib-test-0.2",
	"purposes": {"met_toestemming": object.union(purpose, {"consent": "not_required_with_basis"})},
})

# The version used on `day` (status of 0.2 as given) and the reason of one item.
on(day, status_02) := [d.agreement_version, d.agreement_hash, d.items[0].reason] if {
	request := {
		"agreement": "agr-lib-test",
		"purpose": "met_toestemming",
		"provider": "ggz",
		"recipient": "veilig_thuis",
		"request_time_ns": now_ns,
		"request_date": day,
		"context": {},
		"subjects": [person("A1", 30, [])],
		"items": [{"element": "health.ggz_treatment_involvement", "subject": "A1"}],
		"consents": [],
		"acute_declaration": null,
	}
	versions := {"0.1": v01, "0.2": object.union(v02, {"status": status_02})}
	d := data.broker.decision.result with input as request with data.broker.agreements as {"agr-lib-test": {"versions": versions}}
}

test_the_version_whose_window_covers_the_date_decides if {
	on("2026-06-30", "active") == ["0.1", "sha256:lib-test", "deny_consent_missing"]
	on("2026-07-01", "active") == ["0.2", "sha256:lib-test-0.2", "allow_statutory_basis"]
	on("2040-01-01", "active") == ["0.2", "sha256:lib-test-0.2", "allow_statutory_basis"]
}

test_a_version_not_in_force_is_named_but_denies if {
	on("2026-07-01", "unsigned") == ["0.2", "sha256:lib-test-0.2", "deny_agreement_not_in_force"]
	on("2026-06-30", "unsigned") == ["0.1", "sha256:lib-test", "deny_consent_missing"]
}

test_no_version_covers_the_date if {
	on("2025-12-31", "active") == ["0.2", "sha256:lib-test-0.2", "deny_agreement_not_in_force"]
}

# ---------------------------------------------------------------- wilsonbekwaam
# A record flagged wilsonbekwaam (consent_rules.md section 2 rule 5): the holders of
# authority represent the minor at any age, as under 12; an adult is not affected.
flagged_reason(agreement, subject, given_by) := r if {
	request := {
		"agreement": "agr-lib-test",
		"purpose": "met_toestemming",
		"provider": "ggz",
		"recipient": "veilig_thuis",
		"request_time_ns": now_ns,
		"request_date": "2026-06-10",
		"context": {},
		"subjects": [subject],
		"items": [{"element": "health.ggz_treatment_involvement", "subject": subject.key}],
		"consents": [{
			"id": "CNS-W",
			"subject": subject.key,
			"given_by": given_by,
			"agreement": "agr-lib-test",
			"purpose": "met_toestemming",
			"given_at_ns": now_ns - 1,
			"withdrawn_at_ns": null,
			"wilsonbekwaam": true,
		}],
		"acute_declaration": null,
	}
	d := data.broker.decision.result with input as request with data.broker.agreements as {"agr-lib-test": {"versions": {"0.1": agreement}}}
	r := d.items[0].reason
}

test_wilsonbekwaam_12_to_15_represented_by_all_holders if {
	child := person("C1", 13, ["M", "F"])
	flagged_reason(synthetic, child, ["M", "F"]) == "allow_consent"
	flagged_reason(synthetic, child, ["M"]) == "deny_consent_incomplete"
	flagged_reason(synthetic, child, ["C1"]) == "deny_consent_incomplete"
}

test_wilsonbekwaam_16_and_17_represented_by_all_holders if {
	child := person("C1", 16, ["M", "F"])
	flagged_reason(synthetic, child, ["M", "F"]) == "allow_consent"
	flagged_reason(synthetic, child, ["C1"]) == "deny_consent_incomplete"
}

test_wilsonbekwaam_follows_the_agreements_under_12_band if {
	strict := with_rule({"age_0_11": ["any_authority_holder"], "age_12_15": ["child", "all_authority_holders"], "age_16_17": ["child"], "age_18_plus": ["subject"]})
	flagged_reason(strict, person("C1", 14, ["M", "F"]), ["F"]) == "allow_consent"
}

test_wilsonbekwaam_does_not_change_an_adults_rule if {
	adult := person("A1", 18, [])
	flagged_reason(synthetic, adult, ["A1"]) == "allow_consent"
	flagged_reason(synthetic, adult, ["M"]) == "deny_consent_incomplete"
}

test_wilsonbekwaam_without_known_holders_is_incomplete if {
	flagged_reason(synthetic, person("C1", 13, []), ["C1"]) == "deny_consent_incomplete"
}

# A record narrowed to some elements decides per element; records that do not
# narrow decide once per subject. Both paths give the same reasons.
test_consent_narrowed_by_element_decides_per_element if {
	two := object.union(purpose, {"allowed_elements": {"veilig_thuis": ["health.ggz_treatment_involvement", "health.gp_registration"]}})
	agreement := object.union(synthetic, {"purposes": {"met_toestemming": two}})
	child := person("C1", 16, ["M"])
	request := {
		"agreement": "agr-lib-test",
		"purpose": "met_toestemming",
		"provider": "ggz",
		"recipient": "veilig_thuis",
		"request_time_ns": now_ns,
		"request_date": "2026-06-10",
		"context": {},
		"subjects": [child],
		"items": [
			{"element": "health.ggz_treatment_involvement", "subject": "C1"},
			{"element": "health.gp_registration", "subject": "C1"},
		],
		"consents": [{
			"id": "CNS-2",
			"subject": "C1",
			"given_by": ["C1"],
			"agreement": "agr-lib-test",
			"purpose": "met_toestemming",
			"elements": ["health.gp_registration"],
			"given_at_ns": now_ns - 1,
			"withdrawn_at_ns": null,
		}],
		"acute_declaration": null,
	}
	d := data.broker.decision.result with input as request with data.broker.agreements as {"agr-lib-test": {"versions": {"0.1": agreement}}}
	[i.reason | some i in d.items] == ["deny_consent_missing", "allow_consent"]
	d.items[1].consent_id == "CNS-2"
}
