"""The Backendless surface, over HTTP against the running stack: every publish scenario of
the seed (channel, OS mask, device ids, delayed), its errors, message status and device
registration with channels; what the simulators received proves who was reached."""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any

import httpx
import pytest

from producer.apps import create_key
from schemas.db import engine_for
from tests.conftest import AppHandle
from tests.test_payloads import BACKENDLESS_HEADERS, BACKENDLESS_MESSAGE, alert_headers, apns_seen

Json = dict[str, Any]


def url(app: AppHandle, tail: str, key: str | None = None) -> str:
    return f"{app.stack.api_url}/{app.creds.app_id}/{key or app.creds.api_key}/messaging/{tail}"


def register(
    app: AppHandle, os: str, channels: list[str] | None = None, device_id: str | None = None
) -> tuple[str, str]:
    """A device registered the Backendless way; returns (token, device id)."""
    token = secrets.token_hex(32) if os == "IOS" else f"fcm-{secrets.token_urlsafe(24)}:APA91b"
    device_id = device_id or uuid.uuid4().hex
    body: Json = {"deviceToken": token, "deviceId": device_id, "os": os, "osVersion": "17.4"}
    if channels is not None:
        body["channels"] = channels
    r = httpx.post(url(app, "registrations"), json=body)
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"registrationId"}
    return token, device_id


def native(app: AppHandle, method: str, path: str) -> Json:
    r = httpx.request(method, app.stack.api_url + path, headers={"X-API-Key": app.creds.api_key})
    assert r.status_code == 200, r.text
    answer: Json = r.json()
    return answer


def publish(app: AppHandle, channel: str, body: Json, key: str | None = None) -> httpx.Response:
    return httpx.post(url(app, channel, key), json=body)


def status(app: AppHandle, message_id: str) -> Json:
    r = httpx.get(url(app, message_id))
    assert r.status_code == 200, r.text
    answer: Json = r.json()
    return answer


def settle(app: AppHandle, r: httpx.Response, timeout: float = 30.0) -> Json:
    """The publish answer, then its Backendless status once it is no longer "scheduled"."""
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["status"] == "scheduled" and set(answer) == {"status", "messageId"}
    deadline = time.monotonic() + timeout
    while (st := status(app, answer["messageId"]))["status"] == "scheduled":
        assert time.monotonic() < deadline, st
        time.sleep(0.05)
    return st


def reached(app: AppHandle, *tokens: str) -> set[str]:
    """Which of these tokens a simulator received anything for."""
    return {t for t in tokens if app.stack.apns.requests(t) or app.stack.fcm.requests(t)}


def assert_error(r: httpx.Response, http: int, code: int, words: str) -> None:
    assert r.status_code == http, r.text
    body = r.json()
    assert set(body) == {"message", "code"} and body["code"] == code, body
    assert words in body["message"], body


# --- registration -------------------------------------------------------------------------------


def test_registration_adds_channels_reads_back_and_cancels(app: AppHandle) -> None:
    _, device = register(app, "IOS")  # no channels: Backendless's "default"
    # Again with a new token: the token is replaced, the channels are added.
    token, _ = register(app, "IOS", ["news", "sports"], device_id=device)
    r = httpx.get(url(app, f"registrations/{device}"))
    assert r.json() == {
        "deviceToken": token,
        "deviceId": device,
        "os": "IOS",
        "osVersion": "17.4",
        "channels": ["default", "news", "sports"],
    }
    assert httpx.delete(url(app, f"registrations/{device}")).json() == {"result": True}
    assert_error(httpx.get(url(app, f"registrations/{device}")), 404, 5000, device)
    assert_error(httpx.delete(url(app, f"registrations/{device}")), 404, 5001, device)


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        ({"os": "WP"}, 8008, "not a supported platform"),
        ({"os": "BLACKBERRY"}, 5005, "must be IOS or ANDROID"),
        ({"deviceId": None}, 5011, "deviceId"),
        ({"deviceToken": "not-hex"}, 5005, "deviceToken"),
        ({"expiration": 1893456000000}, 5004, "does not expire registrations"),
    ],
)
def test_bad_registrations_name_the_field(
    app: AppHandle, change: Json, code: int, words: str
) -> None:
    body = {"deviceToken": secrets.token_hex(32), "deviceId": "d1", "os": "IOS", **change}
    assert_error(httpx.post(url(app, "registrations"), json=body), 400, code, words)


# --- publishing -------------------------------------------------------------------------------


