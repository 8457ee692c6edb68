"""Signing summaries (broker.policy.render): content, escaping, valid HTML."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from broker.policy.loader import PolicySet, load_policy_set
from broker.policy.render import md_text, period_text, render_agreement, render_command
from tests.scenarios.scenario_data import POLICY_ROOT
from tests.unit.test_policy_matrix import check_html

INJECTED = "<script>alert('x')</script>"


@pytest.fixture(scope="module")
def policy_set() -> PolicySet:
    return load_policy_set(POLICY_ROOT)


@pytest.mark.parametrize(
    "agreement_id", sorted(p.name for p in (POLICY_ROOT / "agreements").iterdir())
)
def test_every_purpose_in_both_formats(policy_set: PolicySet, agreement_id: str) -> None:
    agreement = policy_set.agreements[agreement_id]
    html = render_agreement(agreement, policy_set, "html")
    check_html(html)
    markdown = render_agreement(agreement, policy_set, "markdown")
    assert markdown.startswith("# ")
    for pid in agreement.purposes:
        assert f"<h2>Purpose {pid}</h2>" in html
        assert f"## Purpose {md_text(pid)}\n" in markdown
        assert f"| `{pid}` |" in markdown  # consent table
    for s in agreement.source["signatories"]:
        assert str(s["signed_by"]) in html
    assert agreement.content_hash in html


def test_content_for_signers(policy_set: PolicySet) -> None:
    html = render_agreement(policy_set.agreements["agr-zvh-mdaplusplus"], policy_set, "html")
    for expected in [
        "<td>Valid from</td><td>2025-03-01</td>",
        "<td>12 to 15</td><td>the child and every holder of parental authority</td>",
        "<li>Wet politiegegevens (Wpg) art. 20 (wpg_20; disclosure power)</li>",
        "(wjsg_39f; disclosure power; NOT VERIFIED - legal check needed)",
        "<td>Valid for at most</td><td>72 hours (PT72H)</td>",
        "<td>Review by privacy officer within</td><td>5 days (P5D)</td>",
        "<td><code>politie</code></td><td><code>health.ggz_treatment_involvement</code></td>",
        "<td>acute danger only</td>",
        "<td><code>case_on_table</code></td><td>Household is an active MDA++ case</td>",
        "zorg_en_veiligheidshuis keeps the data for 2 years (P2Y) from case closure.",
        "<li>Creditor names and account details are not shared; creditor type, amount and dates "
        "suffice.</li>",
        "<td><code>huisarts</code></td><td>Huisarts (huisartsenpraktijk / huisartsenpost)</td>",
    ]:
        assert expected in html, expected
    markdown = render_agreement(policy_set.agreements["agr-vt-politie-hg"], policy_set, "markdown")
    assert (
        "| Consent | not\\_required\\_with\\_basis: no consent needed, a statutory basis applies |"
        in (markdown)
    )
    assert "veilig\\_thuis keeps the data for 20 years (P20Y) from case closure." in markdown
    assert (
        "This agreement has no consent rule of its own; the statutory table of who consents "
        "for a minor applies."
    ) in markdown


def test_period_text() -> None:
    assert period_text("P20Y") == "20 years (P20Y)"
    assert period_text("P1Y") == "1 year (P1Y)"
    assert period_text("PT72H") == "72 hours (PT72H)"
    assert period_text("soon") == "soon"


def _injected_policies(tmp_path: Path) -> Path:
    root = tmp_path / "policies"
    shutil.copytree(POLICY_ROOT, root, ignore=shutil.ignore_patterns("scenarios"))
    path = root / "agreements" / "agr-vt-raad-vto" / "agreement.yaml"
    data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["title"] = "A & B <i>italic</i>"
    data["purposes"][0]["description"] = f"Before {INJECTED} after"
    data["purposes"][1]["preconditions"][0]["check"] = "x` | <img src=y onerror=alert(1)>"
    data["signatories"][0]["organisation"] = '"><img src=x onerror=alert(1)>'
    data["general_rules"].append("[click](javascript:alert(1)) *bold* # not a heading")
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return root


def test_yaml_text_cannot_inject_markup(tmp_path: Path) -> None:
    policy_set = load_policy_set(_injected_policies(tmp_path))
    agreement = policy_set.agreements["agr-vt-raad-vto"]
    html = render_agreement(agreement, policy_set, "html")
    check_html(html)  # also: no script or img element, no src/href/on* attribute
    assert "Before &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; after" in html
    assert "<h1>A &amp; B &lt;i&gt;italic&lt;/i&gt;</h1>" in html
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<img" not in html and "<i>" not in html

    markdown = render_agreement(agreement, policy_set, "markdown")
    assert "<script" not in markdown and "<img" not in markdown and "<i>" not in markdown
    assert "Before &lt;script&gt;alert('x')&lt;/script&gt; after" in markdown
    assert markdown.startswith("# A &amp; B &lt;i&gt;italic&lt;/i&gt;\n")
    assert "\\[click\\](javascript:alert(1)) \\*bold\\* \\# not a heading" in markdown
    markdown_it = pytest.importorskip("markdown_it")
    rendered = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)
    assert "<script" not in rendered and "<img" not in rendered and "<i>" not in rendered
    assert 'href="javascript' not in rendered
    assert "&lt;script&gt;alert('x')&lt;/script&gt;" in rendered


def test_command(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "summary.md"
    result = runner.invoke(
        render_command,
        ["--agreement", "agr-ggz-vt-kindcheck", "--format", "markdown", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert text.startswith(
        "# Convenant kindcheck - bekendheidsvraag GGZ Lindeburg aan Veilig Thuis Lindeburg\n"
    )
    assert "| Response form | boolean\\_only |" in text
    result = runner.invoke(render_command, ["--agreement", "agr-ggz-vt-kindcheck"])
    assert result.exit_code == 0
    check_html(result.output)
    result = runner.invoke(render_command, ["--agreement", "nope"])
    assert result.exit_code == 2
    assert "unknown agreement nope" in result.output
