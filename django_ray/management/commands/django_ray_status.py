"""``manage.py django_ray_status``: the runbook's quick triage checklist from live data."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from django_ray.status import FAIL, WARN, collect_status, render_text


class Command(BaseCommand):
    help = (
        "Print the triage checklist: task states, queues, worker leases and heartbeat ages, "
        "Ray connectivity, retrying vs terminal failures and the dominant failing callable."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print machine-readable JSON.")
        parser.add_argument("--database", default="default", help="Database alias to read.")
        parser.add_argument(
            "--ray-timeout",
            type=float,
            default=2.0,
            help="Seconds to wait for the Ray address to answer (default 2).",
        )
        parser.add_argument(
            "--no-ray-probe", action="store_true", help="Do not contact Ray; report leases only."
        )
        parser.add_argument(
            "--strict",
            action="store_true",
            help="Exit 1 if any check is 'fail', 2 if any is 'warn' (for scripts and cron).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["ray_timeout"] <= 0:
            raise CommandError("--ray-timeout must be a positive number of seconds.")
        try:
            status = collect_status(
                using=options["database"],
                ray_timeout=options["ray_timeout"],
                probe=not options["no_ray_probe"],
            )
        except DatabaseError as exc:
            raise CommandError(
                f"Cannot read the django-ray tables from database {options['database']!r}: "
                f"{exc}. Check DATABASES and that migrations ran (manage.py migrate django_ray)."
            ) from exc
        if options["json"]:
            self.stdout.write(json.dumps(status, indent=2, default=str))
        else:
            self.stdout.write(render_text(status))
        if options["strict"]:
            levels = {check["status"] for check in status["checks"]}
            if FAIL in levels:
                raise SystemExit(1)
            if WARN in levels:
                raise SystemExit(2)
