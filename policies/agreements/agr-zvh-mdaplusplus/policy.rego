# Preconditions and acute-danger evidence of agr-zvh-mdaplusplus (MDA++ case table).
package agreements.agr_zvh_mdaplusplus.v2_2

import rego.v1

precondition contains "case_on_table" if {
	input.context.mda_case_id != null
	input.context.mda_case_status == "actief"
}

precondition contains "open_vt_case" if {
	input.context.vt_case_status in ["veiligheidsbeoordeling", "onderzoek", "monitoring"]
}

# Evidence is read from the stored declaration, never from the request context.
acute_evidence if {
	input.acute_declaration.evidence.vt_safety_assessment.acute_onveilig == true
}

acute_evidence if {
	input.acute_declaration.evidence.police_incident_threat_to_life_within_24h == true
}
