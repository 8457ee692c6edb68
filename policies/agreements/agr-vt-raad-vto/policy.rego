# Preconditions of agr-vt-raad-vto (Veilig Thuis -> Raad voor de Kinderbescherming).
package agreements.agr_vt_raad_vto.v1_4

import rego.v1

precondition contains "minor_involved" if {
	some s in input.subjects
	s.kind == "person"
	s.age < 18
}

precondition contains "measure_possibly_needed" if {
	input.context.vt_safety_assessment.structureel_onveilig == true
}

precondition contains "measure_possibly_needed" if {
	input.context.vt_investigation_conclusion == "bevestigd"
}

precondition contains "raad_investigation_running" if {
	input.context.raad_investigation_status == "lopend"
}

precondition contains "request_originated_from_vt" if {
	input.context.raad_case_origin == "veilig_thuis"
}
