"""Ray Core runner (``--local`` and ``--cluster``): tasks run as Ray remote functions.

Short tasks are sent in chunks: one Ray call runs several Django tasks of the same callable back
to back, so Ray's per-call overhead is paid once per chunk. The chunk size of a callable follows
its measured duration (aiming at about :data:`TARGET_CHUNK_SECONDS` per chunk, at most
``MAX_CHUNK_SIZE``). A callable not measured yet, a slow one, and any task with a timeout run
alone, so a long task never holds short ones behind it, and stopping it (cancel, timeout)
stops nothing else. ``concurrency`` is the number of Ray calls in flight.

I/O-bound callables. Each outcome carries its body's CPU time; a callable whose bodies use
less than :data:`IO_BOUND_CPU_SHARE` of their wall time on the CPU (sleeps, HTTP, database
waits) runs up to ``RAY_THREADS_PER_CALL`` bodies at once in threads of one call, and its
chunks hold that many times more tasks. The call still asks Ray for its CPUs as before and,
under the GIL, never uses more than one: CPU-bound tasks are not oversubscribed, and a
callable misjudged I/O-bound only interleaves. Per-task Ray options (``num_cpus``) still apply.
Bodies over :data:`IO_BOUND_MAX_SECONDS` keep running alone. So at most ``concurrency`` bodies
run at once, or ``concurrency * RAY_THREADS_PER_CALL`` for I/O-bound callables.

Dead nodes. When a node stops answering without closing its connections (a host that crashed
or lost power, a network partition), Ray's GCS marks it dead after its health checks fail, but
the owner of a task running there (this worker) is never told: the task's result RPC waits on
a TCP connection that no packet ends, and ``ray.wait`` never returns it. So while calls are in
flight the runner watches the cluster's node table (one state API call to the dashboard per
``WORKER_HEARTBEAT_SECONDS``; ``ray.nodes()`` only on a cluster without a dashboard). When a node it has not seen dead before is dead, it asks Ray's
state API which of its in-flight calls were placed on that node (and keeps asking for
:data:`DEAD_NODE_RECHECK_SECONDS`, since task events reach the state API with a delay); those
calls are cancelled and their tasks reported LOST (retry path). If the state API cannot be
reached (no dashboard), every call submitted before the death that is still unresolved after
:data:`DEAD_NODE_RECHECK_SECONDS` is reported LOST: completion of those attempts is unknown.

Per-task Ray options (``docs/resources.md``). A task's ``ray_options`` become the call's
``.options(...)``; a chunk only holds tasks of one callable with equal options. A call whose
request no alive node offers whole (read from the node table at submit) is still submitted, so
it runs as soon as such a node joins; if none has joined after ``UNSCHEDULABLE_TIMEOUT_SECONDS``
(checked against the node table again then), it is cancelled and its tasks end FAILED
(:data:`~django_ray.ray_options.UNSCHEDULABLE`, not retried) with the reason, instead of
pending in Ray. A runtime_env Ray cannot set up fails its tasks the same way.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django_ray import execution, ray_options
from django_ray.conf import ray_settings
from django_ray.outcomes import ClaimedTask, Outcome, OutcomeKind, lost, refused
from django_ray.ray_dashboard import DashboardError, DashboardUnreachable, RayDashboard
from django_ray.runners.base import (
    Capabilities,
    Finished,
    ProcessContext,
    Runner,
    RunnerUnavailable,
)
from django_ray.timeouts import timed_out

logger = logging.getLogger("django_ray.runner")

TARGET_CHUNK_SECONDS = 0.05
# Durations are smoothed so one slow call does not flip a callable's chunk size.
DURATION_SMOOTHING = 0.3
# A callable whose bodies spend less than this share of their wall time on their own CPU waits
# on I/O: RAY_THREADS_PER_CALL of them run at once in one call. A CPU-bound body on a busy
# machine still gets well over half its wall time, so contention does not make it look idle.
IO_BOUND_CPU_SHARE = 0.25
# Bodies shorter than this run back to back: a thread hand-off would cost more than it saves.
IO_BOUND_MIN_SECONDS = 0.002
# Longer bodies run alone, as long ones always have: stopping one task of a call stops the
# whole call, so its neighbours would run again (see RAY_CPUS_PER_CALL for those).
IO_BOUND_MAX_SECONDS = 1.0
# After a node death is seen: how long in-flight calls keep being matched against that node.
DEAD_NODE_RECHECK_SECONDS = 10.0
# ``ray.cancel`` can be lost when it races the call's dispatch to a Ray worker (the call was
# waiting for a lease and is being pushed just then), and the call then runs to the end. So a
# call that was told to stop and has not is told again this often until its result arrives.
CANCEL_RESEND_SECONDS = 1.0
# One state API listing (node table, tasks on a dead node); the server is asked to answer in
# a second less.
STATE_API_TIMEOUT_SECONDS = 4


def _lost_call_message(exc: Exception) -> str:
    """What an operator reads on each task of a call that returned no outcomes (recording cuts
    a long message, saying how much it cut).

    ``run_chunk`` turns every task body's exception into an outcome, so a ``RayTaskError``
    means django-ray's own call failed in the Ray worker, outside any task body: most often
    Django could not be set up on that node. Anything else is Ray losing the call's worker or node.
    """
    from ray.exceptions import RayTaskError

    if not isinstance(exc, RayTaskError):
        return f"Ray lost this task (its worker or node died): {exc}"
    cause = getattr(exc, "cause", None)
    if isinstance(cause, execution.DjangoSetupFailed):
        return f"The Ray worker could not run this task: {cause}"
    # Not a task body's error: django-ray's own code failed there (a bug, or a django-ray
    # version on that node that differs from the worker host's).
    return (
        "The Ray worker could not run this task: django-ray's call failed outside any task "
        f"body. Check that every Ray node has the worker host's django-ray version: {exc}"
    )


class _RayGone(Exception):
    """Ray itself (the local raylet, the cluster) went away while collecting a result."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class _Chunk:
    ref: Any
    tasks: list[ClaimedTask]
    submitted: float
    deadline: float | None
    cancel_requested: set[int] = field(default_factory=set)
    timed_out: bool = False
    # monotonic time of the last ray.cancel sent for this call; None while it should run.
    cancel_sent_at: float | None = None
    # Set while no alive node offers the call's Ray options: since when, and why.
    unschedulable_since: float | None = None
    unschedulable_reason: str = ""


