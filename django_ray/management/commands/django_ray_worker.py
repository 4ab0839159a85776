"""``manage.py django_ray_worker``: claim and run tasks on Ray (see ``docs/worker.md``)."""

from __future__ import annotations

import logging
import sys
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.tasks import task_backends

from django_ray import sdnotify
from django_ray.backends import RayTaskBackend
from django_ray.conf import ray_settings
from django_ray.logs import configure_worker_logging
from django_ray.runners.base import Runner
from django_ray.worker.shutdown import EXIT_CONFIG


class Command(BaseCommand):
    help = (
        "Run a django-ray worker: claim due tasks from the database and execute them on Ray "
        "(Ray Jobs by default; --local starts an embedded Ray, --cluster joins one; --sync runs "
        "tasks in this process)."
    )
    requires_system_checks = "__all__"

    def add_arguments(self, parser: CommandParser) -> None:
        queues = parser.add_mutually_exclusive_group()
        queues.add_argument("--queue", help="Queue to poll (default: 'default').")
        queues.add_argument("--queues", help="Comma-separated queues to poll.")
        queues.add_argument("--all-queues", action="store_true", help="Poll every queue.")
        parser.add_argument(
            "--concurrency",
            type=int,
            default=None,
            help=(
                "Tasks running at once (default: DJANGO_RAY['DEFAULT_CONCURRENCY']); in Ray "
                "Core mode, Ray calls in flight, each running up to RAY_THREADS_PER_CALL "
                "bodies of an I/O-bound callable."
            ),
        )
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--local", action="store_true", help="Start an embedded Ray (Ray Core).")
        mode.add_argument(
            "--cluster",
            nargs="?",
            const="",
            metavar="ADDRESS",
            help="Join an existing Ray cluster (Ray Core); default address: RAY_ADDRESS.",
        )
        mode.add_argument("--sync", action="store_true", help="Run tasks in this process (no Ray).")
        parser.add_argument("--backend", default="default", help="TASKS alias (default: default).")
        parser.add_argument("--worker-id", help="Worker id (default: host-pid-random).")
        parser.add_argument(
            "--max-tasks", type=int, help="Exit after this many tasks finished (for tests, batch)."
        )
        parser.add_argument(
            "--idle-exit", type=float, help="Exit after this many seconds with nothing to do."
        )

    def execute(self, *args: Any, **options: Any) -> str | None:
        """Run the command; a configuration that can never work exits with ``EXIT_CONFIG``.

        Every ``CommandError`` of this command (failed system checks included) is such a
        refusal: restarting cannot fix it, so the unit's ``RestartPreventExitStatus=78`` stops
        there and ``systemctl status`` shows the reason (``STATUS=`` and the journal).
        """
        try:
            return super().execute(*args, **options)
        except (CommandError, ImproperlyConfigured) as exc:
            if isinstance(exc, CommandError):
                exc.returncode = EXIT_CONFIG
                error = exc
            else:
                error = CommandError(str(exc), returncode=EXIT_CONFIG)
            reason = str(error).strip().splitlines()
            sdnotify.status(f"configuration error, not restarting: {' '.join(reason)[:400]}")
            if error is exc:
                raise
            raise error from exc

    def handle(self, *args: Any, **options: Any) -> None:
        from django_ray.worker.loop import Worker

        configure_worker_logging(int(options.get("verbosity", 1)))
        backend = task_backends[options["backend"]]
        if not isinstance(backend, RayTaskBackend):
            raise CommandError(
                f"TASKS[{options['backend']!r}] uses {type(backend).__name__}, not "
                "django_ray.backends.RayTaskBackend; nothing for this worker to run."
            )
        queues = self._queues(options, backend)
        conf = ray_settings()
        concurrency = options["concurrency"]
        if concurrency is None:
            concurrency = conf.DEFAULT_CONCURRENCY
        if concurrency < 1:
            raise CommandError(f"--concurrency must be at least 1, not {concurrency}.")
        runner = self._runner(options, concurrency)
        worker = Worker(
            runner,
            queues,
            using=backend.database,
            worker_id=options.get("worker_id"),
            max_tasks=options.get("max_tasks"),
            idle_exit=options.get("idle_exit"),
        )
        code = worker.run()
        logging.shutdown()
        if code:
            sys.exit(code)

    def _queues(self, options: dict[str, Any], backend: RayTaskBackend) -> list[str] | None:
        if options["all_queues"]:
            return None
        if options["queues"]:
            queues = [q.strip() for q in options["queues"].split(",") if q.strip()]
        else:
            queues = [options["queue"] or "default"]
        unknown = [q for q in queues if backend.queues and q not in backend.queues]
        if unknown:
            raise CommandError(
                f"Queue(s) {', '.join(unknown)} are not in TASKS[{backend.alias!r}]['QUEUES'] "
                f"({', '.join(sorted(backend.queues))}); tasks can never be enqueued there. "
                "Add them to QUEUES or fix --queue/--queues."
            )
        return queues

    def _runner(self, options: dict[str, Any], concurrency: int) -> Runner:
        conf = ray_settings()
        if options["sync"]:
            from django_ray.runners.sync import SyncRunner

            return SyncRunner(concurrency)
        if options["local"]:
            from django_ray.runners.ray_core import RayCoreRunner

            return RayCoreRunner(concurrency, local=True)
        if options["cluster"] is not None:
            from django_ray.runners.ray_core import RayCoreRunner

            address = options["cluster"] or conf.ray_address
            if not address:
                raise CommandError(
                    "--cluster needs an address: pass --cluster ray://host:10001 or "
                    "host:6379, or set RAY_ADDRESS / DJANGO_RAY['RAY_ADDRESS']."
                )
            return RayCoreRunner(concurrency, address=address, local=False)
        runner = conf.RUNNER
        if runner == "sync":
            from django_ray.runners.sync import SyncRunner

            return SyncRunner(concurrency)
        if runner == "ray_core":
            from django_ray.runners.ray_core import RayCoreRunner

            return RayCoreRunner(concurrency, address=conf.ray_address, local=not conf.ray_address)
        from django_ray.runners.ray_job import RayJobRunner

        if not conf.ray_address:
            raise CommandError(
                "The default runner (Ray Jobs) needs the cluster's address: set RAY_ADDRESS "
                "or DJANGO_RAY['RAY_ADDRESS'] (e.g. http://ray-head:8265), or pass --local / "
                "--cluster / --sync."
            )
        return RayJobRunner(concurrency, address=conf.ray_address)
