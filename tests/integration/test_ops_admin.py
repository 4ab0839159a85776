"""The Django admin for executions and leases, driven through real HTTP requests."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from django_ray.admin import actions as admin_actions
from django_ray.models import RayTaskExecution, TaskAttempt, TaskState
from tests import tasks

pytestmark = pytest.mark.django_db(transaction=True)
CHANGELIST = "/admin/django_ray/raytaskexecution/"


@pytest.fixture
def seeded(start_worker):  # type: ignore[no-untyped-def]
    """Two FAILED rows (real failures through a worker), one SUCCEEDED, two QUEUED."""
    tasks.fail_permanent.enqueue()
    tasks.fail_always.using(queue_name="other").enqueue("kaput")
    tasks.add.enqueue(1, 2)
    worker = start_worker("--sync", "--idle-exit", "1", "--all-queues")
    assert worker.wait(120) == 0, worker.log()
    tasks.noop.enqueue()
    tasks.noop.enqueue()
    return {
        state: list(RayTaskExecution.objects.filter(state=state).order_by("id"))
        for state in (TaskState.FAILED, TaskState.SUCCEEDED, TaskState.QUEUED)
    }


def _client(*perms: str, superuser: bool = False) -> Client:
    if superuser:
        user = User.objects.create_superuser("root", "root@example.com", "pw")
    else:
        user = User.objects.create_user("oncall", "oncall@example.com", "pw", is_staff=True)
        for codename in perms:
            user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


def _act(client: Client, action: str, rows: list[RayTaskExecution]):  # type: ignore[no-untyped-def]
    return client.post(
        CHANGELIST,
        {"action": action, "_selected_action": [r.pk for r in rows], "index": 0},
        follow=True,
    )


def _messages(response) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(m) for m in response.context["messages"]]


def test_retry_moves_only_retryable_rows_and_keeps_history(seeded) -> None:  # type: ignore[no-untyped-def]
    failed = seeded[TaskState.FAILED]
    attempts_before = TaskAttempt.objects.filter(execution__in=failed).count()
    assert attempts_before >= 2
    client = _client(superuser=True)
    response = _act(client, "retry_selected", failed + seeded[TaskState.SUCCEEDED])
    assert response.status_code == 200
    text = " ".join(_messages(response))
    assert "Requeued 2 task(s)." in text and "Skipped 1" in text
    for row in failed:
        row.refresh_from_db()
        assert row.state == TaskState.QUEUED
        assert row.claimed_by_worker is None
    assert TaskAttempt.objects.filter(execution__in=failed).count() == attempts_before
    seeded[TaskState.SUCCEEDED][0].refresh_from_db()
    assert seeded[TaskState.SUCCEEDED][0].state == TaskState.SUCCEEDED


def test_actions_need_their_permission(seeded) -> None:  # type: ignore[no-untyped-def]
    failed = seeded[TaskState.FAILED]
    viewer = _client("view_raytaskexecution")
    page = viewer.get(CHANGELIST)
    assert page.status_code == 200
    assert b"retry_selected" not in page.content and b"cancel_selected" not in page.content
    _act(viewer, "retry_selected", failed)
    assert set(
        RayTaskExecution.objects.filter(pk__in=[r.pk for r in failed]).values_list(
            "state", flat=True
        )
    ) == {TaskState.FAILED}

    User.objects.filter(username="oncall").delete()
    retrier = _client("view_raytaskexecution", "retry_raytaskexecution")
    page = retrier.get(CHANGELIST)
    assert b"retry_selected" in page.content and b"cancel_selected" not in page.content
    _act(retrier, "retry_selected", failed)
    assert (
        RayTaskExecution.objects.filter(
            pk__in=[r.pk for r in failed], state=TaskState.QUEUED
        ).count()
        == 2
    )


def test_actions_are_bounded(seeded, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(admin_actions, "ADMIN_ACTION_MAX_ROWS", 1)
    client = _client(superuser=True)
    response = _act(client, "retry_selected", seeded[TaskState.FAILED])
    assert "acts on at most 1 at once" in " ".join(_messages(response))
    assert RayTaskExecution.objects.filter(state=TaskState.FAILED).count() == 2


def test_cancel_queued_and_refuse_finished(seeded) -> None:  # type: ignore[no-untyped-def]
    client = _client(superuser=True)
    queued = seeded[TaskState.QUEUED]
    response = _act(client, "cancel_selected", queued + seeded[TaskState.SUCCEEDED])
    text = " ".join(_messages(response))
    assert "2 now CANCELLED" in text
    assert "Not cancellable (1)" in text and "SUCCEEDED" in text
    assert RayTaskExecution.objects.filter(state=TaskState.CANCELLED).count() == 2


def test_filters_and_readable_traceback(seeded) -> None:  # type: ignore[no-untyped-def]
    client = _client(superuser=True)
    failed = seeded[TaskState.FAILED]
    checks = [
        ("state=FAILED", 2),
        ("queue=other", 1),
        ("callable_path=tests.tasks.fail_permanent", 1),
    ]
    worker = RayTaskExecution.objects.exclude(claimed_by_worker=None).first()
    if worker is not None:
        owner = worker.claimed_by_worker
        checks.append(
            (f"worker={owner}", RayTaskExecution.objects.filter(claimed_by_worker=owner).count())
        )
    for query, expected in checks:
        page = client.get(f"{CHANGELIST}?{query}")
        assert page.status_code == 200, query
        assert page.context["cl"].result_count == expected, query
    listing = client.get(f"{CHANGELIST}?state=FAILED").content.decode()
    assert "PermanentError: do not retry me" in listing  # the error column, class named once
    assert "PermanentError: PermanentError" not in listing
    page = client.get(f"{CHANGELIST}{failed[0].pk}/change/")
    assert page.status_code == 200
    body = page.content.decode()
    assert "<pre" in body and "Traceback (most recent call last)" in body
    assert "PermanentError" in body
    # Timestamps keep their seconds; the error comes before the timing section.
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC", body)
    assert body.index("Traceback (most recent call last)") < body.index("Timing (UTC)")
    leases = client.get("/admin/django_ray/taskworkerlease/")
    assert leases.status_code == 200 and b"stopped" in leases.content  # a clean --idle-exit
    attempts = client.get("/admin/django_ray/taskattempt/?state=FAILED")
    assert attempts.status_code == 200


def test_nothing_can_be_deleted_through_the_admin(seeded) -> None:  # type: ignore[no-untyped-def]
    from django_ray.models import TaskWorkerLease

    client = _client(superuser=True)
    failed = seeded[TaskState.FAILED][0]
    lease = TaskWorkerLease.objects.first()
    attempt = TaskAttempt.objects.first()
    assert lease is not None and attempt is not None
    pages = {
        f"{CHANGELIST}{failed.pk}/delete/": (RayTaskExecution, failed.pk),
        f"/admin/django_ray/taskworkerlease/{lease.pk}/delete/": (TaskWorkerLease, lease.pk),
        f"/admin/django_ray/taskattempt/{attempt.pk}/delete/": (TaskAttempt, attempt.pk),
    }
    for url, (model, pk) in pages.items():
        assert client.post(url, {"post": "yes"}).status_code == 403, url
        assert model.objects.filter(pk=pk).exists()
    bulk = client.post(
        CHANGELIST,
        {"action": "delete_selected", "_selected_action": [failed.pk], "post": "yes"},
        follow=True,
    )
    assert bulk.status_code == 200
    assert RayTaskExecution.objects.filter(pk=failed.pk).exists()
    assert "delete_selected" not in client.get(CHANGELIST).content.decode()


def test_detail_actions_check_method_and_permission_and_leave_history(seeded) -> None:  # type: ignore[no-untyped-def]
    from django.contrib.admin.models import LogEntry

    failed, queued = seeded[TaskState.FAILED][0], seeded[TaskState.QUEUED]
    retry_url = f"{CHANGELIST}{failed.pk}/retry/"
    viewer = _client("view_raytaskexecution")
    assert b"django-ray-retry" not in viewer.get(f"{CHANGELIST}{failed.pk}/change/").content
    assert viewer.post(retry_url).status_code == 403
    assert viewer.post(f"{CHANGELIST}{queued[0].pk}/cancel/").status_code == 403
    failed.refresh_from_db()
    assert failed.state == TaskState.FAILED and not LogEntry.objects.exists()

    root = _client(superuser=True)
    assert b"django-ray-retry" in root.get(f"{CHANGELIST}{failed.pk}/change/").content
    assert root.get(retry_url).status_code == 405  # a GET never changes a row
    assert root.post(retry_url).status_code == 302
    failed.refresh_from_db()
    assert failed.state == TaskState.QUEUED
    # A bulk action records one entry per row it moved, naming the task id.
    response = _act(root, "cancel_selected", [*queued, seeded[TaskState.SUCCEEDED][0]])
    assert "2 now CANCELLED" in " ".join(_messages(response))
    messages = sorted(LogEntry.objects.values_list("object_id", "change_message"))
    assert messages == sorted(
        [(str(failed.pk), f"Retry: task {failed.task_id} FAILED -> QUEUED (django-ray admin)")]
        + [
            (str(r.pk), f"Cancel: task {r.task_id} QUEUED -> CANCELLED (django-ray admin)")
            for r in queued
        ]
    )
    assert root.get(f"{CHANGELIST}{failed.pk}/value/secret/").status_code == 404
    assert root.get(f"{CHANGELIST}{failed.pk}/value/args/").content == b"[]"
    assert root.post(f"{CHANGELIST}999999/retry/").status_code == 404
