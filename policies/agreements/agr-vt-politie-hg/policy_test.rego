# Unit tests of agr-vt-politie-hg (Veilig Thuis <-> Politie), run by `broker policy test`.
# Each test asks the shared decision procedure for a decision with a complete
# input document (contract: broker/core/types.py PolicyInput.to_document) and
# checks the reason code of every item.
package agreements.agr_vt_politie_hg.v3_0_test

import rego.v1

agreement_id := "agr-vt-politie-hg"

# 2026-03-16T10:00:00+01:00
now_ns := 1773651600000000000

suspect := {"key": "P01", "kind": "person", "birth_date": "1988-05-17", "age": 37, "authority_holders": []}

victim := {"key": "P02", "kind": "person", "birth_date": "1991-11-02", "age": 34, "authority_holders": []}

child := {"key": "P03", "kind": "person", "birth_date": "2012-09-03", "age": 13, "authority_holders": ["P01", "P02"]}

household := {"key": "HH-1", "kind": "household", "birth_date": null, "age": null, "authority_holders": []}

base := {
	"agreement": agreement_id,
	"purpose": "zorgmelding_na_incident",
	"provider": "politie",
	"recipient": "veilig_thuis",
	"request_time_ns": now_ns,
	"request_date": "2026-03-16",
	"context": {},
	"subjects": [suspect, victim, child, household],
	"items": [],
	"consents": [],
	"acute_declaration": null,
}

# The decision for `base` with the fields of `request` replaced (objects merge).
decide(request) := d if {
	d := data.broker.decision.result with input as object.union(base, request)
}

items(elements, subject) := [{"element": e, "subject": subject} | some e in elements]

reasons(request) := {i.reason | some i in decide(request).items}

# ------------------------------------------------------------ zorgmelding_na_incident
zorgmelding := {
	"purpose": "zorgmelding_na_incident",
	"provider": "politie",
	"recipient": "veilig_thuis",
	"context": {"police_incident_id": "PL-LB-2026-0314-0042"},
}

zorgmelding_elements := [
	"person.bsn", "person.name", "person.birth_date", "address.current",
	"household.composition", "police.zorgmelding", "police.dv_incident",
	"police.tijdelijk_huisverbod",
]

test_zorgmelding_allows_every_whitelisted_element if {
	d := decide(object.union(zorgmelding, {"items": items(zorgmelding_elements, "P02")}))
	count(d.items) == 8
	every i in d.items {
		i.reason == "allow_statutory_basis"
		i.outcome == "allow"
		"wpg_20" in i.legal_basis_ids
		i.consent_id == null
	}
	d.agreement_version == "3.0"
	d.acute_mode == false
	d.obligations.response_form == "full"
	d.obligations.retention.holder == "veilig_thuis"
}

test_zorgmelding_denies_suspect_history if {
	d := decide(object.union(zorgmelding, {"items": items(["police.suspect_history_dv"], "P01")}))
	d.items[0].reason == "deny_element_not_allowed"
	d.items[0].legal_basis_ids == []
}

test_zorgmelding_denies_reporter_identity if {
	reasons(object.union(zorgmelding, {"items": items(["vt.reporter_identity"], "HH-1")})) == {"deny_element_not_allowed"}
}

test_zorgmelding_needs_registered_incident if {
	d := decide(object.union(zorgmelding, {
		"context": {"police_incident_id": null},
		"items": items(["person.bsn"], "P01"),
	}))
	d.items[0].reason == "deny_precondition_failed"
	d.items[0].failed_preconditions == ["incident_registered"]
}

test_zorgmelding_missing_incident_id_fails_precondition if {
	reasons({"items": items(["police.dv_incident"], "P01")}) == {"deny_precondition_failed"}
}

test_zorgmelding_only_police_provides if {
	reasons(object.union(zorgmelding, {
		"provider": "veilig_thuis",
		"items": items(["person.bsn"], "P01"),
	})) == {"deny_purpose_mismatch"}
}

test_zorgmelding_police_cannot_receive if {
	reasons(object.union(zorgmelding, {
		"recipient": "politie",
		"items": items(["person.bsn"], "P01"),
	})) == {"deny_purpose_mismatch"}
}

# --------------------------------------------- informatie_voor_veiligheidsbeoordeling
beoordeling := {
	"purpose": "informatie_voor_veiligheidsbeoordeling",
	"provider": "politie",
	"recipient": "veilig_thuis",
	"context": {"vt_case_status": "veiligheidsbeoordeling"},
}

test_beoordeling_allows_history_for_open_case if {
	d := decide(object.union(beoordeling, {"items": items(
		["police.dv_incident", "police.suspect_history_dv", "police.tijdelijk_huisverbod", "police.zorgmelding"],
		"P01",
	)}))
	count(d.items) == 4
	every i in d.items {
		i.reason == "allow_statutory_basis"
		i.legal_basis_ids == ["wpg_20", "wmo_vt_verwerking", "avg_10_strafrechtelijk"]
	}
}

