"""``broker audit subject`` tells the privacy officer, on stderr only, how many
entries were withheld for a postponed information duty; the HTML (and PDF) the
person receives does not say so, the officer's JSON carries the count."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from broker.subject_access import cli
from broker.subject_access.service import LogPosition, SubjectAccessReport

UNTIL = datetime(2026, 9, 1, 12, 0, tzinfo=UTC)


def _report(withheld: int) -> SubjectAccessReport:
    return SubjectAccessReport(
        generated_at=datetime(2026, 6, 1, tzinfo=UTC),
        subject="psn:" + "a" * 40,
        log=LogPosition(origin="broker.test/audit", size=10, root_hash="00" * 32),
        household_included=False,
        entry_count=0,
        entries=[],
        withheld_entries=withheld,
        withheld_until=UNTIL if withheld else None,
    )


@pytest.mark.parametrize("fmt", ["json", "html"])
def test_the_officer_is_told_on_stderr_only(
    fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def generate(*_: Any) -> SubjectAccessReport:
        return _report(3)

    monkeypatch.setattr(cli, "_generate", generate)
    out = tmp_path / f"report.{fmt}"
    result = CliRunner().invoke(
        cli.subject_command, ["--bsn", "999990007", "--format", fmt, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "3 entries withheld" in result.stderr and UNTIL.isoformat() in result.stderr
    assert "withheld" not in result.stdout
    text = out.read_text()
    if fmt == "html":  # what the person receives
        assert "withheld" not in text.lower() and "achtergehouden" not in text.lower()
    else:  # the JSON is the officer's: it carries the count
        assert json.loads(text)["withheld_entries"] == 3


def test_no_notice_when_nothing_was_withheld(monkeypatch: pytest.MonkeyPatch) -> None:
    async def generate(*_: Any) -> SubjectAccessReport:
        return _report(0)

    monkeypatch.setattr(cli, "_generate", generate)
    result = CliRunner().invoke(cli.subject_command, ["--bsn", "999990007"])
    assert result.exit_code == 0, result.output
    assert "withheld" not in result.stderr
