"""Infobip's inbox: topics made per app (API and CLI), a push naming an unknown topic or one
in the wrong case refused with a 400 naming inboxTopic, and a push with a known topic saved
once to each recipient person's inbox, listed newest first and marked seen."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlmodel import Session, col

from producer.errors import InvalidRequest
from producer.stack import Stack
from schemas.db import engine_for
from schemas.tables import InboxMessage
from tests.conftest import AppHandle
from tests.test_cli import run
from tests.test_surface_infobip import call, send, sent_ok, service_exception

TOPICS = "/push/1/inbox/topics"
SEEN = "/mobile/2/messages/seen"


def inbox_of(app: AppHandle, person: str, platform: str = "gcm", **query: Any) -> dict[str, Any]:
    r = call(app, "GET", f"/mobile/1/user/{person}/inbox/{platform}/messages", params=query)
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()
    return found


def person(app: AppHandle, *platforms: str) -> tuple[str, list[str]]:
    """A person (external user id) with a device on each platform: (id, tokens)."""
    who = f"p-{uuid.uuid4().hex[:8]}"
    made = {"ios": app.ios, "android": app.android}
    return who, [made[p](external_user_id=who) for p in platforms]


def test_topics_are_made_per_app_and_a_push_must_name_one_exactly(
    stack: Stack, app: AppHandle
) -> None:
    assert call(app, "POST", TOPICS, json={"name": "Promotions"}).status_code == 201
    again = service_exception(call(app, "POST", TOPICS, json={"name": "Promotions"}), 409)
    assert "Promotions" in again["text"]
    bad = service_exception(call(app, "POST", TOPICS, json={"name": " "}), 400)
    assert list(bad["validationErrors"]) == ["name"]
    assert stack.database_url
    env = {"DATABASE_URL": stack.database_url, "COLUMNS": "200"}
    made = run("inbox", "topics", "create", app.creds.app_id, "news", env=env)
    assert made.returncode == 0, made.stderr
    listed = run("inbox", "topics", "list", app.creds.app_id, env=env)
    assert "Promotions" in listed.stdout and "news" in listed.stdout
    names = [t["name"] for t in call(app, "GET", TOPICS).json()["topics"]]
    assert names == ["Promotions", "news"]

    who, [token] = person(app, "android")
    dest = {"externalUserId": who, "type": "EXTERNAL_USER_ID"}
    for topic, rule in (
        ("promotions", "topics are case sensitive ('Promotions' exists)"),
        ("Offers", "create it first"),
    ):
        r = send(app, dest, notificationOptions={"inboxTopic": topic})
        errors = service_exception(r, 400)["validationErrors"]
        assert list(errors) == ["notificationOptions.inboxTopic"]
        assert errors["notificationOptions.inboxTopic"][0].endswith(rule)
    # The native API holds to the same rule, and nothing was sent or saved.
    with pytest.raises(InvalidRequest, match="payload.inbox_topic"):
        app.client.push(
            {
                "target": {"type": "users", "usernames": ["x"]},
                "payload": {"alert": "a", "inbox_topic": "NEWS"},
            }
        )
    assert app.stack.fcm.requests(token) == []
    assert inbox_of(app, who)["countTotal"] == 0


def test_a_push_with_a_topic_is_saved_once_per_person_listed_newest_first_and_marked_seen(
    app: AppHandle,
) -> None:
    for name in ("Promotions", "news"):
        assert call(app, "POST", TOPICS, json={"name": name}).status_code == 201
    ann, [ann_ios, ann_android] = person(app, "ios", "android")
    bob, [bob_android] = person(app, "android")
    anonymous = app.android()  # no external user id: a device without an inbox
    both = {"$or": [{"externalUserId": ann}, {"externalUserId": bob}], "type": "MULTIPLE"}
    # Fanned out (MULTIPLE), then resolved when accepted (one person): both write the inbox.
    first = sent_ok(app, both, title="Sale", notificationOptions={"inboxTopic": "Promotions"})
    second = sent_ok(
        app,
        {"externalUserId": ann, "type": "EXTERNAL_USER_ID"},
        customPayload={"deepLink": "app://news/1"},
        notificationOptions={"inboxTopic": "news"},
    )
    sent_ok(app, {"externalUserId": ann, "type": "EXTERNAL_USER_ID"})  # no topic: no inbox
    # The devices got the topic, for the SDK to file the message.
    [apns] = app.stack.apns.requests(ann_ios)[:1]
    assert apns["body"]["pushline"]["inbox_topic"] == "Promotions"
    pushline = json.loads(
        app.stack.fcm.requests(ann_android)[0]["body"]["message"]["data"]["pushline"]
    )
    assert pushline["inbox_topic"] == "Promotions"
    assert app.stack.fcm.requests(bob_android) and app.stack.fcm.requests(anonymous) == []

    assert app.stack.database_url
    with Session(engine_for(app.stack.database_url)) as s:
        rows = s.execute(
            select(col(InboxMessage.external_user_id), func.count())
            .where(col(InboxMessage.message_id) == first["bulkId"])
            .group_by(col(InboxMessage.external_user_id))
        ).all()
    assert sorted(rows) == sorted([(ann, 1), (bob, 1)])  # one per person, not per device

    box = inbox_of(app, ann)
    assert (box["countTotal"], box["countUnread"]) == (2, 2)
    assert [m["bulkId"] for m in box["messages"]] == [second["bulkId"], first["bulkId"]]
    newest, older = box["messages"]
    assert (newest["topic"], newest["body"], newest["customPayload"]) == (
        "news",
        "This PUSH message will pop up on your mobile device.",
        {"deepLink": "app://news/1"},
    )
    assert (older["topic"], older["title"], older["seen"]) == ("Promotions", "Sale", False)
    promos = inbox_of(app, ann, "apns", topic="Promotions")
    assert [m["messageId"] for m in promos["messages"]] == [older["messageId"]]
    assert inbox_of(app, ann, topic="promotions")["countTotal"] == 0  # exact match
    assert [m["bulkId"] for m in inbox_of(app, bob)["messages"]] == [first["bulkId"]]

    # Seen: only the person's own inbox messages; a wrong id records nothing.
    mark = {"messageId": older["messageId"], "inbox": True, "timestampDelta": 1000}
    r = call(app, "POST", SEEN, json={"externalUserId": bob, "messages": [mark]})
    service_exception(r, 404)
    r = call(app, "POST", SEEN, json={"messages": [mark]})
    assert list(service_exception(r, 400)["validationErrors"]) == ["externalUserId"]
    r = call(app, "POST", SEEN, json={"externalUserId": ann, "messages": [mark]})
    assert r.status_code == 200, r.text
    assert r.json() == {"results": [{"messageId": older["messageId"], "inbox": True}]}
    box = inbox_of(app, ann)
    assert (box["countTotal"], box["countUnread"]) == (2, 1)
    assert box["messages"][1]["seen"] is True and box["messages"][1]["seenDate"] is not None
    assert box["messages"][0]["seen"] is False
    assert inbox_of(app, bob)["countUnread"] == 1  # Bob's copy is his own
