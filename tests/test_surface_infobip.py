"""The Infobip surface: every example of the Infobip seed sent to the running stack as an
Infobip client would send it, and what the simulators received, what the answer says, and
what the bulk statistics count after devices report delivered and seen."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from typing import Any

import httpx
import pytest
from sqlmodel import Session

from producer.apps import create_key
from schemas import infobip as ib
from schemas.db import engine_for
from schemas.tables import Registration
from tests.conftest import AppHandle, accepted, register_bulk

SEND = "/push/2/message/single"
TEXT = "This PUSH message will pop up on your mobile device."
SEED_REGISTRATION_ID = "DBE0B0B6-668E-491E-8EE8-2A3DB2C71CBE"


# --- helpers ----------------------------------------------------------------------------------


def call(
    app: AppHandle, method: str, path: str, key: str | None = None, **kw: Any
) -> httpx.Response:
    headers = {"Authorization": f"App {key or app.creds.api_key}", **kw.pop("headers", {})}
    return httpx.request(method, app.stack.api_url + path, headers=headers, timeout=30, **kw)


def send(
    app: AppHandle, *destinations: dict[str, Any], key: str | None = None, **more: Any
) -> httpx.Response:
    body = {"from": app.creds.app_id, "destinations": list(destinations), "text": TEXT, **more}
    return call(app, "POST", SEND, key, json=body)


def sent_ok(
    app: AppHandle, *destinations: dict[str, Any], clean: bool = True, **more: Any
) -> dict[str, Any]:
    """Send, check the answer's shape, and wait until every Delivery is final."""
    r = send(app, *destinations, **more)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    assert set(answer) == {"bulkId", "messages"}
    st = app.wait(answer["bulkId"])
    if clean:  # every device reached: what the simulators saw is then the whole story
        assert st.by_status == {"SENT": st.total}, st
    return answer


def ios(app: AppHandle, **fields: Any) -> str:
    token = secrets.token_hex(32)
    app.client.register({"token": f"iOS:{token}", **fields})
    return token


def android(app: AppHandle, **fields: Any) -> str:
    token = f"fcm-{secrets.token_urlsafe(24)}:APA91b"
    app.client.register({"token": f"android:{token}", **fields})
    return token


def received(app: AppHandle, tokens: list[str]) -> dict[str, int]:
    apns, fcm = app.stack.apns.stats(), app.stack.fcm.stats()
    return {t: accepted(apns, t) + accepted(fcm, t) for t in tokens}


