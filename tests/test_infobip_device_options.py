"""Infobip: notification options reach the device under Infobip's own names (defaults
filled in, a silent push still carrying its text), and a message sent but never reported
delivered when its validity period ends counts as expired."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from sqlmodel import Session

from schemas import infobip as ib
from schemas.db import engine_for
from schemas.tables import Message, utcnow
from tests.conftest import AppHandle
from tests.test_surface_infobip import TEXT, android, call, ios, sent_ok


def person() -> dict[str, str]:
    return {"external_user_id": f"p-{uuid.uuid4().hex[:8]}"}


def to(who: dict[str, str]) -> dict[str, str]:
    return {"externalUserId": who["external_user_id"], "type": "EXTERNAL_USER_ID"}


def test_silent_mirrored_push_reaches_both_platforms_under_infobip_names(app: AppHandle) -> None:
    who = person()
    apple, droid = ios(app, **who), android(app, **who)
    options = {
        "isSilent": True,
        "soundEnabled": False,
        "showMirroredPush": True,
        "mirroredPushStyle": "modal",
        "mirroredPushExpirationPeriod": 2,
        "mirroredPushExpirationTimeUnit": "hours",
        "mirroredPushDismissTitle": "Close",
        "mirroredPushOpenTitle": "Open",
        "onTapButtonAction": "myApp://open",
    }
    sent_ok(app, to(who), notificationOptions=options)
    expected = {
        "vibrationEnabled": True,  # Infobip's default, as its SDKs apply it
        **options,
        "mirroredPushStyle": "MODAL",
        "mirroredPushExpirationTimeUnit": "HOURS",
    }
    [req] = app.stack.apns.requests(apple)
    extras: dict[str, Any] = req["body"]["pushline"]
    assert req["body"]["aps"] == {"content-available": 1}  # silent: nothing shown by iOS
    assert extras["notificationOptions"] == expected
    assert extras["alert"] == {"body": TEXT}  # the text, for the app to show in-app
    [fcm] = app.stack.fcm.requests(droid)
    message = fcm["body"]["message"]
    assert "notification" not in message
    assert json.loads(message["data"]["pushline"]) == extras


def test_sent_but_unreported_when_the_validity_period_ends_counts_as_expired(
    any_app: AppHandle,
) -> None:
    app = any_app
    who = person()
    first, second = ios(app, **who), ios(app, **who)
    answer = sent_ok(app, to(who), validityPeriod=30, validityPeriodTimeUnit="SECONDS")
    bulk = answer["bulkId"]
    by_token = {r.token: r.id for r in app.client.registrations(limit=1000).items}
    ids = {d.registration_id: d.id for d in app.client.deliveries(bulk).items}
    dlr = {"dlrIds": [ids[by_token[first]]]}
    assert call(app, "POST", "/mobile/1/deliveryreports", json=dlr).status_code == 200

    def stats() -> dict[str, Any]:
        r = call(app, "GET", "/push/1/statistics", params={"bulkId": bulk})
        assert r.status_code == 200, r.text
        result: dict[str, Any] = r.json()
        return result

    assert stats()["errors"] == {"registration": 0, "expired": 0, "cloud": 0}
    # The 30 s validity period passes (the Message's end moved, not a sleep).
    assert app.stack.database_url
    with Session(engine_for(app.stack.database_url)) as s:
        msg = s.get(Message, bulk)
        assert msg is not None
        msg.expires_at = utcnow() - timedelta(seconds=1)
        s.add(msg)
        s.commit()
    assert stats() == {
        "totalSent": 2,
        "delivered": 1,
        "seen": 0,
        "errors": {"registration": 0, "expired": 1, "cloud": 0},
        "delivery": {"rate": 0.5},
    }
    assert second in by_token


def test_statistics_count_a_lapsed_sent_message_as_expired_not_delivered() -> None:
    counts = [("SENT", 0, True, 3), ("RECEIVED", 0, False, 2), ("SENT", 0, False, 1)]
    assert ib.statistics(counts) == {
        "totalSent": 6,
        "delivered": 2,
        "seen": 0,
        "errors": {"registration": 0, "expired": 3, "cloud": 0},
        "delivery": {"rate": 0.3333},
    }
