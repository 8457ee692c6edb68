"""``broker policy test``: Rego unit tests, scenario cases and coverage of the policy set.

What runs
---------
* **Rego unit tests**: every ``*_test.rego`` beside an agreement version
  (``policies/agreements/<id>/*_test.rego`` or ``<id>/<version>/*_test.rego``) and
  in ``policies/lib/``. They are
  loaded *together with* the policy set's modules and data document (the loader
  keeps them out of the decision bundle; only this runner adds them). Every rule
  named ``test_*`` (no arguments) in a test module is one test. OPA convention:
  it passes when it evaluates to ``true``; undefined, ``false``, any other value
  or an evaluation error is a failure. Tests typically evaluate
  ``data.broker.decision.result with input as {...}`` and check item reasons.
* **Scenario cases**: every (request, element, subject) of
  ``policies/scenarios/scenarios.md`` (broker.policy.scenarios) is one case; the
  request is decided once and each item must get its expected reason code (and,
  where given, the consent record considered, the acute declaration, legal bases
  on allow only, and the boolean-only response form).

Engine
------
Everything runs on regorus (``gordon-to-regorus``): it supports
``with input as`` / ``with data... as`` and reports line coverage. regopy
(rego-cpp) crashes the process (SIGSEGV) on any query that uses ``with``, so it
cannot run tests. regorus evaluates the dynamic reference
``data.agreements[pkg][version].precondition`` of the library by evaluating
*every* package under ``data.agreements``; a test package
``agreements.<id>.v<version>_test`` that itself asks for a decision would then
recurse into itself. The runner therefore re-homes test packages under
``agreements`` to ``broker_policy_tests.agreements...`` in memory (and rewrites
``data.agreements.<id>.v<version>_test`` references in test modules accordingly);
files and reported names are unchanged. A test written in a version's *own*
package is not re-homed and must not ask for a decision.

Rule coverage (``--min-coverage`` applies to this figure)
---------------------------------------------------------
The unit is a rule *clause*: each body of each rule definition of the policy
modules (library and agreements, not tests), every ``else`` branch separately,
and a body-less rule (``x := value``) as one clause; ``default`` rules are not
counted. A clause is covered when some test (or scenario case) made it
*succeed*, i.e. produce its value - the meaning of OPA's rule-head coverage.
This is measured by our own tracing: in memory, before compiling, every clause
gets a trailing ``print`` of a marker naming it, on the same source line (so
line numbers stay exact); ``print`` always succeeds, so semantics are unchanged.
regorus line coverage alone cannot say this: a failing body marks its lines as
evaluated just like a succeeding one, and the head line of a rule without a
value is never tracked.

Because regorus evaluates every agreement package for each decision (above),
clause markers and covered lines of an *agreement* module are credited to a
test only when one of the decisions that test evaluated used that agreement
version (its ``agreement_hash``), or, for a test that made no decision at all,
when the test lives in that version's folder - a direct test of its rules.
Library clauses are always credited. Under OPA semantics a decision evaluates
exactly the rules of its own agreement version, which this attribution reproduces.

Line coverage (regorus ``get_coverage_report_as_json``, cleared per test and
attributed the same way) is reported as a secondary figure.

Domain coverage
---------------
The library's ``data.broker.decision.result`` rule is instrumented the same way
to print each decision it makes - the input it saw and the result it returned -
so every decision any test evaluated is collected, however the test built its
input (no static scanning of test sources). Decisions whose ``agreement_hash``
is not one of the shipped versions (tests that replace ``data.broker.agreements``
with ``with``) are not counted. Domain coverage is per agreement version. Then:

* a *purpose* is touched when a decision for it got past steps 1-2 for some item
  (agreement in force, purpose known);
* a *whitelist entry* (purpose, recipient, element) of ``allowed_elements`` is
  touched when an item for that element and recipient got past step 3 (parties
  fit) in regular mode, so that step 4 looked it up; an entry of
  ``acute_danger.allowed_elements`` when that happened in acute mode or the item
  was released by break-the-glass;
* reason codes never produced by any decision are listed.

With ``--agreement ID`` only that agreement's test files and scenario requests
run, and coverage is measured over that agreement's module only.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import orjson
import regorus

from broker.core.errors import BrokerError, PolicyInvalid, PolicyUnavailable
from broker.core.types import Decision, ReasonCode, ResponseForm
from broker.policy.decisions import parse_decision
from broker.policy.loader import DISPATCH_MODULE, PolicySet, load_policy_set
from broker.policy.scenarios import SCENARIOS_FILE, ScenarioItem, ScenarioRequest, load_scenarios
from broker.settings import Settings

TEST_GLOB = "*_test.rego"
TEST_NAMESPACE = "broker_policy_tests"
DECISION_PACKAGE = "broker.decision"
DECISION_RULE = "result"
_MARK = "@@broker-policy-test@@"
_VALUE_VAR = "__broker_policy_test_value"

_EARLY = frozenset({ReasonCode.DENY_AGREEMENT_NOT_IN_FORCE, ReasonCode.DENY_UNKNOWN_PURPOSE})
_BEFORE_STEP_4 = _EARLY | {ReasonCode.DENY_PURPOSE_MISMATCH, ReasonCode.DENY_BREAK_GLASS_EXPIRED}
_PACKAGE = re.compile(
    r"^[ \t]*package[ \t]+([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)", re.M
)


# ------------------------------------------------------------------ results
class UnknownAgreement(ValueError):
    """``--agreement`` names no agreement of the policy set."""


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One test: a Rego ``test_*`` rule or one scenario item."""

    kind: str  # "rego" | "scenario"
    package: str  # Rego package as written, or "scenarios.<scenario id>"
    name: str  # rule name, or "<request id>-<element>-<subject>"
    location: str  # file:line
    passed: bool
    elapsed_s: float  # a scenario item shows the time of its whole request
    message: str = ""
    output: tuple[str, ...] = ()  # the test's own print() lines


