# Generic decision procedure shared by every sharing agreement.
#
# Agreements are data (data.broker.agreements[<id>].versions[<version>], built from
# each version's agreement.yaml) plus a small Rego module per version (package
# agreements.<rego_package>.<rego_version>) that states the preconditions and the
# acute-danger evidence rule. Of the versions of the requested agreement, the one
# whose validity window covers the request date and that is active (fully signed)
# is used. This module decides, per requested item (element x subject), following
# the normative procedure:
#   1 agreement in force, 2 purpose known, 3 parties fit (incl. acute mode),
#   4 element allowed, 5 preconditions, 6 consent / basis, 7 shape.
# The first failing step gives the reason code. Times arrive as integer
# nanoseconds since the epoch and the request date as an ISO date string, both
# computed by the broker, so no time parsing happens here.
package broker.decision

import rego.v1

# ---------------------------------------------------------------- the version
# Only the versions of the requested agreement are looked at. The one used is the
# version in force on the request date (active and its window covering the date);
# failing that, one whose window covers the date (so the decision names the
# version that is not in force); failing that, the latest. Windows of one
# agreement do not overlap (`broker policy check`); the ranking keeps the choice
# unique even when they do. An agreement with one version needs no ranking.
versions := data.broker.agreements[input.agreement].versions

selected_version := v if {
	count(versions) == 1
	some v, _ in versions
} else := ranked_versions[count(ranked_versions) - 1][2]

window_covers(doc) if {
	doc.valid_from <= input.request_date
	not ended(doc)
}

# A version without valid_until (or with null) has an open end.
ended(doc) if {
	doc.valid_until != null
	input.request_date > doc.valid_until
}

version_rank(doc) := 2 if {
	doc.status == "active"
	window_covers(doc)
} else := 1 if {
	window_covers(doc)
} else := 0

ranked_versions := sort([[version_rank(doc), object.get(doc, "valid_from", ""), v] | some v; doc := versions[v]])

agreement := versions[selected_version]

agreement_doc := agreement if agreement

else := {}

purpose := agreement.purposes[input.purpose]

# rego-cpp does not resolve a dynamic reference to a whole package, so the
# version's own rules are always referenced down to the rule name.
pkg := agreement.rego_package

pkg_version := agreement.rego_version

satisfied_preconditions := data.broker.agreement_rules.precondition

evidence_present if data.broker.agreement_rules.acute_evidence

in_force if {
	agreement.status == "active"
	window_covers(agreement)
}

# ---------------------------------------------------------------- acute danger
acute := purpose.acute_danger

declaration := input.acute_declaration

declaration_matches if {
	declaration.agreement == input.agreement
	declaration.purpose == input.purpose
}

declaration_valid if {
	declaration_matches
	declaration.declared_by in acute.declarable_by
	evidence_present
	input.request_time_ns >= declaration.declared_at_ns
	input.request_time_ns < declaration.declared_at_ns + acute.max_duration_ns
}

declaration_expired if {
	declaration_matches
	declaration.declared_by in acute.declarable_by
	evidence_present
	input.request_time_ns >= declaration.declared_at_ns + acute.max_duration_ns
}

# ---------------------------------------------------------------- step 3
provider_fits if input.provider in purpose.providers

recipient_regular if input.recipient in purpose.recipients

recipient_acute_only if {
	not recipient_regular
	input.recipient in acute.additional_recipients
}

acute_mode if {
	recipient_acute_only
	declaration_valid
}

parties_fit if {
	provider_fits
	recipient_regular
}

parties_fit if {
	provider_fits
	acute_mode
}

parties_reason := "deny_break_glass_expired" if {
	provider_fits
	recipient_acute_only
	declaration_expired
} else := "deny_purpose_mismatch"

# ---------------------------------------------------------------- step 4
whitelist := acute.allowed_elements[input.recipient] if acute_mode

else := purpose.allowed_elements[input.recipient]

# ---------------------------------------------------------------- step 5
# Evaluated once per request, over the request as a whole.
failed_preconditions contains p.id if {
	some p in purpose.preconditions
	not p.id in satisfied_preconditions
}

