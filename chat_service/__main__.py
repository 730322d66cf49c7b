"""``python -m chat_service`` runs the command line."""

from chat_service.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
