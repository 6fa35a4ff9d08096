"""Golden payload tests: each seed example, written in the native API, pushed through the
whole stack; what the simulators received is compared exactly.

For APNs the headers Pushline controls (push type, priority, topic, collapse id, and whether
an expiration was sent) and the whole JSON body; for FCM the whole `message` object.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from typing import Any

import httpx
import pytest

from schemas.api import MessageStatus
from schemas.payload import backendless_payload, gcm_to_fcm, infobip_payload
from tests.conftest import AppHandle, accepted
from worker.payloads import NOTIFICATION_ID_KEY

SET = "<set>"  # apns-expiration is a clock time: the golden says only that it was sent
CONTROLLED = ("apns-push-type", "apns-priority", "apns-topic", "apns-collapse-id")


def ios(app: AppHandle, **fields: Any) -> tuple[str, str]:
    """Register an iOS device (Microbizz `iOS:` token form); returns (token, registration id)."""
    token = secrets.token_hex(32)
    reg = app.client.register({"token": f"iOS:{token}", **fields})
    return token, reg.id


def android(app: AppHandle, **fields: Any) -> tuple[str, str]:
    token = f"fcm-{secrets.token_urlsafe(24)}:APA91b"
    reg = app.client.register({"token": f"android:{token}", **fields})
    return token, reg.id


def push(app: AppHandle, target: dict[str, Any], payload: dict[str, Any]) -> MessageStatus:
    return app.wait(app.client.push({"target": target, "payload": payload}).id)


def apns_seen(app: AppHandle, token: str) -> tuple[dict[str, str], dict[str, Any]]:
    """The one request the fake APNs received for `token`: our headers and the body."""
    [req] = app.stack.apns.requests(token)
    h = req["headers"]
    headers = {k: h[k] for k in CONTROLLED if k in h}
    if "apns-expiration" in h:
        assert int(h["apns-expiration"]) >= int(time.time()) - 5
        headers["apns-expiration"] = SET
    body = dict(req["body"])
    # Every notification names its Delivery, which is also its apns-id.
    assert body.pop(NOTIFICATION_ID_KEY) == h["apns-id"].lower()
    return headers, body


def fcm_seen(app: AppHandle, token: str) -> dict[str, Any]:
    [req] = app.stack.fcm.requests(token)
    message: dict[str, Any] = req["body"]["message"]
    data = dict(message.get("data") or {})
    uuid.UUID(data.pop(NOTIFICATION_ID_KEY))  # its Delivery, for the app's status reports
    if data:
        message["data"] = data
    else:
        del message["data"]
    return message


def alert_headers(app: AppHandle, **more: str) -> dict[str, str]:
    return {
        "apns-push-type": "alert",
        "apns-priority": "10",
        "apns-topic": app.creds.apns_topic,
        **more,
    }


# --- SAP Mobile Services ---------------------------------------------------------------------

# The seed's registration example with capabilities (used by the SAP surface tests too).
SAP_CAPABILITY_REGISTRATION: dict[str, Any] = {
    "username": "user1",
    "push_group": "all",
    "time_zone": "MESZ",
    "form_factor": "phone",
    "capabilities": [
        {"name": "capability1", "category": "push", "value": "true"},
        {"name": "capability2", "category": "push", "value": "true"},
    ],
    "locale": "en",
    "device_model": "iPhone",
}

# The seed's push-to-device body, with its `gcm` block mapped by the documented helper.
SAP_DEVICE_NATIVE = {
    "alert": "Hello World",
    "sound": "default",
    "apns": {"category": "immediate-action", "custom_values": '{"order" : "4711-2314"}'},
    "fcm": gcm_to_fcm({"delayWhileIdle": True, "timeToLive": 123456}),
}


def test_sap_push_to_device_example_on_apns(app: AppHandle) -> None:
    token, _ = ios(app, username="user1", device_id="dev-ios-1")
    target = {"type": "device", "username": "user1", "device_id": "dev-ios-1"}
    assert push(app, target, SAP_DEVICE_NATIVE).by_code == {"0": 1}
    headers, body = apns_seen(app, token)
    assert headers == alert_headers(app)  # gcm.timeToLive is FCM's: no apns-expiration
    assert body == {
        "order": "4711-2314",
        "aps": {
            "alert": {"body": "Hello World"},
            "sound": "default",
            "category": "immediate-action",
        },
    }


def test_sap_push_to_device_example_on_fcm(app: AppHandle) -> None:
    token, _ = android(app, username="user1", device_id="dev-android-1")
    target = {"type": "device", "username": "user1", "device_id": "dev-android-1"}
    assert push(app, target, SAP_DEVICE_NATIVE).by_code == {"0": 1}
    # apns.category and apns.customValues are APNs only; delayWhileIdle is ignored.
    assert fcm_seen(app, token) == {
        "token": token,
        "notification": {"body": "Hello World"},
        "android": {"priority": "high", "ttl": "123456s", "notification": {"sound": "default"}},
    }


SAP_LOCALIZED = {
    "alert": "Hello!",
    "localized": {"en_US": {"alert": "Howdie!"}, "de": {"alert": "Guten Tag!"}},
}


def test_sap_push_to_users_example_with_localized_notifications(app: AppHandle) -> None:
    en_us, _ = ios(app, username="user1", locale="en-US")
    fr, _ = ios(app, username="user1", locale="fr")
    de_ch, _ = android(app, global_user_id="global-user-ID1", locale="de-CH")
    by_languages, _ = android(app, username="user2", preferred_languages=["de-DE", "en"])
    other, _ = ios(app, username="user3", locale="de")
    target = {
        "type": "users",
        "usernames": ["user1", "user2"],
        "global_user_ids": ["global-user-ID1"],
    }
    assert push(app, target, SAP_LOCALIZED).by_code == {"0": 4}
    assert apns_seen(app, en_us) == (alert_headers(app), {"aps": {"alert": {"body": "Howdie!"}}})
    assert apns_seen(app, fr) == (alert_headers(app), {"aps": {"alert": {"body": "Hello!"}}})
    for token in (de_ch, by_languages):
        assert fcm_seen(app, token) == {
            "token": token,
            "notification": {"body": "Guten Tag!"},
            "android": {"priority": "high"},
        }
    assert app.stack.apns.requests(other) == []


def test_sap_bulk_push_example_overrides_the_generic_alert_per_user(app: AppHandle) -> None:
    by_name, _ = ios(app, username="user1")
    by_uuid, _ = android(app, global_user_id="global-user-id")
    plain, _ = ios(app, username="user2")  # listed without a payload of their own
    unlisted, _ = ios(app, username="user3")
    target = {
        "type": "bulk",
        "entries": [
            {"user_uuid": "global-user-id", "user": "user1", "payload": {"alert": "user alert"}},
            {"user": "user2"},
        ],
    }
    assert push(app, target, {"alert": "generic alert"}).by_code == {"0": 3}
    assert apns_seen(app, by_name)[1] == {"aps": {"alert": {"body": "user alert"}}}
    assert fcm_seen(app, by_uuid)["notification"] == {"body": "user alert"}
    assert apns_seen(app, plain)[1] == {"aps": {"alert": {"body": "generic alert"}}}
    assert app.stack.apns.requests(unlisted) == []  # bulk reaches only the users it lists


def test_sap_bulk_push_user_variants_are_localized_too(app: AppHandle) -> None:
    token, _ = ios(app, username="user1", locale="de-DE")
    target = {
        "type": "bulk",
        "entries": [
            {
                "user": "user1",
                "payload": {"alert": "user alert", "localized": {"de": {"alert": "Hallo du"}}},
            }
        ],
    }
    payload = {"alert": "generic", "badge": 1, "localized": {"de": {"alert": "allgemein"}}}
    assert push(app, target, payload).by_code == {"0": 1}
    assert apns_seen(app, token)[1] == {"aps": {"alert": {"body": "Hallo du"}, "badge": 1}}


def test_sap_push_to_topic_example_reaches_each_subscriber_once(app: AppHandle) -> None:
    both, _ = ios(app, username="user1", topics=["topic1", "topic2"], locale="de")
    android_sub, _ = android(app, username="user1", topics=["topic1"])
    not_subscribed, _ = ios(app, username="user1", topics=["other"])
    other_user, _ = ios(app, username="user9", topics=["topic1"])
    target = {"type": "topic", "topics": ["topic1", "topic2"], "usernames": ["user1"]}
    assert push(app, target, SAP_LOCALIZED).by_code == {"0": 2}
    assert apns_seen(app, both) == (alert_headers(app), {"aps": {"alert": {"body": "Guten Tag!"}}})
    assert fcm_seen(app, android_sub) == {
        "token": android_sub,
        "notification": {"body": "Hello!"},
        "android": {"priority": "high"},
    }
    assert app.stack.apns.requests(not_subscribed) == app.stack.apns.requests(other_user) == []


@pytest.mark.parametrize(
    "target",
    [
        {"type": "application"},
        {"type": "group", "push_group": "all"},
        {
            "type": "capability",
            "capability": "capability1",
            "users": [{"user": "user1", "form_factor": ["phone"]}],
        },
    ],
    ids=["application", "group", "capability"],
)
def test_sap_push_to_application_group_and_capability_examples(
    app: AppHandle, target: dict[str, Any]
) -> None:
    # The seed's capability registration example, on both platforms.
    seed_registration = SAP_CAPABILITY_REGISTRATION
    apple, _ = ios(app, **seed_registration)
    droid, _ = android(app, **{**seed_registration, "device_model": "Pixel"})
    assert push(app, target, {"alert": "Hello World"}).by_code == {"0": 2}
    assert apns_seen(app, apple) == (
        alert_headers(app),
        {"aps": {"alert": {"body": "Hello World"}}},
    )
    assert fcm_seen(app, droid) == {
        "token": droid,
        "notification": {"body": "Hello World"},
        "android": {"priority": "high"},
    }


# --- Infobip ---------------------------------------------------------------------------------

# The seed's OMNI `push` object: text, customPayload and notificationOptions.
INFOBIP_TEXT = "This PUSH message will pop up on your mobile device."
INFOBIP_CUSTOM_PAYLOAD = {
    "contentUrl": "https://someurl.com/content",
    "deepLink": "myApp://some/link",
}
INFOBIP_OPTIONS = {
    "vibrationEnabled": True,
    "soundEnabled": True,
    "soundName": "sound.wav",
    "badge": 1,
    "contentUrl": "http://www.mydomain.com/images/image1.jpg",
    "category": "mm_accept_decline",
    "inAppStyle": "MODAL",
    "title": "This is some title",
}


def test_infobip_notification_options_example(app: AppHandle) -> None:
    native = infobip_payload(INFOBIP_TEXT, INFOBIP_OPTIONS, INFOBIP_CUSTOM_PAYLOAD)
    assert native == {
        "alert": {
            "title": "This is some title",
            "body": "This PUSH message will pop up on your mobile device.",
        },
        "sound": "sound.wav",
        "image": "http://www.mydomain.com/images/image1.jpg",
        "category": "mm_accept_decline",
        "apns": {"badge": 1},
        "fcm": {"vibrate": True},
        "in_app": {"style": "MODAL"},
        "data": {"contentUrl": "https://someurl.com/content", "deepLink": "myApp://some/link"},
        "app_options": INFOBIP_OPTIONS,  # every option given, under Infobip's own names
    }
    apple, _ = ios(app, phone_number="441134960001", primary_device=True)
    secondary, _ = ios(app, phone_number="441134960001", primary_device=False)
    droid, _ = android(app, phone_number="441134960002", primary_device=True)
    target = {
        "type": "destinations",
        "destinations": [
            {"type": "PHONE_NUMBER", "value": "441134960001"},
            {"type": "PHONE_NUMBER", "value": "+441134960002"},
        ],
        "target_only_primary_devices": True,
        "include_notifications_disabled_devices": True,
    }
    assert push(app, target, native).by_code == {"0": 2}
    assert apns_seen(app, apple) == (
        alert_headers(app),
        {
            "contentUrl": "https://someurl.com/content",
            "deepLink": "myApp://some/link",
            "pushline": {
                "image": "http://www.mydomain.com/images/image1.jpg",
                "in_app": {"style": "MODAL"},
                "notificationOptions": INFOBIP_OPTIONS,
            },
            "aps": {
                "alert": {
                    "title": "This is some title",
                    "body": "This PUSH message will pop up on your mobile device.",
                },
                "badge": 1,
                "sound": "sound.wav",
                "category": "mm_accept_decline",
                "mutable-content": 1,
            },
        },
    )
    assert fcm_seen(app, droid) == {
        "token": droid,
        "notification": {
            "title": "This is some title",
            "body": "This PUSH message will pop up on your mobile device.",
            "image": "http://www.mydomain.com/images/image1.jpg",
        },
        "data": {
            "contentUrl": "https://someurl.com/content",
            "deepLink": "myApp://some/link",
            "pushline": json.dumps(
                {"in_app": {"style": "MODAL"}, "notificationOptions": INFOBIP_OPTIONS},
                separators=(",", ":"),
            ),
        },
        "android": {
            "priority": "high",
            "notification": {"sound": "sound.wav", "default_vibrate_timings": True},
        },
    }
    assert app.stack.apns.requests(secondary) == []


# --- Backendless -----------------------------------------------------------------------------

# A publish body's `message` and `headers` (the header names Backendless documents for
# iOS and Android appearance); `pushBroadcast: ALL` and the channel are the target.
BACKENDLESS_MESSAGE = "Hello subscribers"
BACKENDLESS_HEADERS = {
    "ios-alert": "Hello iPhone",
    "ios-badge": "2",
    "ios-sound": "chime.caf",
    "android-ticker-text": "You have news",
    "android-content-title": "News",
    "android-content-text": "Hello Android",
    "orderId": "17",  # any other header reaches the app as data
}


def test_backendless_publish_headers_example_broadcast_to_a_channel(app: AppHandle) -> None:
    native = backendless_payload(BACKENDLESS_MESSAGE, BACKENDLESS_HEADERS)
    apple, _ = ios(app, topics=["default"])
    droid, _ = android(app, topics=["default"])
    elsewhere, _ = ios(app, topics=["other-channel"])
    target = {"type": "os_mask", "mask": "ALL", "channel": "default"}
    assert push(app, target, native).by_code == {"0": 2}
    assert apns_seen(app, apple) == (
        alert_headers(app),
        {
            "orderId": "17",
            "aps": {"alert": {"body": "Hello iPhone"}, "badge": 2, "sound": "chime.caf"},
        },
    )
    assert fcm_seen(app, droid) == {
        "token": droid,
        "notification": {"title": "News", "body": "Hello Android"},
        "data": {"orderId": "17"},
        "android": {"priority": "high", "notification": {"ticker": "You have news"}},
    }
    assert app.stack.apns.requests(elsewhere) == []


def test_backendless_singlecast_to_device_ids_example(app: AppHandle) -> None:
    apple, _ = ios(app, device_id="deviceId1")
    droid, _ = android(app, device_id="deviceId2")
    native = backendless_payload("Just you", {})
    target = {"type": "device_ids", "device_ids": ["deviceId1", "deviceId2"]}
    assert push(app, target, native).by_code == {"0": 2}
    assert apns_seen(app, apple) == (alert_headers(app), {"aps": {"alert": {"body": "Just you"}}})
    assert fcm_seen(app, droid) == {
        "token": droid,
        "notification": {"body": "Just you"},
        "android": {"priority": "high"},
    }


# --- Microbizz -------------------------------------------------------------------------------

IMEI = "356938035643809"


@pytest.mark.parametrize(
    ("native", "fcm_data"),
    [
        (
            {
                "alert": {"title": "New message from Anna"},
                "data": {
                    "destination": "newmessage",
                    "vibrate": True,
                    "sound": True,
                    "usertext": "Anna",
                    "threadid": 4711,
                    "messageid": 815,
                },
            },
            {
                "destination": "newmessage",
                "vibrate": "true",
                "sound": "true",
                "usertext": "Anna",
                "threadid": "4711",
                "messageid": "815",
            },
        ),
        (
            {
                "alert": {"title": "Task updated", "body": "Bo commented"},
                "data": {
                    "destination": "notification",
                    "vibrate": False,
                    "sound": True,
                    "userid": 12,
                    "usertext": "Bo",
                    "modcode": "todo",
                    "objid": 99,
                    "threadid": 5,
                    "messageid": 6,
                    "confirmation": 2,
                },
            },
            {
                "destination": "notification",
                "vibrate": "false",
                "sound": "true",
                "userid": "12",
                "usertext": "Bo",
                "modcode": "todo",
                "objid": "99",
                "threadid": "5",
                "messageid": "6",
                "confirmation": "2",
            },
        ),
        (
            # No destination: "display the message for the user" (SEED-NOTES 29).
            {
                "alert": {"title": "Hello", "body": "Please call the office"},
                "data": {"modcode": "customer", "objid": 42, "id": 7, "confirmation": 1},
            },
            {"modcode": "customer", "objid": "42", "id": "7", "confirmation": "1"},
        ),
    ],
    ids=["newmessage", "notification", "no-destination"],
)
def test_microbizz_data_payload_examples_arrive_as_the_app_expects(
    app: AppHandle, native: dict[str, Any], fcm_data: dict[str, str]
) -> None:
    apple, _ = ios(app, device_id=IMEI)
    droid, _ = android(app, device_id="+4512345678")  # the device id may be a phone number
    target = {"type": "device_ids", "device_ids": [IMEI, "+4512345678"]}
    assert push(app, target, native).by_code == {"0": 2}
    # APNs: JSON values beside aps, booleans and numbers as they are.
    assert apns_seen(app, apple) == (
        alert_headers(app),
        {**native["data"], "aps": {"alert": native["alert"]}},
    )
    # FCM: strings by the one rule (SEED-NOTES 30); the visible part is the notification.
    assert fcm_seen(app, droid) == {
        "token": droid,
        "notification": native["alert"],
        "data": fcm_data,
        "android": {"priority": "high"},
    }
    # One JSON parse of each non-string value gives the app back what was sent.
    recovered = {
        k: v if isinstance(native["data"][k], str) else json.loads(v) for k, v in fcm_data.items()
    }
    assert recovered == native["data"]


def test_microbizz_sync_is_a_silent_push(app: AppHandle) -> None:
    apple, _ = ios(app, device_id=IMEI)
    droid, _ = android(app, device_id="imei-2")
    target = {"type": "device_ids", "device_ids": [IMEI, "imei-2"]}
    assert push(app, target, {"silent": True, "data": {"destination": "sync"}}).by_code == {"0": 2}
    headers, body = apns_seen(app, apple)
    assert headers == {
        "apns-push-type": "background",
        "apns-priority": "5",
        "apns-topic": app.creds.apns_topic,
    }
    assert body == {"destination": "sync", "aps": {"content-available": 1}}
    assert fcm_seen(app, droid) == {
        "token": droid,
        "data": {"destination": "sync"},
        "android": {"priority": "high"},
    }


# --- every native field ----------------------------------------------------------------------

EVERY_FIELD = {
    "alert": {
        "title": "Order shipped",
        "subtitle": "Today",
        "body": "Your order 4711 is on its way",
        "title_loc_key": "SHIPPED_TITLE",
        "title_loc_args": ["4711"],
        "loc_key": "SHIPPED_BODY",
        "loc_args": ["4711", "today"],
    },
    "badge": 3,
    "sound": {"critical": True, "name": "alarm.caf", "volume": 0.8},
    "data": {"order": 4711, "urgent": True, "note": "fragile"},
    "priority": "high",
    "time_to_live": 3600,
    "collapse_id": "order-4711",
    "thread_id": "orders",
    "category": "ORDER",
    "content_available": True,
    "mutable_content": True,
    "image": "https://example.com/parcel.png",
    "interruption_level": "time-sensitive",
    "relevance_score": 0.8,
    "web_view_url": "https://example.com/orders/4711",
    "inbox_topic": "orders",
    "in_app": {
        "style": "MODAL",
        "expires_in_s": 3600,
        "dismiss_title": "Later",
        "open_title": "Open",
        "on_tap_action": "app://orders/4711",
    },
    "apns": {
        "headers": {"apns-collapse-id": "apns-order-4711"},
        "custom_values": {"deeplink": "app://orders/4711"},
        "thread_id": "ios-orders",
    },
    "fcm": {
        "ttl": 600,
        "priority": "high",
        "notification_priority": "high",
        "channel_id": "orders",
        "vibrate": True,
        "vibrate_timings_ms": [0, 250, 250, 250],
        "color": "#ff8800",
        "icon": "ic_parcel",
        "click_action": "OPEN_ORDER",
        "tag": "order-4711",
        "ticker": "Order shipped",
    },
    "localized": {"de": {"alert": {"title": "Bestellung versandt", "body": "Unterwegs"}}},
}
PUSHLINE_BLOCK = {
    "web_view_url": "https://example.com/orders/4711",
    "inbox_topic": "orders",
    "in_app": {
        "style": "MODAL",
        "expires_in_s": 3600,
        "dismiss_title": "Later",
        "open_title": "Open",
        "on_tap_action": "app://orders/4711",
    },
}


def inbox_topic(app: AppHandle, name: str) -> None:
    """Create the app's inbox topic (a push may name only one that exists)."""
    r = httpx.post(
        app.stack.api_url + "/push/1/inbox/topics",
        json={"name": name},
        headers={"X-API-Key": app.creds.api_key},
    )
    assert r.status_code == 201, r.text