@dataclass(frozen=True, slots=True)
class Clause:
    """One rule clause of a policy module (the unit of rule coverage)."""

    path: str
    line: int
    label: str


@dataclass(frozen=True, slots=True)
class FileCoverage:
    path: str
    clauses: tuple[Clause, ...]
    covered_clauses: frozenset[Clause]
    lines: frozenset[int]  # lines regorus tracks
    covered_lines: frozenset[int]

    @property
    def uncovered_clauses(self) -> tuple[Clause, ...]:
        return tuple(c for c in self.clauses if c not in self.covered_clauses)

    @property
    def uncovered_lines(self) -> tuple[int, ...]:
        return tuple(sorted(self.lines - self.covered_lines))


@dataclass(frozen=True, slots=True)
class RuleCoverage:
    files: tuple[FileCoverage, ...]
    warnings: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return sum(len(f.clauses) for f in self.files)

    @property
    def covered(self) -> int:
        return sum(len(f.covered_clauses) for f in self.files)

    @property
    def percent(self) -> float:
        return 100.0 if self.total == 0 else 100.0 * self.covered / self.total

    @property
    def uncovered(self) -> tuple[Clause, ...]:
        return tuple(c for f in self.files for c in f.uncovered_clauses)

    @property
    def line_total(self) -> int:
        return sum(len(f.lines) for f in self.files)

    @property
    def line_covered(self) -> int:
        return sum(len(f.covered_lines) for f in self.files)

    @property
    def line_percent(self) -> float:
        return 100.0 if self.line_total == 0 else 100.0 * self.line_covered / self.line_total


@dataclass(frozen=True, slots=True, order=True)
class WhitelistEntry:
    purpose: str
    recipient: str
    element: str
    acute: bool = False

    def __str__(self) -> str:
        whitelist = "acute_danger.allowed_elements" if self.acute else "allowed_elements"
        return f"{self.purpose} {whitelist}[{self.recipient}]: {self.element}"


@dataclass(frozen=True, slots=True)
class AgreementDomainCoverage:
    agreement: str
    purposes: tuple[str, ...]
    touched_purposes: frozenset[str]
    entries: tuple[WhitelistEntry, ...]
    touched_entries: frozenset[WhitelistEntry]

    @property
    def untouched_purposes(self) -> tuple[str, ...]:
        return tuple(p for p in self.purposes if p not in self.touched_purposes)

    @property
    def untouched_entries(self) -> tuple[WhitelistEntry, ...]:
        return tuple(e for e in self.entries if e not in self.touched_entries)


@dataclass(frozen=True, slots=True)
class DomainCoverage:
    agreements: tuple[AgreementDomainCoverage, ...]
    decisions: int  # decisions counted
    ignored_decisions: int  # decisions on replaced or unknown agreement data
    reasons_seen: frozenset[str]
    traced: bool = True  # False when the decision rule could not be instrumented

    @property
    def reasons_never_produced(self) -> tuple[str, ...]:
        return tuple(r.value for r in ReasonCode if r.value not in self.reasons_seen)


@dataclass(frozen=True, slots=True)
class PolicyTestReport:
    policy_dir: Path
    agreement: str | None
    cases: tuple[CaseResult, ...]
    coverage: RuleCoverage
    domain: DomainCoverage
    elapsed_s: float

    @property
    def failed(self) -> tuple[CaseResult, ...]:
        return tuple(c for c in self.cases if not c.passed)

    def ok(self, min_coverage: float | None = None) -> bool:
        if self.failed:
            return False
        return min_coverage is None or self.coverage.percent >= min_coverage


