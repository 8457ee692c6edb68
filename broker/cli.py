"""The ``broker`` command: serve, demo, database, agencies, audit and policies."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from broker.cli_support import load_settings, run_sync
from broker.core.errors import BrokerError
from broker.settings import Settings

T = TypeVar("T")


def _run(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return run_sync(factory())


def _settings() -> Settings:
    return load_settings(quiet_logs=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Consent-aware information-exchange broker for the child-protection chain."""


# ----------------------------------------------------------------- serve / demo
@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option(
    "--migrate/--no-migrate",
    default=True,
    show_default=True,
    help="Run database migrations before starting",
)
@click.option("--workers", default=1, show_default=True, type=int)
def serve(host: str, port: int, migrate: bool, workers: int) -> None:
    """Run the broker API (uvicorn)."""
    import uvicorn

    from broker.db.migrate import upgrade
    from broker.operations.multiprocess import prepare_multiprocess_dir

    settings = _settings()
    if migrate:
        upgrade(settings.sync_database_url)
    prepare_multiprocess_dir()  # PROMETHEUS_MULTIPROC_DIR: no values of an earlier run
    uvicorn.run(
        "broker.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )


@main.command()
@click.option("--port", default=8080, show_default=True, type=int, help="Broker port")
@click.option(
    "--sim-port",
    default=9100,
    show_default=True,
    type=int,
    help="First port of the simulated partner systems",
)
@click.option(
    "--dir",
    "state_dir",
    default="var/demo",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Demo state: database, keys, partner keys",
)
@click.option("--once", is_flag=True, help="Run the scripted exchanges, then stop")
def demo(port: int, sim_port: int, state_dir: Path, once: bool) -> None:
    """Start a full demo on the embedded default: SQLite, in-process Rego, demo
    agencies with generated keys, simulated partner systems, scripted exchanges."""
    from broker.demo import run_demo

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_demo(port=port, sim_port=sim_port, state_dir=state_dir, once=once))


@main.command()
@click.option(
    "--out",
    "out_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Write to this file instead of standard output",
)
def openapi(out_path: Path | None) -> None:
    """Print the OpenAPI document (docs/openapi.json is kept in sync by a test)."""
    from broker.app import create_app

    text = json.dumps(create_app(Settings()).openapi(), indent=2, sort_keys=True) + "\n"
    if out_path is None:
        click.echo(text, nl=False)
    else:
        out_path.write_text(text, encoding="utf-8")


# ----------------------------------------------------------------- database
@main.group()
def db() -> None:
    """Database migrations."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: head)."""
    from broker.db.migrate import upgrade

    upgrade(_settings().sync_database_url, revision)
    click.echo("database is at " + revision)


# ----------------------------------------------------------------- agencies
@main.group()
def agency() -> None:
    """The agency registry: onboard partners, rotate their keys, disable them."""


async def _with_agencies(action: Callable[[Any], Awaitable[T]]) -> T:
    from broker.agencies.service import AgencyService
    from broker.db.session import Database
    from broker.reference import ReferenceData

    settings = _settings()
    database = Database(settings.async_database_url)
    try:
        service = AgencyService(database, ReferenceData.load(settings.policy_dir))
        return await action(service)
    finally:
        await database.dispose()


def _print_agency(view: Any) -> None:
    click.echo(json.dumps(view.to_json(), indent=2))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{path}: not a readable JSON file") from exc


@agency.command("add")
@click.option("--oin", required=True, help="Organisation id (OIN, 20 digits)")
@click.option("--name", required=True)
@click.option("--party-type", required=True, help="A party id from parties.yaml")
@click.option(
    "--jwks",
    "jwks_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Public JWKS with a signing key (Ed25519/P-256) and an encryption key (X25519/P-256)",
)
@click.option("--endpoint", default=None, help="Base URL of the partner system (as provider)")
def agency_add(oin: str, name: str, party_type: str, jwks_path: Path, endpoint: str | None) -> None:
    """Onboard a partner organisation."""
    jwks = _read_json(jwks_path)
    view = _run(
        lambda: _with_agencies(
            lambda s: s.add(
                oin=oin, name=name, party_type=party_type, jwks=jwks, endpoint_url=endpoint
            )
        )
    )
    _print_agency(view)


