"""Agreement versions uploaded at one instance are installed from the database
into another instance's policy folder, once, and only when its set still validates;
a version of an agreement whose versions live side by side goes beside the others."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from audit.log import AuditWriter
from broker.agreements.replication import UploadReplica, record_upload
from broker.agreements.upload import Uploaded, upload_agreement
from broker.db.session import Database
from broker.policy.loader import PolicySet, folder_hash, load_policy_set
from broker.policy.validate import validate_policy_dir
from broker.policy.watcher import PolicyWatcher
from broker.settings import PROJECT_ROOT
from tests.integration.test_agreement_upload import NEW_ID, POLICY_TEST
from tests.integration.test_agreement_versions import AGREEMENT_ID, two_versions
from tests.integration.test_new_agreement import AGREEMENT, POLICY

FILES = {"agreement.yaml": AGREEMENT, "policy.rego": POLICY, "policy_test.rego": POLICY_TEST}
ADMIN = "00000001001234567000"


def policy_copy(tmp: Path, name: str) -> Path:
    root = tmp / name
    shutil.copytree(PROJECT_ROOT / "policies", root)
    return root.resolve()


def content_hash(tmp: Path, files: dict[str, str]) -> str:
    folder = tmp / "hash-me"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    digest = folder_hash(folder)
    shutil.rmtree(folder)
    return digest


async def record(database: Database, tmp: Path, files: dict[str, str]) -> None:
    uploaded = Uploaded(NEW_ID, "0.9", content_hash(tmp, files), None, NEW_ID)
    await record_upload(database, uploaded, files, ADMIN)


def replica_for(database: Database, root: Path) -> UploadReplica:
    return UploadReplica(database, lambda: load_policy_set(root), asyncio.Lock())


async def test_an_upload_is_installed_once(database: Database, tmp_path: Path) -> None:
    root = policy_copy(tmp_path, "policies")
    await record(database, tmp_path, FILES)
    replica = replica_for(database, root)
    assert await replica.sync() == [NEW_ID]
    folder = root / "agreements" / NEW_ID
    assert {p.name: p.read_text() for p in folder.iterdir()} == FILES
    assert load_policy_set(root).agreements[NEW_ID].content_hash == folder_hash(folder)
    assert not list(root.glob(".upload-*"))
    assert await replica.sync() == []  # applied already
    # Another instance on the same folder finds it there and installs nothing.
    assert await replica_for(database, root).sync() == []


async def test_an_upload_that_does_not_validate_here_is_taken_out(
    database: Database, tmp_path: Path
) -> None:
    root = policy_copy(tmp_path, "policies")
    broken = dict(FILES, **{"agreement.yaml": AGREEMENT.replace("bw_1_240", "no_such_basis")})
    await record(database, tmp_path, broken)
    replica = replica_for(database, root)
    assert await replica.sync() == []
    assert not (root / "agreements" / NEW_ID).exists()
    assert not list(root.glob(".upload-*"))
    assert NEW_ID not in load_policy_set(root).agreements


def with_version_3_0(tmp: Path, name: str, *, side_by_side: bool) -> tuple[Path, dict[str, str]]:
    """A policy folder with the police agreement at version 3.0, as ``<id>/3.0/``
    (``side_by_side``) or as shipped in ``<id>/``, and the files of a version 3.1
    (its window after 3.0's in ``<id>/3.0/``), to upload."""
    root = policy_copy(tmp, name)
    shipped = {p.name: p.read_bytes() for p in (root / "agreements" / AGREEMENT_ID).iterdir()}
    two_versions(root)
    folder = root / "agreements" / AGREEMENT_ID
    files = {p.name: p.read_text(encoding="utf-8") for p in (folder / "3.1").iterdir()}
    shutil.rmtree(folder / "3.1")
    if not side_by_side:
        shutil.rmtree(folder)
        folder.mkdir()
        for file_name, data in shipped.items():
            (folder / file_name).write_bytes(data)
    return root, files


class Engine:
    """What the policy watcher swaps a reloaded set into."""

    def __init__(self, policy_set: PolicySet) -> None:
        self.policy_set = policy_set

    async def reload(self, policy_set: PolicySet) -> None:
        self.policy_set = policy_set


async def upload_at(database: Database, root: Path, files: dict[str, str]) -> Uploaded:
    """An upload at the instance on ``root``, recorded, as ``POST /v1/agreements`` does."""
    engine = Engine(load_policy_set(root))
    watcher = PolicyWatcher(root, engine, interval=0)
    await watcher.prime()
    audit = AuditWriter(database)
    await audit.start()

    async def record(uploaded: Uploaded) -> int:
        return await record_upload(database, uploaded, files, ADMIN)

    try:
        return await upload_agreement(
            files,
            uploader=ADMIN,
            current=lambda: engine.policy_set,
            watcher=watcher,
            audit=audit,
            lock=asyncio.Lock(),
            record=record,
        )
    finally:
        await audit.stop()


def version_folders(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "agreements" / AGREEMENT_ID).iterdir())


