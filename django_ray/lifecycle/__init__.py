"""Every state change of a :class:`~django_ray.models.RayTaskExecution`, by actor.

========================  ===============================================================
module                    owns
========================  ===============================================================
:mod:`.rules`             the allowed-transition table, owned states, operator retries, and
                          the CANCELLING rule (each once; SQL fragments rendered from them)
``queries.sql``           every PostgreSQL statement, once, by name, with why it is shaped so
:mod:`.statements`        loads ``queries.sql``; runs a statement by name
:mod:`.insert`            a new QUEUED row (enqueue); :mod:`.unique` one with a dedupe key
:mod:`.claim`             QUEUED -> RUNNING for a batch of due rows (each worker its share)
:mod:`.record`            outcomes: plan (pure), sanitize, record a batch (split on bad rows)
:mod:`.sanitize`          outcome text and return values made storable
:mod:`.recover`           lease expiry, stuck detection, LOST -> QUEUED
:mod:`.operator`          cancel / requeue / manual moves, under the row lock
:mod:`.adopt`             Ray Job ids on rows, outcomes jobs recorded, adoption
:mod:`.leases`            worker leases and heartbeats
========================  ===============================================================

Batch transitions are single statements whose ``WHERE`` clauses are the guards: a row changes
only if it is still in the expected state, owned by the expected worker, at the expected
attempt. On databases without ``SKIP LOCKED`` (SQLite, for development) the same transitions
run through the ORM inside a transaction, which SQLite serialises.
"""

from django_ray.lifecycle.rules import ALLOWED, RETRYABLE_BY_OPERATOR, IllegalTransition

__all__ = ["ALLOWED", "RETRYABLE_BY_OPERATOR", "IllegalTransition"]
