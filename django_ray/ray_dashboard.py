"""The one client for the Ray dashboard's HTTP APIs: the Jobs API and the state API.

Everything in django-ray that speaks HTTP to Ray goes through :class:`RayDashboard`: the Ray
Job runner (submit, status, stop), the worker stopping the Ray Jobs of recovered rows, the Ray
Core runner's node table and dead-node task lookups, and ``django_ray_status``'s probe. One
place for the address rules, the auth token header (:mod:`django_ray.ray_auth`), timeouts and
the two kinds of failure:

* :class:`DashboardError`: the dashboard answered with an error status (``status`` holds it);
* :class:`DashboardUnreachable`: no answer (head down, network, timeout, garbage).

No Django imports and no Ray imports: worker processes of the Ray Job runner never load Ray.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

from django_ray.ray_auth import auth_headers

# A runner's calls; callers inside the worker loop pass shorter ones.
DEFAULT_TIMEOUT_SECONDS = 10.0


class DashboardAddressError(ValueError):
    """The address is not the dashboard's HTTP(S) address."""


class DashboardError(RuntimeError):
    """The dashboard answered with an error status."""

    def __init__(self, status: int, text: str) -> None:
        lines = [line for line in text.strip().splitlines() if line.strip()]
        super().__init__(f"HTTP {status}: {(lines[-1] if lines else '')[:500]}")
        self.status = status
        self.text = text


class DashboardUnreachable(RuntimeError):
    """The dashboard did not answer (head down, network, timeout) or answered garbage."""


def dashboard_url(address: str) -> str:
    """``address`` as a base URL (``http://`` added to a bare ``host:port``); raises
    :class:`DashboardAddressError` for any other scheme (a GCS or ``ray://`` address)."""
    if "://" not in address:
        address = f"http://{address}"
    if urllib.parse.urlparse(address).scheme not in ("http", "https"):
        raise DashboardAddressError(
            f"{address!r} is not the Ray dashboard's HTTP address (e.g. http://ray-head:8265)"
        )
    return address.rstrip("/")


class RayDashboard:
    """Calls to one Ray dashboard, with the cluster's auth token when there is one."""

    def __init__(self, address: str, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.base = dashboard_url(address)
        self.timeout = timeout
        self.headers = auth_headers()

    # -- transport --------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One call; the decoded JSON answer (None for an empty one)."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {**self.headers, "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                text = response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            raise DashboardError(exc.code, exc.read().decode(errors="replace")) from exc
        except (OSError, urllib.error.URLError) as exc:
            raise DashboardUnreachable(f"{type(exc).__name__}: {exc}") from exc
        try:
            return json.loads(text) if text.strip() else None
        except ValueError as exc:  # a proxy's HTML page, a half-started dashboard
            raise DashboardUnreachable(f"not JSON: {text[:200]!r}") from exc

    def version(self, timeout: float | None = None) -> Any:
        """``GET /api/version``: the cheapest call that proves the dashboard answers."""
        return self.request("GET", "/api/version", timeout=timeout)

    # -- Jobs API ---------------------------------------------------------------------------

    def submit(self, body: dict[str, Any]) -> None:
        """Submit a Ray Job; a retried submit of the same submission id is not an error."""
        try:
            self.request("POST", "/api/jobs/", body)
        except DashboardError as exc:
            if "already exists" in exc.text:
                return  # a retried submit of the same attempt: the job is there already
            raise

    def jobs(self) -> Any:
        """Every job the cluster knows (``GET /api/jobs/``)."""
        return self.request("GET", "/api/jobs/")

    def status(self, submission_id: str) -> dict[str, Any] | None:
        """The job's details, or None when Ray does not know the job."""
        try:
            return self.request("GET", f"/api/jobs/{urllib.parse.quote(submission_id)}")
        except DashboardError as exc:
            if exc.status == 404:
                return None
            raise

    def stop(self, submission_id: str) -> None:
        """Stop a job; an unknown job counts as stopped."""
        try:
            self.request("POST", f"/api/jobs/{urllib.parse.quote(submission_id)}/stop")
        except DashboardError as exc:
            if exc.status != 404:
                raise

    # -- state API --------------------------------------------------------------------------

    def list_state(
        self, resource: str, query: Sequence[tuple[str, object]], timeout: float
    ) -> list[dict[str, Any]]:
        """One listing of Ray's state API (``/api/v0/<resource>``); the server is asked to
        answer a second before ``timeout``.

        Not Ray's ``list_tasks()``/``list_nodes()``: those find their cluster from
        ``RAY_ADDRESS`` or by looking for local Ray instances, and so fail or ask another
        cluster on a host that runs several.
        """
        params = [*query, ("timeout", max(1, int(timeout) - 1))]
        answer = self.request(
            "GET", f"/api/v0/{resource}?{urllib.parse.urlencode(params)}", timeout=timeout
        )
        try:
            return list(answer["data"]["result"]["result"])
        except (KeyError, TypeError) as exc:
            raise DashboardUnreachable(f"unexpected state API answer: {str(answer)[:200]}") from exc