@pytest.mark.parametrize("side_by_side_at_a", [True, False], ids=["same-layout", "single-at-a"])
async def test_a_version_goes_beside_the_others_where_they_live_side_by_side(
    database: Database, tmp_path: Path, side_by_side_at_a: bool
) -> None:
    root_a, files = with_version_3_0(tmp_path, "a", side_by_side=side_by_side_at_a)
    root_b, _ = with_version_3_0(tmp_path, "b", side_by_side=True)

    uploaded = await upload_at(database, root_a, files)  # 3.1 at instance A
    if side_by_side_at_a:
        assert uploaded.folder == f"{AGREEMENT_ID}/3.1"
        assert version_folders(root_a) == ["3.0", "3.1"]
    else:
        assert uploaded.folder == AGREEMENT_ID  # replaced 3.0 there
        assert load_policy_set(root_a).agreements[AGREEMENT_ID].version == "3.1"

    # Instance B, with its own folder, installs it beside its 3.0, as an upload
    # at B would.
    replica = replica_for(database, root_b)
    assert await replica.sync() == [f"{AGREEMENT_ID}/3.1"]
    folder = root_b / "agreements" / AGREEMENT_ID
    assert version_folders(root_b) == ["3.0", "3.1"]
    assert {p.name: p.read_text() for p in (folder / "3.1").iterdir()} == files
    assert not (root_b / "agreements" / "3.1").exists()
    assert not (root_b / "previous").exists()  # nothing was replaced
    assert not list(root_b.glob(".upload-*"))
    assert validate_policy_dir(root_b) == []
    loaded = load_policy_set(root_b)
    assert [a.version for a in loaded.versions[AGREEMENT_ID]] == ["3.0", "3.1"]
    v31 = loaded.version(AGREEMENT_ID, "3.1")
    assert v31 is not None and v31.content_hash == uploaded.content_hash
    assert await replica.sync() == []  # applied already
    # A finds it in place and installs nothing.
    assert await replica_for(database, root_a).sync() == []


async def test_a_version_from_beside_others_replaces_a_single_version_folder(
    database: Database, tmp_path: Path
) -> None:
    root_a, files = with_version_3_0(tmp_path, "a", side_by_side=True)
    root_b, _ = with_version_3_0(tmp_path, "b", side_by_side=False)
    uploaded = await upload_at(database, root_a, files)
    assert uploaded.folder == f"{AGREEMENT_ID}/3.1"

    # B holds the agreement in one folder: an upload there replaces it.
    assert await replica_for(database, root_b).sync() == [AGREEMENT_ID]
    folder = root_b / "agreements" / AGREEMENT_ID
    assert {p.name: p.read_text() for p in folder.iterdir()} == files
    assert (root_b / "previous" / f"{AGREEMENT_ID}.previous-3.0" / "agreement.yaml").exists()
    assert validate_policy_dir(root_b) == []
    v31 = load_policy_set(root_b).agreements[AGREEMENT_ID]
    assert (v31.version, v31.content_hash) == ("3.1", uploaded.content_hash)
