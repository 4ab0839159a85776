"""``manage.py demo_run``: start a worker, enqueue a batch of demo tasks, watch them complete.

It prints a live progress line, a summary with the measured tasks/second, and the Prometheus
metrics that ``/api/metrics`` serves. The worker is a real ``django_ray_worker`` subprocess
(``--local`` starts an embedded Ray); it is stopped with SIGTERM at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Count, Max, Min
from django.test import Client

from demo import tasks
from django_ray.models import RayTaskExecution, TaskState

FINAL = {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.LOST}


class Command(BaseCommand):
    help = "Run the django-ray demo: a worker, a batch of demo tasks, progress, metrics."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tasks", type=int, default=2000, help="Fast tasks to enqueue.")
        parser.add_argument("--concurrency", type=int, default=2)
        parser.add_argument(
            "--mode",
            choices=["local", "sync", "cluster"],
            default="local",
            help="Worker mode (local: embedded Ray).",
        )
        parser.add_argument("--timeout", type=float, default=600, help="Give up after seconds.")
        parser.add_argument("--json", action="store_true", help="Print the summary as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", verbosity=0, interactive=False)
        RayTaskExecution.objects.all().delete()
        log_path = Path(os.environ.get("DEMO_WORKER_LOG", "demo-worker.log")).resolve()
        worker = self._start_worker(options, log_path)
        try:
            batch = self._enqueue(options["tasks"])
            summary = self._watch(batch, options["timeout"], worker, log_path)
        finally:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                try:
                    worker.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    worker.kill()
        summary["worker_exit_code"] = worker.returncode
        metrics = Client(HTTP_HOST="localhost").get("/api/metrics").content.decode()
        if options["json"]:
            summary["metrics"] = [
                line for line in metrics.splitlines() if line.startswith("django_ray_")
            ]
            self.stdout.write(json.dumps(summary, indent=2))
            return
        self._print_summary(summary)
        self.stdout.write("\nGET /api/metrics (django_ray_* samples):")
        for line in metrics.splitlines():
            if line.startswith(("django_ray_tasks", "django_ray_queue_depth")):
                self.stdout.write(f"  {line}")
        self.stdout.write(f"\nworker log: {log_path}")

    def _start_worker(self, options: dict[str, Any], log_path: Path) -> subprocess.Popen[bytes]:
        manage = Path(sys.argv[0]).resolve()
        argv = [
            sys.executable,
            str(manage),
            "django_ray_worker",
            "--all-queues",
            "--concurrency",
            str(options["concurrency"]),
            f"--{options['mode']}",
        ]
        self.stdout.write(f"starting worker: {' '.join(argv[2:])} (log: {log_path})")
        log = open(log_path, "wb")  # noqa: SIM115 - handed to the child
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def _enqueue(self, count: int) -> dict[str, list[str]]:
        started = time.perf_counter()
        backend = tasks.add.get_backend()
        fast = [r.id for r in backend.enqueue_many(tasks.add, [((i, i), {}) for i in range(count)])]
        other = [
            *(tasks.slow_report.enqueue(0.5).id for _ in range(3)),
            *(tasks.flaky.enqueue(fail_times=1).id for _ in range(3)),
            *(tasks.failing.enqueue(invoice_id=i).id for i in range(2)),
            *(tasks.count_primes.enqueue(20_000).id for _ in range(4)),
        ]
        elapsed = time.perf_counter() - started
        self.stdout.write(
            f"enqueued {len(fast) + len(other)} tasks ({len(fast)} fast add, 3 slow, 3 flaky, "
            f"2 failing, 4 cpu-bound) in {elapsed:.2f}s"
        )
        return {"fast": fast, "other": other}

    def _watch(
        self,
        batch: dict[str, list[str]],
        timeout: float,
        worker: subprocess.Popen[bytes],
        log_path: Path,
    ) -> dict[str, Any]:
        total = len(batch["fast"]) + len(batch["other"])
        start = time.monotonic()
        tty = self.stdout.isatty()
        last_print = 0.0
        while True:
            counts = dict(
                RayTaskExecution.objects.values_list("state").annotate(n=Count("id")).order_by()
            )
            done = sum(n for state, n in counts.items() if state in FINAL)
            line = self._progress(done, total, counts, time.monotonic() - start)
            if tty:
                self.stdout.write(f"\r{line}", ending="")
            elif done == total or time.monotonic() - last_print >= 2.0:
                self.stdout.write(line)
                last_print = time.monotonic()
            if done >= total:
                break
            if worker.poll() is not None:
                raise CommandError(
                    f"the worker exited with {worker.returncode}; last log lines:\n"
                    + log_path.read_text(errors="replace")[-3000:]
                )
            if time.monotonic() - start > timeout:
                raise CommandError(f"not finished after {timeout}s: {counts}")
            time.sleep(0.25)
        if tty:
            self.stdout.write("")
        fast = RayTaskExecution.objects.filter(task_id__in=batch["fast"]).aggregate(
            first=Min("started_at"), last=Max("finished_at")
        )
        window = (fast["last"] - fast["first"]).total_seconds() if fast["first"] else 0.0
        return {
            "tasks": total,
            "states": counts,
            "fast_tasks": len(batch["fast"]),
            "fast_window_seconds": round(window, 3),
            "fast_tasks_per_second": round(len(batch["fast"]) / window, 1) if window else None,
            "wall_seconds": round(time.monotonic() - start, 2),
        }

    @staticmethod
    def _progress(done: int, total: int, counts: dict[str, int], elapsed: float) -> str:
        width = 30
        filled = int(width * done / total) if total else width
        bar = "#" * filled + "." * (width - filled)
        detail = " ".join(f"{state.lower()}={counts[state]}" for state in sorted(counts))
        return f"[{bar}] {done}/{total} finished  {detail}  {elapsed:5.1f}s"

    def _print_summary(self, summary: dict[str, Any]) -> None:
        self.stdout.write("\nsummary")
        self.stdout.write(f"  tasks:        {summary['tasks']}")
        for state, n in sorted(summary["states"].items()):
            self.stdout.write(f"  {state:<13} {n}")
        rate = summary["fast_tasks_per_second"]
        self.stdout.write(
            f"  throughput:   {summary['fast_tasks']} fast tasks in {summary['fast_window_seconds']}s"
            f" = {rate} tasks/s (first start to last finish)"
        )
        self.stdout.write(f"  wall time:    {summary['wall_seconds']}s (includes Ray start-up)")