# ------------------------------------------------------------------ discovery
def discover_test_files(policy_set: PolicySet, agreement: str | None = None) -> list[Path]:
    """``lib/*_test.rego`` (unless filtered to one agreement) and each agreement's tests."""
    files: list[Path] = []
    if agreement is None:
        files.extend(sorted((policy_set.root / "lib").glob(TEST_GLOB)))
    for a in policy_set.all_versions():
        if agreement is None or a.id == agreement:
            files.extend(sorted(a.folder.glob(TEST_GLOB)))
    return files


# ------------------------------------------------------------------ Rego AST helpers
def _ast(modules: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Parsed modules by file name (regorus AST as JSON)."""
    engine = regorus.Engine()
    try:
        for name, source in modules.items():
            engine.add_policy(name, source)
        parsed = json.loads(engine.get_ast_as_json())
    except RuntimeError as exc:
        raise PolicyInvalid(f"Rego does not parse: {_error_text(exc)}") from exc
    return {str(m["source"]["file"]): m["ast"] for m in parsed}


def _fix_end(src: bytes, end: int) -> int:
    """regorus spans that end in a string literal stop before its closing quote."""
    return end + 1 if src[end : end + 1] in (b'"', b"`") else end


def _text(src: bytes, span: dict[str, Any]) -> str:
    return src[span["start"] : _fix_end(src, span["end"])].decode("utf-8")


def _root_name(refr: dict[str, Any]) -> str:
    node = refr
    while True:
        kind, body = next(iter(node.items()))
        if kind == "Var":
            return str(body["value"])
        node = body["refr"]


def _head(spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    kind, head = next(iter(spec["head"].items()))
    return kind, head


def _error_text(exc: BaseException) -> str:
    """The useful part of a regorus error: location and message, no backtrace."""
    text = str(exc).split("Stack backtrace:")[0].strip()
    where = re.search(r"-->\s*(\S+)", text)
    msg = re.search(r"^error:\s*(.*)$", text, re.M)
    if msg:
        return f"{where.group(1)}: {msg.group(1)}" if where else msg.group(1)
    return " ".join(text.split())[:300] or type(exc).__name__


# ------------------------------------------------------------------ instrumentation
@dataclass(slots=True)
class _Instrumented:
    modules: dict[str, str]  # path -> instrumented source
    clauses: dict[str, list[Clause]]  # path -> clauses in source order
    ids: dict[int, Clause]  # marker id -> clause
    warnings: list[str] = field(default_factory=list)
    traced: bool = False


class _SpanMismatch(Exception):
    """A regorus span whose offset does not match its line (not safe to edit at)."""


@dataclass(slots=True)
class _Editor:
    """Collects insertions into one module; offsets are checked against lines."""

    path: str
    src: bytes
    out: _Instrumented
    edits: list[tuple[int, str]] = field(default_factory=list)
    clauses: list[Clause] = field(default_factory=list)
    skipped: int = 0

    def line_of(self, offset: int) -> int:
        return self.src.count(b"\n", 0, offset) + 1

    def at(self, span: dict[str, Any], *, end: bool = False) -> int:
        """The byte offset of a span's start (or fixed end), checked against its line."""
        if end:
            offset = _fix_end(self.src, int(span["end"]))
            if self.line_of(offset) < int(span["line"]):
                raise _SpanMismatch
            return offset
        offset = int(span["start"])
        if self.line_of(offset) != int(span["line"]):
            raise _SpanMismatch
        return offset

    def marker(self, clause: Clause) -> str:
        ident = len(self.out.ids)
        self.out.ids[ident] = clause
        self.clauses.append(clause)
        return f'print("{_MARK} c {ident}")'

    def apply(self) -> str:
        patched = self.src
        for offset, text in sorted(self.edits, key=lambda e: e[0], reverse=True):
            patched = patched[:offset] + text.encode("utf-8") + patched[offset:]
        return patched.decode("utf-8")


def _instrument_decision(ed: _Editor, head: dict[str, Any], clause: Clause) -> None:
    """``result := V``  ->  ``result := v if { v := V; <marker>; <print input and v> }``."""
    assign = head["assign"]
    start = ed.at(assign["span"])
    start += 2 if ed.src[start : start + 2] == b":=" else 1
    while ed.src[start : start + 1] in (b" ", b"\t"):
        start += 1
    end = ed.at(assign["span"], end=True)
    trace = f'print("{_MARK} d", json.marshal({{"input": input, "result": {_VALUE_VAR}}}))'
    ed.edits.append((start, f"{_VALUE_VAR} if {{ {_VALUE_VAR} := "))
    ed.edits.append((end, f"; {ed.marker(clause)}; {trace} }}"))
    ed.out.traced = True


def _instrument_body(ed: _Editor, body: dict[str, Any], clause: Clause) -> None:
    query = body["query"]
    stmts = query["stmts"]
    if not stmts:  # else := value (no condition)
        ed.edits.append((ed.at(body["span"], end=True), f" if {{ {ed.marker(clause)} }}"))
        return
    start = ed.at(query["span"])
    end = ed.at(stmts[-1]["span"], end=True)
    if ed.src[start : start + 1] == b"{":
        ed.edits.append((end, f"; {ed.marker(clause)}"))
    else:  # if <one literal>
        ed.edits.append((start, "{ "))
        ed.edits.append((end, f"; {ed.marker(clause)} }}"))


def _instrument_rule(ed: _Editor, spec: dict[str, Any], is_decision_package: bool) -> None:
    kind, head = _head(spec)
    name = _root_name(head["refr"])
    head_label = _text(ed.src, head["span"]).splitlines()[0].strip()
    if not spec["bodies"]:
        clause = Clause(ed.path, int(spec["span"]["line"]), head_label)
        if is_decision_package and name == DECISION_RULE and kind == "Compr" and head["assign"]:
            _instrument_decision(ed, head, clause)
        else:
            ed.edits.append((ed.at(spec["span"], end=True), f" if {{ {ed.marker(clause)} }}"))
        return
    for body in spec["bodies"]:
        if body["is_else"]:
            first = _text(ed.src, body["span"]).splitlines()[0].strip()
            label = f"{name}: {first.removesuffix('{').strip().removesuffix(' if')}"
            clause = Clause(ed.path, int(body["span"]["line"]), label)
        else:
            clause = Clause(ed.path, int(spec["span"]["line"]), head_label)
        _instrument_body(ed, body, clause)


def _instrument_module(
    out: _Instrumented, path: str, source: str, ast: dict[str, Any], package: str
) -> None:
    ed = _Editor(path=path, src=source.encode("utf-8"), out=out)
    for rule in ast.get("rules", []):
        spec = rule.get("Spec")
        if spec is None:  # default rules are not counted
            continue
        mark = (len(ed.edits), len(ed.clauses), len(out.ids), out.traced)
        try:
            _instrument_rule(ed, spec, package == DECISION_PACKAGE)
        except (_SpanMismatch, KeyError, StopIteration):
            # Leave this rule as it is and out of the figures rather than guess.
            del ed.edits[mark[0] :], ed.clauses[mark[1] :]
            for ident in range(mark[2], len(out.ids)):
                out.ids.pop(ident, None)
            out.traced = mark[3]
            ed.skipped += 1
    if ed.skipped:
        out.warnings.append(f"{path}: {ed.skipped} rule(s) not instrumented, not counted")
    instrumented = ed.apply()
    try:  # an edit that does not parse must not break the run
        regorus.Engine().add_policy(path, instrumented)
    except RuntimeError as exc:
        out.warnings.append(f"{path}: rule coverage unavailable ({_error_text(exc)})")
        for clause in ed.clauses:
            out.ids = {k: v for k, v in out.ids.items() if v != clause}
        if package == DECISION_PACKAGE:
            out.traced = False
        out.modules[path], out.clauses[path] = source, []
        return
    out.modules[path], out.clauses[path] = instrumented, ed.clauses


def _instrument(
    modules: dict[str, str], asts: dict[str, dict[str, Any]], packages: dict[str, str]
) -> _Instrumented:
    """Every clause of every module gets a success marker (see the module docstring)."""
    out = _Instrumented(modules={}, clauses={}, ids={})
    for path, source in modules.items():
        _instrument_module(out, path, source, asts[path], packages[path])
    return out


# ------------------------------------------------------------------ test modules
@dataclass(frozen=True, slots=True)
class _TestModule:
    path: str  # relative to the policy folder
    package: str  # as written
    engine_package: str  # after re-homing
    agreement: str | None  # owning agreement folder, if any
    tests: tuple[tuple[str, int], ...]  # (rule name, line)
    source: str  # as compiled


def _package_of(source: str, path: str) -> str:
    m = _PACKAGE.search(source)
    if not m:
        raise PolicyInvalid(f"{path}: no package declaration")
    return m.group(1)


def _load_test_modules(
    policy_set: PolicySet, files: Sequence[Path], policy_packages: set[str]
) -> list[_TestModule]:
    sources = {str(p.relative_to(policy_set.root)): p.read_text(encoding="utf-8") for p in files}
    owners = {
        str(p.relative_to(policy_set.root)): a.content_hash
        for a in policy_set.all_versions()
        for p in files
        if p.parent == a.folder
    }
    packages = {path: _package_of(src, path) for path, src in sources.items()}
    rehome = {
        pkg
        for pkg in packages.values()
        if (pkg == "agreements" or pkg.startswith("agreements.")) and pkg not in policy_packages
    }
    asts = _ast(sources)
    modules: list[_TestModule] = []
    for path, source in sources.items():
        compiled = source
        for pkg in sorted(rehome, key=len, reverse=True):
            target = f"{TEST_NAMESPACE}.{pkg}"
            compiled = re.sub(
                rf"(?<![A-Za-z0-9_.])data\.{re.escape(pkg)}(?![A-Za-z0-9_])",
                f"data.{target}",
                compiled,
            )
        package = packages[path]
        if package in rehome:
            compiled = _PACKAGE.sub(f"package {TEST_NAMESPACE}.{package}", compiled, count=1)
        tests: dict[str, int] = {}
        for rule in asts[path].get("rules", []):
            spec = rule.get("Spec")
            if spec is None:
                continue
            kind, head = _head(spec)
            if kind != "Compr" or "Var" not in head["refr"]:
                continue
            name = _root_name(head["refr"])
            if name.startswith("test_"):
                tests.setdefault(name, int(spec["span"]["line"]))
        modules.append(
            _TestModule(
                path=path,
                package=package,
                engine_package=(f"{TEST_NAMESPACE}.{package}" if package in rehome else package),
                agreement=owners.get(path),
                tests=tuple(sorted(tests.items(), key=lambda t: t[1])),
                source=compiled,
            )
        )
    return modules


# ------------------------------------------------------------------ the run
@dataclass(slots=True)
class _Collector:
    """Per-test attribution of clause markers, covered lines and decisions."""

    agreement_paths: dict[str, str]  # agreement module path -> its version's content hash
    ids: dict[int, Clause]
    covered_clauses: set[Clause] = field(default_factory=set)
    lines: dict[str, set[int]] = field(default_factory=dict)
    covered_lines: dict[str, set[int]] = field(default_factory=dict)
    decisions: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)

    def start(self, engine: Any) -> None:
        engine.take_prints()
        engine.clear_coverage_data()

    def finish(self, engine: Any, owner: str | None) -> tuple[str, ...]:
        """Credits what the test just evaluated; returns the test's own prints."""
        markers: list[int] = []
        decisions: list[tuple[dict[str, Any], dict[str, Any]]] = []
        own: list[str] = []
        for line in engine.take_prints():
            text = str(line)
            at = text.find(_MARK)
            if at < 0:
                own.append(text)
                continue
            kind, _, payload = text[at + len(_MARK) + 1 :].partition(" ")
            if kind == "c":
                markers.append(int(payload))
            elif kind == "d":
                doc = json.loads(payload)
                decisions.append((doc["input"], doc["result"]))
        targets = {str(r.get("agreement_hash")) for _, r in decisions if isinstance(r, dict)}
        if not decisions and owner is not None:
            targets = {owner}

        def credited(path: str) -> bool:
            agreement = self.agreement_paths.get(path)
            return agreement is None or agreement in targets

        for ident in markers:
            clause = self.ids.get(ident)
            if clause is not None and credited(clause.path):
                self.covered_clauses.add(clause)
        report = json.loads(engine.get_coverage_report_as_json())
        for f in report.get("files", []):
            path = str(f["path"])
            covered = {int(n) for n in f.get("covered", [])}
            self.lines.setdefault(path, set()).update(covered, (int(n) for n in f["not_covered"]))
            if credited(path):
                self.covered_lines.setdefault(path, set()).update(covered)
        self.decisions.extend(decisions)
        return tuple(own)


