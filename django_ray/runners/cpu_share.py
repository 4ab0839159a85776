"""How much of its wall time each callable spends on a CPU, learned from its outcomes.

Every Ray call asks for one CPU by default, so a node runs as many calls at once as it has CPUs:
right for CPU-bound tasks (more would only share the cores) and for tiny ones (chunks keep the
processes busy), but tasks that mostly wait (an HTTP call, a query, a sleep) then queue in Ray
instead of overlapping. The Ray Core runner therefore measures each callable's CPU time against
its wall time and gives the calls of a callable that waits more than it computes a fraction of
a CPU, enough for every slot of the worker to run at once. Callables not measured yet, CPU-bound
ones, tasks with their own Ray resources and an explicit ``RAY_CPUS_PER_CALL`` keep what they
had (``docs/performance.md``, "I/O-bound tasks").
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Below this share of its wall time on a CPU, a callable waits more than it computes.
IO_BOUND_SHARE = 0.5
#: Runs shorter than this are not judged: their shares are timer noise (and they are chunked).
MIN_WALL_SECONDS = 0.002
#: Runs of a callable seen before it is judged.
MIN_SAMPLES = 3
#: Weight of the newest run in the running mean (the same smoothing as the durations).
SMOOTHING = 0.3
#: Smallest fraction of a CPU a call asks for (Ray's resolution is 0.0001; this keeps the
#: number of simultaneous calls per CPU bounded even on a worker with a huge concurrency).
MIN_CPUS = 0.05


@dataclass
class CpuShares:
    """Running mean of CPU time / wall time per callable path."""

    shares: dict[str, float] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)

    def learn(self, path: str, wall_seconds: float | None, cpu_seconds: float | None) -> None:
        """Count one finished run of ``path`` (runs without both times, or too short, are not)."""
        if wall_seconds is None or cpu_seconds is None or wall_seconds < MIN_WALL_SECONDS:
            return
        share = min(1.0, max(0.0, cpu_seconds / wall_seconds))
        previous = self.shares.get(path)
        self.shares[path] = (
            share if previous is None else (1 - SMOOTHING) * previous + SMOOTHING * share
        )
        self.samples[path] = self.samples.get(path, 0) + 1

    def share(self, path: str) -> float | None:
        """The callable's CPU share, None until it ran :data:`MIN_SAMPLES` judged times."""
        if self.samples.get(path, 0) < MIN_SAMPLES:
            return None
        return self.shares[path]

    def cpus_per_call(self, path: str, cluster_cpus: float, concurrency: int) -> float | None:
        """CPUs a call of ``path`` asks for; None: Ray's default of one.

        An I/O-bound callable gets the cluster's CPUs divided among the worker's slots (so all
        of them can run at once), but never less than twice its measured share, so a callable
        that does compute between its waits cannot oversubscribe the cores by much.
        """
        share = self.share(path)
        if share is None or share >= IO_BOUND_SHARE or concurrency < 1:
            return None
        per_slot = cluster_cpus / concurrency
        if per_slot >= 1:  # every slot already gets a whole CPU
            return None
        return round(max(MIN_CPUS, per_slot, 2 * share), 2)
