"""A writable copy of the shipped policy folder, and edits of one of its files,
for the tests of ``broker policy check`` (messages are ``file:line: message``)."""

from __future__ import annotations

import shutil
from pathlib import Path

from broker.policy.validate import validate_policy_dir
from broker.settings import PROJECT_ROOT

POLICIES = PROJECT_ROOT / "policies"


def copy_policies(tmp_path: Path) -> Path:
    """The shipped policies (without the scenarios) under ``tmp_path``."""
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target, ignore=shutil.ignore_patterns("scenarios"))
    return target


def edit_section(root: Path, rel: str, section: str, old: str, new: str) -> None:
    """Replaces the one occurrence of ``old`` after the top-level ``section:`` of ``rel``."""
    path = root / rel
    text = path.read_text(encoding="utf-8")
    start = text.index(f"\n{section}:")
    head, tail = text[:start], text[start:]
    assert tail.count(old) == 1, f"{old!r} occurs {tail.count(old)} times"
    path.write_text(head + tail.replace(old, new), encoding="utf-8")


def line_in_section(root: Path, rel: str, section: str, needle: str) -> int:
    """1-based line of the first line holding ``needle`` after ``section:``."""
    lines = (root / rel).read_text(encoding="utf-8").splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith(f"{section}:"))
    return next(n for n, line in enumerate(lines[start:], start + 1) if needle in line)


def problems(root: Path) -> list[str]:
    return [str(p) for p in validate_policy_dir(root)]
