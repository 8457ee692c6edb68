# Unit tests of agr-zvh-mdaplusplus (MDA++ case table), run by `broker policy test`.
# Each test asks the shared decision procedure for a decision with a complete input
# document (broker/core/types.py PolicyInput.to_document) and checks item reasons:
# statutory purposes, the consent rule for minors (agreement consent_rule), consent
# record selection (withdrawal, narrowing, most recent) and break-the-glass.
package agreements.agr_zvh_mdaplusplus.v2_2_test

import rego.v1

agreement_id := "agr-zvh-mdaplusplus"

# 2026-06-10T10:00:00+02:00
now_ns := 1781078400000000000

# 2026-05-15, 2026-05-20 and 2026-06-01, 10:00 +02:00
may_15_ns := 1778832000000000000

may_20_ns := 1779264000000000000

june_1_ns := 1780300800000000000

father := {"key": "P01", "kind": "person", "birth_date": "1988-05-17", "age": 38, "authority_holders": []}

mother := {"key": "P02", "kind": "person", "birth_date": "1991-11-02", "age": 34, "authority_holders": []}

noor := {"key": "P03", "kind": "person", "birth_date": "2012-09-03", "age": 13, "authority_holders": ["P01", "P02"]}

yara := {"key": "P06", "kind": "person", "birth_date": "1992-02-25", "age": 34, "authority_holders": []}

sami := {"key": "P07", "kind": "person", "birth_date": "2009-11-20", "age": 16, "authority_holders": ["P06"]}

lina := {"key": "P08", "kind": "person", "birth_date": "2019-04-08", "age": 7, "authority_holders": ["P06"]}

# A child whose holders of authority are not known, and a person of unknown age.
orphan := {"key": "P20", "kind": "person", "birth_date": "2021-01-01", "age": 5, "authority_holders": []}

unknown_age := {"key": "P21", "kind": "person", "birth_date": null, "age": null, "authority_holders": []}

household := {"key": "HH-1", "kind": "household", "birth_date": null, "age": null, "authority_holders": []}

on_table := {"mda_case_id": "MDA-LB-2026-015", "mda_case_status": "actief"}

base := {
	"agreement": agreement_id,
	"purpose": "zorginformatie_casusoverleg",
	"provider": "ggz",
	"recipient": "gemeente_wijkteam",
	"request_time_ns": now_ns,
	"request_date": "2026-06-10",
	"context": on_table,
	"subjects": [father, mother, noor, yara, sami, lina, orphan, unknown_age, household],
	"items": [],
	"consents": [],
	"acute_declaration": null,
}

decide(request) := d if {
	d := data.broker.decision.result with input as object.union(base, request)
}

items(elements, subject) := [{"element": e, "subject": subject} | some e in elements]

reasons(request) := {i.reason | some i in decide(request).items}

# The one item of a one-item request.
item(request) := decide(request).items[0]

consent(id, subject, given_by, given_at_ns) := {
	"id": id,
	"subject": subject,
	"given_by": given_by,
	"agreement": agreement_id,
	"purpose": "zorginformatie_casusoverleg",
	"given_at_ns": given_at_ns,
	"withdrawn_at_ns": null,
}

# A request for health.ggz_treatment_involvement of `subject` with these consent records.
care_request(subject, consents) := {
	"items": items(["health.ggz_treatment_involvement"], subject),
	"consents": consents,
}

# ------------------------------------------------------------ veiligheidsoverleg
veiligheid_whitelists := {
	"veilig_thuis": ["police.dv_incident", "police.suspect_history_dv", "police.tijdelijk_huisverbod", "om.prosecution_status", "om.special_conditions", "cp.measure_active", "cp.ots_decision", "cp.raad_investigation_status"],
	"politie": ["vt.case_status", "vt.safety_assessment", "vt.safety_plan", "om.special_conditions", "cp.measure_active"],
	"openbaar_ministerie": ["vt.safety_assessment", "police.dv_incident", "cp.measure_active"],
	"gecertificeerde_instelling": ["vt.safety_assessment", "vt.safety_plan", "police.dv_incident", "om.special_conditions", "cp.raad_investigation_status"],
	"raad_kinderbescherming": ["vt.safety_assessment", "police.dv_incident", "om.special_conditions", "cp.measure_active"],
	"zorg_en_veiligheidshuis": ["person.bsn", "person.name", "person.birth_date", "household.composition", "vt.case_status", "cp.measure_active"],
}