preconditions_hold if count(failed_preconditions) == 0

# ---------------------------------------------------------------- step 6
# Indexed once per request: facts by subject key, and the consent records of
# this agreement and purpose given before the request, by subject.
facts_by_key := {s.key: s | some s in input.subjects}

request_consents := [c |
	some c in input.consents
	c.agreement == input.agreement
	c.purpose == input.purpose
	c.given_at_ns <= input.request_time_ns
]

consents_by_subject[key] := cs if {
	some s in input.subjects
	key := s.key
	cs := [c | some c in request_consents; c.subject == key]
}

covers(c, item) if {
	narrowed_ok(c, "elements", item.element)
	narrowed_ok(c, "recipients", input.recipient)
}

narrowed_ok(c, field, _) if not c[field]

narrowed_ok(c, field, value) if value in c[field]

candidates(item) := [c | some c in consents_by_subject[item.subject]; covers(c, item)]

withdrawn(c) if {
	c.withdrawn_at_ns != null
	c.withdrawn_at_ns <= input.request_time_ns
}

# Most recent by given_at; equal times are broken by the larger record id (and
# then by position) so that exactly one record is chosen. Without the tie-break
# two records given at the same instant made this function conflict, and the
# engine returned no decision at all.
latest(cs) := cs[i] if {
	ranked := sort([[c.given_at_ns, c.id, j] | some j; c := cs[j]])
	i := ranked[count(ranked) - 1][2]
}

# The most recent candidate record that is not withdrawn at the request time,
# or, when every candidate is withdrawn, the most recent withdrawn one.
considered(cs) := latest(live) if {
	live := [c | some c in cs; not withdrawn(c)]
	count(live) > 0
} else := latest(cs) if count(cs) > 0

age_band(age) := "age_0_11" if age < 12

else := "age_12_15" if age < 16

else := "age_16_17" if age < 18

else := "age_18_plus"

default_consent_rule := {
	"age_0_11": ["all_authority_holders"],
	"age_12_15": ["child", "all_authority_holders"],
	"age_16_17": ["child"],
	"age_18_plus": ["subject"],
}

consent_rule := agreement.consent_rule if agreement.consent_rule

else := default_consent_rule

# The givers a record needs follow the consent rule's band for the subject's age
# on the request date. A subject whose age is unknown (or a household) has no
# band, so its consent is never complete (fails closed).
consent_band(facts) := consent_rule[age_band(facts.age)] if is_number(facts.age)

# A minor who cannot reasonably assess his interests (wilsonbekwaam, consent_rules.md
# section 2 rule 5) is represented by the holders of authority: a record that states
# so (an explicit flag, never a default) needs the givers of the under-12 band at any
# age under 18. For an adult the flag changes nothing.
record_band(c, facts) := consent_rule.age_0_11 if {
	c.wilsonbekwaam == true
	is_number(facts.age)
	facts.age < 18
} else := consent_band(facts)

consent_complete(c, facts) if {
	band := record_band(c, facts)
	count(band) > 0
	given := {g | some g in c.given_by}
	every kind in band {
		giver_satisfied(kind, facts, given)
	}
}

giver_satisfied("child", facts, given) if facts.key in given

giver_satisfied("subject", facts, given) if facts.key in given

# Every holder of authority; a minor without known holders cannot be complete.
giver_satisfied("all_authority_holders", facts, given) if {
	count(facts.authority_holders) > 0
	every h in facts.authority_holders {
		h in given
	}
}

giver_satisfied("any_authority_holder", facts, given) if {
	some h in facts.authority_holders
	h in given
}

consent_outcome(item) := consent_verdict(item.subject, candidates(item))

consent_verdict(key, cs) := ["deny_consent_missing", null] if {
	count(cs) == 0
} else := ["deny_consent_withdrawn", c.id] if {
	c := considered(cs)
	withdrawn(c)
} else := ["allow_consent", c.id] if {
	c := considered(cs)
	consent_complete(c, facts_by_key[key])
} else := ["deny_consent_incomplete", c.id] if {
	c := considered(cs)
}

