"""Messages carry a name and labels; GET /v1/messages finds them; a timeline follows them."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx

from tests.conftest import AppHandle
from tests.test_cli import run

ALERT = {"alert": {"title": "t", "body": "b"}}


def _push(app: AppHandle, **extra: object) -> str:
    body = {"target": {"type": "application"}, "payload": ALERT, **extra}
    return app.client.push(body).id


def test_messages_are_listed_newest_first_by_label_and_state_in_keyset_pages(
    any_app: AppHandle,
) -> None:
    any_app.ios("ann")
    spring = [_push(any_app, name=f"spring {i}", labels=["spring", "sale"]) for i in range(3)]
    other = _push(any_app, name="welcome", labels=["onboarding"])
    plain = _push(any_app)
    for m in (*spring, other, plain):
        any_app.wait(m)

    st = any_app.client.message(spring[0])
    assert (st.name, st.labels) == ("spring 0", ["spring", "sale"])
    everything = any_app.client.messages(limit=500)
    assert [m.id for m in everything.items] == [plain, other, *reversed(spring)]
    assert everything.next_cursor is None
    assert everything.items[1].labels == ["onboarding"] and everything.items[0].labels == []

    seen: list[str] = []
    cursor = None
    while True:
        page = any_app.client.messages(label="spring", limit=2, cursor=cursor)
        seen += [m.id for m in page.items]
        assert all(m.name and m.name.startswith("spring") for m in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == list(reversed(spring))
    assert any_app.client.messages(label="sal").items == []  # whole labels only
    assert [m.id for m in any_app.client.messages(state="done", label="onboarding").items] == [
        other
    ]
    assert any_app.client.messages(state="failed").items == []
    created = any_app.client.message(other).created_at
    later = any_app.client.messages(since=created.isoformat(), limit=500).items
    assert [m.id for m in later] == [plain, other]
    earlier = any_app.client.messages(until=created.isoformat(), limit=500).items
    assert [m.id for m in earlier] == list(reversed(spring))


def test_listing_and_labelling_mistakes_are_400s_naming_the_field(app: AppHandle) -> None:
    url, headers = f"{app.stack.api_url}/v1/messages", {"X-API-Key": app.creds.api_key}
    bad_label = {"target": {"type": "application"}, "payload": ALERT, "labels": ["no spaces"]}
    r = httpx.post(url, headers=headers, json=bad_label)
    assert r.status_code == 400 and r.json()["details"][0]["field"] == "labels.0"
    many = {**bad_label, "labels": [f"l{i}" for i in range(21)]}
    r = httpx.post(url, headers=headers, json=many)
    assert r.status_code == 400 and r.json()["details"][0]["field"] == "labels"
    r = httpx.get(url, headers=headers, params={"state": "nope"})
    assert r.status_code == 400 and r.json()["details"][0]["field"] == "state"
    r = httpx.get(url, headers=headers, params={"cursor": "garbage!"})
    assert r.status_code == 400 and r.json()["details"][0]["field"] == "cursor"
    r = httpx.get(url, headers=headers, params={"since": "yesterday"})
    assert r.status_code == 400 and "since" in r.json()["details"][0]["field"]


def test_each_run_of_a_schedule_carries_the_campaign_name_and_labels(app: AppHandle) -> None:
    app.ios("sam")
    when = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    body = {
        "target": {"type": "application"},
        "payload": ALERT,
        "schedule": {"publish_at": when},
        "name": "weekly digest",
        "labels": ["digest"],
    }
    assert app.client.push(body).state == "scheduled"
    deadline = time.monotonic() + 30
    while not (runs := app.client.messages(label="digest").items):
        assert time.monotonic() < deadline, "the schedule never ran"
        time.sleep(0.1)
    assert (runs[0].name, runs[0].schedule_id is not None) == ("weekly digest", True)


def test_the_timeline_counts_sent_and_failed_per_minute_in_the_api_and_the_cli(
    any_app: AppHandle,
) -> None:
    tokens = [any_app.ios("tim") for _ in range(3)]
    any_app.stack.apns.script(token=tokens[0], then="Unregistered")
    message_id = _push(any_app, name="chart me", labels=["chart"])
    any_app.wait(message_id)
    minutes = any_app.client.timeline(message_id).minutes
    assert sum(m.sent for m in minutes) == 2
    assert sum(m.failed for m in minutes) == 1
    assert sum(m.cancelled for m in minutes) == 0
    steps = {b.minute - a.minute for a, b in zip(minutes, minutes[1:], strict=False)}
    assert steps <= {timedelta(minutes=1)} and all(m.minute.second == 0 for m in minutes)

    assert any_app.stack.database_url
    env = {"DATABASE_URL": any_app.stack.database_url}
    shown = run("messages", "show", message_id, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "'chart me'" in shown.stdout and "timeline" in shown.stdout
    row = next(
        line
        for line in shown.stdout.splitlines()
        if minutes[-1].minute.strftime("%H:%M") in line and "│" in line
    )
    assert row.split("│")[2].strip() == str(minutes[-1].sent)
    listed = run("messages", "list", "--label", "chart", env={**env, "COLUMNS": "200"})
    assert listed.returncode == 0 and message_id in listed.stdout and "chart me" in listed.stdout
    assert run("messages", "timeline", "no-such-message", env=env).returncode == 2