@agency.command("list")
def agency_list() -> None:
    """List registered agencies."""
    views = _run(lambda: _with_agencies(lambda s: s.list()))
    for v in views:
        state = "active" if v.active else "disabled"
        click.echo(f"{v.oin}  {v.party_type:<26} {state:<8} {v.name}")


@agency.command("show")
@click.argument("oin")
def agency_show(oin: str) -> None:
    """Show one agency with its keys."""
    _print_agency(_run(lambda: _with_agencies(lambda s: s.get(oin))))


@agency.command("disable")
@click.argument("oin")
def agency_disable(oin: str) -> None:
    """Disable an agency: its tokens stop working within seconds."""
    _print_agency(_run(lambda: _with_agencies(lambda s: s.set_active(oin, False))))


@agency.command("enable")
@click.argument("oin")
def agency_enable(oin: str) -> None:
    """Re-enable a disabled agency."""
    _print_agency(_run(lambda: _with_agencies(lambda s: s.set_active(oin, True))))


@agency.command("add-key")
@click.argument("oin")
@click.option(
    "--jwk",
    "jwk_path",
    required=True,
    type=click.Path(path_type=Path),
    help="One public JWK (use sig or enc)",
)
def agency_add_key(oin: str, jwk_path: Path) -> None:
    """Add a key (first step of a rotation)."""
    jwk = _read_json(jwk_path)
    _print_agency(_run(lambda: _with_agencies(lambda s: s.add_key(oin, jwk))))


@agency.command("remove-key")
@click.argument("oin")
@click.option("--kid", required=True)
def agency_remove_key(oin: str, kid: str) -> None:
    """Retire a key (last step of a rotation)."""
    _print_agency(_run(lambda: _with_agencies(lambda s: s.remove_key(oin, kid))))


@agency.command("keygen")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option(
    "--kind", type=click.Choice(["ed25519", "p256"]), default="ed25519", show_default=True
)
def agency_keygen(out_dir: Path, kind: str) -> None:
    """Generate a partner key set: private.jwks.json (keep) and public.jwks.json (register)."""
    from broker.crypto.keys import generate_jwk, public_only, write_secret_json

    sig = generate_jwk("Ed25519" if kind == "ed25519" else "P-256", use="sig")
    enc = generate_jwk("X25519" if kind == "ed25519" else "P-256", use="enc")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_secret_json(out_dir / "private.jwks.json", {"keys": [sig, enc]})
    (out_dir / "public.jwks.json").write_text(
        json.dumps({"keys": [public_only(sig), public_only(enc)]}, indent=2), encoding="utf-8"
    )
    click.echo(f"wrote {out_dir / 'private.jwks.json'} and {out_dir / 'public.jwks.json'}")


# ----------------------------------------------------------------- audit
@main.group()
def audit() -> None:
    """The audit log."""


