"""Run inside a lab host as a systemd service: log through django_ray.journald's handler.

Only the standard library and the handler module (copied next to this file) are needed, so the
base image's Python suffices. make_handler() must pick journald because systemd started us.
"""

import logging
import sys

sys.path.insert(0, "/opt/django-ray")
from django_ray_journald import JournalHandler, make_handler

handler = make_handler()
print("handler:", type(handler).__name__, flush=True)
if not isinstance(handler, JournalHandler):
    sys.exit(3)
log = logging.getLogger("django_ray.worker")
log.addHandler(handler)
log.setLevel(logging.INFO)
log.propagate = False
extra = {
    "task_id": "7f3c2a9e-demo",
    "callable_path": "demo.tasks.failing",
    "queue": "default",
    "worker_id": "alpha-4242-a1b2c3",
    "state": "FAILED",
    "attempt": 3,
}
try:
    raise ValueError("invoice 1 has no customer")
except ValueError:
    log.exception(
        "failed permanently task_id=%s callable=%s queue=%s worker_id=%s attempt=3",
        "7f3c2a9e-demo",
        "demo.tasks.failing",
        "default",
        "alpha-4242-a1b2c3",
        extra=extra,
    )
log.info(
    "succeeded task_id=0b1d-demo",
    extra={
        **extra,
        "task_id": "0b1d-demo",
        "state": "SUCCEEDED",
        "callable_path": "demo.tasks.add",
    },
)
# Larger than any datagram: goes through a sealed memfd.
log.warning("big %s", "z" * (3 << 20), extra={**extra, "task_id": "big-demo", "state": "RUNNING"})
