"""What the command groups share: the settings (a fault is a CLI error), the
database with a running audit writer, the pseudonymizer, running a coroutine
with broker errors shown as CLI errors, wire models from options and JSON output.

Commands print their result on stdout; logging is kept to warnings on stderr.
Heavy modules are imported inside the functions, so ``broker --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

from broker.core.errors import BrokerError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from audit.log import AuditWriter
    from broker.crypto.keys import Pseudonymizer
    from broker.db.session import Database
    from broker.settings import Settings

T = TypeVar("T")
M = TypeVar("M", bound="BaseModel")


def load_settings(*, quiet_logs: bool = True) -> Settings:
    """The broker's settings; with ``quiet_logs`` only warnings are logged (stderr)."""
    from broker.logging import configure_logging
    from broker.settings import Settings

    try:
        settings = Settings()
    except ValueError as exc:
        raise click.ClickException(f"settings: {exc}") from exc
    if quiet_logs:
        configure_logging(fmt=settings.log_format, level="WARNING")
    return settings


def run_sync(work: Coroutine[Any, Any, T]) -> T:
    """Runs ``work``; a broker error ends the command with its diagnostics."""
    try:
        return asyncio.run(work)
    except BrokerError as exc:
        raise click.ClickException(exc.diagnostics()) from exc


def pseudonymizer(settings: Settings) -> Pseudonymizer:
    """The configured pseudonym key, else the one kept in the keys folder."""
    from broker.crypto.keys import Pseudonymizer, load_or_create_pseudonym_key

    key = (
        settings.pseudonym_key.get_secret_value().encode()
        if settings.pseudonym_key is not None
        else load_or_create_pseudonym_key(settings.keys_dir)
    )
    return Pseudonymizer(key)


@asynccontextmanager
async def audited_database(
    settings: Settings, *, audit: bool = True
) -> AsyncIterator[tuple[Database, AuditWriter]]:
    """The configured database and an audit writer on it (started unless ``audit``
    is False); both closed afterwards."""
    from audit.log import AuditWriter
    from broker.db.session import Database

    db = Database(settings.async_database_url)
    writer = AuditWriter(db)
    try:
        if audit:
            await writer.start()
        yield db, writer
    finally:
        await writer.stop()
        await db.dispose()


def parse(model: type[M], data: dict[str, Any]) -> M:
    """A wire model from command options; messages name the field, never the value."""
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise click.ClickException(f"{first['type']}: {first['msg']} ({where})") from exc


def echo_json(model: BaseModel | list[Any]) -> None:
    if isinstance(model, list):
        click.echo(json.dumps([m.model_dump(mode="json") for m in model], indent=2))
    else:
        click.echo(json.dumps(model.model_dump(mode="json"), indent=2))