def service_exception(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()["requestError"]["serviceException"]
    return body


def key_with(app: AppHandle, *roles: str) -> str:
    assert app.stack.database_url
    key, _ = create_key(engine_for(app.stack.database_url), app.creds.app_id, list(roles))
    return key


# --- the seed's destinations --------------------------------------------------------------------


def test_a_registration_destination_reaches_that_installation_and_answers_its_message_id(
    app: AppHandle,
) -> None:
    # The seed's own push registration id, stored as a Pushline registration id.
    token = secrets.token_hex(32)
    assert app.stack.database_url
    with Session(engine_for(app.stack.database_url)) as s:
        s.add(
            Registration(
                id=SEED_REGISTRATION_ID,
                app_id=app.creds.app_id,
                provider="apns",
                platform="ios",
                token=token,
            )
        )
        s.commit()
    bystander = ios(app)
    single = key_with(app, "push_single")
    seed = {"pushRegistrationId": SEED_REGISTRATION_ID, "type": "REGISTRATION"}

    r = send(app, seed, key=single)
    assert r.status_code == 200, r.text
    answer = r.json()
    [delivery] = app.client.deliveries(answer["bulkId"]).items
    [message] = answer["messages"]
    assert message["to"] == {"pushRegistrationId": SEED_REGISTRATION_ID}
    assert message["messageId"] == delivery.id
    # The answer is a snapshot taken once fan-out is done: queued, or already sent.
    assert message["status"]["groupName"] == "PENDING"
    assert message["status"]["name"] in ("PENDING_ACCEPTED", "PENDING_ENROUTE")
    app.wait(answer["bulkId"])
    assert received(app, [token, bystander]) == {token: 1, bystander: 0}

    # One device is push_single; a person may be many devices: push_multiple.
    person = {"externalUserId": "customer_21234", "type": "EXTERNAL_USER_ID"}
    denied = service_exception(send(app, person, key=single), 403)
    assert denied["messageId"] == "FORBIDDEN" and "push_multiple" in denied["text"]
    denied = service_exception(send(app, seed, key=key_with(app, "push_multiple")), 403)
    assert "push_single" in denied["text"]


def test_person_destinations_reach_enabled_devices_and_the_flags_narrow_or_widen_them(
    app: AppHandle,
) -> None:
    person = {"external_user_id": "customer_21234"}
    phone = ios(
        app, **person, phone_number="441134960001", email="ann@example.com", primary_device=True
    )
    tablet = android(app, **person)
    muted = ios(app, **person, notifications_enabled=False)
    other = ios(app, external_user_id="customer_99999", phone_number="441134960002")
    everyone = [phone, tablet, muted, other]
    seed = {"externalUserId": "customer_21234", "type": "EXTERNAL_USER_ID"}

    answer = sent_ok(app, seed)
    assert received(app, everyone) == {phone: 1, tablet: 1, muted: 0, other: 0}
    assert len(answer["messages"]) == 2
    assert {m["to"]["externalUserId"] for m in answer["messages"]} == {"customer_21234"}
    assert len({m["messageId"] for m in answer["messages"]}) == 2

    sent_ok(app, seed, targetOnlyPrimaryDevices=True)
    assert received(app, everyone) == {phone: 2, tablet: 1, muted: 0, other: 0}
    # The destination's own flag wins over the push's (SEED-NOTES 22).
    sent_ok(app, {**seed, "targetOnlyPrimaryDevices": False}, targetOnlyPrimaryDevices=True)
    assert received(app, everyone) == {phone: 3, tablet: 2, muted: 0, other: 0}
    sent_ok(app, seed, includeNotificationsDisabledDevices=True)
    assert received(app, everyone) == {phone: 4, tablet: 3, muted: 1, other: 0}
    # Phone numbers compare by digits; e-mail addresses in any case (SEED-NOTES 21).
    sent_ok(app, {"phoneNumber": "+441134960001", "type": "PHONE_NUMBER"})
    sent_ok(app, {"email": "ANN@Example.com", "type": "EMAIL"})
    assert received(app, everyone) == {phone: 6, tablet: 3, muted: 1, other: 0}

    nobody = {"externalUserId": "customer_00000", "type": "EXTERNAL_USER_ID"}
    r = send(app, nobody)
    assert r.status_code == 200, r.text
    [answer_nobody] = r.json()["messages"]
    assert answer_nobody["to"] == nobody and "messageId" not in answer_nobody
    assert answer_nobody["status"]["name"] == "REJECTED_DESTINATION"


def test_a_big_audience_is_answered_per_destination_and_paged_in_reports(app: AppHandle) -> None:
    tokens = register_bulk(app.stack, app.creds.app_id, 1001)
    r = send(app, OR_IOS)
    assert r.status_code == 200, r.text
    answer = r.json()
    # More devices than an answer lists: the destination, pending, without message ids.
    assert answer["messages"] == [
        {
            "to": OR_IOS,
            "status": {
                "groupId": 1,
                "groupName": "PENDING",
                "id": 26,
                "name": "PENDING_ACCEPTED",
                "description": "Message accepted, pending for delivery.",
            },
        }
    ]
    assert app.wait(answer["bulkId"]).by_status == {"SENT": 1001}
    assert set(received(app, tokens).values()) == {1}
    query = {"bulkId": answer["bulkId"], "limit": "1000"}
    first = call(app, "GET", "/push/1/reports", params=query).json()
    rest = call(app, "GET", "/push/1/reports", params={**query, "cursor": first["nextCursor"]})
    pages = first["results"] + rest.json()["results"]
    assert (len(first["results"]), rest.json().get("nextCursor")) == (1000, None)
    assert len({p["messageId"] for p in pages}) == 1001


# The seed's MULTIPLE samples, trailing commas removed (SEED-NOTES 20).
AND_EXTERNAL = {
    "$and": [{"externalUserId": "customer_21234"}, {"externalUserId": "customer_21235"}],
    "type": "MULTIPLE",
}
OR_IOS = {"$or": [{"platform": "iOS"}], "type": "MULTIPLE"}
EXAMPLE_1 = {"$and": [{"platform": "iOS"}, {"phoneNumber": "441134960001"}], "type": "MULTIPLE"}
EXAMPLE_2 = {
    "$and": [{"platform": "iOS"}, {"DeviceType": "personal"}],
    "$or": [{"DeviceType": "business"}],
    "type": "MULTIPLE",
}


def test_the_seed_multiple_samples_reach_whom_their_prose_says(app: AppHandle) -> None:
    ann = ios(app, external_user_id="customer_21234", custom_attributes={"DeviceType": "personal"})
    bob = android(app, external_user_id="customer_21235")
    cat = ios(app, phone_number="441134960001", custom_attributes={"DeviceType": "business"})
    cat_android = android(
        app, phone_number="441134960001", custom_attributes={"DeviceType": "personal"}
    )
    dan = ios(app, custom_attributes={"DeviceType": "other"})
    everyone = [ann, bob, cat, cat_android, dan]

    sent_ok(app, AND_EXTERNAL)  # "$and" of two people reaches both
    assert received(app, everyone) == {ann: 1, bob: 1, cat: 0, cat_android: 0, dan: 0}
    sent_ok(app, OR_IOS)  # all iOS devices
    assert received(app, everyone) == {ann: 2, bob: 1, cat: 1, cat_android: 0, dan: 1}
    sent_ok(app, EXAMPLE_1)  # iOS devices of the person with that phone number
    assert received(app, everyone) == {ann: 2, bob: 1, cat: 2, cat_android: 0, dan: 1}
    sent_ok(app, EXAMPLE_2)  # iOS, and device type personal or business
    assert received(app, everyone) == {ann: 3, bob: 1, cat: 3, cat_android: 0, dan: 1}


# The samples exactly as the seed prints them.
VERBATIM = {
    "and_external": """"destinations": [
{
"$and": [
{
"externalUserId": "customer_21234"
},
{
"externalUserId": "customer_21235"
},
]
"type": "MULTIPLE"
}
]""",
    "or_ios": """"destinations": [
{
"$or": [
{
"platform": "iOS"
},
]
"type": "MULTIPLE"
}
]""",
    "example_1": """"destinations": [
{
"$and": [
{
"platform": "iOS"
},
{
"phoneNumber": "441134960001"
},
]
"type": "MULTIPLE"
}
]""",
    "example_2": """"destinations": [
{
"$and": [
{
"platform": "iOS"
},
{
"DeviceType": "personal"
},
]
"$or": [
{
"DeviceType": "business"
},
]
"type": "MULTIPLE"
}
]""",
}


@pytest.mark.parametrize("sample", sorted(VERBATIM))
def test_the_seed_samples_sent_verbatim_are_a_clean_400(app: AppHandle, sample: str) -> None:
    raw = f'{{"from": "{app.creds.app_id}", "text": "hi", {VERBATIM[sample]}}}'
    r = call(app, "POST", SEND, content=raw, headers={"Content-Type": "application/json"})
    error = service_exception(r, 400)
    assert error["messageId"] == "BAD_REQUEST"
    [rule] = error["validationErrors"]["body"]
    assert rule.startswith("malformed JSON")


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"destinations": []}, "destinations", "at least 1"),
        (
            {"destinations": [{"type": "SMS", "to": "41793026727"}]},
            "destinations.0.type",
            "REGISTRATION",
        ),
        (
            {"destinations": [{"email": "nobody", "type": "EMAIL"}]},
            "destinations.0",
            "must contain @",
        ),
        (
            {"destinations": [{"$and": [{"platform": "Windows"}], "type": "MULTIPLE"}]},
            "destinations.0",
            "iOS or Android",
        ),
        (
            {"destinations": [{"$and": [{"osversion": "17"}], "type": "MULTIPLE"}]},
            "destinations.0",
            "case-sensitive",
        ),
        ({"destinations": [{"type": "MULTIPLE"}]}, "destinations.0", "needs $and or $or"),
        ({"from": "another-app"}, "from", "application code"),
        ({"text": ""}, "text", "at least 1"),
        (
            {"notificationOptions": {"vibration": True}},
            "notificationOptions.vibration",
            "unknown field",
        ),
        (
            {"notificationOptions": {"inAppStyle": "POPUP"}},
            "notificationOptions.inAppStyle",
            "MODAL",
        ),
        (
            {"notificationOptions": {"contentUrl": "ftp://x"}},
            "notificationOptions.contentUrl",
            "pattern",
        ),
        ({"notificationOptions": {"title": "A"}, "title": "B"}, "title", "differs"),
        ({"validityPeriod": 73}, "validityPeriod", "72 hours"),
        (
            {"validityPeriod": 10, "validityPeriodTimeUnit": "seconds"},
            "validityPeriod",
            "30 seconds",
        ),
        (
            {"validityPeriodTimeUnit": "DAYS", "validityPeriod": 1},
            "validityPeriodTimeUnit",
            "HOURS",
        ),
        ({"customPayload": {"aps": {}}}, "customPayload", "reserved"),
        ({"sendAt": "2030-01-01T00:00:00.000+0000"}, "sendAt", "unknown field"),
    ],
)
def test_bad_requests_name_the_field_and_the_rule(
    app: AppHandle, change: dict[str, Any], field: str, words: str
) -> None:
    body = {
        "from": app.creds.app_id,
        "destinations": [{"externalUserId": "x", "type": "EXTERNAL_USER_ID"}],
        "text": TEXT,
        **change,
    }
    error = service_exception(call(app, "POST", SEND, json=body), 400)
    assert error["messageId"] == "BAD_REQUEST"
    [rule] = error["validationErrors"][field]
    assert words in rule, rule