def test_every_native_field_on_apns(app: AppHandle) -> None:
    token, _ = ios(app, username="eve", locale="en-GB")
    inbox_topic(app, "orders")
    assert push(app, {"type": "users", "usernames": ["eve"]}, EVERY_FIELD).by_code == {"0": 1}
    headers, body = apns_seen(app, token)
    assert headers == alert_headers(
        app, **{"apns-collapse-id": "apns-order-4711", "apns-expiration": SET}
    )
    assert body == {
        "order": 4711,
        "urgent": True,
        "note": "fragile",
        "deeplink": "app://orders/4711",
        "pushline": {"image": "https://example.com/parcel.png", **PUSHLINE_BLOCK},
        "aps": {
            "alert": {
                "title": "Order shipped",
                "subtitle": "Today",
                "body": "Your order 4711 is on its way",
                "title-loc-key": "SHIPPED_TITLE",
                "title-loc-args": ["4711"],
                "loc-key": "SHIPPED_BODY",
                "loc-args": ["4711", "today"],
            },
            "badge": 3,
            "sound": {"critical": 1, "name": "alarm.caf", "volume": 0.8},
            "category": "ORDER",
            "thread-id": "ios-orders",
            "content-available": 1,
            "mutable-content": 1,
            "interruption-level": "time-sensitive",
            "relevance-score": 0.8,
        },
    }