@audit.command("verify")
@click.option(
    "--checkpoint",
    "checkpoint_path",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Also check this saved checkpoint (from GET /v1/audit/checkpoint) against the log",
)
@click.option(
    "--require-witnesses",
    "witnesses",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Fail unless at least N agencies cosigned a checkpoint consistent with the log",
)
def audit_verify(checkpoint_path: Path | None, witnesses: int) -> None:
    """Recompute the hash chain and the Merkle root; check a signed checkpoint and
    (with --require-witnesses) the agencies' cosignatures."""
    from audit import verifier
    from audit.tree import root_at
    from audit.verify import verify_log
    from broker.crypto.keys import BrokerKeyring, open_keyring
    from broker.db.session import Database
    from broker.settings import KeyBackend

    settings = _settings()
    origin = settings.log_origin
    keyring: BrokerKeyring | None = None
    publics: list[bytes] = []
    if (
        settings.key_backend is KeyBackend.PKCS11
        or (settings.keys_dir / "broker-signing.jwks.json").exists()
    ):
        try:
            keyring = open_keyring(settings)
            keyring.public_key_raw()  # the active key signs checkpoints: Ed25519
            publics = keyring.public_keys_raw()
        except BrokerError as exc:
            raise click.ClickException(exc.diagnostics()) from exc
    elif checkpoint_path is not None:
        raise click.ClickException(f"no broker signing key in {settings.keys_dir}")

    saved: verifier.Checkpoint | None = None
    try:
        if checkpoint_path is not None:
            saved = _verify_saved_checkpoint(checkpoint_path.read_bytes(), origin, publics)
    except verifier.VerificationError as exc:
        raise click.ClickException(f"{checkpoint_path}: {exc}") from exc

    async def go() -> tuple[Any, Any, bytes | None, dict[str, int]]:
        database = Database(settings.async_database_url)
        try:
            chain, tree = await verify_log(database)  # chain and tree in one read
            saved_root = None
            if saved is not None and saved.size <= tree.size:
                saved_root = await root_at(database, saved.size)
            cosigners: dict[str, int] = {}
            if witnesses:
                cosigners = await _verified_cosigners(database, origin, tree.size, tree.root_hash)
            return chain, tree, saved_root, cosigners
        finally:
            await database.dispose()

    chain, tree, saved_root, cosigners = _run(go)
    click.echo(f"audit log verified: {chain.size} entries, head {chain.head_hash}")
    _report_checkpoints(
        keyring, origin, tree.size, tree.root_hash, saved=saved, saved_root=saved_root
    )
    if witnesses:
        if len(cosigners) < witnesses:
            raise click.ClickException(
                f"only {len(cosigners)} of the {witnesses} required witnesses cosigned a "
                "checkpoint consistent with this log"
            )
        click.echo(
            f"witnesses verified: {len(cosigners)} agencies cosigned a checkpoint consistent "
            "with the log (" + ", ".join(f"{o} at size {n}" for o, n in cosigners.items()) + ")"
        )


async def _verified_cosigners(database: Any, origin: str, size: int, root: bytes) -> dict[str, int]:
    """OIN -> largest cosigned size, for every agency with a cosignature that
    verifies (stand-alone verifier, its registered key) over a checkpoint of
    this log consistent (RFC 9162 proof) with the current root."""
    from audit import verifier
    from audit.tree import consistency_proof
    from broker.agencies.service import AgencyDirectory
    from broker.transparency.witnesses import (
        cosignature_line,
        ed25519_public_key,
        witness_rows,
    )

    directory = AgencyDirectory(database)
    out: dict[str, int] = {}
    for row in await witness_rows(database):
        agency = await directory.get(row.agency_oin)
        key = next(
            (k for k in agency.signing_keys() if k.kid == row.kid) if agency else iter(()), None
        )
        public = ed25519_public_key(key.jwk) if key is not None else None
        if public is None or row.origin != origin or row.tree_size > size:
            continue
        cp_root = bytes.fromhex(row.root_hash)
        body = f"{origin}\n{row.tree_size}\n{base64.b64encode(cp_root).decode('ascii')}\n"
        note = body + "\n" + cosignature_line(row.agency_oin, row.signature)
        try:
            cp = verifier.verify_cosignature(note, key_name=row.agency_oin, public_key=public)
            proof = await consistency_proof(database, cp.checkpoint.size, size)
            verifier.verify_consistency(
                cp.checkpoint.size, size, cp.checkpoint.root_hash, root, proof.hashes
            )
        except verifier.VerificationError as exc:
            click.echo(f"cosignature by {row.agency_oin} at size {row.tree_size}: {exc}", err=True)
            continue
        out[row.agency_oin] = max(out.get(row.agency_oin, 0), row.tree_size)
    return out


def _verify_saved_checkpoint(note: bytes, origin: str, publics: list[bytes]) -> Any:
    """A saved checkpoint verifies with any key of the broker's ordered keyring
    (the active one first): one signed before a key rotation still counts."""
    from audit import verifier

    error: verifier.VerificationError | None = None
    for public in publics:
        try:
            return verifier.verify_checkpoint(note, key_name=origin, public_key=public)
        except verifier.VerificationError as exc:
            error = error or exc
    raise error or verifier.VerificationError("no Ed25519 key in the broker's keyring")


