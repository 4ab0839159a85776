"""The operator console in a real browser: what on-call sees of stuck, failing, retried,
scheduled and cancelled tasks, the Retry / Cancel actions and their admin history.

The rows come from real ``django_ray_worker`` processes (``--sync``) on the test PostgreSQL: a
clean worker runs failing and succeeding tasks and exits; a second one is ``kill -9``'d while its
task runs, leaving a RUNNING row whose lease expires. The rest is driven through the admin.
"""

from __future__ import annotations

import re
import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.utils import timezone

from django_ray.admin.display import pretty_json
from django_ray.models import RayTaskExecution, TaskState, TaskWorkerLease
from django_ray.status import collect_status
from tests import tasks

pytestmark = pytest.mark.django_db(transaction=True)
ADMIN = "/admin/django_ray/"
CHANGELIST = f"{ADMIN}raytaskexecution/"
ISO_SECONDS = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC")


def _wait(condition: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Console:
    """The admin as the browser shows it."""

    def __init__(self, driver: Any, base: str, shots: Path) -> None:
        self.driver, self.base, self.shots = driver, base, shots

    def open(self, path: str) -> str:
        self.driver.get(self.base + path)
        return self.text()

    def text(self) -> str:
        return self.driver.find_element("tag name", "body").text

    def css(self, selector: str) -> list[Any]:
        return self.driver.find_elements("css selector", selector)

    def click(self, selector: str) -> str:
        """Click ``selector`` and return the text of the page it leads to (once it loaded)."""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.wait import WebDriverWait

        # A marker on the old page's window: gone once the next page loaded. (Waiting for the
        # old <html> element to go stale races the navigation: mid-load, Chrome answers
        # "Node with given id does not belong to the document" instead of "stale".)
        self.driver.execute_script("window.djangoRayOldPage = true")
        self.css(selector)[0].click()
        loaded = (
            "return window.djangoRayOldPage === undefined && document.readyState === 'complete'"
        )
        WebDriverWait(self.driver, 30, ignored_exceptions=(WebDriverException,)).until(
            lambda driver: driver.execute_script(loaded)
        )
        return self.text()

    def assert_fits(self) -> None:
        """The page and its result list fit the 1400 px window: no sideways scrolling."""
        fits = "var r = document.querySelector('.results'); return [r.scrollWidth, r.clientWidth]"
        scroll, visible = self.driver.execute_script(fits)
        assert scroll <= visible, f"the list scrolls sideways ({scroll} > {visible} px)"
        assert self.driver.execute_script("return document.documentElement.scrollWidth") <= 1400

    def shot(self, name: str) -> None:
        path = self.shots / f"{name}.png"
        assert self.driver.get_screenshot_as_file(str(path)), path

    def login(self, username: str, password: str) -> None:
        page = self.open("/admin/login/?next=/admin/")
        assert self.css("#id_username"), (
            f"no login form at {self.base}/admin/login/:\n{page[:2000]}"
        )
        self.driver.find_element("id", "id_username").send_keys(username)
        self.driver.find_element("id", "id_password").send_keys(password)
        self.click("input[type=submit]")
        assert "Log out" in self.text() or "LOG OUT" in self.text().upper()

    def row_of(self, task_id: str) -> str:
        """The changelist row of ``task_id`` as text (found by its id's hover title)."""
        for row in self.css("#result_list tbody tr"):
            if row.find_elements("css selector", f'span[title="{task_id}"]'):
                return row.text
        raise AssertionError(f"task {task_id} not in the changelist:\n{self.text()[:3000]}")


@pytest.fixture
def incident(start_worker) -> dict[str, RayTaskExecution]:  # type: ignore[no-untyped-def]
    """Every case on-call meets, made by real workers: failed (no retry), failed after three
    attempts, succeeded with a large result, stuck (owner killed), due and scheduled."""
    failed = tasks.fail_permanent.enqueue()
    exhausted = tasks.fail_always.using(queue_name="other").enqueue("kaput")
    big = tasks.echo.enqueue(blob="x" * 5000)
    clean = start_worker("--sync", "--idle-exit", "1", "--all-queues")
    assert clean.wait(120) == 0, clean.log()

    stuck = tasks.sleep_for.using(queue_name="slow").enqueue(600)
    killed = start_worker("--sync", "--queue", "slow")
    _wait(
        lambda: RayTaskExecution.objects.filter(task_id=stuck.id, state=TaskState.RUNNING).exists(),
        "the slow task to run",
    )
    killed.signal(signal.SIGKILL)  # no lease release, no outcome: a crash
    killed.wait(30)
    due = tasks.noop.enqueue()
    scheduled = tasks.noop.using(run_after=timezone.now() + timedelta(hours=2)).enqueue()
    rows = {
        name: RayTaskExecution.objects.get(task_id=result.id)
        for name, result in {
            "failed": failed,
            "exhausted": exhausted,
            "big": big,
            "stuck": stuck,
            "due": due,
            "scheduled": scheduled,
        }.items()
    }
    # The killed worker's lease expires (WORKER_LEASE_SECONDS=5 in tests.settings) and its row's
    # heartbeat grows older than STUCK_TASK_TIMEOUT_SECONDS: the row is orphaned.
    stuck_seconds = 3.0
    _wait(
        lambda: (
            RayTaskExecution.objects.orphaned(stuck_seconds).filter(pk=rows["stuck"].pk).exists()
        ),
        "the killed worker's row to be orphaned",
        timeout=30,
    )
    return rows


def test_operator_sees_what_is_wrong_and_acts(incident, browser, screenshots, live_server) -> None:  # type: ignore[no-untyped-def]
    User.objects.create_superuser("oncall", "oncall@example.com", "pw")
    ui = Console(browser, live_server.url, screenshots)
    ui.login("oncall", "pw")
    rows = incident

    # -- changelist: states, attempts, ages and owner health at a glance ---------------------
    page = ui.open(CHANGELIST)
    ui.shot("01-changelist")
    ui.assert_fits()
    failed = ui.row_of(rows["failed"].task_id)
    assert "FAILED" in failed and "PermanentError: do not retry me" in failed and "1/3" in failed
    assert "3/3" in ui.row_of(rows["exhausted"].task_id)
    stuck = ui.row_of(rows["stuck"].task_id)
    assert "RUNNING" in stuck and "running for" in stuck and "owner lease dead" in stuck
    assert "queued for" in ui.row_of(rows["due"].task_id)
    assert "scheduled, due in 1h59m" in ui.row_of(rows["scheduled"].task_id)
    assert rows["failed"].task_id not in page  # only the short id is shown, the rest on hover
    badges = {b.get_attribute("data-state") for b in ui.css("span.django-ray-badge")}
    assert {"FAILED", "RUNNING", "QUEUED", "SUCCEEDED"} <= badges

    # -- filters: orphaned, owner dead, stale heartbeat, due vs scheduled; counts once ------
    expectations = {
        "owner=orphaned": {rows["stuck"].task_id},
        "owner=dead": {rows["stuck"].task_id},
        "heartbeat=stale": {rows["stuck"].task_id},
        "queued=due": {rows["due"].task_id},
        "queued=scheduled": {rows["scheduled"].task_id},
    }
    for query, expected in expectations.items():
        ui.open(f"{CHANGELIST}?{query}")
        shown = {s.get_attribute("title") for s in ui.css("#result_list .field-short_id span")}
        assert shown == expected, f"{query}:\n{ui.text()[:3000]}"
    ui.open(f"{CHANGELIST}?_facets=1")
    ui.shot("02-changelist-counts")
    filters = ui.css("#changelist-filter")[0].text
    assert not re.search(r"\((\d+)\)\s*\(\1\)", filters), filters
    assert "other (1)" in filters and "orphaned (recovery takes over) (1)" in filters

    # -- leases: the killed worker expired (crashed), the clean one stopped; links to tasks --
    ui.open(f"{ADMIN}taskworkerlease/")
    ui.shot("03-leases")
    ui.assert_fits()
    endings = {e.get_attribute("data-ending") for e in ui.css("span.django-ray-lease")}
    assert endings == {"expired", "stopped"}
    killed_lease = TaskWorkerLease.objects.get(worker_id=rows["stuck"].claimed_by_worker)
    for row in ui.css("#result_list tbody tr"):
        if killed_lease.worker_id in row.text:
            assert "expired (crashed)" in row.text
            ui.click(f'a[href$="worker={killed_lease.worker_id}"]')
            break
    else:
        raise AssertionError("the killed worker's lease is not listed")
    assert {s.get_attribute("title") for s in ui.css("#result_list .field-short_id span")} == {
        rows["stuck"].task_id
    }

    # -- overview, reached from the app index: the numbers django_ray_status gives ----------
    ui.open(ADMIN)
    ui.click("#django-ray-overview-app-link a")
    ui.shot("04-overview")
    status = collect_status(probe=False)
    for state, n in status["states"].items():
        assert ui.css(f'#django-ray-states td[data-state="{state}"]')[0].text == str(n), state
    assert ui.css("#django-ray-orphaned")[0].text == "1"
    queues = {r.get_attribute("data-queue"): r.text for r in ui.css("#django-ray-queues tbody tr")}
    assert set(queues) == {q["queue"] for q in status["queues"]} and "slow" in queues
    assert "No live worker" in ui.text()

    # -- detail of a FAILED row: error first, attempts "k of max", ISO times, no edit -------
    ui.open(f"{CHANGELIST}{rows['exhausted'].pk}/change/")
    ui.shot("05-failed-detail")
    body = ui.text()
    assert body.index("ValueError") < body.index("Callable path") < body.index("Timing")
    for k in (1, 2, 3):
        assert f"attempt {k} of 3" in body
    assert ISO_SECONDS.search(body) and " s" in body  # durations in seconds
    assert not ui.css("input[name=_save]") and not ui.css("a.deletelink")

    # -- large values are cut with a link to the whole --------------------------------------
    ui.open(f"{CHANGELIST}{rows['big'].pk}/change/")
    assert browser.execute_script("return document.documentElement.scrollHeight") < 5000
    links = ui.css("a.django-ray-full-value")
    big = rows["big"]
    sizes = [len(pretty_json(v)) for v in (big.kwargs, big.result_data)]
    assert [a.text for a in links] == [f"show all {n:,} characters" for n in sizes]
    # kwargs; the result (echo's) holds the blob too
    assert ui.click("a.django-ray-full-value") == '{\n  "blob": "' + "x" * 5000 + '"\n}'

    # -- Retry from the detail page: QUEUED again, the old error labelled, history kept -----
    ui.open(f"{CHANGELIST}{rows['failed'].pk}/change/")
    assert "Requeued 1 task(s)." in ui.click("#django-ray-retry")
    ui.shot("06-retried")
    assert "Previous attempt's error" in ui.text()
    rows["failed"].refresh_from_db()
    assert rows["failed"].state == TaskState.QUEUED
    ui.open(CHANGELIST)
    retried = ui.row_of(rows["failed"].task_id)
    assert "QUEUED" in retried and "previous attempt: PermanentError" in retried

    # -- Cancel: a scheduled row at once; the running orphan after a confirmation ----------
    ui.open(f"{CHANGELIST}{rows['scheduled'].pk}/change/")
    assert "Cancel requested: 1 now CANCELLED." in ui.click("#django-ray-cancel")
    ui.open(f"{CHANGELIST}{rows['stuck'].pk}/change/")
    confirm = ui.click("#django-ray-cancel")
    ui.shot("07-cancel-confirmation")
    assert "is RUNNING" in confirm and "half done" in confirm
    assert "Cancel requested: 1 now CANCELLING." in ui.click("#django-ray-confirm-cancel")
    ui.shot("08-cancelling-orphan")
    assert ui.css("#django-ray-cancelling-orphan"), "no word that nobody stops the cancel"
    assert not ui.css("#django-ray-cancel") and not ui.css("#django-ray-retry")

    # -- every action is in the admin history with the task id ------------------------------
    ui.open(f"{CHANGELIST}{rows['stuck'].pk}/history/")
    ui.shot("09-history")
    assert f"Cancel: task {rows['stuck'].task_id} RUNNING -> CANCELLING" in ui.text()
    entries = set(LogEntry.objects.values_list("object_id", "change_message"))
    assert entries == {
        (str(rows["failed"].pk), f"Retry: task {rows['failed'].task_id} FAILED -> QUEUED (django-ray admin)"),
        (str(rows["scheduled"].pk), f"Cancel: task {rows['scheduled'].task_id} QUEUED -> CANCELLED (django-ray admin)"),
        (str(rows["stuck"].pk), f"Cancel: task {rows['stuck'].task_id} RUNNING -> CANCELLING (django-ray admin)"),
    }  # fmt: skip
    states = dict(RayTaskExecution.objects.values_list("task_id", "state"))
    assert states[rows["scheduled"].task_id] == TaskState.CANCELLED
    assert states[rows["stuck"].task_id] == TaskState.CANCELLING
