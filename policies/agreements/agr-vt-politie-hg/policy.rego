# Preconditions of agr-vt-politie-hg (Veilig Thuis <-> Politie). The purposes,
# whitelists and legal bases are in agreement.yaml; the shared procedure in
# policies/lib/decision.rego decides.
package agreements.agr_vt_politie_hg.v3_0

import rego.v1

precondition contains "incident_registered" if {
	input.context.police_incident_id != null
}

precondition contains "open_vt_case" if {
	input.context.vt_case_status in ["veiligheidsbeoordeling", "onderzoek"]
}

precondition contains "police_was_reporter" if {
	input.context.vt_case_origin == "politie"
}

precondition contains "acute_unsafety_established" if {
	input.context.vt_safety_assessment.acute_onveilig == true
}