def _run_rego_tests(
    engine: Any, modules: Iterable[_TestModule], collector: _Collector
) -> list[CaseResult]:
    results: list[CaseResult] = []
    for module in modules:
        for name, line in module.tests:
            collector.start(engine)
            started = time.perf_counter()
            message = ""
            try:
                value = engine.eval_rule(f"data.{module.engine_package}.{name}")
            except RuntimeError as exc:
                value, message = None, _error_text(exc)
            elapsed = time.perf_counter() - started
            own = collector.finish(engine, module.agreement)
            if not message and value is not True:
                message = "undefined" if value is None else f"evaluated to {value!r}"
            results.append(
                CaseResult(
                    kind="rego",
                    package=module.package,
                    name=name,
                    location=f"{module.path}:{line}",
                    passed=value is True and not message,
                    elapsed_s=elapsed,
                    message=message,
                    output=own,
                )
            )
    return results


def _check_item(
    decision: Decision, request: ScenarioRequest, item: ScenarioItem, index: int
) -> str:
    """Empty when the decided item meets the scenario's expectation, else why not."""
    if index >= len(decision.items):
        return "item not decided"
    got = decision.items[index]
    problems: list[str] = []
    if (got.element, got.subject) != (item.element, item.subject):
        problems.append(f"decided {got.element}/{got.subject} in its place")
    if got.reason.value != item.expect:
        problems.append(f"reason {got.reason.value}, expected {item.expect}")
    if item.consent_considered is not None and got.consent_id != item.consent_considered:
        problems.append(f"consent {got.consent_id}, expected {item.consent_considered}")
    if got.reason is ReasonCode.ALLOW_BREAK_GLASS:
        if got.acute_declaration_id != request.acute_declaration_id:
            problems.append(f"acute declaration {got.acute_declaration_id}")
    elif got.acute_declaration_id is not None:
        problems.append(f"unexpected acute declaration {got.acute_declaration_id}")
    if got.allowed != bool(got.legal_basis_ids):
        problems.append(f"legal bases {list(got.legal_basis_ids)} on {got.outcome.value}")
    if item.response is not None and decision.obligations.response_form is not (
        ResponseForm.BOOLEAN_ONLY
    ):
        problems.append(f"response form {decision.obligations.response_form.value}")
    return "; ".join(problems)