class RayCoreRunner(Runner):
    """Runs chunks of tasks as Ray remote functions on a local or existing cluster."""

    name = "ray_core"
    capabilities = Capabilities(reconnect=True)

    def __init__(self, concurrency: int, address: str | None = None, local: bool = True) -> None:
        super().__init__(concurrency)
        self.address = address
        self.local = local
        self.context = ProcessContext.current()
        self._chunks: dict[Any, _Chunk] = {}
        # Guards _chunks and _node_lost against in_flight_ids() on the lease thread.
        self._lock = threading.RLock()
        # Mean duration per callable path; None until measured (such tasks run alone).
        self._durations: dict[str, float] = {}
        # Mean share of that duration its bodies spent on their own CPU, per callable path.
        self._cpu_shares: dict[str, float] = {}
        self._remote: Any = None
        self._dashboard_url: str | None = None
        self._ray: Any = None
        self._connected = False
        self._carry: Finished = []  # outcomes collected just before Ray went away
        # Node ids seen dead (checked once each); None until the node table was first read.
        self._dead_nodes: set[str] | None = None
        # Node id -> (monotonic time the death was seen, recheck until) for recent deaths.
        self._recent_deaths: dict[str, tuple[float, float]] = {}
        self._last_node_check = 0.0
        # Outcomes poll() reports next: calls found on dead nodes, unschedulable calls.
        self._node_lost: Finished = []

    # -- connection -------------------------------------------------------------------------

    def start(self) -> None:
        if not self.local:
            use_token_auth_if_available()  # before importing ray: it reads the mode at import
        import ray

        self._ray = ray
        conf = ray_settings()
        env_vars = {"PYTHONPATH": os.pathsep.join(self.context.sys_path)}
        if self.context.settings_module:
            env_vars["DJANGO_SETTINGS_MODULE"] = self.context.settings_module
        kwargs: dict[str, Any] = {
            "runtime_env": {"env_vars": env_vars},
            "log_to_driver": False,
            "configure_logging": False,
        }
        kwargs.update(conf.RAY_INIT_KWARGS)
        try:
            if self.local:
                # "local" starts a private cluster even when RAY_ADDRESS is set; no dashboard, so
                # several --local workers on one host never fight over port 8265.
                kwargs.setdefault("include_dashboard", False)
                if conf.RAY_NUM_CPUS:
                    kwargs.setdefault("num_cpus", conf.RAY_NUM_CPUS)
                if conf.RAY_CPUS_PER_CALL is not None and conf.RAY_CPUS_PER_CALL < 1:
                    # Keep one idle Ray worker process per slot: Ray's default keeps only
                    # num_cpus of them and kills the rest after a second idle, so with fractional
                    # CPUs per call processes would be restarted (Python, Ray and Django
                    # re-imported) over and over.
                    system_config = dict(kwargs.pop("_system_config", None) or {})
                    system_config.setdefault("num_workers_soft_limit", self.concurrency)
                    kwargs["_system_config"] = system_config
                context = ray.init(address="local", **kwargs)
            else:
                context = ray.init(address=self.address or "auto", **kwargs)
        except Exception as exc:
            raise RunnerUnavailable(
                f"Cannot {'start a local Ray' if self.local else 'connect to Ray at ' + str(self.address)}: "
                f"{type(exc).__name__}: {exc}. Check RAY_ADDRESS, that the head is up, and the "
                "Ray auth token (RAY_AUTH_TOKEN or ~/.ray/auth_token) matches the cluster's."
            ) from exc
        options: dict[str, Any] = {"max_retries": 0}
        if conf.RAY_CPUS_PER_CALL is not None:
            options["num_cpus"] = conf.RAY_CPUS_PER_CALL
        self._remote = ray.remote(**options)(execution.run_chunk)
        if self.local and conf.RAY_CPUS_PER_CALL is not None and conf.RAY_CPUS_PER_CALL < 1:
            self._prestart(ray, conf.RAY_CPUS_PER_CALL)
        self._connected = True
        dashboard = getattr(context, "dashboard_url", None)
        self._dashboard_url = (
            f"http://{dashboard}" if dashboard and "://" not in dashboard else dashboard
        )
        self._dead_nodes = None
        self._recent_deaths = {}
        self._read_dead_nodes()  # the baseline: nodes dead before we joined are not news

    def _prestart(self, ray: Any, cpus_per_call: float, rounds: int = 3) -> None:
        """Start one Ray worker process per slot, Django loaded, before the first claim.

        Ray starts worker processes lazily; without this the first busy seconds pay for
        starting them (Python, Ray and Django imported in each) while tasks wait.
        """
        warm = ray.remote(max_retries=0, num_cpus=cpus_per_call)(execution.warm_process)
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        wanted = max(1, min(self.concurrency, int(cpus / cpus_per_call)))
        pids: set[int] = set()
        started = time.monotonic()
        for _ in range(rounds):
            refs = [
                warm.remote(self.context.settings_module, self.context.sys_path, 0.5)
                for _ in range(wanted)
            ]
            try:
                pids.update(ray.get(refs, timeout=120))
            except Exception as exc:  # a slow start is not fatal: tasks start processes too
                logger.warning("could not prestart Ray worker processes: %s", exc)
                return
            if len(pids) >= wanted:
                break
        logger.info("%d Ray worker processes ready in %.1fs", len(pids), time.monotonic() - started)

    def jobs_api_address(self) -> str | None:
        """The dashboard of the cluster this worker joined (settings win when they name one)."""
        return super().jobs_api_address() or (None if self.local else self._dashboard_url)

    def close(self) -> None:
        if self._ray is not None and self._ray.is_initialized():
            self._ray.shutdown()
        self._connected = False

    # -- capacity and submission ------------------------------------------------------------

    def chunk_size(self, callable_path: str | None = None) -> int:
        """Tasks per Ray call: for one callable, or the largest over those measured."""
        if callable_path is None:
            return max((self.chunk_size(path) for path in self._durations), default=1)
        seconds = self._durations.get(callable_path)
        if seconds is None:
            return 1
        back_to_back = max(1, int(TARGET_CHUNK_SECONDS / max(seconds, 1e-6)))
        size = back_to_back * self.threads_per_call(callable_path)
        return max(1, min(ray_settings().MAX_CHUNK_SIZE, size))

    def threads_per_call(self, callable_path: str) -> int:
        """Bodies of ``callable_path`` one call runs at once: more than 1 once measured I/O-bound."""
        limit = ray_settings().RAY_THREADS_PER_CALL
        seconds = self._durations.get(callable_path)
        share = self._cpu_shares.get(callable_path)
        if limit <= 1 or seconds is None or share is None:
            return 1
        short = IO_BOUND_MIN_SECONDS <= seconds <= IO_BOUND_MAX_SECONDS
        return limit if short and share < IO_BOUND_CPU_SHARE else 1

    def free_slots(self) -> int:
        free_calls = self.concurrency - len(self._chunks)
        return max(0, free_calls) * self.chunk_size()

    def submit(self, tasks: list[ClaimedTask]) -> None:
        if not tasks:
            return
        free_calls = max(1, self.concurrency - len(self._chunks))
        groups: list[list[ClaimedTask]] = []
        # One chunk: one callable and equal Ray options (a call has one set of resources).
        by_callable: dict[tuple[str, str], list[ClaimedTask]] = {}
        for task in tasks:
            if task.timeout_seconds or self.chunk_size(task.callable_path) == 1:
                groups.append([task])
            else:
                key = (task.callable_path, ray_options.group_key(task.ray_options))
                by_callable.setdefault(key, []).append(task)
        for (path, _), same in by_callable.items():
            size = max(1, min(self.chunk_size(path), -(-len(same) // free_calls)))
            groups.extend(same[i : i + size] for i in range(0, len(same), size))
        now = time.monotonic()
        nodes: list[dict[str, float]] | None = None
        for group in groups:
            options = group[0].ray_options
            if options:
                ref = self._submit_with_options(group, options)
                if ref is None:
                    continue
            else:
                ref = self._remote.remote(
                    [t.payload() for t in group],
                    self.context.settings_module,
                    self.context.sys_path,
                    self.threads_per_call(group[0].callable_path),
                )
            timeout = group[0].timeout_seconds if len(group) == 1 else None
            chunk = _Chunk(ref, group, now, now + timeout if timeout else None)
            if options:
                nodes = self._alive_node_resources() if nodes is None else nodes
                self._mark_schedulable(chunk, nodes, now)
            with self._lock:
                self._chunks[ref] = chunk

    def _submit_with_options(self, group: list[ClaimedTask], options: dict[str, Any]) -> Any:
        """Submit a call with the tasks' Ray options; None when Ray refuses them (e.g. a
        runtime_env working_dir that does not exist): those tasks end FAILED, not retried."""
        try:
            return self._remote.options(**ray_options.core_options(options)).remote(
                [t.payload() for t in group],
                self.context.settings_module,
                self.context.sys_path,
                self.threads_per_call(group[0].callable_path),
            )
        except Exception as exc:  # Ray's own validation: any type; the worker must go on
            message = (
                f"Ray refused this task's options {ray_options.group_key(options)[:500]}: "
                f"{type(exc).__name__}: {exc}"[:3800]
                + " Fix the task's or its queue's Ray options (docs/resources.md)."
            )
            logger.warning(message, extra={"task_id": group[0].task_id})
            with self._lock:
                self._node_lost.extend((t, refused(t, ray_options.REFUSED, message)) for t in group)
            return None

    # -- unschedulable calls ----------------------------------------------------------------

    def _alive_node_resources(self) -> list[dict[str, float]] | None:
        """Total resources of each alive node; None when the node table cannot be read now."""
        try:
            if not self._dashboard_url:
                return [dict(n.get("Resources") or {}) for n in self._ray.nodes() if n.get("Alive")]
            listed = self._state_api("nodes", [("limit", 10_000), ("detail", "true")])
        except (DashboardError, DashboardUnreachable, OSError, ValueError, KeyError) as exc:
            logger.debug("cannot read Ray's node table now: %s", exc)
            return None
        return ray_options.alive_nodes(listed)

    def _mark_schedulable(
        self, chunk: _Chunk, nodes: list[dict[str, float]] | None, now: float
    ) -> None:
        """Start (or clear) the unschedulable wait of a call with Ray options."""
        if nodes is None:  # unknown now: judged at the next check
            return
        default_cpus = ray_settings().RAY_CPUS_PER_CALL
        need = ray_options.demand(
            chunk.tasks[0].ray_options, 1.0 if default_cpus is None else default_cpus
        )
        reason = ray_options.unschedulable_reason(need, nodes)
        if reason is None:
            chunk.unschedulable_since, chunk.unschedulable_reason = None, ""
            return
        if chunk.unschedulable_since is None:
            chunk.unschedulable_since = now
            logger.warning(
                "%s; waiting up to %ss for such a node",
                reason,
                ray_settings().UNSCHEDULABLE_TIMEOUT_SECONDS,
                extra={"task_id": chunk.tasks[0].task_id},
            )
        chunk.unschedulable_reason = reason

    def _unschedulable_deadline(self, chunk: _Chunk) -> float | None:
        if chunk.unschedulable_since is None:
            return None
        return chunk.unschedulable_since + float(ray_settings().UNSCHEDULABLE_TIMEOUT_SECONDS)

    def _fail_unschedulable(self) -> None:
        """Cancel the calls still unschedulable at their deadline; their tasks end FAILED."""
        now = time.monotonic()
        due = [
            c
            for c in self._chunks.values()
            if (deadline := self._unschedulable_deadline(c)) is not None and now >= deadline
        ]
        if not due:
            return
        nodes = self._alive_node_resources()
        for chunk in due:
            self._mark_schedulable(chunk, nodes, now)
            if chunk.unschedulable_since is None or nodes is None:
                continue  # a node that offers it joined (or the table is unreadable): keep it
            try:
                self._ray.cancel(chunk.ref, force=True)
            except Exception:  # it never started; nothing to stop
                logger.debug("cancel of an unschedulable call failed", exc_info=True)
            waited = now - chunk.unschedulable_since
            message = f"{chunk.unschedulable_reason} Waited {waited:.0f}s (UNSCHEDULABLE_TIMEOUT_SECONDS)."
            logger.warning(message, extra={"task_id": chunk.tasks[0].task_id})
            with self._lock:
                self._chunks.pop(chunk.ref, None)
                self._node_lost.extend(
                    (t, refused(t, ray_options.UNSCHEDULABLE, message)) for t in chunk.tasks
                )

    # -- outcomes ---------------------------------------------------------------------------

    def poll(self, timeout: float) -> Finished:
        if self._chunks:
            self._check_nodes()
            self._fail_unschedulable()
        if self._node_lost:
            with self._lock:
                finished, self._node_lost = self._node_lost, []
            return finished
        if not self._chunks:
            if timeout > 0:
                time.sleep(timeout)
            return []
        ray = self._ray
        self._enforce_deadlines()
        refs = list(self._chunks)
        wait_for = timeout
        deadlines = [c.deadline for c in self._chunks.values() if c.deadline and not c.timed_out]
        deadlines += [
            c.cancel_sent_at + CANCEL_RESEND_SECONDS
            for c in self._chunks.values()
            if c.cancel_sent_at is not None
        ]
        deadlines += [d for c in self._chunks.values() if (d := self._unschedulable_deadline(c))]
        if deadlines:
            wait_for = max(0.0, min(wait_for, min(deadlines) - time.monotonic()))
        ready, _ = ray.wait(refs, num_returns=1, timeout=wait_for)
        if ready:
            rest = [r for r in refs if r not in set(ready)]
            if rest:
                more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                ready.extend(more)
        finished: Finished = []
        for ref in ready:
            with self._lock:
                chunk = self._chunks.pop(ref)
            try:
                finished.extend(self._collect(chunk))
            except _RayGone as gone:
                # Ray itself went away: keep the chunk (lose_connection reports it LOST),
                # keep what was collected, and let the worker reconnect before claiming more.
                with self._lock:
                    self._chunks[ref] = chunk
                self._carry.extend(finished)
                raise gone.error from None
        return finished

    # -- dead nodes -------------------------------------------------------------------------

    def _dead_node_ids(self) -> set[str]:
        """Ids of the nodes the cluster lists dead.

        From the dashboard's state API when the cluster has one. ``ray.nodes()`` (the GCS, through
        Ray's global state accessor) is only the fallback: when the head restarts, the accessor
        meets the new GCS's cluster id and aborts the whole process (a Ray CHECK failure, seen in
        a stress run), whereas an HTTP call just fails and is tried again next heartbeat.
        """
        if not self._dashboard_url:
            return {n["NodeID"] for n in self._ray.nodes() if not n.get("Alive")}
        listed = self._state_api("nodes", [("limit", 10_000)])
        return {str(n["node_id"]) for n in listed if n.get("state") != "ALIVE"}

    def _read_dead_nodes(self) -> set[str] | None:
        """The dead node ids, or None when the node table cannot be read right now."""
        try:
            dead = self._dead_node_ids()
        except (DashboardError, DashboardUnreachable, OSError, ValueError, KeyError) as exc:
            # the dashboard restarting with the head
            logger.debug("cannot read Ray's node table now: %s", exc)
            return None
        if self._dead_nodes is None:
            self._dead_nodes = dead
        return dead

    def _check_nodes(self) -> None:
        """Report LOST the calls placed on nodes that died without telling us (module doc)."""
        now = time.monotonic()
        if now - self._last_node_check < float(ray_settings().WORKER_HEARTBEAT_SECONDS):
            return
        self._last_node_check = now
        dead = self._read_dead_nodes()  # a RaySystemError here means Ray itself is gone
        if dead is None or self._dead_nodes is None:
            return
        for node_id in dead - self._dead_nodes:
            logger.warning(
                "Ray node %s is dead; looking for in-flight tasks placed on it", node_id[:12]
            )
            self._recent_deaths[node_id] = (now, now + DEAD_NODE_RECHECK_SECONDS)
        self._dead_nodes |= dead
        for node_id, (seen, until) in list(self._recent_deaths.items()):
            try:
                on_node = self._task_ids_on_node(node_id)
            except Exception as exc:  # no dashboard / state API unreachable
                if now < until:
                    continue
                logger.warning(
                    "cannot ask Ray's state API which tasks ran on dead node %s (%s: %s); "
                    "every call submitted before its death and still unresolved is LOST",
                    node_id[:12],
                    type(exc).__name__,
                    exc,
                )
                suspects = [c for c in self._chunks.values() if c.submitted <= seen]
            else:
                # Derived here, on the rare dead-node path, not on every submit.
                suspects = [c for c in self._chunks.values() if c.ref.task_id().hex() in on_node]
            if now >= until:
                del self._recent_deaths[node_id]
            if suspects:
                # A call whose result already arrived is collected normally by poll().
                refs = [c.ref for c in suspects]
                ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=0)
                done = set(ready)
                for chunk in suspects:
                    if chunk.ref not in done:
                        self._lose_on_dead_node(chunk, node_id)

    def _task_ids_on_node(self, node_id: str) -> set[str]:
        """Ids of this driver's Ray tasks the state API places on ``node_id``."""
        job_id = self._ray.get_runtime_context().get_job_id()
        listed = self._state_api(
            "tasks",
            [
                ("limit", 10_000),
                ("filter_keys", "node_id"),
                ("filter_predicates", "="),
                ("filter_values", node_id),
                ("filter_keys", "job_id"),
                ("filter_predicates", "="),
                ("filter_values", job_id),
            ],
        )
        return {str(t["task_id"]) for t in listed}

    def _state_api(self, resource: str, query: list[tuple[str, object]]) -> list[dict[str, Any]]:
        """One listing of Ray's state API, from the dashboard of the cluster this worker joined."""
        if not self._dashboard_url:
            raise RuntimeError("the cluster has no dashboard, so no state API")
        # Short: the node check runs inside the worker loop, which waits for it.
        return RayDashboard(self._dashboard_url).list_state(
            resource, query, STATE_API_TIMEOUT_SECONDS
        )

    def _lose_on_dead_node(self, chunk: _Chunk, node_id: str) -> None:
        try:
            self._ray.cancel(chunk.ref, force=True)
        except Exception:  # the node is gone; nothing left to stop
            logger.debug("cancel of a call on a dead node failed", exc_info=True)
        if chunk.timed_out or chunk.cancel_requested:
            with self._lock:  # one step, so in_flight_ids() never misses these tasks
                self._chunks.pop(chunk.ref, None)
                self._node_lost.extend(self._stopped(chunk))
            return
        logger.warning(
            "%s task(s) ran on dead Ray node %s and will never report back: retry path",
            len(chunk.tasks),
            node_id[:12],
            extra={"task_id": chunk.tasks[0].task_id},
        )
        node_died = [
            (
                t,
                lost(
                    t,
                    (
                        f"Ray node {node_id} died while this attempt ran on it (found by the "
                        "worker's node check; Ray never returned the task); completion unknown."
                    ),
                    "ray.exceptions.NodeDiedError",
                ),
            )
            for t in chunk.tasks
        ]
        with self._lock:
            self._chunks.pop(chunk.ref, None)
            self._node_lost.extend(node_died)

    def _collect(self, chunk: _Chunk) -> Finished:
        ray = self._ray
        from ray import exceptions as rex

        try:
            outcomes: list[Outcome] = ray.get(chunk.ref)
        except rex.TaskCancelledError:
            return self._stopped(chunk)
        except (rex.LocalRayletDiedError, rex.RaySystemError) as exc:
            raise _RayGone(exc) from exc
        except rex.RuntimeEnvSetupError as exc:
            # The task's runtime_env (docs/resources.md) would fail the same way on a retry.
            message = (
                f"Ray could not set up this task's runtime_env: {exc}"[:3800]
                + " Fix the task's or its queue's runtime_env (docs/resources.md)."
            )
            return [
                (t, refused(t, "ray.exceptions.RuntimeEnvSetupError", message)) for t in chunk.tasks
            ]
        except Exception as exc:
            # WorkerCrashedError, RayTaskError, RayActorError, NodeDiedError, ...: completion is
            # unknown, so never drop the chunk's tasks.
            if chunk.timed_out or chunk.cancel_requested:
                return self._stopped(chunk)
            message = _lost_call_message(exc)
            class_path = f"{type(exc).__module__}.{type(exc).__qualname__}"
            return [(t, lost(t, message, class_path)) for t in chunk.tasks]
        by_id = {o.execution_id: o for o in outcomes}
        self._learn_durations(chunk.tasks, by_id)
        return [(t, by_id[t.id]) for t in chunk.tasks]

    def _learn_durations(self, tasks: list[ClaimedTask], by_id: dict[int, Outcome]) -> None:
        for task in tasks:
            outcome = by_id[task.id]
            seconds = outcome.duration_seconds
            if seconds is None:
                continue
            path = task.callable_path
            self._durations[path] = _smoothed(self._durations.get(path), seconds)
            if outcome.cpu_seconds is not None and seconds > 0:
                share = min(1.0, outcome.cpu_seconds / seconds)
                self._cpu_shares[path] = _smoothed(self._cpu_shares.get(path), share)

    def _stopped(self, chunk: _Chunk) -> Finished:
        finished: Finished = []
        for t in chunk.tasks:
            if chunk.timed_out:
                finished.append((t, timed_out(t)))
            elif t.id in chunk.cancel_requested:
                finished.append((t, Outcome(t.id, t.attempt_number, OutcomeKind.CANCELLED)))
            else:
                finished.append((t, Outcome(t.id, t.attempt_number, OutcomeKind.INTERRUPTED)))
        return finished

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for chunk in self._chunks.values():
            if chunk.deadline is not None and not chunk.timed_out and now >= chunk.deadline:
                chunk.timed_out = True
                logger.warning(
                    "task timed out after %ss; stopping it",
                    chunk.tasks[0].timeout_seconds,
                    extra={"task_id": chunk.tasks[0].task_id},
                )
                self._send_cancel(chunk, now)
            elif (
                chunk.cancel_sent_at is not None
                and now - chunk.cancel_sent_at >= CANCEL_RESEND_SECONDS
            ):
                logger.debug(
                    "Ray call still running %.1fs after ray.cancel; sending it again",
                    now - chunk.cancel_sent_at,
                    extra={"task_id": chunk.tasks[0].task_id},
                )
                self._send_cancel(chunk, now)

    def _send_cancel(self, chunk: _Chunk, now: float) -> None:
        chunk.cancel_sent_at = now
        try:
            self._ray.cancel(chunk.ref, force=True)
        except Exception:  # resent next cycle; the call's outcome arrives through poll() anyway
            logger.warning(
                "ray.cancel failed; retrying in %ss",
                CANCEL_RESEND_SECONDS,
                exc_info=True,
                extra={"task_id": chunk.tasks[0].task_id},
            )

    def stop(self, execution_ids: Iterable[int]) -> None:
        wanted = set(execution_ids)
        now = time.monotonic()
        for chunk in self._chunks.values():
            hit = wanted & {t.id for t in chunk.tasks}
            if not hit:
                continue
            chunk.cancel_requested |= hit
            if chunk.cancel_sent_at is None:
                self._send_cancel(chunk, now)

    def in_flight_ids(self) -> list[int]:
        with self._lock:
            ids = [t.id for chunk in self._chunks.values() for t in chunk.tasks]
            return ids + [t.id for t, _ in self._node_lost]

    def interrupt_all(self) -> Finished:
        with self._lock:
            finished: Finished = self._node_lost
            chunks = list(self._chunks.values())
            self._node_lost = []
            self._chunks.clear()
        for chunk in chunks:
            try:
                self._ray.cancel(chunk.ref, force=True)
            except Exception:  # Ray already gone: the attempts are interrupted either way.
                logger.debug("cancel at shutdown failed", exc_info=True)
            finished.extend(
                (t, Outcome(t.id, t.attempt_number, OutcomeKind.INTERRUPTED)) for t in chunk.tasks
            )
        return finished

    def lose_connection(self) -> Finished:
        """Everything in flight has unknown completion after Ray went away: report it LOST."""
        with self._lock:
            finished: Finished = self._carry + self._node_lost
            chunks = list(self._chunks.values())
            self._carry = []
            self._node_lost = []
            self._chunks.clear()
        finished += [
            (
                t,
                lost(
                    t,
                    "Lost the connection to Ray; completion of this attempt is unknown.",
                    "django_ray.RayConnectionLost",
                ),
            )
            for chunk in chunks
            for t in chunk.tasks
        ]
        self._connected = False
        return finished


def _smoothed(previous: float | None, value: float) -> float:
    if previous is None:
        return value
    return (1 - DURATION_SMOOTHING) * previous + DURATION_SMOOTHING * value


def use_token_auth_if_available() -> None:
    """Send Ray's auth token when one exists: heads start with token auth on by default, but a
    client only presents its token when ``RAY_AUTH_MODE=token`` is set in its environment."""
    from django_ray.ray_auth import present_token

    present_token(os.environ)
