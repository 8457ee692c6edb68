# Unit tests of agr-vt-raad-vto (Veilig Thuis -> Raad voor de Kinderbescherming), run by
# `broker policy test`. Each test asks the shared decision procedure for a decision with a
# complete input document (broker/core/types.py PolicyInput.to_document) and checks reasons.
package agreements.agr_vt_raad_vto.v1_4_test

import rego.v1

agreement_id := "agr-vt-raad-vto"

# 2026-05-11T09:30:00+02:00
now_ns := 1778484600000000000

father := {"key": "P01", "kind": "person", "birth_date": "1988-05-17", "age": 37, "authority_holders": []}

mother := {"key": "P02", "kind": "person", "birth_date": "1991-11-02", "age": 34, "authority_holders": []}

child := {"key": "P03", "kind": "person", "birth_date": "2012-09-03", "age": 13, "authority_holders": ["P01", "P02"]}

household := {"key": "HH-1", "kind": "household", "birth_date": null, "age": null, "authority_holders": []}

base := {
	"agreement": agreement_id,
	"purpose": "verzoek_tot_onderzoek",
	"provider": "veilig_thuis",
	"recipient": "raad_kinderbescherming",
	"request_time_ns": now_ns,
	"request_date": "2026-05-11",
	"context": {},
	"subjects": [father, mother, child, household],
	"items": [],
	"consents": [],
	"acute_declaration": null,
}

decide(request) := d if {
	d := data.broker.decision.result with input as object.union(base, request)
}

items(elements, subject) := [{"element": e, "subject": subject} | some e in elements]

reasons(request) := {i.reason | some i in decide(request).items}

# ------------------------------------------------------------ verzoek_tot_onderzoek
verzoek := {
	"purpose": "verzoek_tot_onderzoek",
	"context": {
		"vt_safety_assessment": {"acute_onveilig": false, "structureel_onveilig": true},
		"parents_object": true,
	},
}

verzoek_elements := [
	"person.bsn", "person.name", "person.birth_date", "address.current",
	"household.composition", "child.authority", "vt.report", "vt.case_status",
	"vt.safety_assessment", "vt.investigation_conclusion", "vt.safety_plan",
	"vt.contact_person", "police.dv_incident", "health.ggz_treatment_involvement",
	"addiction.substance_use_indicator", "cp.measure_active",
]

test_verzoek_allows_every_whitelisted_element if {
	d := decide(object.union(verzoek, {"items": items(verzoek_elements, "P01")}))
	count(d.items) == 16
	every i in d.items {
		i.reason == "allow_statutory_basis"
		"bw_1_240" in i.legal_basis_ids
	}
	d.obligations.retention == {
		"holder": "raad_kinderbescherming", "period": "P100Y", "anchor": "child_birth_date",
		"note": "Raad rule for protection-investigation files (destroyed 100 years after the child's birth).",
	}
}

# Parents' objection does not matter: no consent is needed.
test_verzoek_ignores_parents_objection if {
	d := decide(object.union(verzoek, {"items": items(["vt.report"], "HH-1")}))
	d.items[0].reason == "allow_statutory_basis"
	d.items[0].consent_id == null
}

test_verzoek_on_confirmed_conclusion if {
	reasons(object.union(base, {
		"context": {"vt_investigation_conclusion": "bevestigd"},
		"items": items(["vt.investigation_conclusion"], "HH-1"),
	})) == {"allow_statutory_basis"}
}

test_verzoek_denies_excluded_elements if {
	d := decide(object.union(verzoek, {"items": [
		{"element": "vt.reporter_identity", "subject": "HH-1"},
		{"element": "health.diagnosis", "subject": "P01"},
		{"element": "address.shelter_stay", "subject": "P02"},
		{"element": "health.medication", "subject": "P01"},
	]}))
	every i in d.items {
		i.reason == "deny_element_not_allowed"
		i.legal_basis_ids == []
	}
}

test_verzoek_needs_a_minor if {
	d := decide(object.union(verzoek, {
		"subjects": [father, mother, household],
		"items": items(["person.name"], "P01"),
	}))
	d.items[0].reason == "deny_precondition_failed"
	d.items[0].failed_preconditions == ["minor_involved"]
}

# Age 17 is a minor, 18 is not (age = completed years on the request date).
test_verzoek_minor_boundary if {
	seventeen := object.union(child, {"key": "P07", "age": 17})
	eighteen := object.union(child, {"key": "P08", "age": 18})
	reasons(object.union(verzoek, {"subjects": [seventeen], "items": items(["person.name"], "P07")})) == {"allow_statutory_basis"}
	reasons(object.union(verzoek, {"subjects": [eighteen], "items": items(["person.name"], "P08")})) == {"deny_precondition_failed"}
}

