"""Upload of agreement versions by an agreement administrator (``POST /v1/agreements``).

An upload is the files of one agreement folder (``agreement.yaml``, ``policy.rego``,
``policy_test.rego``): a new agreement, or a new version replacing the folder of an
existing one. It takes effect only when the whole policy set *with* it validates and
the folder's Rego tests pass, both checked on a temporary copy of the policy root.
Then the upload is audit-logged (``agreement_uploaded``), and the folder is written
beside ``agreements/`` and renamed into place: on Linux swapped with the old folder
in one ``renameat2(RENAME_EXCHANGE)``, so a loader never sees the agreement missing.
The previous version's folder is kept as ``previous/<id>.previous-<version>``
(outside ``agreements/``, so it is never loaded). Uploads are serialised by an
asyncio lock in the process and an advisory lock (``flock``) on the policy root
across processes. An agreement whose versions live side by side
(``agreements/<id>/<version>/``) gets the upload as one more version folder
``<id>/<version>/``, replacing nothing (its validity window must not overlap the
others'). A new version is not enforced until every signatory signed its
content hash. ``record`` stores the installed upload in the database, from which
every other broker instance installs it (``broker.agreements.replication``); if
that fails, the upload is undone.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from audit.log import AuditRecord, AuditWriter
from broker.core.errors import (
    AgreementRejected,
    BrokerError,
    Conflict,
    ErrorCode,
    PolicyInvalid,
    ServiceUnavailable,
)
from broker.policy.loader import Agreement, PolicySet, folder_hash, load_policy_set
from broker.policy.testing import run_policy_tests
from broker.policy.validate import validate_policy_dir
from broker.policy.watcher import PolicyWatcher

UPLOAD_FILES = ("agreement.yaml", "policy.rego", "policy_test.rego")
MAX_FILE_BYTES = 256 * 1024
PREVIOUS_DIR = "previous"
STAGING_PREFIX = ".upload-"
MAX_ERRORS = 50
# A folder name on every file system: no dots (so never "." or ".."), no separators.
SAFE_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,98}[A-Za-z0-9])?")

# A version label as a folder name: no separators, never "." or "..".
SAFE_VERSION = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,30}[A-Za-z0-9])?")

_ID_LINE = re.compile(r"^id[ \t]*:", re.MULTILINE)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@dataclass(frozen=True, slots=True)
class Uploaded:
    agreement_id: str
    version: str
    content_hash: str
    previous: Agreement | None
    folder: str = ""  # where it was installed, relative to agreements/


def _identify(text: str) -> tuple[str, str]:
    """The agreement id and version named in ``agreement.yaml``."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise AgreementRejected(
            "agreement.yaml does not parse",
            errors=[f"agreement.yaml:{line}: YAML does not parse: {problem}"],
        ) from exc
    found = _ID_LINE.search(text)
    line = text.count("\n", 0, found.start()) + 1 if found else 1
    agreement_id = doc.get("id") if isinstance(doc, dict) else None
    if not isinstance(agreement_id, str) or not agreement_id:
        raise AgreementRejected(
            "agreement.yaml names no agreement id",
            errors=[f"agreement.yaml:{line}: no agreement id (a string)"],
        )
    if not SAFE_ID.fullmatch(agreement_id):
        raise AgreementRejected(
            "The agreement id is not a safe folder name",
            errors=[
                f"agreement.yaml:{line}: id {agreement_id[:100]!r} is not a safe folder name "
                "(letters, digits, '-' and '_', at most 100)"
            ],
        )
    assert isinstance(doc, dict)
    return agreement_id, str(doc.get("version", ""))


def _write_folder(folder: Path, files: Mapping[str, str], *, durable: bool) -> None:
    folder.mkdir()
    for name, text in files.items():
        path = folder / name
        with path.open("wb") as fh:
            fh.write(text.encode("utf-8"))
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
    if durable:
        _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _relative(text: str, folder: str, root: Path) -> str:
    """A message with paths of the uploaded folder shown as its file names, and no
    server paths."""
    text = text.replace(f"{root}{os.sep}", "").replace(str(root), ".")
    return text.replace(f"agreements/{folder}/", "")


def _limited(lines: Iterable[str]) -> list[str]:
    out = list(lines)
    if len(out) > MAX_ERRORS:
        out = [*out[:MAX_ERRORS], f"... and {len(out) - MAX_ERRORS} more"]
    return out