def test_basic_push_to_a_channel_reaches_only_its_devices(any_app: AppHandle) -> None:
    app = any_app
    apple, _ = register(app, "IOS", ["news"])
    droid, _ = register(app, "ANDROID", ["news", "sports"])
    elsewhere, _ = register(app, "IOS")  # the default channel only
    sports, _ = register(app, "ANDROID", ["sports"])
    body = {"message": BACKENDLESS_MESSAGE, "headers": BACKENDLESS_HEADERS}
    assert settle(app, publish(app, "news", body))["status"] == "published"
    assert reached(app, apple, droid, elsewhere, sports) == {apple, droid}
    assert apns_seen(app, apple) == (
        alert_headers(app),
        {
            "orderId": "17",
            "aps": {"alert": {"body": "Hello iPhone"}, "badge": 2, "sound": "chime.caf"},
        },
    )
    [fcm] = app.stack.fcm.requests(droid)
    assert fcm["body"]["message"]["notification"] == {"title": "News", "body": "Hello Android"}


@pytest.mark.parametrize(
    ("mask", "who"),
    [
        (1, {"ios"}),
        ("IOS", {"ios"}),
        (2, {"android"}),
        ("ANDROID", {"android"}),
        (3, {"ios", "android"}),
        ("ALL", {"ios", "android"}),
        (5, {"ios"}),  # IOS | WP: WP is skipped
        ("ANDROID|WP", {"android"}),
    ],
)
def test_broadcast_by_os_mask_reaches_the_channels_devices_of_that_os(
    app: AppHandle, mask: Any, who: set[str]
) -> None:
    tokens = {"ios": register(app, "IOS", ["offers"])[0]}
    tokens["android"] = register(app, "ANDROID", ["offers"])[0]
    outside = register(app, "IOS", ["other"])[0]
    body = {"message": "Offer", "pushBroadcast": mask}
    assert settle(app, publish(app, "offers", body))["status"] == "published"
    assert reached(app, outside, *tokens.values()) == {tokens[os] for os in who}


@pytest.mark.parametrize(
    ("mask", "words"),
    [
        (4, "WP (Windows Phone) is not a supported platform"),
        ("WP", "not a supported platform"),
        (0, "between 1 and 7"),
        (8, "between 1 and 7"),
        ("BLACKBERRY", "unknown OS 'BLACKBERRY'"),
    ],
)
def test_a_wp_only_or_invalid_mask_is_a_clear_error(app: AppHandle, mask: Any, words: str) -> None:
    r = publish(app, "default", {"message": "x", "pushBroadcast": mask})
    assert_error(r, 400, 8008, words)


def test_singlecast_reaches_exactly_the_named_devices(app: AppHandle) -> None:
    apple, _ = register(app, "IOS", device_id="deviceId1")
    droid, _ = register(app, "ANDROID", ["elsewhere"], device_id="deviceId2")
    other, _ = register(app, "IOS", device_id="deviceId3")
    body = {"message": "Just you", "pushSinglecast": ["deviceId1", "deviceId2"]}
    assert settle(app, publish(app, "default", body))["status"] == "published"
    assert reached(app, apple, droid, other) == {apple, droid}
    assert apns_seen(app, apple)[1] == {"aps": {"alert": {"body": "Just you"}}}


def test_publish_policy_both_is_pushed_and_others_are_refused(app: AppHandle) -> None:
    apple, _ = register(app, "IOS")
    body = {"message": "m", "publishPolicy": "BOTH", "publisherId": "ops"}
    assert settle(app, publish(app, "default", body))["status"] == "published"
    assert apns_seen(app, apple)[1] == {"publisherId": "ops", "aps": {"alert": {"body": "m"}}}
    assert_error(
        publish(app, "default", {"message": "m", "publishPolicy": "PUBSUB"}),
        400,
        8008,
        "publishPolicy",
    )


def test_malformed_or_unknown_bodies_are_refused_before_anything_is_queued(app: AppHandle) -> None:
    json_type = {"Content-Type": "application/json"}
    r = httpx.post(url(app, "default"), content=b'{"message": "x",}', headers=json_type)
    assert_error(r, 400, 8002, "Could not parse request")
    assert_error(publish(app, "default", {"mesage": "x"}), 400, 8008, "mesage")
    assert_error(publish(app, "default", {"message": {"a": 1}}), 400, 5041, "message")
    assert_error(publish(app, "default", {"message": ""}), 400, 8008, "message")
    assert native(app, "GET", "/v1/schedules")["items"] == []


# --- delayed publishing -----------------------------------------------------------------------


def now_ms() -> int:
    return int(time.time() * 1000)


