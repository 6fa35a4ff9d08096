"""The operator console (/console) in a real headless browser: signing in with an admin
key, a broadcast's bar filling as its Deliveries are sent, a Delivery's attempts; and the
JSON it reads (/v1/console/…) for admin keys only, each app's key seeing its own app."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from producer.apps import create_key
from producer.telemetry import hour_series
from schemas.db import engine_for
from tests.browser import attributes, browser, cells, click, wait_for
from tests.conftest import AppHandle, register_bulk

__all__ = ["browser"]  # the fixture, imported for this module

DEVICES = 40


def operator_key(app: AppHandle) -> str:
    assert app.stack.database_url
    key, _ = create_key(engine_for(app.stack.database_url), None, ["admin"])
    return key


def test_console_page_is_served_from_the_package_and_left_out_of_the_schema(
    app: AppHandle,
) -> None:
    page = httpx.get(f"{app.stack.api_url}/console", timeout=10)
    assert page.status_code == 200 and "/static/console/console.js" in page.text
    assert "https://" not in page.text
    script = httpx.get(f"{app.stack.api_url}/static/console/console.js", timeout=10)
    assert script.status_code == 200 and "/v1/console/messages" in script.text
    doc = httpx.get(f"{app.stack.api_url}/openapi.json", timeout=30).json()
    assert "/console" not in doc["paths"]
    assert "/v1/console/messages" in doc["paths"]


def test_console_json_needs_an_admin_key_and_an_app_key_sees_only_its_app(app: AppHandle) -> None:
    other = AppHandle(app.stack, app.stack.add_app(f"t-{uuid.uuid4().hex[:12]}"))
    other.ios("console-bo")
    theirs = other.push_users("console-bo")
    url = f"{app.stack.api_url}/v1/console/messages"
    assert httpx.get(url, timeout=10).status_code == 401
    assert app.stack.database_url
    engine = engine_for(app.stack.database_url)
    pusher, _ = create_key(engine, app.creds.app_id, ["push_all"])
    assert httpx.get(url, headers={"X-API-Key": pusher}, timeout=10).status_code == 403
    # app.creds holds every role, admin included: its own app only.
    mine = httpx.get(url, headers={"X-API-Key": app.creds.api_key}, timeout=10).json()
    assert theirs.id not in {m["id"] for m in mine["items"]}
    answer = httpx.get(f"{url}/{theirs.id}", headers={"X-API-Key": app.creds.api_key}, timeout=10)
    assert answer.status_code == 404
    everyone = httpx.get(url, headers={"X-API-Key": operator_key(app)}, timeout=10).json()
    seen = next(m for m in everyone["items"] if m["id"] == theirs.id)
    assert seen["by_status"] == {"SENT": 1} and seen["target_type"] == "users"


def test_hour_series_counts_queued_per_lane_at_each_minutes_end_and_sent_per_minute() -> None:
    start = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    m = [start + timedelta(minutes=i) for i in range(60)]
    rows = [
        ("bulk", m[1], m[3], True, 5),  # queued during minutes 1 and 2, sent in minute 3
        ("priority", m[2], None, False, 2),  # still QUEUED
        ("bulk", start - timedelta(minutes=10), m[1], False, 1),  # failed in minute 1
    ]
    series = hour_series(rows, start)
    assert series.queued["bulk"][:5] == [1, 5, 5, 0, 0]
    assert series.queued["priority"][1:4] == [0, 2, 2] and series.queued["priority"][-1] == 2
    assert series.sent[3] == 5 and sum(series.sent) == 5


def test_console_signs_in_shows_schedules_a_broadcast_filling_and_a_deliverys_attempts(
    app: AppHandle, browser: WebDriver
) -> None:
    tokens = register_bulk(app.stack, app.creds.app_id, DEVICES)
    weekly = app.client.push(
        {
            "target": {"type": "application"},
            "payload": {"alert": "weekly"},
            "schedule": {"cron": "0 9 * * 1", "timezone": "Europe/Copenhagen"},
        }
    )
    browser.get(f"{app.stack.api_url}/console")
    browser.find_element(By.ID, "key").send_keys("pl_not_a_key")
    browser.find_element(By.CSS_SELECTOR, "#sign-in button[type=submit]").click()
    wait_for(browser, lambda b: b.find_element(By.ID, "sign-in-error").text)
    assert browser.find_element(By.ID, "main").is_displayed() is False

    # The app's own admin key: this app's Messages and Schedules only, whatever else the
    # shared stack holds (an operator key's view is the JSON test's above).
    key = browser.find_element(By.ID, "key")
    key.clear()
    key.send_keys(app.creds.api_key)
    browser.find_element(By.CSS_SELECTOR, "#sign-in button[type=submit]").click()
    wait_for(browser, lambda b: b.find_element(By.ID, "main").is_displayed())
    schedule = wait_for(browser, lambda b: cells(b, f"tr[data-schedule='{weekly.id}']") or [])
    assert weekly.next_run_at is not None
    assert schedule[2] == "cron 0 9 * * 1 (Europe/Copenhagen)" and schedule[3] == "scheduled"
    assert schedule[4] == weekly.next_run_at.strftime("%Y-%m-%d %H:%M:%S")  # UTC, as shown

    # A broadcast throttled to 600 a minute: its 40 Deliveries go out over a few seconds.
    accepted = app.client.push(
        {
            "target": {"type": "application"},
            "payload": {"alert": "console"},
            "name": "console broadcast",
            "max_per_minute": 600,
        }
    )
    selector = f"tr[data-message='{accepted.id}'] .bar"
    fills: list[int] = []
    deadline = time.monotonic() + 45
    while not fills or fills[-1] < DEVICES:
        assert time.monotonic() < deadline, f"the bar stopped at {fills}"
        # Read in the page in one step: the console redraws its rows while it polls, so an
        # element found by one WebDriver call may be stale by the next.
        shown = attributes(browser, selector, "data-sent")
        if shown:
            sent = int(shown[0] or 0)
            if not fills or fills[-1] != sent:
                fills.append(sent)
        time.sleep(0.1)
    assert fills == sorted(fills) and len(fills) >= 2, fills  # seen part-way, then full
    assert attributes(browser, f"{selector} .seg-SENT", "title") == [f"SENT {DEVICES}"]

    # The Message's Deliveries, then one Delivery's attempts and story.
    click(browser, f"tr[data-message='{accepted.id}']")
    rows = "#delivery-rows tr"
    wait_for(browser, lambda b: len(attributes(b, rows, "data-delivery")) == DEVICES)
    assert "SENT 40" in browser.find_element(By.ID, "message-counts").text
    delivery_id = attributes(browser, rows, "data-delivery")[0]
    assert delivery_id
    click(browser, f"#delivery-rows tr[data-delivery='{delivery_id}']")
    attempt = wait_for(browser, lambda b: cells(b, "#attempt-rows tr") or [])
    assert attempt[0] == "1" and attempt[2] == "0", attempt  # the first attempt, code 0
    story = browser.find_element(By.ID, "story").text
    assert "accepted" in story and "attempt 1" in story and "final SENT" in story
    assert browser.find_element(By.ID, "delivery-id").text == delivery_id
    sent_to = app.stack.apns.stats()["accepted"]
    assert all(sent_to.get(t) == 1 for t in tokens)

    # The hour's charts draw what was sent (they refresh every 5 s).
    sent_line = "#chart-sent polyline[data-series=sent]"
    wait_for(
        browser,
        lambda b: int((attributes(b, sent_line, "data-sum") or ["0"])[0] or 0) >= DEVICES,
    )
    assert set(attributes(browser, "#chart-queued polyline", "data-series")) >= {
        "bulk",
        "priority",
    }