def _check(root: Path, folder: str, files: Mapping[str, str], agreement_id: str) -> str:
    """Validates the policy set with the upload and runs the folder's Rego tests, on a
    temporary copy of ``root``; returns the upload's content hash."""
    with tempfile.TemporaryDirectory(prefix="broker-upload-") as tmp:
        copy = Path(tmp).resolve() / "policies"
        shutil.copytree(
            root,
            copy,
            ignore=lambda d, names: [
                n for n in names if n.startswith(".") or (Path(d) == root and n == PREVIOUS_DIR)
            ],
        )
        target = copy / "agreements" / folder
        if target.exists():
            shutil.rmtree(target)
        _write_folder(target, files, durable=False)

        problems = validate_policy_dir(copy)
        if not problems:
            try:  # what the watcher does next; validation should have caught it all
                loaded = load_policy_set(copy)
            except (BrokerError, OSError, ValueError, KeyError, TypeError) as exc:
                message = exc.message if isinstance(exc, BrokerError) else type(exc).__name__
                problems_text = [_relative(message, folder, copy)]
            else:
                problems_text = []
                if loaded.agreements.get(agreement_id) is None:
                    problems_text = [f"agreement.yaml:1: agreement {agreement_id} did not load"]
        else:
            problems_text = [_relative(str(p), folder, copy) for p in problems]
        if problems_text:
            count = len(problems_text)
            raise AgreementRejected(
                f"The policy set with this agreement has {count} problem{'s' * (count != 1)}",
                errors=_limited(problems_text),
            )

        report, message = None, ""
        try:
            report = run_policy_tests(copy, agreement=agreement_id, scenarios=False)
        except (PolicyInvalid, ValueError) as exc:
            message = exc.message if isinstance(exc, BrokerError) else str(exc)
        if report is None:
            # Raised here, not chained: the test run's traceback holds regorus engines,
            # which must be dropped on this thread.
            raise AgreementRejected(
                "The agreement's Rego tests do not load",
                errors=_limited(_relative(message, folder, copy).splitlines()),
                code=ErrorCode.POLICY_TESTS_FAILED,
            )
        if report.failed:
            count = len(report.failed)
            raise AgreementRejected(
                f"{count} Rego test{'s' * (count != 1)} of the agreement failed",
                errors=_limited(
                    _relative(
                        f"{c.location}: {c.name} failed: {c.message or 'not true'}", folder, copy
                    )
                    for c in report.failed
                ),
                code=ErrorCode.POLICY_TESTS_FAILED,
            )
        return folder_hash(target)


def _lock(root: Path) -> int:
    """Blocks until this process holds the policy root's upload lock."""
    fd = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        os.close(fd)
        raise
    return fd


def _release(task: asyncio.Future[int]) -> None:
    if not task.cancelled() and task.exception() is None:
        os.close(task.result())


async def _acquire(root: Path) -> int:
    """The policy root's upload lock (a file descriptor to close); a cancelled
    caller does not leave it held."""
    task = asyncio.ensure_future(asyncio.to_thread(_lock, root))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_release)
        raise


def _exchange(a: Path, b: Path) -> bool:
    """Swaps two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False
    where the platform or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _archive_path(root: Path, agreement_id: str, version: str) -> Path:
    label = re.sub(r"[^A-Za-z0-9._-]", "_", version)[:40]
    base = root / PREVIOUS_DIR / f"{agreement_id}.previous-{label}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def _replace(staging: Path, target: Path, archive: Path) -> None:
    """``staging`` becomes ``target``; the old ``target`` becomes ``archive``."""
    archive.parent.mkdir(exist_ok=True)
    if _exchange(staging, target):
        os.rename(staging, archive)  # the swap left the old folder at staging
        return
    os.rename(target, archive)  # not atomic: the agreement is missing for a moment
    try:
        os.rename(staging, target)
    except OSError:
        os.rename(archive, target)
        raise


def _install(
    root: Path, folder: str, files: Mapping[str, str], previous: Agreement | None
) -> Path | None:
    """Puts the folder in place; returns where the previous version's folder went."""
    staging = root / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    target = root / "agreements" / folder
    archive = None if previous is None else _archive_path(root, previous.id, previous.version)
    try:
        _write_folder(staging, files, durable=True)
        if archive is None:
            os.rename(staging, target)
        else:
            _replace(staging, target, archive)
        _fsync_dir(target.parent)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return archive


def _uninstall(root: Path, folder: str, archive: Path | None) -> None:
    """Puts back what ``_install`` replaced."""
    target = root / "agreements" / folder
    if archive is None:
        shutil.rmtree(target)
        return
    failed = root / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    if _exchange(archive, target):
        os.rename(archive, failed)
    else:
        os.rename(target, failed)
        os.rename(archive, target)
    shutil.rmtree(failed, ignore_errors=True)