# A subject none of whose records narrows by element has one consent verdict
# for every element: decided once per subject instead of once per item.
element_narrowed(cs) if {
	some c in cs
	c.elements
}

subject_consent[key] := consent_verdict(key, cs) if {
	some key, all in consents_by_subject
	not element_narrowed(all)
	cs := [c | some c in all; narrowed_ok(c, "recipients", input.recipient)]
}

break_glass_applies(item) if {
	declaration_valid
	item.subject in declaration.subjects
	item.element in acute.allowed_elements[input.recipient]
}

# Valid consent first; else a valid acute declaration covering the item; else
# the consent reason code.
consent_or_acute(item, r) := ["allow_consent", r[1], null] if {
	r[0] == "allow_consent"
} else := ["allow_break_glass", null, declaration.id] if {
	break_glass_applies(item)
} else := [r[0], r[1], null]

# ---------------------------------------------------------------- decision
# Steps 1-3 and 5 concern the request as a whole and are decided once; per item
# only step 4 (a set lookup) and step 6 remain. Function calls cost more than
# lookups in the engines, so the per-item path uses as few as it can.
request_reason := "deny_agreement_not_in_force" if {
	not in_force
} else := "deny_unknown_purpose" if {
	not purpose
} else := parties_reason if {
	not parties_fit
}

statutory if purpose.consent == "not_required_with_basis"

# The reason for an element the whitelist allows (steps 5 and 6), per subject
# where it does not depend on the element; undefined where it does.
subject_reason[key] := r if {
	some key in item_subjects
	r := subject_step(key)
}

item_subjects := {item.subject | some item in input.items}

subject_step(key) := ["deny_precondition_failed", null, null] if {
	not preconditions_hold
} else := ["allow_statutory_basis", null, null] if {
	statutory
} else := [r[0], r[1], null] if {
	purpose.consent == "required"
	r := subject_consent[key]
} else := [r[0], r[1], null] if {
	purpose.consent == "required_unless_acute_danger"
	r := subject_consent[key]
	not acute_possible(key, r)
}

# Break-glass can only change a consent denial for a subject the valid
# declaration names; there the element decides.
acute_possible(key, r) if {
	r[0] != "allow_consent"
	declaration_valid
	key in declaration.subjects
}

step_reason(item) := [request_reason, null, null] if {
	request_reason
} else := ["deny_element_not_allowed", null, null] if {
	not item.element in whitelist
} else := r if {
	r := subject_reason[item.subject]
} else := [r[0], r[1], null] if {
	purpose.consent == "required"
	r := consent_outcome(item)
} else := consent_or_acute(item, consent_outcome(item)) if {
	purpose.consent == "required_unless_acute_danger"
}

reason_outcome := {r: "allow" | some r in allow_reasons}

allow_reasons := {"allow_statutory_basis", "allow_consent", "allow_break_glass"}

bases_by_outcome := {"allow": purpose.legal_basis_ids, "deny": []} if purpose

else := {"deny": []}

# The decided items, built in one comprehension (a function call per item
# costs more in the engines than the comprehension's body).
decided_items(items) := [{
	"element": item.element,
	"subject": item.subject,
	"outcome": outcome,
	"reason": r[0],
	"consent_id": r[1],
	"acute_declaration_id": r[2],
	"legal_basis_ids": bases_by_outcome[outcome],
	"failed_preconditions": failed,
} |
	some item in items
	r := step_reason(item)
	outcome := object.get(reason_outcome, r[0], "deny")
	failed := [p | r[0] == "deny_precondition_failed"; some p in sorted_failed]
]

sorted_failed := sort(failed_preconditions)

obligations := {
	"response_form": object.get(purpose, "response_form", "full"),
	"retention": object.get(purpose, "retention", null),
} if purpose

else := {"response_form": "full", "retention": null}

result := {
	"agreement_id": input.agreement,
	"agreement_version": object.get(agreement_doc, "version", null),
	"agreement_hash": object.get(agreement_doc, "content_hash", null),
	"acute_mode": acute_mode_flag,
	"obligations": obligations,
	"items": decided_items(input.items),
}

acute_mode_flag := true if acute_mode

else := false