def test_every_native_field_on_fcm_with_a_locale_variant(app: AppHandle) -> None:
    token, _ = android(app, username="eve", locale="de-AT")
    inbox_topic(app, "orders")
    assert push(app, {"type": "users", "usernames": ["eve"]}, EVERY_FIELD).by_code == {"0": 1}
    message = fcm_seen(app, token)
    assert message == {
        "token": token,
        "notification": {
            "title": "Bestellung versandt",
            "body": "Unterwegs",
            "image": "https://example.com/parcel.png",
        },
        "data": {
            "order": "4711",
            "urgent": "true",
            "note": "fragile",
            "pushline": json.dumps(PUSHLINE_BLOCK, separators=(",", ":")),
        },
        "android": {
            "priority": "high",
            "ttl": "600s",
            "collapse_key": "order-4711",
            "notification": {
                "sound": "alarm.caf",
                "tag": "order-4711",
                "color": "#ff8800",
                "icon": "ic_parcel",
                "click_action": "OPEN_ORDER",
                "channel_id": "orders",
                "ticker": "Order shipped",
                "notification_priority": "PRIORITY_HIGH",
                "vibrate_timings": ["0s", "0.250000000s", "0.250000000s", "0.250000000s"],
                "default_vibrate_timings": True,
                "notification_count": 3,
            },
        },
    }


