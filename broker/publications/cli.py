"""``broker agency webhook``: where the broker POSTs an agency's inbox messages."""

from __future__ import annotations

import asyncio

import click

from broker.core.errors import BrokerError


@click.command("webhook")
@click.option("--oin", required=True, help="The agency's OIN")
@click.option("--url", default=None, help="The https URL to POST inbox messages to")
@click.option("--remove", is_flag=True, help="Remove the agency's webhook (poll the inbox)")
def webhook_command(oin: str, url: str | None, remove: bool) -> None:
    """Register, show or remove an agency's webhook for its inbox messages."""
    from broker.db.session import Database
    from broker.publications.delivery import WebhookRegistry
    from broker.settings import Settings

    if url is not None and remove:
        raise click.UsageError("give --url or --remove, not both")
    try:
        settings = Settings()
    except ValueError as exc:
        raise click.ClickException(f"settings: {exc}") from exc

    async def go() -> str | None:
        database = Database(settings.async_database_url)
        try:
            registry = WebhookRegistry(database)
            if url is None and not remove:
                return await registry.get(oin)
            return await registry.set(oin, None if remove else url)
        finally:
            await database.dispose()

    try:
        current = asyncio.run(go())
    except BrokerError as exc:
        raise click.ClickException(exc.diagnostics()) from exc
    click.echo(f"{oin} webhook: {current or 'none (polls GET /v1/inbox)'}")