def test_delayed_publish_is_published_by_the_scheduler(app: AppHandle) -> None:
    apple, _ = register(app, "IOS", ["later"])
    r = publish(app, "later", {"message": "Soon", "publishAt": now_ms() + 1500})
    assert status(app, r.json()["messageId"])["status"] == "scheduled"
    assert app.stack.apns.requests(apple) == []
    assert settle(app, r)["status"] == "published"
    assert apns_seen(app, apple)[1] == {"aps": {"alert": {"body": "Soon"}}}


def test_repeat_every_until_repeat_expires_at_is_a_pushline_schedule(app: AppHandle) -> None:
    apple, _ = register(app, "IOS", ["daily"])
    first = now_ms() + 1000
    body = {
        "message": "Again",
        "publishAt": first,
        "repeatEvery": 1,
        "repeatExpiresAt": first + 1500,  # runs at publishAt and a second later: two
    }
    r = publish(app, "daily", body)
    assert r.status_code == 200 and r.json()["status"] == "scheduled"
    message_id = r.json()["messageId"]
    schedule = native(app, "GET", f"/v1/schedules/{message_id}")  # the messageId names it
    assert schedule["kind"] == "repeat" and schedule["repeat_every"] == 1
    assert schedule["publish_at"] is not None and schedule["repeat_expires_at"] is not None
    deadline = time.monotonic() + 30
    while native(app, "GET", f"/v1/schedules/{message_id}")["state"] != "finished":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    schedule = native(app, "GET", f"/v1/schedules/{message_id}")
    assert schedule["runs"] == 2 and len(schedule["message_ids"]) == 2
    for run in schedule["message_ids"]:
        while native(app, "GET", f"/v1/messages/{run}")["state"] not in ("done", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert len(app.stack.apns.requests(apple)) == 2  # once per run
    assert status(app, message_id)["status"] == "published"


@pytest.mark.parametrize("publish_at", ["a minute ago", "tomorrow", True])
def test_publish_at_in_the_past_or_not_a_number_is_5030(app: AppHandle, publish_at: Any) -> None:
    when = now_ms() - 60_000 if publish_at == "a minute ago" else publish_at
    body = {"message": "m", "publishAt": when}
    assert_error(publish(app, "default", body), 400, 5030, "publishAt")


@pytest.mark.parametrize(
    "fields",
    [
        {"repeatEvery": 60, "repeatExpiresAt": -60_000},  # in the past
        {"publishAt": 120_000, "repeatEvery": 60, "repeatExpiresAt": 60_000},  # before publishAt
        {"repeatEvery": 60, "repeatExpiresAt": "never"},  # not a number
        {"repeatExpiresAt": 60_000},  # nothing repeats
    ],
)
def test_invalid_repeat_expires_at_is_5003(app: AppHandle, fields: Json) -> None:
    body: Json = {"message": "m"}
    for k, v in fields.items():
        body[k] = now_ms() + v if k != "repeatEvery" and isinstance(v, int) else v
    assert_error(publish(app, "default", body), 400, 5003, "repeatExpiresAt")


# --- permissions and status -------------------------------------------------------------------


def test_keys_without_the_role_or_for_another_app_get_5007(app: AppHandle) -> None:
    register(app, "IOS", device_id="only-one")
    engine = engine_for(app.stack.database_url or "")
    single, _ = create_key(engine, app.creds.app_id, ["push_single"])
    channel = {"message": "m"}
    assert_error(publish(app, "default", channel, key=single), 403, 5007, "push_all")
    two = {"message": "m", "pushSinglecast": ["only-one", "another"]}
    assert_error(publish(app, "default", two, key=single), 403, 5007, "push_multiple")
    one = {"message": "m", "pushSinglecast": ["only-one"]}
    assert settle(app, publish(app, "default", one, key=single))["status"] == "published"
    assert_error(publish(app, "default", channel, key="not-a-key"), 401, 5007, "invalid API key")
    foreign = app.stack.add_app(f"t-{uuid.uuid4().hex[:12]}")
    r = httpx.post(
        f"{app.stack.api_url}/{app.creds.app_id}/{foreign.api_key}/messaging/default", json=channel
    )
    assert_error(r, 401, 5007, "does not belong to application")


def test_a_key_over_its_request_quota_gets_999_with_retry_after(app: AppHandle) -> None:
    engine = engine_for(app.stack.database_url or "")
    key, _ = create_key(engine, app.creds.app_id, ["push_all"], requests_per_minute=2)
    if time.time() % 60 > 55:  # the quota window is a calendar minute: start inside one
        time.sleep(61 - time.time() % 60)
    answers = [publish(app, "quota", {"message": "m"}, key=key) for _ in range(3)]
    assert [a.status_code for a in answers[:2]] == [200, 200]
    assert_error(answers[2], 429, 999, "2 requests per minute")
    assert 1 <= int(answers[2].headers["Retry-After"]) <= 60


def test_message_status_names_failed_cancelled_and_unknown(app: AppHandle) -> None:
    nobody = settle(app, publish(app, "default", {"message": "m", "pushSinglecast": ["ghost"]}))
    assert nobody["status"] == "failed"
    assert nobody["errorMessage"] == "no active registration matched the target"
    later = publish(app, "default", {"message": "m", "publishAt": now_ms() + 3_600_000}).json()
    native(app, "DELETE", f"/v1/schedules/{later['messageId']}")
    assert status(app, later["messageId"]) == {
        "messageId": later["messageId"],
        "status": "cancelled",
        "errorMessage": None,
    }
    assert status(app, "no-such-message")["status"] == "unknown"


# --- the seed's mandatory header and body, and user tokens ------------------------------------


def test_a_publish_needs_the_json_content_type_and_a_message(app: AppHandle) -> None:
    token, _ = register(app, "IOS", ["news"])
    body = b'{"message": "Hello"}'
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded"):
        headers = {"Content-Type": content_type} if content_type else {}
        r = httpx.post(url(app, "news"), content=body, headers=headers)
        assert_error(r, 400, 8002, "Content-Type: must be set to application/json")
    headers_only = {"headers": {"ios-alert": "Hello iPhone"}}
    assert_error(publish(app, "news", headers_only), 400, 8007, "message: is required")
    assert_error(publish(app, "news", {"message": None}), 400, 8007, "message: is required")
    assert reached(app, token) == set()  # nothing was queued
    # The header as HTTP allows it: any case, with a charset.
    r = httpx.post(
        url(app, "news"), content=body, headers={"content-type": "Application/JSON; charset=utf-8"}
    )
    assert settle(app, r)["status"] == "published"
    assert reached(app, token) == {token}


def issue(app: AppHandle, spec: Json, key: str | None = None) -> httpx.Response:
    return httpx.post(url(app, "usertokens", key), json=spec)


def test_user_tokens_publish_where_their_user_may_and_answer_5007_elsewhere(
    app: AppHandle,
) -> None:
    news, _ = register(app, "IOS", ["news"])
    sport, _ = register(app, "ANDROID", ["sport"])
    engine = engine_for(app.stack.database_url or "")
    push_all, _ = create_key(engine, app.creds.app_id, ["push_all"])
    assert_error(issue(app, {"user": "ann", "publish": "all"}, push_all), 403, 5007, "admin")
    assert_error(issue(app, {"user": "ann", "publish": "some"}), 400, 8008, "channels")
    tokens = {}
    for user, spec in (
        ("all", {"publish": "all"}),
        ("some", {"publish": "some", "channels": ["news"]}),
        ("none", {"publish": "none"}),
    ):
        r = issue(app, {"user": user, **spec})
        assert r.status_code == 201, r.text
        made = r.json()
        assert made["user"] == user and made["user-token"].startswith("pl_ut_")
        tokens[user] = made
    assert tokens["some"]["channels"] == ["news"]

    def as_user(user: str, channel: str, key: str | None = None) -> httpx.Response:
        headers = {"user-token": tokens[user]["user-token"]}
        return httpx.post(url(app, channel, key), json={"message": user}, headers=headers)

    assert settle(app, as_user("all", "sport"))["status"] == "published"
    assert settle(app, as_user("some", "news"))["status"] == "published"
    assert_error(as_user("some", "sport"), 403, 5007, "may not publish to channel 'sport'")
    assert_error(as_user("none", "news"), 403, 5007, "User does not have the permission")
    # The key's roles still hold, and a token is only its app's, until it is revoked.
    single, _ = create_key(engine, app.creds.app_id, ["push_single"])
    assert_error(as_user("all", "news", single), 403, 5007, "push_all")
    other = AppHandle(app.stack, app.stack.add_app(f"t-{uuid.uuid4().hex[:12]}"))
    r = httpx.post(
        url(other, "news"),
        json={"message": "x"},
        headers={"user-token": tokens["all"]["user-token"]},
    )
    assert_error(r, 401, 5007, "user-token is not valid")
    gone = httpx.delete(url(app, f"usertokens/{tokens['all']['objectId']}"))
    assert gone.status_code == 204, gone.text
    assert_error(as_user("all", "news"), 401, 5007, "user-token is not valid")
    received = {
        t: len(app.stack.apns.requests(t) + app.stack.fcm.requests(t)) for t in (news, sport)
    }
    assert received == {news: 1, sport: 1}
