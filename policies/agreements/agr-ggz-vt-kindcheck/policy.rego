# Preconditions of agr-ggz-vt-kindcheck (kindcheck query GGZ -> Veilig Thuis).
package agreements.agr_ggz_vt_kindcheck.v1_0

import rego.v1

precondition contains "kindcheck_positive" if {
	input.context.kindcheck_decision == "meldcode_stappen_volgen"
}

# "at least one minor child, or this is unknown": a missing count counts as unknown.
precondition contains "client_cares_for_minors" if {
	not input.context.minor_children_count == 0
}

precondition contains "requester_is_treating_professional" if {
	input.context.requester_role in ["behandelaar", "aandachtsfunctionaris"]
}

precondition contains "prior_yes_answer" if {
	input.context.prior_kindcheck_answer == true
	input.context.prior_kindcheck_age_hours <= 24
}