veiligheid := {"purpose": "veiligheidsoverleg", "provider": "veilig_thuis"}

test_veiligheid_allows_each_recipient_its_whitelist if {
	every recipient, elements in veiligheid_whitelists {
		d := decide(object.union(veiligheid, {"recipient": recipient, "items": items(elements, "P01")}))
		count(d.items) == count(elements)
		every i in d.items {
			i.reason == "allow_statutory_basis"
			"wgs_samenwerkingsverbanden" in i.legal_basis_ids
		}
	}
}

test_veiligheid_police_provides_to_veilig_thuis if {
	reasons(object.union(veiligheid, {
		"provider": "politie",
		"recipient": "veilig_thuis",
		"items": items(["police.dv_incident"], "P01"),
	})) == {"allow_statutory_basis"}
}

test_veiligheid_denies_health_data_to_police if {
	reasons(object.union(veiligheid, {
		"recipient": "politie",
		"items": items(["health.diagnosis", "health.ggz_treatment_involvement"], "P01"),
	})) == {"deny_element_not_allowed"}
}

test_veiligheid_care_partners_are_no_providers if {
	reasons(object.union(veiligheid, {
		"provider": "ggz",
		"recipient": "politie",
		"items": items(["vt.case_status"], "HH-1"),
	})) == {"deny_purpose_mismatch"}
}

test_veiligheid_needs_active_case if {
	d := decide(object.union(veiligheid, {
		"recipient": "politie",
		"context": {"mda_case_status": "afgesloten"},
		"items": items(["vt.case_status"], "HH-1"),
	}))
	d.items[0].reason == "deny_precondition_failed"
	d.items[0].failed_preconditions == ["case_on_table"]
}

test_veiligheid_needs_case_id if {
	reasons(object.union(veiligheid, {
		"recipient": "politie",
		"context": {"mda_case_id": null},
		"items": items(["vt.case_status"], "HH-1"),
	})) == {"deny_precondition_failed"}
}

# ------------------------------------------------------------ zorginformatie_casusoverleg
zorg_whitelists := {
	"veilig_thuis": ["health.gp_registration", "health.ggz_treatment_involvement", "health.treating_professional_contact", "health.diagnosis", "addiction.treatment_involvement", "addiction.substance_use_indicator", "school.attendance_absence", "school.care_signals", "finance.debt_assistance_status", "housing.eviction_risk", "social.isolation_indicator"],
	"gemeente_wijkteam": ["health.ggz_treatment_involvement", "health.treating_professional_contact", "addiction.treatment_involvement", "school.attendance_absence", "school.verzuim_melding", "finance.payment_arrears_signal", "finance.debt_assistance_status", "finance.total_debt_amount", "finance.income_source", "housing.eviction_risk", "social.isolation_indicator"],
	"gecertificeerde_instelling": ["health.ggz_treatment_involvement", "health.treating_professional_contact", "health.diagnosis", "school.attendance_absence", "school.care_signals"],
	"zorg_en_veiligheidshuis": ["health.ggz_treatment_involvement", "finance.debt_assistance_status"],
}

test_zorg_allows_each_recipient_its_whitelist_with_consent if {
	every recipient, elements in zorg_whitelists {
		d := decide({
			"recipient": recipient,
			"items": items(elements, "P01"),
			"consents": [consent("CNS-1", "P01", ["P01"], may_20_ns)],
		})
		count(d.items) == count(elements)
		every i in d.items {
			i.reason == "allow_consent"
			i.consent_id == "CNS-1"
			"avg_toestemming" in i.legal_basis_ids
		}
	}
}

test_zorg_other_providers if {
	every provider in ["huisarts", "school", "schuldhulpverlening", "gemeente_wijkteam"] {
		reasons({
			"provider": provider,
			"recipient": "veilig_thuis",
			"items": items(["social.isolation_indicator"], "P01"),
			"consents": [consent("CNS-1", "P01", ["P01"], may_20_ns)],
		}) == {"allow_consent"}
	}
}

test_zorg_without_consent_is_denied if {
	i := item(care_request("P01", []))
	i.reason == "deny_consent_missing"
	i.consent_id == null
	i.legal_basis_ids == []
}

