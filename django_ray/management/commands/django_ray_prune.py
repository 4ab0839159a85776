"""``manage.py django_ray_prune``: delete finished rows older than a retention period.

Only finished rows go (SUCCEEDED, FAILED, CANCELLED and LOST rows whose attempts ran out; their
TaskAttempt history and TaskEffect records go with them), judged by ``finished_at``: a row without one is never
pruned. Dry run by default, like ``django_ray_requeue``: it counts what would go; ``--execute``
(or ``--yes``) deletes. Deletes run in batches so a large backlog never holds a long lock.

The stored payloads of oversized results (``result_reference``: files, S3 or GCS objects) of the
deleted rows are deleted too, after their rows, unless a remaining row references the same
(content-addressed) payload. A payload that cannot be deleted is reported, never fatal.
``--leases`` also removes inactive worker leases that stopped before the cutoff.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from django_ray.durations import parse_duration
from django_ray.management.options import add_dry_run_options

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "LOST")


class Command(BaseCommand):
    help = (
        "Delete terminal task rows (their attempts, effect records and stored result payloads) that finished "
        "before a retention period. Dry run unless --execute is given."
    )

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
        add_dry_run_options(
            parser,
            "Count only; delete nothing (the default).",
            "Really delete the rows and payloads.",
        )
        parser.add_argument("--json", action="store_true", help="Print a JSON summary.")
        parser.add_argument("--database", default="default", help="Database alias.")

    def handle(self, *args: Any, **options: Any) -> None:
        from django_ray.models import RayTaskExecution, TaskAttempt, TaskEffect, TaskWorkerLease

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
        execute = options["execute"]
        started = time.monotonic()
        summary: dict[str, Any] = {
            "mode": "delete" if execute else "dry-run",
            "cutoff": cutoff.isoformat(),
            "states": states,
            "executions": 0,
            "attempts": 0,
            "effects": 0,
            "payloads": 0,
            "payload_errors": [],
            "leases": 0,
        }
        verbose = not options["json"]
        if not execute:
            summary["executions"] = rows.count()
            summary["attempts"] = (
                TaskAttempt.objects.using(using).filter(execution__in=rows.values("id")).count()
            )
            summary["effects"] = (
                TaskEffect.objects.using(using).filter(execution__in=rows.values("task_id")).count()
            )
            summary["payloads"] = (
                rows.exclude(result_reference__isnull=True)
                .exclude(result_reference="")
                .exclude(result_reference__startswith="oversize://")  # digest only: no payload
                .values("result_reference")
                .distinct()
                .count()
            )
            summary["leases"] = leases.count() if options["leases"] else 0
        else:
            while True:
                batch = list(
                    rows.order_by("id").values_list("id", "result_reference")[
                        : options["batch_size"]
                    ]
                )
                if not batch:
                    break
                with transaction.atomic(using=using):
                    _, per_model = (
                        RayTaskExecution.objects.using(using)
                        .filter(id__in=[row_id for row_id, _ in batch])
                        .delete()
                    )
                summary["executions"] += per_model.get("django_ray.RayTaskExecution", 0)
                summary["attempts"] += per_model.get("django_ray.TaskAttempt", 0)
                summary["effects"] += per_model.get("django_ray.TaskEffect", 0)
                self._delete_payloads({ref for _, ref in batch if ref}, using, summary)
                if verbose:
                    self.stdout.write(f"  deleted {summary['executions']} execution(s) so far")
            if options["leases"]:
                summary["leases"], _ = leases.delete()
        summary["seconds"] = round(time.monotonic() - started, 3)
        if options["json"]:
            self.stdout.write(json.dumps(summary, indent=2))
            return
        for error in summary["payload_errors"]:
            self.stderr.write(f"  payload not deleted: {error}")
        verb = "Deleted" if execute else "Would delete"
        self.stdout.write(
            f"{verb} {summary['executions']} execution(s) ({'/'.join(states)}, finished before "
            f"{cutoff:%Y-%m-%d %H:%M:%S %Z}), {summary['attempts']} attempt row(s), "
            f"{summary['effects']} effect record(s), {summary['payloads']} stored result payload(s)"
            + (f", {summary['leases']} inactive lease(s)" if options["leases"] else "")
            + f" in {summary['seconds']}s."
        )
        if not execute:
            self.stdout.write("Dry run: nothing deleted. Add --execute to delete.")

    @staticmethod
    def _delete_payloads(references: set[str], using: str, summary: dict[str, Any]) -> None:
        """Delete the payloads of deleted rows that no remaining row references."""
        from django_ray.models import RayTaskExecution
        from django_ray.results import ResultReferenceError, ResultStorageError, delete_result

        if not references:
            return
        still_used = set(
            RayTaskExecution.objects.using(using)
            .filter(result_reference__in=references)
            .values_list("result_reference", flat=True)
        )
        for reference in sorted(references - still_used):
            try:
                if delete_result(reference):
                    summary["payloads"] += 1
            except (ResultReferenceError, ResultStorageError) as exc:
                summary["payload_errors"].append(f"{reference}: {exc}")
