"""The ``chat-service`` command: serve, migrate, show-config."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig

from chat_service import __version__, logs
from chat_service.config import DEFAULT_CONFIG_FILE, Settings, SettingsError, load, masked

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
    json.dump(masked(settings), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def migrate(settings: Settings, *, alembic_ini: Path = Path("alembic.ini")) -> None:
    """Upgrade the configured database to the newest schema."""
    alembic_config = AlembicConfig(str(alembic_ini))
    alembic_config.attributes["url"] = settings.database.url.get_secret_value()
    command.upgrade(alembic_config, "head")
    log.info("database schema is at head")