test_beoordeling_allows_during_investigation if {
	reasons(object.union(beoordeling, {
		"context": {"vt_case_status": "onderzoek"},
		"items": items(["police.suspect_history_dv"], "P01"),
	})) == {"allow_statutory_basis"}
}

test_beoordeling_denies_in_monitoring_phase if {
	d := decide(object.union(beoordeling, {
		"context": {"vt_case_status": "monitoring"},
		"items": items(["police.suspect_history_dv"], "P01"),
	}))
	d.items[0].reason == "deny_precondition_failed"
	d.items[0].failed_preconditions == ["open_vt_case"]
}

test_beoordeling_denies_identity_data if {
	reasons(object.union(beoordeling, {"items": items(["person.name", "address.current"], "P01")})) == {"deny_element_not_allowed"}
}

# ------------------------------------------------------------ terugkoppeling_zorgmelding
terugkoppeling := {
	"purpose": "terugkoppeling_zorgmelding",
	"provider": "veilig_thuis",
	"recipient": "politie",
	"context": {"vt_case_origin": "politie"},
}

test_terugkoppeling_allows_case_status if {
	d := decide(object.union(terugkoppeling, {"items": items(["vt.case_status"], "HH-1")}))
	d.items[0].reason == "allow_statutory_basis"
	d.obligations.retention.period == "P1Y"
}

test_terugkoppeling_denies_file_content if {
	d := decide(object.union(terugkoppeling, {"items": [
		{"element": "vt.investigation_conclusion", "subject": "HH-1"},
		{"element": "health.diagnosis", "subject": "P01"},
		{"element": "vt.case_status", "subject": "HH-1"},
	]}))
	[i.reason | some i in d.items] == ["deny_element_not_allowed", "deny_element_not_allowed", "allow_statutory_basis"]
}

test_terugkoppeling_needs_police_as_reporter if {
	reasons(object.union(terugkoppeling, {
		"context": {"vt_case_origin": "school"},
		"items": items(["vt.case_status"], "HH-1"),
	})) == {"deny_precondition_failed"}
}

test_terugkoppeling_ggz_is_no_provider if {
	reasons(object.union(terugkoppeling, {
		"provider": "ggz",
		"items": items(["health.ggz_treatment_involvement"], "P01"),
	})) == {"deny_purpose_mismatch"}
}

# ------------------------------------------------ acute_onveiligheid_inschakelen_politie
acuut := {
	"purpose": "acute_onveiligheid_inschakelen_politie",
	"provider": "veilig_thuis",
	"recipient": "politie",
	"context": {"vt_safety_assessment": {"acute_onveilig": true, "structureel_onveilig": true}},
}

test_acuut_allows_alert_data if {
	d := decide(object.union(acuut, {"items": items(
		["person.name", "person.birth_date", "address.current", "household.composition", "vt.safety_assessment", "vt.contact_person"],
		"HH-1",
	)}))
	count(d.items) == 6
	every i in d.items {
		i.reason == "allow_statutory_basis"
		"avg_vitaal_belang" in i.legal_basis_ids
	}
}

test_acuut_never_releases_shelter_address if {
	reasons(object.union(acuut, {"items": items(["address.shelter_stay"], "P02")})) == {"deny_element_not_allowed"}
}

test_acuut_needs_established_acute_unsafety if {
	d := decide(object.union(acuut, {
		"context": {"vt_safety_assessment": {"acute_onveilig": false, "structureel_onveilig": true}},
		"items": items(["vt.safety_assessment"], "HH-1"),
	}))
	d.items[0].reason == "deny_precondition_failed"
	d.items[0].failed_preconditions == ["acute_unsafety_established"]
}

# ------------------------------------------------------------ agreement-wide
test_not_in_force_before_valid_from if {
	reasons(object.union(zorgmelding, {
		"request_time_ns": 1735635600000000000, # 2024-12-31T10:00:00+01:00
		"request_date": "2024-12-31",
		"items": items(["person.bsn"], "P01"),
	})) == {"deny_agreement_not_in_force"}
}

test_not_in_force_after_valid_until if {
	reasons(object.union(zorgmelding, {
		"request_time_ns": 1830502800000000000, # 2028-01-03T10:00:00+01:00
		"request_date": "2028-01-03",
		"items": items(["person.bsn"], "P01"),
	})) == {"deny_agreement_not_in_force"}
}

test_unknown_purpose if {
	d := decide({"purpose": "algemene_informatie", "items": items(["person.bsn"], "P01")})
	d.items[0].reason == "deny_unknown_purpose"
	d.obligations == {"response_form": "full", "retention": null}
}

test_items_are_decided_in_order if {
	d := decide(object.union(zorgmelding, {"items": [
		{"element": "person.bsn", "subject": "P01"},
		{"element": "police.suspect_history_dv", "subject": "P01"},
		{"element": "person.bsn", "subject": "P03"},
	]}))
	[[i.element, i.subject, i.reason] | some i in d.items] == [
		["person.bsn", "P01", "allow_statutory_basis"],
		["police.suspect_history_dv", "P01", "deny_element_not_allowed"],
		["person.bsn", "P03", "allow_statutory_basis"],
	]
}
