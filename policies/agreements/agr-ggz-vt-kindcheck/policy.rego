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

# The contact route only after a recent "yes". The earlier answer is a broker
# fact (input.prior_answers: the latest boolean answer the broker released to
# the same requesting agency about the same client), never the request context;
# what it must be and the window are the purpose's `prior_answer` block.
prior := data.broker.decision.purpose.prior_answer

window_ns := (prior.window_hours * 3600) * 1000000000

recent_yes(key) if {
	some a in input.prior_answers
	a.subject == key
	a.agreement == input.agreement
	a.purpose == prior.purpose
	a.element == prior.element
	a.answer == true
	a.answered_at_ns <= input.request_time_ns
	input.request_time_ns - a.answered_at_ns <= window_ns
}

# Every client the request names (at least one) needs its own recent "yes".
precondition contains "prior_yes_answer" if {
	clients := [s.key | some s in input.subjects; s.kind == "person"]
	count(clients) > 0
	every key in clients {
		recent_yes(key)
	}
}
