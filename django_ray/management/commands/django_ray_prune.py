"""``manage.py django_ray_prune``: delete finished rows older than a retention period.

Only finished rows go (SUCCEEDED, FAILED, CANCELLED and LOST rows whose attempts ran out; their
TaskAttempt history goes with them), judged by ``finished_at``: a row without one is never
pruned. Deletes run in batches so a large backlog never holds a
long lock. ``--dry-run`` counts only. ``--leases`` also removes inactive worker leases that
stopped before the cutoff.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from django_ray.durations import parse_duration

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "LOST")


class Command(BaseCommand):
    help = "Delete terminal task rows (and their attempts) that finished before a retention period."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            default="30d",
            help="Retention: delete rows that finished longer ago than this (default 30d).",
        )
        parser.add_argument(
            "--state",
            action="append",
            choices=TERMINAL,
            help="Finished state to prune (repeatable; default all four).",
        )
        parser.add_argument(
            "--batch-size", type=int, default=1000, help="Rows per delete (default 1000)."
        )
        parser.add_argument("--leases", action="store_true", help="Also prune inactive leases.")
        parser.add_argument("--dry-run", action="store_true", help="Count only; delete nothing.")
        parser.add_argument("--json", action="store_true", help="Print a JSON summary.")
        parser.add_argument("--database", default="default", help="Database alias.")

    def handle(self, *args: Any, **options: Any) -> None:
        from django_ray.models import RayTaskExecution, TaskWorkerLease

        try:
            retention = parse_duration(options["older_than"])
        except ValueError as exc:
            raise CommandError(f"--older-than: {exc}") from None
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        using = options["database"]
        states = options["state"] or list(TERMINAL)
        cutoff = timezone.now() - retention
        rows = RayTaskExecution.objects.using(using).filter(
            state__in=states, finished_at__lt=cutoff
        )
        leases = TaskWorkerLease.objects.using(using).filter(
            is_active=False, last_heartbeat_at__lt=cutoff
        )
        started = time.monotonic()
        summary: dict[str, Any] = {
            "mode": "dry-run" if options["dry_run"] else "delete",
            "cutoff": cutoff.isoformat(),
            "states": states,
            "executions": 0,
            "attempts": 0,
            "leases": 0,
        }
        verbose = not options["json"]
        if options["dry_run"]:
            summary["executions"] = rows.count()
            from django_ray.models import TaskAttempt

            summary["attempts"] = (
                TaskAttempt.objects.using(using).filter(execution__in=rows.values("id")).count()
            )
            summary["leases"] = leases.count() if options["leases"] else 0
        else:
            while True:
                ids = list(
                    rows.order_by("id").values_list("id", flat=True)[: options["batch_size"]]
                )
                if not ids:
                    break
                with transaction.atomic(using=using):
                    _, per_model = RayTaskExecution.objects.using(using).filter(id__in=ids).delete()
                summary["executions"] += per_model.get("django_ray.RayTaskExecution", 0)
                summary["attempts"] += per_model.get("django_ray.TaskAttempt", 0)
                if verbose:
                    self.stdout.write(f"  deleted {summary['executions']} execution(s) so far")
            if options["leases"]:
                summary["leases"], _ = leases.delete()
        summary["seconds"] = round(time.monotonic() - started, 3)
        if options["json"]:
            self.stdout.write(json.dumps(summary, indent=2))
            return
        verb = "Would delete" if options["dry_run"] else "Deleted"
        self.stdout.write(
            f"{verb} {summary['executions']} execution(s) ({'/'.join(states)}, finished before "
            f"{cutoff:%Y-%m-%d %H:%M:%S %Z}), {summary['attempts']} attempt row(s)"
            + (f", {summary['leases']} inactive lease(s)" if options["leases"] else "")
            + f" in {summary['seconds']}s."
        )