def _report_checkpoints(
    keyring: Any, origin: str, size: int, root: bytes, *, saved: Any, saved_root: bytes | None
) -> None:
    """Signs the latest checkpoint and checks it (and a saved one) with the
    stand-alone verifier, as an agency would."""
    from audit import verifier
    from broker.transparency.checkpoint import sign_checkpoint

    if keyring is None:
        click.echo(f"merkle root verified: {root.hex()} (no signing key: no checkpoint)")
        return
    latest = sign_checkpoint(keyring, origin, size, root)
    try:
        cp = verifier.verify_checkpoint(
            latest, key_name=origin, public_key=keyring.public_key_raw()
        )
    except verifier.VerificationError as exc:
        raise click.ClickException(f"latest checkpoint: {exc}") from exc
    if (cp.origin, cp.size, cp.root_hash) != (origin, size, root):
        raise click.ClickException("the latest checkpoint does not match the log")
    click.echo(f"merkle root verified: {root.hex()} (checkpoint signature verifies)")
    if saved is not None:
        if saved.origin == origin and saved.size > size:
            raise click.ClickException(
                f"the log lost its tail: it holds {size} entries, but the checkpoint at size "
                f"{saved.size} commits to {saved.size}; entries {size} to {saved.size - 1} are "
                "missing (a restore from an older backup, or a truncated log)"
            )
        if saved.origin != origin or saved_root != saved.root_hash:
            raise click.ClickException(
                f"the checkpoint at size {saved.size} does not match this log"
            )
        click.echo(f"checkpoint at size {saved.size} verified against the log")


# ----------------------------------------------------------------- policies
@main.group()
def policy() -> None:
    """Sharing agreements as policy files."""


@policy.command("sign")
@click.option("--oin", required=True, help="The signing agency's OIN")
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(path_type=Path, exists=True),
    help="The agency's private JWKS (its signing key signs)",
)
@click.option(
    "--agreement",
    "agreement_ids",
    multiple=True,
    help="Sign only these agreements (default: every one listing the agency)",
)
@click.option(
    "--version",
    "version",
    default=None,
    help="Sign this version (default: the version in force today, or the latest)",
)
def policy_sign(
    oin: str, key_path: Path, agreement_ids: tuple[str, ...], version: str | None
) -> None:
    """Sign agreement versions as a signatory agency (its content hash, with its key)."""
    from audit.log import AuditWriter
    from broker.agencies.service import AgencyService
    from broker.agreements.service import AgreementService
    from broker.db.session import Database
    from broker.policy.loader import load_policy_set
    from broker.reference import ReferenceData

    settings = _settings()
    keys = _read_json(key_path)
    sig = next((k for k in keys.get("keys", []) if k.get("use") == "sig" and "d" in k), None)
    if sig is None:
        raise click.ClickException(f"{key_path}: no private signing key")

    async def go() -> list[str]:
        database = Database(settings.async_database_url)
        audit = AuditWriter(database)
        await audit.start()
        try:
            signer = await AgencyService(database, ReferenceData.load(settings.policy_dir)).get(oin)
            return await AgreementService(database, audit).sign_as(
                load_policy_set(settings.policy_dir),
                signer,
                sig,
                list(agreement_ids) or None,
                version,
            )
        finally:
            await audit.stop()
            await database.dispose()

    signed = _run(go)
    click.echo("signed: " + (", ".join(signed) if signed else "nothing new to sign"))


@policy.command("status")
@click.option("--agreement", "agreement_id", default=None, help="Only this agreement")
@click.option("--version", "version", default=None, help="Only this version")
def policy_status(agreement_id: str | None, version: str | None) -> None:
    """Every agreement version: content hash, validity, state, and who signed."""
    from datetime import UTC, datetime

    from broker.agreements.service import AgreementService
    from broker.db.session import Database
    from broker.policy.loader import load_policy_set

    settings = _settings()

    async def go() -> Any:
        database = Database(settings.async_database_url)
        try:
            return await AgreementService(database).statuses(
                load_policy_set(settings.policy_dir), datetime.now(UTC).date()
            )
        finally:
            await database.dispose()

    for status in _run(go):
        a = status.agreement
        if agreement_id not in (None, a.id) or version not in (None, a.version):
            continue
        window = f"{a.valid_from}..{a.valid_until or ''}"
        click.echo(f"{a.id} v{a.version}  {window}  {status.state}  {a.content_hash}")
        for e in status.signatories:
            mark = f"signed by {e.signed_by_oin}" if e.signed_by_oin else "NOT SIGNED"
            click.echo(f"    {e.party:<26} {mark}")