test_zorg_diagnosis_never_to_local_team if {
	reasons({
		"items": items(["health.diagnosis"], "P03"),
		"consents": [consent("CNS-803", "P03", ["P01", "P02", "P03"], june_1_ns)],
	}) == {"deny_element_not_allowed"}
}

test_zorg_police_and_ggz_are_no_recipients if {
	every recipient in ["politie", "ggz"] {
		reasons({
			"provider": "schuldhulpverlening",
			"recipient": recipient,
			"items": items(["finance.debt_assistance_status"], "P06"),
			"consents": [consent("CNS-1", "P06", ["P06"], may_20_ns)],
		}) == {"deny_purpose_mismatch"}
	}
}

test_zorg_police_is_no_provider if {
	reasons({"provider": "politie", "recipient": "veilig_thuis", "items": items(["health.gp_registration"], "P01")}) == {"deny_purpose_mismatch"}
}

test_zorg_needs_active_case_even_with_consent if {
	i := item(object.union(
		care_request("P01", [consent("CNS-1", "P01", ["P01"], may_20_ns)]),
		{"context": {"mda_case_status": "afgesloten"}},
	))
	i.reason == "deny_precondition_failed"
	i.failed_preconditions == ["case_on_table"]
}

# --- the consent rule for minors: 0-11 all holders, 12-15 child and all holders, 16-17 child

test_zorg_13_year_old_one_parent_is_incomplete if {
	i := item(care_request("P03", [consent("CNS-801", "P03", ["P02"], may_20_ns)]))
	i.reason == "deny_consent_incomplete"
	i.consent_id == "CNS-801"
}

test_zorg_13_year_old_child_and_one_parent_is_incomplete if {
	i := item(care_request("P03", [consent("CNS-802", "P03", ["P02", "P03"], may_20_ns)]))
	i.reason == "deny_consent_incomplete"
}

test_zorg_13_year_old_child_and_both_parents if {
	i := item(care_request("P03", [
		consent("CNS-801", "P03", ["P02"], may_15_ns),
		consent("CNS-802", "P03", ["P02", "P03"], may_20_ns),
		consent("CNS-803", "P03", ["P01", "P02", "P03"], june_1_ns),
	]))
	i.reason == "allow_consent"
	i.consent_id == "CNS-803"
}

test_zorg_13_year_old_parents_without_child_is_incomplete if {
	i := item(care_request("P03", [consent("CNS-1", "P03", ["P01", "P02"], may_20_ns)]))
	i.reason == "deny_consent_incomplete"
}

test_zorg_16_year_old_decides_alone if {
	i := item(care_request("P07", [consent("CNS-804", "P07", ["P07"], june_1_ns)]))
	i.reason == "allow_consent"
}

test_zorg_16_year_old_parent_alone_is_incomplete if {
	i := item(care_request("P07", [consent("CNS-1", "P07", ["P06"], june_1_ns)]))
	i.reason == "deny_consent_incomplete"
}

test_zorg_7_year_old_holder_of_authority if {
	i := item(care_request("P08", [consent("CNS-1", "P08", ["P06"], june_1_ns)]))
	i.reason == "allow_consent"
}

test_zorg_7_year_old_parent_without_authority_is_incomplete if {
	i := item(care_request("P08", [consent("CNS-805", "P08", ["P09"], june_1_ns)]))
	i.reason == "deny_consent_incomplete"
	i.consent_id == "CNS-805"
}

test_zorg_child_without_known_holders_is_incomplete if {
	i := item(care_request("P20", [consent("CNS-1", "P20", ["P01", "P02"], june_1_ns)]))
	i.reason == "deny_consent_incomplete"
}

test_zorg_adult_only_self if {
	item(care_request("P06", [consent("CNS-1", "P06", ["P06"], june_1_ns)])).reason == "allow_consent"
	item(care_request("P06", [consent("CNS-2", "P06", ["P09"], june_1_ns)])).reason == "deny_consent_incomplete"
}

# Age unknown (or a household): no band, so consent is never complete (fails closed).
test_zorg_unknown_age_fails_closed if {
	item(care_request("P21", [consent("CNS-1", "P21", ["P21"], june_1_ns)])).reason == "deny_consent_incomplete"
	item(care_request("HH-1", [consent("CNS-2", "HH-1", ["P01", "P02"], june_1_ns)])).reason == "deny_consent_incomplete"
}