test_verzoek_needs_structural_unsafety_or_confirmation if {
	d := decide({
		"context": {"vt_safety_assessment": {"acute_onveilig": false, "structureel_onveilig": false}},
		"items": items(["vt.report"], "HH-1"),
	})
	d.items[0].reason == "deny_precondition_failed"
	d.items[0].failed_preconditions == ["measure_possibly_needed"]
}

test_verzoek_reports_every_failed_precondition if {
	d := decide({"subjects": [father], "items": items(["vt.report"], "HH-1")})
	d.items[0].failed_preconditions == ["measure_possibly_needed", "minor_involved"]
}

test_verzoek_raad_is_no_provider if {
	reasons(object.union(verzoek, {
		"provider": "raad_kinderbescherming",
		"recipient": "veilig_thuis",
		"items": items(["vt.report"], "HH-1"),
	})) == {"deny_purpose_mismatch"}
}

# ---------------------------------------------- aanvullende_informatie_raadsonderzoek
aanvullend := {
	"purpose": "aanvullende_informatie_raadsonderzoek",
	"context": {"raad_investigation_status": "lopend"},
}

test_aanvullend_allows_file_elements_while_running if {
	d := decide(object.union(aanvullend, {"items": items(
		["vt.report", "vt.case_status", "vt.safety_assessment", "vt.investigation_conclusion", "vt.safety_plan", "vt.contact_person"],
		"HH-1",
	)}))
	count(d.items) == 6
	every i in d.items {
		i.reason == "allow_statutory_basis"
	}
}

test_aanvullend_denies_police_data if {
	reasons(object.union(aanvullend, {"items": items(["police.dv_incident"], "P01")})) == {"deny_element_not_allowed"}
}

test_aanvullend_needs_running_investigation if {
	d := decide(object.union(aanvullend, {
		"context": {"raad_investigation_status": "afgerond"},
		"items": items(["vt.safety_plan"], "HH-1"),
	}))
	d.items[0].reason == "deny_precondition_failed"
	d.items[0].failed_preconditions == ["raad_investigation_running"]
}

# ------------------------------------------------------------ terugkoppeling_raad_aan_vt
terugkoppeling := {
	"purpose": "terugkoppeling_raad_aan_vt",
	"provider": "raad_kinderbescherming",
	"recipient": "veilig_thuis",
	"context": {"raad_case_origin": "veilig_thuis"},
}

test_terugkoppeling_allows_outcome if {
	d := decide(object.union(terugkoppeling, {"items": items(
		["cp.raad_investigation_status", "cp.measure_active", "cp.ots_decision"],
		"P03",
	)}))
	count(d.items) == 3
	every i in d.items {
		i.reason == "allow_statutory_basis"
		i.legal_basis_ids == ["jeugdwet_2_4", "avg_publieke_taak", "wmo_vt_verwerking"]
	}
}

test_terugkoppeling_denies_raad_report if {
	reasons(object.union(terugkoppeling, {"items": items(["cp.raad_report"], "P03")})) == {"deny_element_not_allowed"}
}

test_terugkoppeling_needs_vt_request if {
	reasons(object.union(terugkoppeling, {
		"context": {"raad_case_origin": "politie"},
		"items": items(["cp.measure_active"], "P03"),
	})) == {"deny_precondition_failed"}
}

# The Raad asking Veilig Thuis under the Raad's own feedback channel (scenario S04-R1).
test_terugkoppeling_wrong_direction if {
	reasons(object.union(terugkoppeling, {
		"provider": "veilig_thuis",
		"recipient": "raad_kinderbescherming",
		"items": items(["vt.investigation_conclusion"], "HH-1"),
	})) == {"deny_purpose_mismatch"}
}

# ------------------------------------------------------------ agreement-wide
test_not_in_force_after_valid_until if {
	reasons(object.union(verzoek, {
		"request_time_ns": 1814427000000000000, # 2027-07-01T09:30:00+02:00
		"request_date": "2027-07-01",
		"items": items(["vt.report"], "HH-1"),
	})) == {"deny_agreement_not_in_force"}
}

test_last_day_in_force if {
	reasons(object.union(verzoek, {
		"request_time_ns": 1814340600000000000, # 2027-06-30T09:30:00+02:00
		"request_date": "2027-06-30",
		"items": items(["vt.report"], "HH-1"),
	})) == {"allow_statutory_basis"}
}
