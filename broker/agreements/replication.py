"""Agreement versions uploaded at one broker instance, installed at every other.

``POST /v1/agreements`` writes the folder into the policy folder of the instance
that took the upload. So that instances with their own policy folders enforce
the same agreements, that instance also stores the uploaded files in
``agreement_uploads`` and announces the change (``broker.cluster.changes``) in
the same transaction. Every instance takes the latest upload of each folder
at the instance that took it (``<id>``, or ``<id>/<version>`` for versions side
by side) and installs it where an upload at this instance would put it
(``broker.agreements.upload.placement`` on this instance's policy set: one more
``<id>/<version>/`` where the agreement's versions live side by side here, else
the agreement's folder ``<id>``), unless that folder holds the same content
already. It installs the way an upload does (staging folder, atomic swap,
previous version kept in ``previous/``, under the upload locks), and then
reloads: at start, and whenever an upload is announced or found by the policy
poll. Versions with which this instance's policy set does not validate are taken
out again (and logged); the instance keeps its own set. An agreement uploaded
through the API is thereby managed through the API: the database holds its
current version. Instances sharing one policy folder find it installed already
and only reload.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import structlog
from sqlalchemy import select

from broker.agreements.models import AgreementUpload
from broker.agreements.upload import (
    STAGING_PREFIX,
    UPLOAD_FILES,
    Uploaded,
    _acquire,
    _archive_path,
    _fsync_dir,
    _install,
    _replace,
    _uninstall,
    _write_folder,
    placement,
)
from broker.cluster.changes import AGREEMENTS, announce
from broker.db.session import Database
from broker.policy.loader import Agreement, PolicySet, folder_hash
from broker.policy.validate import validate_policy_dir

log = structlog.get_logger("agreements")
# ``<id>`` or ``<id>/<version>``: safe folder names only (the row is the database's).
SAFE_FOLDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}(/[A-Za-z0-9][A-Za-z0-9._-]{0,31})?")


async def record_upload(
    db: Database, uploaded: Uploaded, files: dict[str, str], uploader: str
) -> int:
    """Stores an installed upload and announces it to the other instances."""
    async with db.session() as session:
        row = AgreementUpload(
            agreement_id=uploaded.agreement_id,
            version=uploaded.version,
            folder=uploaded.folder or uploaded.agreement_id,
            content_hash=uploaded.content_hash,
            files={name: text for name, text in files.items() if name in UPLOAD_FILES},
            uploader=uploader,
            uploaded_at=datetime.now(UTC),
        )
        session.add(row)
        await session.flush()
        await announce(session, AGREEMENTS)
        await session.commit()
        return row.id


def _on_disk(root: Path, folder: str, content_hash: str) -> bool:
    """Whether ``agreements/<folder>`` holds that content already (e.g. installed by
    another instance on the same policy folder)."""
    target = root / "agreements" / folder
    return target.is_dir() and folder_hash(target) == content_hash


class UploadReplica:
    """Installs the agreement versions uploaded at any instance into this
    instance's policy folder."""

    def __init__(self, db: Database, current: Callable[[], PolicySet], lock: asyncio.Lock) -> None:
        self._db = db
        self._current = current
        self._lock = lock
        self._applied = 0  # the highest upload id this instance has installed or found

    async def sync(self, policy_set: PolicySet | None = None) -> list[str]:
        """Installs what is missing; returns the folders installed here.
        ``policy_set``: the set loaded from the folder (default: the one in force)."""
        current = self._current if policy_set is None else lambda: policy_set
        async with self._db.session() as session:
            rows = (
                await session.scalars(
                    select(AgreementUpload)
                    .where(AgreementUpload.id > self._applied)
                    .order_by(AgreementUpload.id)
                )
            ).all()
        if not rows:
            return []
        # The newest upload per folder at the instance that took it (older ones
        # were replaced there), oldest first.
        newest = sorted({row.folder: row for row in rows}.values(), key=lambda row: row.id)
        installed: list[tuple[str, Path | None]] = []
        failed = False
        async with self._lock:
            root = current().root
            fd = await _acquire(root)
            try:
                here = current()
                # Where an upload here would put each version; the newest per folder.
                latest: dict[str, tuple[AgreementUpload, Agreement | None]] = {}
                for row in newest:
                    place = placement(here, row.agreement_id, row.version)
                    latest[place.folder] = (row, place.replaces)
                for folder, (row, previous) in latest.items():
                    if SAFE_FOLDER.fullmatch(folder) is None or ".." in folder:
                        log.warning("agreement.install_refused", agreement=row.agreement_id)
                        continue
                    if await asyncio.to_thread(_on_disk, root, folder, row.content_hash):
                        continue
                    files = {str(k): str(v) for k, v in row.files.items()}
                    try:
                        archive = await asyncio.to_thread(
                            _install_any, root, folder, files, previous
                        )
                    except OSError as exc:
                        failed = True  # tried again on the next round
                        log.warning(
                            "agreement.install_failed",
                            agreement=row.agreement_id,
                            error=type(exc).__name__,
                        )
                        continue
                    installed.append((folder, archive))
                    log.info(
                        "agreement.installed_from_database",
                        agreement=row.agreement_id,
                        version=row.version,
                        folder=folder,
                        hash=row.content_hash,
                    )
                problems = await asyncio.to_thread(validate_policy_dir, root) if installed else []
                if problems:
                    # The set with them does not validate here: this instance keeps its own.
                    for folder, archive in reversed(installed):
                        await asyncio.to_thread(_uninstall, root, folder, archive)
                    log.warning("agreement.install_refused", folders=[f for f, _ in installed])
                    installed = []
            finally:
                os.close(fd)
        if not failed:
            self._applied = rows[-1].id
        return [folder for folder, _ in installed]


def _install_any(
    root: Path, folder: str, files: dict[str, str], previous: Agreement | None
) -> Path | None:
    """Puts ``files`` in place as ``agreements/<folder>``; what was there goes to
    ``previous/`` (returned, for ``_uninstall``)."""
    target = root / "agreements" / folder
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        return _install(root, folder, files, None)
    if previous is not None:
        return _install(root, folder, files, previous)
    # A folder the loaded set does not hold (it did not load here).
    staging = root / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    archive = _archive_path(root, folder.replace("/", "-"), "unloaded")
    try:
        _write_folder(staging, files, durable=True)
        _replace(staging, target, archive)
        _fsync_dir(target.parent)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return archive