# --- which consent record counts

test_zorg_withdrawn_consent if {
	withdrawn := object.union(consent("CNS-1001", "P06", ["P06"], may_15_ns), {"withdrawn_at_ns": june_1_ns})
	i := item(care_request("P06", [withdrawn]))
	i.reason == "deny_consent_withdrawn"
	i.consent_id == "CNS-1001"
}

test_zorg_withdrawal_after_request_time_does_not_count if {
	later := object.union(consent("CNS-1", "P06", ["P06"], may_15_ns), {"withdrawn_at_ns": now_ns + 1})
	item(care_request("P06", [later])).reason == "allow_consent"
}

test_zorg_withdrawal_at_request_time_counts if {
	at := object.union(consent("CNS-1", "P06", ["P06"], may_15_ns), {"withdrawn_at_ns": now_ns})
	item(care_request("P06", [at])).reason == "deny_consent_withdrawn"
}

test_zorg_consent_given_after_request_is_not_considered if {
	item(care_request("P06", [consent("CNS-1", "P06", ["P06"], now_ns + 1)])).reason == "deny_consent_missing"
}

test_zorg_live_record_beats_newer_withdrawn_one if {
	i := item(care_request("P06", [
		consent("CNS-1", "P06", ["P06"], may_15_ns),
		object.union(consent("CNS-2", "P06", ["P06"], may_20_ns), {"withdrawn_at_ns": june_1_ns}),
	]))
	i.reason == "allow_consent"
	i.consent_id == "CNS-1"
}

test_zorg_most_recent_withdrawn_record_when_all_withdrawn if {
	i := item(care_request("P06", [
		object.union(consent("CNS-1", "P06", ["P06"], may_15_ns), {"withdrawn_at_ns": may_20_ns}),
		object.union(consent("CNS-2", "P06", ["P06"], may_20_ns), {"withdrawn_at_ns": june_1_ns}),
	]))
	i.reason == "deny_consent_withdrawn"
	i.consent_id == "CNS-2"
}

# Two records given at the same instant: the larger record id is considered.
test_zorg_same_instant_tie_break_by_id if {
	complete := consent("CNS-B", "P03", ["P01", "P02", "P03"], june_1_ns)
	incomplete := consent("CNS-A", "P03", ["P02"], june_1_ns)
	i := item(care_request("P03", [complete, incomplete]))
	i.reason == "allow_consent"
	i.consent_id == "CNS-B"
	j := item(care_request("P03", [object.union(complete, {"id": "CNS-A"}), object.union(incomplete, {"id": "CNS-B"})]))
	j.reason == "deny_consent_incomplete"
	j.consent_id == "CNS-B"
}

test_zorg_consent_narrowed_to_elements if {
	narrowed := object.union(consent("CNS-1001", "P06", ["P06"], may_15_ns), {"elements": ["finance.debt_assistance_status"]})
	d := decide({
		"provider": "schuldhulpverlening",
		"items": items(["finance.debt_assistance_status", "finance.total_debt_amount"], "P06"),
		"consents": [narrowed],
	})
	[i.reason | some i in d.items] == ["allow_consent", "deny_consent_missing"]
}

test_zorg_consent_narrowed_to_recipients if {
	narrowed := object.union(consent("CNS-1001", "P06", ["P06"], may_15_ns), {"recipients": ["gemeente_wijkteam"]})
	reasons({
		"provider": "schuldhulpverlening",
		"recipient": "gemeente_wijkteam",
		"items": items(["finance.debt_assistance_status"], "P06"),
		"consents": [narrowed],
	}) == {"allow_consent"}
	reasons({
		"provider": "schuldhulpverlening",
		"recipient": "veilig_thuis",
		"items": items(["finance.debt_assistance_status"], "P06"),
		"consents": [narrowed],
	}) == {"deny_consent_missing"}
}

test_zorg_consent_must_match_subject_agreement_and_purpose if {
	other_subject := consent("CNS-1", "P02", ["P02"], may_15_ns)
	other_purpose := object.union(consent("CNS-2", "P06", ["P06"], may_15_ns), {"purpose": "plan_van_aanpak_en_voortgang"})
	other_agreement := object.union(consent("CNS-3", "P06", ["P06"], may_15_ns), {"agreement": "agr-vt-politie-hg"})
	item(care_request("P06", [other_subject, other_purpose, other_agreement])).reason == "deny_consent_missing"
}