def test_a_wrong_key_is_401_and_x_api_key_works_too(app: AppHandle) -> None:
    error = service_exception(send(app, OR_IOS, key="pl_not-a-key"), 401)
    assert error["messageId"] == "UNAUTHORIZED"
    # X-API-Key is accepted as well as `Authorization: App <key>`.
    r = httpx.post(
        app.stack.api_url + SEND,
        json={"from": app.creds.app_id, "destinations": [{"type": "MULTIPLE"}], "text": "x"},
        headers={"X-API-Key": app.creds.api_key},
        timeout=30,
    )
    assert "destinations.0" in service_exception(r, 400)["validationErrors"]


# --- the seed's push content example (its OMNI `push` block, sent to the push API) ---------------

OPTIONS_EXAMPLE = {
    "text": TEXT,
    "customPayload": {"contentUrl": "https://someurl.com/content", "deepLink": "myApp://some/link"},
    "notificationOptions": {
        "vibrationEnabled": True,
        "soundEnabled": True,
        "soundName": "sound.wav",
        "badge": 1,
        "contentUrl": "http://www.mydomain.com/images/image1.jpg",
        "category": "mm_accept_decline",
        "inAppStyle": "MODAL",
        "title": "This is some title",
    },
    "targetOnlyPrimaryDevices": True,
    "includeNotificationsDisabledDevices": True,
}


