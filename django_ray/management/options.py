"""Command-line options shared by the operator commands."""

from __future__ import annotations

from django.core.management.base import CommandParser


def add_dry_run_options(parser: CommandParser, dry_run_help: str, execute_help: str) -> None:
    """``--dry-run`` (the default) or ``--execute``/``--yes``: commands that change rows only act
    when told to, so a mistyped filter never deletes or requeues anything."""
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", default=True, help=dry_run_help)
    mode.add_argument("--execute", "--yes", action="store_true", help=execute_help)