# --- break-the-glass (acute danger)

# 2026-09-02T23:05:00+02:00 declared; 2026-09-03T00:15:00+02:00 requested; 72 h maximum.
declared_ns := 1788383100000000000

acute_now_ns := 1788387300000000000

max_duration_ns := 259200000000000

declaration := {
	"id": "ACU-901",
	"agreement": agreement_id,
	"purpose": "zorginformatie_casusoverleg",
	"declared_by": "veilig_thuis",
	"declared_at_ns": declared_ns,
	"subjects": ["P01"],
	"evidence": {"vt_safety_assessment": {"acute_onveilig": true, "date": "2026-09-02T23:00:00+02:00"}},
}

acute := {
	"provider": "ggz",
	"recipient": "politie",
	"request_time_ns": acute_now_ns,
	"request_date": "2026-09-03",
	"acute_declaration": declaration,
}

test_break_glass_releases_acute_whitelist_to_police if {
	d := decide(object.union(acute, {"items": items(["health.ggz_treatment_involvement", "health.treating_professional_contact"], "P01")}))
	d.acute_mode == true
	every i in d.items {
		i.reason == "allow_break_glass"
		i.acute_declaration_id == "ACU-901"
		i.consent_id == null
		"avg_vitaal_belang" in i.legal_basis_ids
	}
}

test_break_glass_keeps_diagnosis_with_the_professional if {
	reasons(object.union(acute, {"items": items(["health.diagnosis", "health.medication"], "P01")})) == {"deny_element_not_allowed"}
	reasons(object.union(acute, {"provider": "gemeente_wijkteam", "items": items(["address.shelter_stay"], "P02")})) == {"deny_element_not_allowed"}
}

test_break_glass_only_for_declared_subjects if {
	d := decide(object.union(acute, {"items": items(["health.ggz_treatment_involvement"], "P02")}))
	d.acute_mode == true
	d.items[0].reason == "deny_consent_missing"
}

test_break_glass_for_regular_recipients if {
	vt := decide(object.union(acute, {
		"provider": "huisarts",
		"recipient": "veilig_thuis",
		"items": items(["addiction.substance_use_indicator", "health.ggz_treatment_involvement", "health.treating_professional_contact", "health.diagnosis"], "P01"),
	}))
	vt.acute_mode == false
	[i.reason | some i in vt.items] == ["allow_break_glass", "allow_break_glass", "allow_break_glass", "deny_consent_missing"]
	gi := decide(object.union(acute, {
		"recipient": "gecertificeerde_instelling",
		"items": items(["health.ggz_treatment_involvement", "health.treating_professional_contact", "health.diagnosis"], "P01"),
	}))
	[i.reason | some i in gi.items] == ["allow_break_glass", "allow_break_glass", "deny_consent_missing"]
}

test_consent_comes_before_break_glass if {
	i := item(object.union(acute, {
		"recipient": "veilig_thuis",
		"items": items(["health.ggz_treatment_involvement"], "P01"),
		"consents": [consent("CNS-1", "P01", ["P01"], may_20_ns)],
	}))
	i.reason == "allow_consent"
	i.acute_declaration_id == null
}

test_break_glass_overrides_withdrawn_consent if {
	withdrawn := object.union(consent("CNS-1", "P01", ["P01"], may_15_ns), {"withdrawn_at_ns": may_20_ns})
	i := item(object.union(acute, {
		"recipient": "veilig_thuis",
		"items": items(["health.treating_professional_contact"], "P01"),
		"consents": [withdrawn],
	}))
	i.reason == "allow_break_glass"
}

test_break_glass_valid_until_just_before_72_hours if {
	reasons(object.union(acute, {
		"request_time_ns": (declared_ns + max_duration_ns) - 1,
		"request_date": "2026-09-05",
		"items": items(["health.treating_professional_contact"], "P01"),
	})) == {"allow_break_glass"}
}

