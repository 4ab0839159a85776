"""``manage.py django_ray_requeue``: requeue FAILED/LOST/CANCELLED tasks in controlled batches.

Dry run by default: it lists what it would requeue. ``--execute`` moves the rows through
:func:`django_ray.lifecycle.operator.retry_tasks` (row-locked; attempt history kept), ``--batch-size``
rows per transaction, never more than ``--limit`` rows in one run.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from django_ray.durations import parse_duration
from django_ray.lifecycle.rules import RETRYABLE_BY_OPERATOR
from django_ray.management.options import add_dry_run_options

REQUEUEABLE = tuple(str(state) for state in RETRYABLE_BY_OPERATOR)
MAX_LIMIT = 100_000


class Command(BaseCommand):
    help = (
        "Requeue FAILED, LOST or CANCELLED tasks matching narrow filters, in batches. "
        "Dry run unless --execute is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--state",
            action="append",
            choices=REQUEUEABLE,
            help="State to requeue (repeatable; default FAILED).",
        )
        parser.add_argument("--queue", help="Only tasks of this queue.")
        parser.add_argument("--callable", dest="callable_path", help="Only this callable path.")
        parser.add_argument(
            "--older-than",
            help="Only tasks that finished (or were created, if never finished) longer ago "
            "than this, e.g. 30m, 2h, 1d.",
        )
        parser.add_argument(
            "--limit",
            type=int,
            default=100,
            help="Most tasks to requeue in this run (default 100).",
        )
        parser.add_argument(
            "--batch-size", type=int, default=50, help="Tasks per transaction (default 50)."
        )
        parser.add_argument(
            "--reset-attempts",
            action="store_true",
            help="Give each task a fresh MAX_TASK_ATTEMPTS budget (history is kept).",
        )
        add_dry_run_options(
            parser, "Only list matching tasks (the default).", "Really requeue them."
        )
        parser.add_argument("--json", action="store_true", help="Print a JSON summary.")
        parser.add_argument("--database", default="default", help="Database alias.")

    def handle(self, *args: Any, **options: Any) -> None:
        from django_ray.lifecycle import operator
        from django_ray.models import RayTaskExecution

        limit, batch_size = options["limit"], options["batch_size"]
        if not 1 <= limit <= MAX_LIMIT:
            raise CommandError(f"--limit must be between 1 and {MAX_LIMIT}, not {limit}.")
        if batch_size < 1:
            raise CommandError(f"--batch-size must be at least 1, not {batch_size}.")
        states = options["state"] or ["FAILED"]
        using = options["database"]

        rows = RayTaskExecution.objects.using(using).filter(state__in=states)
        if options["queue"]:
            rows = rows.filter(queue_name=options["queue"])
        if options["callable_path"]:
            rows = rows.filter(callable_path=options["callable_path"])
        if options["older_than"]:
            try:
                age = parse_duration(options["older_than"])
            except ValueError as exc:
                raise CommandError(f"--older-than: {exc}") from None
            rows = rows.annotate(_at=Coalesce(F("finished_at"), F("created_at"))).filter(
                _at__lt=timezone.now() - age
            )
        matching = rows.count()
        selected = list(
            rows.order_by("id").values_list("task_id", "callable_path", "queue_name", "state")[
                :limit
            ]
        )
        execute = options["execute"]
        summary: dict[str, Any] = {
            "mode": "execute" if execute else "dry-run",
            "filters": {
                "states": states,
                "queue": options["queue"],
                "callable": options["callable_path"],
                "older_than": options["older_than"],
            },
            "matching": matching,
            "selected": len(selected),
            "limit": limit,
            "requeued": 0,
            "failed_batches": [],
            "task_ids": [row[0] for row in selected],
        }
        verbose = not options["json"]
        if verbose:
            self.stdout.write(
                f"{matching} task(s) match {'/'.join(states)}"
                + (f" queue={options['queue']}" if options["queue"] else "")
                + (f" callable={options['callable_path']}" if options["callable_path"] else "")
                + (f" older than {options['older_than']}" if options["older_than"] else "")
                + f"; {len(selected)} selected (--limit {limit})."
            )
        if not execute:
            if verbose:
                for task_id, callable_path, queue, state in selected[:20]:
                    self.stdout.write(f"  would requeue {task_id} {state} {queue} {callable_path}")
                if len(selected) > 20:
                    self.stdout.write(f"  ... and {len(selected) - 20} more")
                self.stdout.write("Dry run: nothing changed. Add --execute to requeue.")
            else:
                self.stdout.write(json.dumps(summary, indent=2))
            return

        for start in range(0, len(selected), batch_size):
            batch = [row[0] for row in selected[start : start + batch_size]]
            try:
                moved = operator.retry_tasks(
                    batch, reset_attempts=options["reset_attempts"], using=using
                )
            except operator.IllegalTransition as exc:
                summary["failed_batches"].append({"first_task_id": batch[0], "error": str(exc)})
                if verbose:
                    self.stderr.write(f"  batch starting {batch[0]} not requeued: {exc}")
                continue
            summary["requeued"] += len(moved)
            if verbose:
                self.stdout.write(
                    f"  requeued {summary['requeued']}/{len(selected)} (batch of {len(moved)})"
                )
        if verbose:
            self.stdout.write(
                f"Requeued {summary['requeued']} task(s); "
                f"{len(summary['failed_batches'])} batch(es) skipped."
            )
        else:
            self.stdout.write(json.dumps(summary, indent=2))