def test_the_notification_options_example_reaches_apns_and_fcm_as_documented(
    app: AppHandle,
) -> None:
    apple = ios(app, phone_number="441134960001", primary_device=True, notifications_enabled=False)
    secondary = ios(app, phone_number="441134960001")
    droid = android(app, phone_number="441134960002", primary_device=True)
    answer = sent_ok(
        app,
        {"phoneNumber": "441134960001", "type": "PHONE_NUMBER"},
        {"phoneNumber": "+441134960002", "type": "PHONE_NUMBER"},
        **OPTIONS_EXAMPLE,
        validityPeriod=30,
        validityPeriodTimeUnit="minutes",
    )
    assert len(answer["messages"]) == 2
    assert received(app, [apple, secondary, droid]) == {apple: 1, secondary: 0, droid: 1}
    [req] = app.stack.apns.requests(apple)
    assert int(req["headers"]["apns-expiration"]) > time.time() + 25 * 60  # validity 30 min
    # The messageId a device reports delivered / seen is in the notification.
    ids = {m["messageId"] for m in answer["messages"]}
    assert req["body"].pop("notificationId") in ids
    assert req["body"] == {
        "contentUrl": "https://someurl.com/content",
        "deepLink": "myApp://some/link",
        "pushline": {
            "image": "http://www.mydomain.com/images/image1.jpg",
            "in_app": {"style": "MODAL"},
            "notificationOptions": OPTIONS_EXAMPLE["notificationOptions"],
        },
        "aps": {
            "alert": {"title": "This is some title", "body": TEXT},
            "badge": 1,
            "sound": "sound.wav",
            "category": "mm_accept_decline",
            "mutable-content": 1,
        },
    }
    [fcm] = app.stack.fcm.requests(droid)
    message = fcm["body"]["message"]
    assert message["data"].pop("notificationId") in ids
    assert message["notification"] == {
        "title": "This is some title",
        "body": TEXT,
        "image": "http://www.mydomain.com/images/image1.jpg",
    }
    # Android: the same options under Infobip's names, as JSON text (FCM data are strings).
    assert json.loads(message["data"].pop("pushline")) == {
        "in_app": {"style": "MODAL"},
        "notificationOptions": OPTIONS_EXAMPLE["notificationOptions"],
    }
    assert message["data"] == {
        "contentUrl": "https://someurl.com/content",
        "deepLink": "myApp://some/link",
    }
    android_part = message["android"]
    assert android_part["notification"]["sound"] == "sound.wav"
    assert android_part["notification"]["default_vibrate_timings"] is True
    assert 25 * 60 < int(android_part["ttl"].removesuffix("s")) <= 30 * 60