test_break_glass_expired_after_72_hours if {
	d := decide(object.union(acute, {
		"request_time_ns": declared_ns + max_duration_ns,
		"request_date": "2026-09-05",
		"items": items(["health.treating_professional_contact"], "P01"),
	}))
	d.acute_mode == false
	d.items[0].reason == "deny_break_glass_expired"
	d.items[0].acute_declaration_id == null
	vt := item(object.union(acute, {
		"recipient": "veilig_thuis",
		"request_time_ns": declared_ns + max_duration_ns,
		"request_date": "2026-09-05",
		"items": items(["health.treating_professional_contact"], "P01"),
	}))
	vt.reason == "deny_consent_missing"
}

test_break_glass_not_before_declaration if {
	reasons(object.union(acute, {
		"request_time_ns": declared_ns - 1,
		"request_date": "2026-09-02",
		"items": items(["health.treating_professional_contact"], "P01"),
	})) == {"deny_purpose_mismatch"}
}

test_break_glass_evidence_threat_to_life if {
	threat := object.union(object.remove(declaration, ["evidence"]), {
		"declared_by": "politie",
		"evidence": {"police_incident_threat_to_life_within_24h": true},
	})
	reasons(object.union(acute, {
		"acute_declaration": threat,
		"items": items(["health.ggz_treatment_involvement"], "P01"),
	})) == {"allow_break_glass"}
}

test_break_glass_needs_evidence if {
	none := object.union(object.remove(declaration, ["evidence"]), {"evidence": {"vt_safety_assessment": {"acute_onveilig": false}}})
	reasons(object.union(acute, {
		"acute_declaration": none,
		"items": items(["health.ggz_treatment_involvement"], "P01"),
	})) == {"deny_purpose_mismatch"}
}

test_break_glass_only_declarable_by_safety_partners if {
	reasons(object.union(acute, {
		"acute_declaration": {"declared_by": "ggz"},
		"items": items(["health.ggz_treatment_involvement"], "P01"),
	})) == {"deny_purpose_mismatch"}
}

test_break_glass_declaration_must_match_agreement_and_purpose if {
	reasons(object.union(acute, {
		"acute_declaration": {"purpose": "plan_van_aanpak_en_voortgang"},
		"items": items(["health.ggz_treatment_involvement"], "P01"),
	})) == {"deny_purpose_mismatch"}
	reasons(object.union(acute, {
		"acute_declaration": {"agreement": "agr-vt-politie-hg"},
		"items": items(["health.ggz_treatment_involvement"], "P01"),
	})) == {"deny_purpose_mismatch"}
}

# ------------------------------------------------------------ plan_van_aanpak_en_voortgang
plan_whitelists := {
	"veilig_thuis": ["mda.integral_plan", "mda.progress_phase"],
	"gecertificeerde_instelling": ["mda.integral_plan", "mda.progress_phase"],
	"ggz": ["mda.integral_plan", "mda.progress_phase"],
	"schuldhulpverlening": ["mda.integral_plan", "mda.progress_phase"],
	"politie": ["mda.progress_phase"],
}

plan_consent := object.union(consent("CNS-P1", "P06", ["P06"], may_20_ns), {"purpose": "plan_van_aanpak_en_voortgang"})

plan := {"purpose": "plan_van_aanpak_en_voortgang", "provider": "gemeente_wijkteam", "consents": [plan_consent]}

test_plan_allows_each_recipient_its_whitelist_with_consent if {
	every recipient, elements in plan_whitelists {
		d := decide(object.union(plan, {"recipient": recipient, "items": items(elements, "P06")}))
		every i in d.items {
			i.reason == "allow_consent"
			i.consent_id == "CNS-P1"
			i.legal_basis_ids == ["avg_toestemming", "uavg_5_minderjarigen"]
		}
	}
}

test_plan_police_gets_progress_phase_only if {
	reasons(object.union(plan, {
		"provider": "zorg_en_veiligheidshuis",
		"recipient": "politie",
		"items": items(["mda.integral_plan"], "P06"),
	})) == {"deny_element_not_allowed"}
}

test_plan_needs_consent if {
	reasons(object.union(plan, {"recipient": "ggz", "consents": [], "items": items(["mda.integral_plan"], "P06")})) == {"deny_consent_missing"}
}

