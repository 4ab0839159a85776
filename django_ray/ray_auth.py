"""Ray's auth token for the clients django-ray writes itself (Jobs API, state API, tests).

Ray heads start with token authentication on by default; a client must present the token. No
Django imports here: the test and benchmark helpers use it before Django is set up.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping


def auth_token() -> str | None:
    """Ray's auth token, the way Ray's clients find it: ``RAY_AUTH_TOKEN``, else the file at
    ``RAY_AUTH_TOKEN_PATH`` (default ``~/.ray/auth_token``); None when there is none."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    if os.path.exists(path):
        with open(path) as fh:
            return fh.read().strip() or None
    return None


def auth_headers() -> dict[str, str]:
    """The bearer token header for Ray's HTTP APIs (Jobs, state), when a token exists."""
    token = auth_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def present_token(env: MutableMapping[str, str]) -> None:
    """Make a Ray client started with ``env`` present the token: heads start with token auth on
    by default, but a client (driver, ``ray start`` of a node, a GCS client) only sends its
    token when ``RAY_AUTH_MODE=token`` is set. An explicit ``RAY_AUTH_MODE`` is left alone."""
    if not env.get("RAY_AUTH_MODE") and auth_token():
        env["RAY_AUTH_MODE"] = "token"