@policy.command("replay")
@click.option(
    "--draft",
    "draft",
    required=True,
    type=click.Path(path_type=Path, exists=True),
    help="A draft agreement version folder (replaces the versions of its agreement "
    "whose windows overlap its own)",
)
@click.option("--limit", type=int, default=None, help="Replay at most this many decisions")
def policy_replay(draft: Path, limit: int | None) -> None:
    """Re-decide the recorded decisions against a draft; report what would flip."""
    from broker.db.session import Database
    from broker.policy.loader import load_policy_set
    from broker.policy.replay import replay
    from broker.retention.vault import open_vault

    settings = _settings()

    async def go() -> Any:
        database = Database(settings.async_database_url)
        try:
            return await replay(
                database,
                load_policy_set(settings.policy_dir),
                draft,
                limit=limit,
                retention=open_vault(settings, database),
            )
        finally:
            await database.dispose()

    report = _run(go)
    for line in report.lines():
        click.echo(line)


@policy.command("bundle")
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where to write the bundle (.tar.gz)",
)
@click.option(
    "--public-key",
    "pem_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also write the bundle-signing public key (PEM) for OPA's configuration",
)
def policy_bundle(out_path: Path, pem_path: Path | None) -> None:
    """Build the signed OPA bundle of the active policy set (docs/decisions/0005)."""
    from datetime import UTC, datetime

    from broker.agreements.service import AgreementService
    from broker.core.clock import dutch_date
    from broker.crypto.keys import BundleSigningKey
    from broker.db.session import Database
    from broker.policy.bundle import build_bundle
    from broker.policy.loader import load_policy_set
    from broker.policy.validate import assert_valid

    settings = _settings()

    async def go() -> Any:
        assert_valid(settings.policy_dir)
        database = Database(settings.async_database_url)
        try:
            return await AgreementService(database).enforce(
                load_policy_set(settings.policy_dir), dutch_date(datetime.now(UTC))
            )
        finally:
            await database.dispose()

    policy_set = _run(go)
    try:
        key = BundleSigningKey.load_or_create(settings.keys_dir)
        bundle = build_bundle(policy_set, key)
    except BrokerError as exc:
        raise click.ClickException(exc.diagnostics()) from exc
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_bytes(bundle.tarball())
    tmp.replace(out_path)
    click.echo(f"wrote {out_path}")
    click.echo(f"revision {bundle.revision}")
    click.echo(f"roots    {', '.join(bundle.roots)}")
    click.echo(f"signed   ES256, keyid {key.kid}")
    if pem_path is not None:
        pem_path.write_text(key.public_pem(), encoding="ascii")
        click.echo(f"wrote {pem_path}")


def _register_policy_commands() -> None:
    from broker.policy.diff import diff_command
    from broker.policy.explain import explain_command
    from broker.policy.matrix import matrix_command
    from broker.policy.render import render_command
    from broker.policy.testing import test_command
    from broker.policy.validate import check_command

    for command in (
        check_command,
        test_command,
        explain_command,
        matrix_command,
        diff_command,
        render_command,
    ):
        policy.add_command(command)


_register_policy_commands()

from broker.breakglass.cli import breakglass_group  # noqa: E402 - after the groups above
from broker.consent.cli import consent_group  # noqa: E402 - after the groups above
from broker.crypto.cli import keys_group  # noqa: E402
from broker.information_duties.cli import duties_group  # noqa: E402
from broker.operations.cli import adapters_group  # noqa: E402
from broker.publications.cli import webhook_command  # noqa: E402
from broker.retention.cli import retention_group  # noqa: E402
from broker.review.cli import officer_group  # noqa: E402
from broker.signals.cli import signals_group  # noqa: E402
from broker.subject_access.cli import (  # noqa: E402
    export_command,
    search_command,
    subject_command,
)

main.add_command(consent_group)
main.add_command(breakglass_group)
main.add_command(duties_group)
main.add_command(keys_group)
main.add_command(adapters_group)
main.add_command(officer_group)
main.add_command(retention_group)
main.add_command(signals_group)
audit.add_command(subject_command)
audit.add_command(search_command)
audit.add_command(export_command)
agency.add_command(webhook_command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
