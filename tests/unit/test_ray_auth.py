"""How django-ray's own Ray clients find and present Ray's auth token."""

from __future__ import annotations

from pathlib import Path

import pytest

from django_ray.ray_auth import auth_headers, auth_token, present_token


@pytest.fixture
def token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "auth_token"
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path))
    return path


def test_the_token_comes_from_the_variable_before_the_file(
    token_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file.write_text("from-file\n")
    assert auth_token() == "from-file"
    monkeypatch.setenv("RAY_AUTH_TOKEN", " from-env ")
    assert auth_token() == "from-env"
    assert auth_headers() == {"Authorization": "Bearer from-env"}


def test_a_client_presents_the_token_only_when_one_exists(token_file: Path) -> None:
    env: dict[str, str] = {}
    present_token(env)
    assert env == {}  # no token file: nothing to present, Ray's default applies
    assert auth_headers() == {}
    token_file.write_text("secret")
    present_token(env)
    assert env == {"RAY_AUTH_MODE": "token"}


def test_an_explicit_auth_mode_is_left_alone(token_file: Path) -> None:
    token_file.write_text("secret")
    env = {"RAY_AUTH_MODE": "disabled"}
    present_token(env)
    assert env == {"RAY_AUTH_MODE": "disabled"}