def _run_scenarios(
    engine: Any,
    policy_set: PolicySet,
    agreement: str | None,
    collector: _Collector,
) -> list[CaseResult]:
    path = policy_set.root / SCENARIOS_FILE
    if not path.is_file():
        return []
    location = str(SCENARIOS_FILE)
    scenarios = load_scenarios(path)
    results: list[CaseResult] = []
    for request in scenarios.requests:
        if agreement is not None and request.agreement != agreement:
            continue
        items = request.items()
        package = f"scenarios.{request.scenario_id}"
        collector.start(engine)
        started = time.perf_counter()
        decision: Decision | None = None
        error = ""
        try:
            policy_input = request.policy_input(scenarios.registry)
            engine.set_input_json(orjson.dumps(policy_input.to_document()).decode("utf-8"))
            document = engine.eval_rule(f"data.{DECISION_PACKAGE}.{DECISION_RULE}")
            if document is None:
                raise PolicyUnavailable("no decision (undefined)")
            decision = parse_decision(
                document, policy_input, engine="regorus", bundle_hash=policy_set.bundle_hash
            )
        except RuntimeError as exc:
            error = _error_text(exc)
        except (BrokerError, KeyError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        elapsed = time.perf_counter() - started
        own = collector.finish(engine, None)
        for index, item in enumerate(items):
            message = error
            if decision is not None and not message:
                message = _check_item(decision, request, item, index)
            results.append(
                CaseResult(
                    kind="scenario",
                    package=package,
                    name=item.case_id,
                    location=location,
                    passed=not message,
                    elapsed_s=elapsed,
                    message=message,
                    output=own,
                )
            )
    return results


def _domain(
    policy_set: PolicySet,
    scope: Sequence[str],
    decisions: Sequence[tuple[dict[str, Any], dict[str, Any]]],
    *,
    traced: bool,
) -> DomainCoverage:
    versions = {a.content_hash: a for a in policy_set.all_versions() if a.id in scope}
    several = {a.id for a in versions.values() if len(policy_set.versions[a.id]) > 1}
    labels = {h: f"{a.id} {a.version}" if a.id in several else a.id for h, a in versions.items()}
    entries: dict[str, list[WhitelistEntry]] = {}
    for aid, agreement in versions.items():  # by content hash
        found: list[WhitelistEntry] = []
        for pid, purpose in agreement.purposes.items():
            for recipient, elements in (purpose.get("allowed_elements") or {}).items():
                found.extend(WhitelistEntry(pid, str(recipient), str(e)) for e in elements)
            acute = purpose.get("acute_danger") or {}
            for recipient, elements in (acute.get("allowed_elements") or {}).items():
                found.extend(WhitelistEntry(pid, str(recipient), str(e), True) for e in elements)
        entries[aid] = found
    purposes: dict[str, set[str]] = {aid: set() for aid in versions}
    touched: dict[str, set[WhitelistEntry]] = {aid: set() for aid in versions}
    shipped = {a.content_hash for a in policy_set.all_versions()}
    reasons: set[str] = set()
    counted = ignored = 0
    for given, result in decisions:
        aid = str(result.get("agreement_hash"))
        if aid not in shipped or result.get("agreement_id") != given.get("agreement"):
            ignored += 1
            continue
        if aid not in purposes:
            continue
        counted += 1
        pid, recipient = str(given.get("purpose")), str(given.get("recipient"))
        acute_mode = result.get("acute_mode") is True
        for item in result.get("items", []):
            reason = str(item.get("reason"))
            reasons.add(reason)
            if reason not in _EARLY:
                purposes[aid].add(pid)
            if reason in _BEFORE_STEP_4:
                continue
            element = str(item.get("element"))
            touched[aid].add(WhitelistEntry(pid, recipient, element, acute_mode))
            if reason == ReasonCode.ALLOW_BREAK_GLASS:
                touched[aid].add(WhitelistEntry(pid, recipient, element, True))
    return DomainCoverage(
        agreements=tuple(
            AgreementDomainCoverage(
                agreement=labels[aid],
                purposes=tuple(agreement.purposes),
                touched_purposes=frozenset(purposes[aid]),
                entries=tuple(entries[aid]),
                touched_entries=frozenset(touched[aid] & set(entries[aid])),
            )
            for aid, agreement in versions.items()
        ),
        decisions=counted,
        ignored_decisions=ignored,
        reasons_seen=frozenset(reasons),
        traced=traced,
    )


def run_policy_tests(
    policy_dir: Path, *, agreement: str | None = None, scenarios: bool = True
) -> PolicyTestReport:
    """Runs the Rego unit tests (and scenario cases) of ``policy_dir`` with coverage.

    Raises PolicyInvalid when the policy set or a test module does not load or
    compile, and UnknownAgreement for an unknown ``agreement``.
    """
    started = time.perf_counter()
    policy_set = load_policy_set(policy_dir)
    if agreement is not None and agreement not in policy_set.agreements:
        raise UnknownAgreement(f"unknown agreement {agreement!r}")
    modules = policy_set.modules()
    asts = _ast(modules)
    packages = {path: _package_of(src, path) for path, src in modules.items()}
    instrumented = _instrument(modules, asts, packages)
    version_paths = {
        str(a.rego_path.relative_to(policy_set.root)): a
        for a in policy_set.all_versions()
        if a.rego_path is not None
    }
    agreement_paths = {path: a.content_hash for path, a in version_paths.items()}
    tests = _load_test_modules(
        policy_set, discover_test_files(policy_set, agreement), set(packages.values())
    )

    engine = regorus.Engine()
    try:
        engine.add_data_json(orjson.dumps(policy_set.data_document()).decode("utf-8"))
        for path, source in instrumented.modules.items():
            engine.add_policy(path, source)
        for module in tests:
            engine.add_policy(module.path, module.source)
    except RuntimeError as exc:
        raise PolicyInvalid(f"Rego does not compile: {_error_text(exc)}") from exc
    engine.set_enable_coverage(True)
    engine.set_gather_prints(True)

    collector = _Collector(agreement_paths=agreement_paths, ids=instrumented.ids)
    cases = _run_rego_tests(engine, tests, collector)
    if scenarios:
        cases.extend(_run_scenarios(engine, policy_set, agreement, collector))

    if agreement is None:
        scope_paths = [p for p in modules if p != DISPATCH_MODULE]  # generated index
        scope = list(policy_set.agreements)
    else:
        scope_paths = [p for p, a in version_paths.items() if a.id == agreement]
        scope = [agreement]
    files = tuple(
        FileCoverage(
            path=path,
            clauses=tuple(instrumented.clauses.get(path, [])),
            covered_clauses=frozenset(
                c for c in instrumented.clauses.get(path, []) if c in collector.covered_clauses
            ),
            lines=frozenset(collector.lines.get(path, set())),
            covered_lines=frozenset(collector.covered_lines.get(path, set())),
        )
        for path in scope_paths
    )
    coverage = RuleCoverage(files=files, warnings=tuple(instrumented.warnings))
    domain = _domain(policy_set, scope, collector.decisions, traced=instrumented.traced)
    return PolicyTestReport(
        policy_dir=policy_set.root,
        agreement=agreement,
        cases=tuple(cases),
        coverage=coverage,
        domain=domain,
        elapsed_s=time.perf_counter() - started,
    )


# ------------------------------------------------------------------ report
def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _pct(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100.0 if whole == 0 else 100.0 * part / whole:.1f}%)"