# --- statistics, reports, and what devices report ---------------------------------------------


def test_statistics_count_delivered_seen_and_each_kind_of_error(any_app: AppHandle) -> None:
    app = any_app
    person = {"external_user_id": f"stats-{uuid.uuid4().hex[:8]}"}
    first, second, third = (ios(app, **person) for _ in range(3))
    gone = ios(app, **person)
    app.stack.apns.script(token=gone, then="Unregistered")  # code 7: registration
    wrong_topic = ios(app, **person)
    app.stack.apns.script(token=wrong_topic, then="DeviceTokenNotForTopic")  # code 10: cloud
    # FCM asks for a pause of a minute; the validity period of 30 s ends first: expired.
    late = android(app, **person)
    app.stack.fcm.script(token=late, then="QUOTA_EXCEEDED")
    answer = sent_ok(
        app,
        {"externalUserId": person["external_user_id"], "type": "EXTERNAL_USER_ID"},
        validityPeriod=30,
        validityPeriodTimeUnit="SECONDS",
        clean=False,
    )
    bulk = answer["bulkId"]
    ids = {d.registration_id: d.id for d in app.client.deliveries(bulk).items}
    by_token = {r.token: r.id for r in app.client.registrations(limit=1000).items}
    message_id = {t: ids[by_token[t]] for t in (first, second, third, gone, wrong_topic, late)}

    def stats() -> dict[str, Any]:
        r = call(app, "GET", "/push/1/statistics", params={"bulkId": bulk})
        assert r.status_code == 200, r.text
        result: dict[str, Any] = r.json()
        return result

    before = stats()
    assert before == {
        "totalSent": 6,
        "delivered": 0,
        "seen": 0,
        "errors": {"registration": 1, "expired": 1, "cloud": 1},
        "delivery": {"rate": 0.0},
    }
    dlr = {"dlrIds": [message_id[first], message_id[second]]}
    r = call(app, "POST", "/mobile/1/deliveryreports", json=dlr)
    assert r.status_code == 200, r.text
    assert [x["status"]["name"] for x in r.json()["results"]] == ["DELIVERED_TO_HANDSET"] * 2
    # Seen before delivered is reported: still seen and delivered (statuses only move forward).
    seen = {
        "messages": [
            {"messageId": message_id[first], "timestampDelta": 1500},
            {"messageId": message_id[third]},
        ]
    }
    assert call(app, "POST", "/mobile/2/messages/seen", json=seen).status_code == 200
    # A failed message cannot be seen; the whole report is refused and nothing recorded.
    refused = {"messages": [{"messageId": message_id[second]}, {"messageId": message_id[gone]}]}
    assert service_exception(call(app, "POST", "/mobile/2/messages/seen", json=refused), 409)
    unknown = service_exception(
        call(app, "POST", "/mobile/1/deliveryreports", json={"dlrIds": [str(uuid.uuid4())]}), 404
    )
    assert unknown["messageId"] == "NOT_FOUND"

    assert stats() == {
        "totalSent": 6,
        "delivered": 3,
        "seen": 2,
        "errors": {"registration": 1, "expired": 1, "cloud": 1},
        "delivery": {"rate": 0.5},
    }

    r = call(app, "GET", "/push/1/reports", params={"bulkId": bulk, "limit": "1000"})
    assert r.status_code == 200, r.text
    reports = {x["messageId"]: x for x in r.json()["results"]}
    assert len(reports) == 6
    assert reports[message_id[second]]["status"]["groupName"] == "DELIVERED"
    assert reports[message_id[first]]["seenAt"] is not None
    assert reports[message_id[gone]]["status"]["groupName"] == "UNDELIVERABLE"
    assert reports[message_id[gone]]["error"]["id"] == 7
    assert reports[message_id[late]]["status"]["groupName"] == "EXPIRED"
    assert reports[message_id[wrong_topic]]["error"]["groupName"] == "OPERATOR_ERRORS"

    # Another app's bulk is as unknown as a made-up one.
    other = any_app.stack.add_app(f"t-{uuid.uuid4().hex[:12]}")
    for key, bulk_id in ((other.api_key, bulk), (None, str(uuid.uuid4()))):
        r = call(app, "GET", "/push/1/statistics", key=key, params={"bulkId": bulk_id})
        assert service_exception(r, 404)["messageId"] == "NOT_FOUND"
    missing = service_exception(call(app, "GET", "/push/1/statistics"), 400)
    assert "bulkId" in missing["validationErrors"]


def test_statistics_of_nothing_sent_rate_zero_and_errors_are_disjoint() -> None:
    # Pure: an expired delivery carries code 12 or 14 as well; it counts once, as expired.
    assert ib.statistics([]) == {
        "totalSent": 0,
        "delivered": 0,
        "seen": 0,
        "errors": {"registration": 0, "expired": 0, "cloud": 0},
        "delivery": {"rate": 0.0},
    }
    counts = [("ERROR", 12, True, 2), ("ERROR", 12, False, 1), ("CONFIRMED", 0, False, 1)]
    assert ib.statistics(counts)["errors"] == {"registration": 0, "expired": 2, "cloud": 1}
    assert ib.statistics(counts)["seen"] == 1