test_plan_withdrawn_and_incomplete_consent if {
	withdrawn := object.union(plan_consent, {"withdrawn_at_ns": june_1_ns})
	reasons(object.union(plan, {"recipient": "ggz", "consents": [withdrawn], "items": items(["mda.integral_plan"], "P06")})) == {"deny_consent_withdrawn"}
	minor := object.union(plan_consent, {"id": "CNS-P2", "subject": "P03", "given_by": ["P02"]})
	reasons(object.union(plan, {"recipient": "ggz", "consents": [minor], "items": items(["mda.integral_plan"], "P03")})) == {"deny_consent_incomplete"}
}

# Break-the-glass belongs to zorginformatie_casusoverleg only; this purpose needs consent.
test_plan_has_no_break_glass if {
	decl := object.union(declaration, {"purpose": "plan_van_aanpak_en_voortgang", "subjects": ["P06"]})
	reasons(object.union(plan, {
		"recipient": "veilig_thuis",
		"consents": [],
		"request_time_ns": acute_now_ns,
		"request_date": "2026-09-03",
		"acute_declaration": decl,
		"items": items(["mda.progress_phase"], "P06"),
	})) == {"deny_consent_missing"}
}

test_plan_case_members_are_no_providers if {
	reasons(object.union(plan, {"provider": "veilig_thuis", "recipient": "ggz", "items": items(["mda.progress_phase"], "P06")})) == {"deny_purpose_mismatch"}
}

# ------------------------------------------------------------ schuldsignaal_naar_veilig_thuis
schuld := {
	"purpose": "schuldsignaal_naar_veilig_thuis",
	"provider": "schuldhulpverlening",
	"recipient": "veilig_thuis",
	"context": {"vt_case_status": "monitoring"},
}

test_schuld_allows_debt_signals_without_consent if {
	withdrawn := object.union(consent("CNS-1001", "P06", ["P06"], may_15_ns), {"withdrawn_at_ns": june_1_ns})
	d := decide(object.union(schuld, {
		"items": items(["finance.payment_arrears_signal", "finance.debt_assistance_status", "finance.total_debt_amount", "housing.eviction_risk"], "P06"),
		"consents": [withdrawn],
	}))
	count(d.items) == 4
	every i in d.items {
		i.reason == "allow_statutory_basis"
		i.legal_basis_ids == ["wmo_5_2_6", "wmo_vt_verwerking"]
	}
}

test_schuld_in_assessment_and_investigation if {
	every status in ["veiligheidsbeoordeling", "onderzoek"] {
		reasons(object.union(schuld, {"context": {"vt_case_status": status}, "items": items(["housing.eviction_risk"], "HH-1")})) == {"allow_statutory_basis"}
	}
}

test_schuld_denies_income_source if {
	reasons(object.union(schuld, {"items": items(["finance.income_source"], "P06")})) == {"deny_element_not_allowed"}
}

test_schuld_needs_open_vt_case if {
	i := item(object.union(schuld, {"context": {"vt_case_status": "afgesloten"}, "items": items(["finance.payment_arrears_signal"], "P06")}))
	i.reason == "deny_precondition_failed"
	i.failed_preconditions == ["open_vt_case"]
}

test_schuld_closed_case_and_closed_table if {
	i := item(object.union(schuld, {
		"context": {"mda_case_status": "afgesloten", "vt_case_status": "afgesloten"},
		"items": items(["finance.payment_arrears_signal"], "P06"),
	}))
	i.failed_preconditions == ["case_on_table", "open_vt_case"]
}

test_schuld_only_to_veilig_thuis if {
	every recipient in ["gemeente_wijkteam", "politie", "openbaar_ministerie"] {
		reasons(object.union(schuld, {"recipient": recipient, "items": items(["finance.debt_assistance_status"], "P06")})) == {"deny_purpose_mismatch"}
	}
}

# ------------------------------------------------------------ agreement-wide
test_not_in_force_before_valid_from if {
	reasons(object.union(schuld, {
		"request_time_ns": 1740733200000000000, # 2025-02-28T10:00:00+01:00
		"request_date": "2025-02-28",
		"items": items(["housing.eviction_risk"], "HH-1"),
	})) == {"deny_agreement_not_in_force"}
}

test_unknown_purpose if {
	reasons({"purpose": "alles_delen", "items": items(["person.bsn"], "P01")}) == {"deny_unknown_purpose"}
}