def _ranges(numbers: Sequence[int]) -> str:
    out: list[str] = []
    for n in numbers:
        if out and out[-1].split("-")[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ", ".join(out)


def _format_cases(report: PolicyTestReport, verbose: bool) -> list[str]:
    lines: list[str] = []
    width = max((len(c.package) for c in report.cases), default=0)
    for kind, title in (("rego", "Rego unit tests"), ("scenario", "Scenario cases")):
        cases = [c for c in report.cases if c.kind == kind]
        if not cases:
            continue
        lines.append(f"{title}:")
        for c in cases:
            status = "PASS" if c.passed else "FAIL"
            lines.append(f"  {status}  {c.package:<{width}}  {c.name}  ({_ms(c.elapsed_s)})")
            if not c.passed:
                # An evaluation error names its own location.
                where = "" if c.message.startswith(c.location.split(":")[0]) else f"{c.location}: "
                lines.append(f"        {where}{c.message}")
            if c.output and (verbose or not c.passed):
                lines.extend(f"        | {o}" for o in c.output)
        lines.append("")
    return lines


def _format_coverage(cov: RuleCoverage, verbose: bool) -> list[str]:
    lines = [
        f"Rule coverage: {_pct(cov.covered, cov.total)} rule clauses succeeded in some test;"
        f" lines (regorus): {_pct(cov.line_covered, cov.line_total)}"
    ]
    lines.extend(
        f"  {f.path:<44} rules {_pct(len(f.covered_clauses), len(f.clauses)):<16}"
        f" lines {_pct(len(f.covered_lines), len(f.lines))}"
        for f in cov.files
    )
    if cov.uncovered:
        lines.append("  Rules no test exercised:")
        lines.extend(f"    {c.path}:{c.line}  {c.label}" for c in cov.uncovered)
    if verbose:
        lines.extend(
            f"  Lines not evaluated in {f.path}: {_ranges(f.uncovered_lines)}"
            for f in cov.files
            if f.uncovered_lines
        )
    lines.extend(f"  warning: {w}" for w in cov.warnings)
    lines.append("")
    return lines


def _format_agreement_domain(a: AgreementDomainCoverage, verbose: bool) -> list[str]:
    regular = [e for e in a.entries if not e.acute]
    acute = [e for e in a.entries if e.acute]
    text = (
        f"  {a.agreement}: purposes {_pct(len(a.touched_purposes), len(a.purposes))},"
        f" whitelist entries {_pct(sum(e in a.touched_entries for e in regular), len(regular))}"
    )
    if acute:
        text += f", acute entries {_pct(sum(e in a.touched_entries for e in acute), len(acute))}"
    lines = [text]
    if a.untouched_purposes:
        lines.append(f"    purposes no test decided: {', '.join(a.untouched_purposes)}")
    untouched = a.untouched_entries
    shown = untouched if verbose else untouched[:5]
    lines.extend(f"    not touched: {e}" for e in shown)
    if len(untouched) > len(shown):
        lines.append(f"    ... {len(untouched) - len(shown)} more (--verbose)")
    return lines


def _format_domain(dom: DomainCoverage, verbose: bool) -> list[str]:
    if not dom.traced:
        return ["Domain coverage: unavailable (the decision rule could not be traced)", ""]
    ignored = (
        f", {dom.ignored_decisions} on other agreement data not counted"
        if dom.ignored_decisions
        else ""
    )
    lines = [f"Domain coverage ({dom.decisions} decisions{ignored}):"]
    for a in dom.agreements:
        lines.extend(_format_agreement_domain(a, verbose))
    if dom.reasons_never_produced:
        lines.append(f"  reason codes never produced: {', '.join(dom.reasons_never_produced)}")
    lines.append("")
    return lines


def format_report(
    report: PolicyTestReport, *, verbose: bool = False, min_coverage: float | None = None
) -> str:
    """A readable report: every test, coverage, domain coverage and totals."""
    lines = _format_cases(report, verbose)
    lines.extend(_format_coverage(report.coverage, verbose))
    lines.extend(_format_domain(report.domain, verbose))
    rego = [c for c in report.cases if c.kind == "rego"]
    scen = [c for c in report.cases if c.kind == "scenario"]
    lines.append(
        f"{len(rego)} Rego tests ({sum(c.passed for c in rego)} passed),"
        f" {len(scen)} scenario cases ({sum(c.passed for c in scen)} passed):"
        f" {'FAIL' if report.failed else 'PASS'}"
    )
    percent = report.coverage.percent
    if min_coverage is not None:
        verdict = "ok" if percent >= min_coverage else "BELOW MINIMUM"
        lines.append(f"rule coverage {percent:.1f}% (minimum {min_coverage:g}%): {verdict}")
    lines.append(f"elapsed {report.elapsed_s:.2f} s")
    return "\n".join(lines)


# ------------------------------------------------------------------ command
def _default_policy_dir() -> Path:
    return Settings().policy_dir


@click.command("test")
@click.option(
    "--policy-dir",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=_default_policy_dir,
    show_default="setting policy_dir, env BROKER_POLICY_DIR",
    help="Policy folder with agreements/, lib/ and scenarios/",
)
@click.option(
    "--min-coverage",
    type=float,
    default=None,
    help="Fail when rule coverage (percent of rule clauses) is below this",
)
@click.option("--agreement", "agreement", default=None, help="Only this agreement's tests")
@click.option("--no-scenarios", is_flag=True, help="Skip the scenario cases of scenarios.md")
@click.option("--verbose", "-v", is_flag=True, help="Also list uncovered lines and entries")
def test_command(
    policy_dir: Path,
    min_coverage: float | None,
    agreement: str | None,
    no_scenarios: bool,
    verbose: bool,
) -> None:
    """Run the Rego unit tests and scenario cases with rule and domain coverage.

    Exits 1 when a test fails or rule coverage is below --min-coverage.
    """
    try:
        report = run_policy_tests(policy_dir, agreement=agreement, scenarios=not no_scenarios)
    except UnknownAgreement as exc:
        raise click.BadParameter(str(exc), param_hint="--agreement") from exc
    except BrokerError as exc:
        raise click.ClickException(exc.diagnostics()) from exc
    click.echo(format_report(report, verbose=verbose, min_coverage=min_coverage))
    if not report.ok(min_coverage):
        raise SystemExit(1)