async def upload_agreement(
    files: Mapping[str, str],
    *,
    uploader: str,
    current: Callable[[], PolicySet],
    watcher: PolicyWatcher,
    audit: AuditWriter,
    lock: asyncio.Lock,
    record: Callable[[Uploaded], Awaitable[object]] | None = None,
) -> Uploaded:
    """Checks, records and installs an agreement folder; raises ``AgreementRejected``
    (422), ``Conflict`` (409) or ``ServiceUnavailable`` (503)."""
    agreement_id, version = _identify(files["agreement.yaml"])
    async with lock:
        root = current().root  # the policy folder, resolved
        fd = await _acquire(root)
        try:
            place = placement(current(), agreement_id, version)
            folder, previous = place.folder, place.replaces
            if place.side_by_side:
                # One more version folder beside the others; nothing is replaced.
                if previous is not None:
                    raise Conflict(f"{agreement_id} has a version {version} already")
                if not SAFE_VERSION.fullmatch(version) or ".." in version:
                    raise AgreementRejected(
                        "The version is not a safe folder name",
                        errors=[
                            f"agreement.yaml:1: version {version[:40]!r} is not a safe "
                            "folder name (letters, digits, '.', '-' and '_')"
                        ],
                    )
            if previous is None and await asyncio.to_thread((root / "agreements" / folder).exists):
                raise Conflict(f"The folder agreements/{folder} exists and holds no agreement")
            if previous is not None and previous.version == version:
                raise Conflict(
                    f"{agreement_id} is at version {version} already; upload a new version"
                )
            content_hash = await asyncio.to_thread(_check, root, folder, files, agreement_id)
            await audit.append([_record(agreement_id, version, content_hash, uploader, previous)])
            try:
                archive = await asyncio.to_thread(_install, root, folder, files, previous)
            except OSError as exc:
                raise ServiceUnavailable("The policy folder could not be written") from exc
            await watcher.check()  # takes effect here at once, elsewhere on the next poll
            loaded = current().version(agreement_id, version)
            if loaded is None or loaded.content_hash != content_hash:
                # The set with the upload validated on the copy but did not load here.
                error = watcher.last_error or "the policy set was not reloaded"
                await asyncio.to_thread(_uninstall, root, folder, archive)
                await watcher.check()
                await audit.append([_undone(agreement_id, version, content_hash, uploader)])
                raise AgreementRejected(
                    "The policy set with this agreement did not load; the upload is undone",
                    errors=[_relative(error, folder, root)],
                )
            uploaded = Uploaded(agreement_id, version, content_hash, previous, folder)
            if record is not None:
                try:
                    await record(uploaded)
                except BrokerError:  # the other instances would never see it: undone
                    await asyncio.to_thread(_uninstall, root, folder, archive)
                    await watcher.check()
                    await audit.append([_undone(agreement_id, version, content_hash, uploader)])
                    raise
        finally:
            os.close(fd)
    return uploaded


def _undone(agreement_id: str, version: str, content_hash: str, uploader: str) -> AuditRecord:
    return AuditRecord(
        kind="agreement_upload_undone",
        body={
            "agreement": {"id": agreement_id, "version": version, "hash": content_hash},
            "uploader": uploader,
        },
    )


@dataclass(frozen=True, slots=True)
class Placement:
    """Where an upload of one agreement version is installed in a policy folder."""

    folder: str  # relative to agreements/: ``<id>`` (or the folder's name), ``<id>/<version>``
    replaces: Agreement | None  # the loaded version whose folder it takes over
    side_by_side: bool  # one more ``<id>/<version>/`` folder beside the agreement's others


def placement(policy_set: PolicySet, agreement_id: str, version: str) -> Placement:
    """Where ``version`` of ``agreement_id`` goes in ``policy_set``'s folder: a new
    agreement as ``<id>``; for a single-version agreement its folder, replacing
    that version; for versions side by side ``<id>/<version>`` (``replaces``: the
    version of that label, if loaded). Used by uploads and by the instances that
    install an upload taken elsewhere (``broker.agreements.replication``)."""
    latest = policy_set.agreements.get(agreement_id)
    if latest is None:
        return Placement(agreement_id, None, side_by_side=False)
    if _side_by_side(latest):
        folder = f"{latest.folder.parent.name}/{version}"
        return Placement(folder, policy_set.version(agreement_id, version), side_by_side=True)
    return Placement(latest.folder.name, latest, side_by_side=False)


def _side_by_side(agreement: Agreement) -> bool:
    """Whether the agreement's versions live in ``<id>/<version>/`` folders."""
    folder = agreement.folder
    return folder.name == agreement.version and folder.parent.parent.name == "agreements"


def _record(
    agreement_id: str, version: str, content_hash: str, uploader: str, previous: Agreement | None
) -> AuditRecord:
    return AuditRecord(
        kind="agreement_uploaded",
        body={
            "agreement": {"id": agreement_id, "version": version, "hash": content_hash},
            "uploader": uploader,
            "replaces": (
                {"version": previous.version, "hash": previous.content_hash}
                if previous is not None
                else None
            ),
        },
    )
