"""Impact replay of recorded decisions against a draft agreement."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from click.testing import CliRunner

from broker.cli import main
from broker.settings import PROJECT_ROOT
from tests.conftest import Harness
from tests.integration.test_exchange import SUSPECT_HISTORY

AGREEMENT = PROJECT_ROOT / "policies" / "agreements" / "agr-vt-politie-hg"


def _draft(tmp: Path, *, drop_house_ban: bool) -> Path:
    folder = tmp / "draft"
    shutil.copytree(AGREEMENT, folder)
    if drop_house_ban:
        path = folder / "agreement.yaml"
        text = path.read_text()
        edited = text.replace(
            "        - police.suspect_history_dv\n        - police.tijdelijk_huisverbod\n",
            "        - police.suspect_history_dv\n",
            1,
        ).replace('version: "3.0"', 'version: "3.1"')
        assert edited != text
        path.write_text(edited)
        rego = folder / "policy.rego"  # each version's Rego is in its own package
        rego.write_text(rego.read_text().replace(".v3_0\n", ".v3_1\n", 1))
    return folder


async def test_replay_reports_flips_per_agency_purpose_and_element(
    harness: Harness, tmp_path: Path
) -> None:
    from broker.policy.replay import replay

    client = harness.client("veilig_thuis")
    try:
        for _ in range(3):
            assert (await client.exchange(SUSPECT_HISTORY)).status_code == 200
    finally:
        await client.aclose()
    services = harness.broker.services

    same = await replay(
        services.db,
        services.policy_set,
        _draft(tmp_path / "a", drop_house_ban=False),
        retention=services.retention.vault,
    )
    assert same.decisions == 3
    assert same.items == 9
    assert not same.flips

    report = await replay(
        services.db,
        services.policy_set,
        _draft(tmp_path / "b", drop_house_ban=True),
        retention=services.retention.vault,
    )
    assert report.count("allow->deny") == 3
    assert report.count("deny->allow") == 0
    [(key, n)] = report.flips.items()
    assert n == 3
    assert key.agency == harness.partners["veilig_thuis"]["oin"]
    assert key.purpose == "informatie_voor_veiligheidsbeoordeling"
    assert key.element == "police.tijdelijk_huisverbod"
    assert (key.before, key.after) == ("allow_statutory_basis", "deny_element_not_allowed")

    # The CLI runs its own event loop: call it from a worker thread.
    result = await asyncio.to_thread(
        CliRunner().invoke,
        main,
        ["policy", "replay", "--draft", str(tmp_path / "b" / "draft")],
        env={
            "BROKER_DATABASE_URL": harness.broker.settings.database_url,
            "BROKER_KEYS_DIR": str(harness.broker.settings.keys_dir),
        },
    )
    assert result.exit_code == 0, result.output
    assert "allow->deny 3, deny->allow 0" in result.output
    assert "police.tijdelijk_huisverbod" in result.output
