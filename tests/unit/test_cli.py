"""The real ``broker`` command (click), on a fresh SQLite file per test."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from broker.cli import main

OIN = "00000001800014844000"


class Broker:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.runner = CliRunner(
            env={
                "BROKER_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
                "BROKER_ENVIRONMENT": "development",
                "BROKER_KEYS_DIR": str(tmp_path / "keys"),
            }
        )

    def __call__(self, *args: str, code: int = 0) -> Result:
        result = self.runner.invoke(main, list(args), catch_exceptions=True)
        assert result.exit_code == code, (result.output, result.exception)
        assert "Traceback" not in result.output
        if code == 0:
            assert result.exception is None
        else:
            assert isinstance(result.exception, SystemExit), result.exception
        return result

    def keygen(self, name: str, kind: str = "ed25519") -> Path:
        out = self.tmp / name
        self("agency", "keygen", "--out", str(out), "--kind", kind)
        return out

    def add(self, oin: str = OIN, party: str = "politie", keys: Path | None = None) -> Any:
        keys = keys or self.keygen(f"keys-{oin}")
        result = self(
            "agency",
            "add",
            "--oin",
            oin,
            "--name",
            "Politie Eenheid Amsterdam",
            "--party-type",
            party,
            "--jwks",
            str(keys / "public.jwks.json"),
            "--endpoint",
            "http://127.0.0.1:9/politie",
        )
        return json.loads(result.output)


@pytest.fixture
def broker(tmp_path: Path) -> Broker:
    cli = Broker(tmp_path)
    assert cli("db", "upgrade").output.strip() == "database is at head"
    return cli


def test_help_lists_the_command_groups() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for group in ("agency", "audit", "db", "policy", "serve", "demo"):
        assert group in result.output


@pytest.mark.parametrize(
    ("kind", "curves"), [("ed25519", ["Ed25519", "X25519"]), ("p256", ["P-256", "P-256"])]
)
def test_keygen_writes_a_private_and_a_public_set(
    broker: Broker, kind: str, curves: list[str]
) -> None:
    out = broker.keygen("partner", kind)
    private = json.loads((out / "private.jwks.json").read_text())
    public = json.loads((out / "public.jwks.json").read_text())
    assert stat.S_IMODE((out / "private.jwks.json").stat().st_mode) == 0o600
    assert [k["crv"] for k in private["keys"]] == curves
    assert [k["use"] for k in public["keys"]] == ["sig", "enc"]
    assert all("d" in k for k in private["keys"])
    assert all("d" not in k for k in public["keys"])
    assert [k["kid"] for k in public["keys"]] == [k["kid"] for k in private["keys"]]


def test_agency_lifecycle(broker: Broker) -> None:
    keys = broker.keygen("politie")
    public = json.loads((keys / "public.jwks.json").read_text())
    shown = broker.add(keys=keys)
    assert shown["oin"] == OIN
    assert shown["party_type"] == "politie"
    assert shown["active"] is True
    assert shown["endpoint_url"] == "http://127.0.0.1:9/politie"
    assert [k["kid"] for k in shown["keys"]] == [k["kid"] for k in public["keys"]]

    listing = broker("agency", "list").output.splitlines()
    assert len(listing) == 1
    assert listing[0].split()[:3] == [OIN, "politie", "active"]
    assert listing[0].endswith("Politie Eenheid Amsterdam")
    assert json.loads(broker("agency", "show", OIN).output) == shown

    assert json.loads(broker("agency", "disable", OIN).output)["active"] is False
    assert broker("agency", "list").output.split()[:3] == [OIN, "politie", "disabled"]
    assert json.loads(broker("agency", "enable", OIN).output)["active"] is True

    # Rotate the encryption key: add a new one, then retire the old one.
    new_dir = broker.keygen("politie-2", "p256")
    new_enc = json.loads((new_dir / "public.jwks.json").read_text())["keys"][1]
    (broker.tmp / "new-enc.json").write_text(json.dumps(new_enc))
    added = json.loads(
        broker("agency", "add-key", OIN, "--jwk", str(broker.tmp / "new-enc.json")).output
    )
    assert [k["kid"] for k in added["keys"]][-1] == new_enc["kid"]
    old_enc_kid = public["keys"][1]["kid"]
    removed = json.loads(broker("agency", "remove-key", OIN, "--kid", old_enc_kid).output)
    assert [k["kid"] for k in removed["keys"]] == [public["keys"][0]["kid"], new_enc["kid"]]

    # The last encryption key cannot be retired.
    result = broker("agency", "remove-key", OIN, "--kid", new_enc["kid"], code=1)
    assert "conflict" in result.output
    assert "Add a new key of this use before removing the last one" in result.output


@pytest.mark.parametrize(
    ("oin", "party", "message"),
    [
        ("0000000180001484400", "politie", "validation_failed: An OIN is 20 digits (field oin)"),
        ("0000000180001484400X", "politie", "validation_failed: An OIN is 20 digits (field oin)"),
        (OIN, "brandweer", "validation_failed: Unknown party type (field party_type)"),
    ],
)
def test_invalid_agency_is_refused_without_a_traceback(
    broker: Broker, oin: str, party: str, message: str
) -> None:
    keys = broker.keygen("k")
    result = broker(
        "agency", "add", "--oin", oin, "--name", "X", "--party-type", party,
        "--jwks", str(keys / "public.jwks.json"), code=1,
    )  # fmt: skip
    assert result.output.strip() == f"Error: {message}"
    assert broker("agency", "list").output == ""


def test_other_agency_errors(broker: Broker) -> None:
    keys = broker.keygen("k")
    result = broker(
        "agency", "add", "--oin", OIN, "--name", "X", "--party-type", "politie",
        "--jwks", str(keys / "private.jwks.json"), code=1,
    )  # fmt: skip
    assert "private key" in result.output
    assert "(field jwks)" in result.output

    result = broker(
        "agency", "add", "--oin", OIN, "--name", "X", "--party-type", "politie",
        "--jwks", str(broker.tmp / "missing.json"), code=1,
    )  # fmt: skip
    assert "not a readable JSON file" in result.output

    broker.add(keys=keys)
    dup = broker(
        "agency", "add", "--oin", OIN, "--name", "X", "--party-type", "ggz",
        "--jwks", str(keys / "public.jwks.json"), code=1,
    )  # fmt: skip
    assert "conflict: An agency with this OIN exists" in dup.output

    assert "not_found: No such agency" in broker("agency", "show", "0" * 20, code=1).output
    assert "not_found" in broker("agency", "disable", "0" * 20, code=1).output
    assert "not_found" in broker("agency", "remove-key", OIN, "--kid", "nope", code=1).output
    # A missing required option is a usage error (exit code 2).
    assert "Missing option" in broker("agency", "add", "--oin", OIN, code=2).output


def test_audit_verify_on_an_empty_log(broker: Broker) -> None:
    lines = broker("audit", "verify").output.splitlines()
    assert lines[0] == "audit log verified: 0 entries, head " + "0" * 64
    # RFC 9162: the root of the empty tree is SHA-256 of the empty string.
    assert lines[1].startswith("merkle root verified: e3b0c44298fc1c149afbf4c8996fb924")


def test_policy_check_compiles_every_agreement(broker: Broker) -> None:
    lines = broker("policy", "check").output.splitlines()
    assert lines[-1].startswith("bundle ")
    agreements = lines[:-1]
    assert agreements
    for line in agreements:
        assert " purposes, " in line
        assert " v" in line.split(":")[0]


def test_settings_errors_are_reported_cleanly(tmp_path: Path) -> None:
    runner = CliRunner(
        env={
            "BROKER_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
            "BROKER_ENVIRONMENT": "production",
        }
    )
    result = runner.invoke(main, ["agency", "list"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: settings:")
    assert "BROKER_PSEUDONYM_KEY" in result.output
    assert "Traceback" not in result.output
