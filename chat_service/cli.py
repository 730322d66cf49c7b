"""The ``chat-service`` command: serve, migrate, show-config, create-tenant, create-admin."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig

from chat_service import __version__, logs
from chat_service.config import DEFAULT_CONFIG_FILE, Settings, SettingsError, load, masked
from chat_service.errors import DomainError
from chat_service.model import Database, Role
from chat_service.services import agents, api_keys, tenants

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = argparse.ArgumentParser(prog="chat-service", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG_FILE,
        help="TOML settings file (default: %(default)s); CHAT_SERVICE_* variables override it",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="serve HTTP with Hypercorn (bind, workers from settings)")
    migrate_parser = commands.add_parser("migrate", help="bring the database schema to head")
    migrate_parser.add_argument(
        "--alembic-ini", type=Path, default=Path("alembic.ini"), help="default: %(default)s"
    )
    commands.add_parser("show-config", help="print the effective settings, secrets masked")
    tenant_parser = commands.add_parser("create-tenant", help="add a tenant (a company)")
    tenant_parser.add_argument("slug", help="short name: lowercase letters, digits, dashes")
    tenant_parser.add_argument("--name", default="", help="display name (default: the slug)")
    admin_parser = commands.add_parser(
        "create-admin", help="add an admin to a tenant and print the admin's API key (once)"
    )
    admin_parser.add_argument("tenant", help="the tenant's slug")
    admin_parser.add_argument("--name", required=True, help="the admin's display name")
    admin_parser.add_argument("--email", default=None, help="the admin's email address")
    args = parser.parse_args(argv)

    if not args.config.is_file():
        parser.exit(
            2,
            f"chat-service: settings file {args.config} not found (run from the "
            "project directory, or pass --config)\n",
        )
    try:
        settings = load([args.config])
    except SettingsError as error:
        parser.exit(2, f"chat-service: invalid settings: {error}\n")
    logs.configure(settings.log)
    if args.command == "serve":
        from chat_service import server

        return server.run(settings)
    if args.command == "migrate":
        migrate(settings, alembic_ini=args.alembic_ini)
        return 0
    if args.command in ("create-tenant", "create-admin"):
        try:
            result = asyncio.run(_bootstrap(settings, args))
        except DomainError as error:
            parser.exit(1, f"chat-service: {error.detail}\n")
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    json.dump(masked(settings), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


async def _bootstrap(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Create a tenant, or an admin with an API key; what to print."""
    db = Database(settings.database.url.get_secret_value(), pool_size=1, max_overflow=0)
    try:
        if args.command == "create-tenant":
            tenant = await tenants.create_tenant(db, slug=args.slug, name=args.name)
            return {"id": str(tenant.id), "slug": tenant.slug, "name": tenant.name}
        tenant = await tenants.find_tenant(db, args.tenant)
        admin = await agents.add_agent(
            db, tenant.id, name=args.name, email=args.email, role=Role.ADMIN
        )
        key = await api_keys.add_api_key(
            db,
            tenant.id,
            name=f"{args.name} (created by create-admin)",
            scopes=api_keys.role_scopes(Role.ADMIN),
            agent_id=admin.id,
        )
        return {
            "tenant": tenant.slug,
            "agent_id": str(admin.id),
            "api_key": key.key,
            "note": "Shown once: use it as 'Authorization: Bearer <api_key>'.",
        }
    finally:
        await db.dispose()


def migrate(settings: Settings, *, alembic_ini: Path = Path("alembic.ini")) -> None:
    """Upgrade the configured database to the newest schema."""
    alembic_config = AlembicConfig(str(alembic_ini))
    alembic_config.attributes["url"] = settings.database.url.get_secret_value()
    command.upgrade(alembic_config, "head")
    log.info("database schema is at head")