# --- locale fallback, end to end -------------------------------------------------------------


def test_three_devices_get_the_de_de_the_de_and_the_default_variant(app: AppHandle) -> None:
    bavarian, _ = ios(app, username="lena", locale="de-DE-bay")
    austrian, _ = android(app, username="lena", locale="de-AT")
    french, _ = ios(app, username="lena", locale="fr")
    payload = {
        "alert": {"title": "News", "body": "default"},
        "localized": {
            "de-DE": {"alert": {"title": "Neuigkeiten", "body": "de-DE"}},
            "de": {"alert": {"title": "Neuigkeiten", "body": "de"}},
        },
    }
    assert push(app, {"type": "users", "usernames": ["lena"]}, payload).by_code == {"0": 3}
    assert apns_seen(app, bavarian)[1] == {
        "aps": {"alert": {"title": "Neuigkeiten", "body": "de-DE"}}
    }
    assert fcm_seen(app, austrian)["notification"] == {"title": "Neuigkeiten", "body": "de"}
    assert apns_seen(app, french)[1] == {"aps": {"alert": {"title": "News", "body": "default"}}}


# --- provider size limits --------------------------------------------------------------------


def _apns_sized(size: int, voip: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """A native payload whose APNs body is exactly `size` bytes as aioapns sends it
    (json.dumps, default separators), and that body. Counted here, not by the code under
    test: the simulator refuses anything larger with 413."""

    def body(pad: int) -> dict[str, Any]:
        return {"d": "y" * 1900, "c": "z" * pad, "aps": {"alert": {"body": "x" * 2048}}}

    def sent(pad: int) -> dict[str, Any]:  # the device's Delivery id rides along
        return {**body(pad), NOTIFICATION_ID_KEY: str(uuid.uuid4())}

    base = len(json.dumps(sent(0), ensure_ascii=False).encode())
    pad = size - base
    assert 0 <= pad <= 1990
    expected = body(pad)
    assert len(json.dumps(sent(pad), ensure_ascii=False).encode()) == size
    native: dict[str, Any] = {
        "alert": "x" * 2048,
        "data": {"d": "y" * 1900},
        "apns": {"custom_values": {"c": "z" * pad}},
    }
    if voip:
        native["push_type"] = "voip"
    return native, expected


@pytest.mark.parametrize(("voip", "limit"), [(False, 4096), (True, 5120)], ids=["alert", "voip"])
def test_apns_payload_at_the_limit_is_sent_and_one_byte_over_is_code_9_unsent(
    app: AppHandle, voip: bool, limit: int
) -> None:
    at, _ = ios(app, username="size-at")
    over, _ = ios(app, username="size-over")
    native, expected = _apns_sized(limit, voip)
    assert push(app, {"type": "users", "usernames": ["size-at"]}, native).by_code == {"0": 1}
    headers, body = apns_seen(app, at)
    assert body == expected
    if voip:
        assert headers["apns-topic"] == app.creds.apns_topic + ".voip"
        assert headers["apns-push-type"] == "voip"
    too_big, _ = _apns_sized(limit + 1, voip)
    st = push(app, {"type": "users", "usernames": ["size-over"]}, too_big)
    assert (st.by_code, st.by_status) == ({"9": 1}, {"ERROR": 1})
    assert app.stack.apns.requests(over) == [] and accepted(app.stack.apns.stats(), over) == 0


def _fcm_sized(token: str, size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A native payload whose FCM `message` (token included, compact JSON, as the fake
    FCM measures it) is exactly `size` bytes, and that message."""

    def message(pad: int, delivery_id: str | None = None) -> dict[str, Any]:
        data = {"d": "y" * pad}
        if delivery_id:  # the device's Delivery id rides along in data
            data[NOTIFICATION_ID_KEY] = delivery_id
        return {
            "token": token,
            "notification": {"body": "x" * 2048},
            "data": data,
            "android": {"priority": "high"},
        }

    sent = message(0, str(uuid.uuid4()))
    base = len(json.dumps(sent, separators=(",", ":")).encode())
    pad = size - base
    assert 0 <= pad <= 1990
    expected = message(pad)
    return {"alert": "x" * 2048, "data": {"d": "y" * pad}}, expected


def test_fcm_message_at_4096_bytes_is_sent_and_one_byte_over_is_code_9_unsent(
    app: AppHandle,
) -> None:
    at, _ = android(app, username="fcm-at")
    over, _ = android(app, username="fcm-over")
    native, expected = _fcm_sized(at, 4096)
    assert push(app, {"type": "users", "usernames": ["fcm-at"]}, native).by_code == {"0": 1}
    assert fcm_seen(app, at) == expected
    too_big, _ = _fcm_sized(over, 4097)
    st = push(app, {"type": "users", "usernames": ["fcm-over"]}, too_big)
    assert (st.by_code, st.by_status) == ({"9": 1}, {"ERROR": 1})
    assert app.stack.fcm.requests(over) == [] and accepted(app.stack.fcm.stats(), over) == 0


# --- the API's limits ------------------------------------------------------------------------


def test_a_priority_longer_than_128_characters_is_a_400_naming_128(app: AppHandle) -> None:
    r = httpx.post(
        f"{app.stack.api_url}/v1/messages",
        headers={"X-API-Key": app.creds.api_key},
        json={
            "target": {"type": "users", "usernames": ["a"]},
            "payload": {"alert": "x", "priority": "h" * 129},
        },
    )
    assert r.status_code == 400
    detail = r.json()["details"][0]
    assert detail["field"] == "payload.priority" and "128" in detail["rule"]


def test_a_bulk_entry_payload_is_checked_before_anything_is_queued(app: AppHandle) -> None:
    r = httpx.post(
        f"{app.stack.api_url}/v1/messages",
        headers={"X-API-Key": app.creds.api_key},
        json={
            "target": {"type": "bulk", "entries": [{"user": "u", "payload": {"sound": "s" * 257}}]},
            "payload": {"alert": "x"},
        },
    )
    assert r.status_code == 400
    detail = r.json()["details"][0]
    assert detail["field"] == "target.entries.0.payload.sound" and "256" in detail["rule"]
