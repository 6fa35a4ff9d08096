"""Building provider payloads from a normalised Message payload (pure functions).

For one device: `choose_payload` stacks the layers (default, its locale variant, the
user's bulk override, that override's locale variant; see schemas/payload.py) into one
payload; `build_apns` / `build_fcm` turn it into what the provider receives; the size
checks measure exactly those bytes, so a payload too large is code 9 without a request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from schemas.payload import (
    HMS_TTL_MAX_S,
    PROVIDER_BLOCKS,
    PUSHLINE_KEY,
    Content,
    device_locale,
    pick_locale,
)
from schemas.targets import bulk_override

APNS_MAX_BYTES = 4096
APNS_VOIP_MAX_BYTES = 5120
FCM_MAX_BYTES = 4096

#: Apple sends each push type to the bundle id with its own suffix (the app's topic).
TOPIC_SUFFIX = {
    "voip": ".voip",
    "complication": ".complication",
    "fileprovider": ".pushkit.fileprovider",
    "liveactivity": ".push-type.liveactivity",
    "location": ".location-query",
    "pushtotalk": ".voip-ptt",
}
#: Fields a provider block (`apns` / `fcm`) may set for its provider only.
CONTENT_FIELDS = frozenset(Content.model_fields)
_APS_ALERT_KEYS = {
    "title": "title",
    "subtitle": "subtitle",
    "body": "body",
    "title_loc_key": "title-loc-key",
    "title_loc_args": "title-loc-args",
    "loc_key": "loc-key",
    "loc_args": "loc-args",
}

Payload = Mapping[str, Any]


# --- which payload a device gets -------------------------------------------------------------


def resolve_layer(layer: Payload, locale: str | None) -> tuple[str | None, dict[str, Any]]:
    """A layer with its best locale variant laid over it; returns (variant key, fields)."""
    variants = layer.get("localized") or {}
    key = pick_locale(variants, locale)
    fields = {k: v for k, v in layer.items() if k != "localized"}
    if key is not None:
        fields.update(variants[key])
    return key, fields


def device_payload(
    payload: Payload, override: Payload | None, locale: str | None
) -> tuple[Hashable, Payload]:
    """The payload one device gets, and a key naming that choice (same key, same payload).

    Each layer is localized before the next is laid over it, so a user's own alert beats
    the default's German variant for a German device: the more specific sender wins.
    """
    if override is None and not payload.get("localized"):
        return None, payload  # the common case: one payload for the whole Message
    key, fields = resolve_layer(payload, locale)
    if override is None:
        return key, fields
    override_key, layer = resolve_layer(override, locale)
    fields.update(layer)
    return (key, json.dumps(override, sort_keys=True), override_key), fields


def choose_payload(
    payload: Payload,
    target: Mapping[str, Any],
    *,
    username: str | None,
    global_user_ids: Collection[str],
    locale: str | None,
    preferred_languages: Sequence[str] | None,
) -> tuple[Hashable, Payload]:
    """`device_payload` for one registration of a Message (bulk override, locale).

    `global_user_ids`: every Global User ID the registration has had, current and former,
    since a bulk entry may name an old one."""
    override = (
        bulk_override(target, username, global_user_ids) if target.get("type") == "bulk" else None
    )
    return device_payload(payload, override, device_locale(locale, preferred_languages))


def message_ttl(payload: Payload, expires_at: datetime | None, now: datetime) -> int | None:
    """Seconds the provider may keep trying: what is left of the Message's life, so a retry
    never extends it; never more than the time to live asked for."""
    end = expires_at
    if end is None and payload.get("expiration"):
        end = datetime.fromisoformat(payload["expiration"])
    ttl: int | None = payload.get("time_to_live")
    if end is None:
        return ttl
    left = max(0, math.ceil((end - now).total_seconds()))
    return left if ttl is None else min(ttl, left)


def provider_view(payload: Payload, provider: str) -> tuple[dict[str, Any], Payload]:
    """The common fields with the provider block's content fields laid over them, and the
    block itself (for its provider-only options)."""
    block: Payload = payload.get(provider) or {}
    view = {k: v for k, v in payload.items() if k not in (*PROVIDER_BLOCKS, "localized")}
    view.update({k: v for k, v in block.items() if k in CONTENT_FIELDS})
    return view, block


def _silent(p: Payload) -> bool:
    return bool(p.get("silent")) or p.get("push_type") == "background"


def app_extras(p: Payload, silent: bool, *, image: bool) -> dict[str, Any]:
    """What the app's own code shows (Infobip-style SDK features) under PUSHLINE_KEY.

    A silent push carries its alert here: nothing is displayed by the OS, the app may
    show it itself (Infobip: "show the notification only within the application").
    """
    out: dict[str, Any] = {}
    if silent and p.get("alert"):
        out["alert"] = p["alert"]
    if image and p.get("image") and not silent:
        out["image"] = p["image"]
    for key in ("web_view_url", "inbox_topic", "in_app"):
        if p.get(key) is not None:
            out[key] = p[key]
    if p.get("app_options"):
        out["notificationOptions"] = p["app_options"]
    return out


#: Every notification carries its Delivery id under this key (APNs: beside `aps`; FCM: in
#: `data`), so the app can report RECEIVED / CONSUMED / CONFIRMED for it: SAP's
#: notificationId, Infobip's messageId, CM's reference. A payload that sets the key itself
#: keeps its own value.
NOTIFICATION_ID_KEY = "notificationId"

# --- APNs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApnsRequest:
    body: dict[str, Any]
    push_type: str
    priority: int
    time_to_live: int | None
    collapse_id: str | None
    topic_suffix: str = ""  # appended to the app's topic: ".voip" for VoIP pushes


def apns_sound(sound: str | Mapping[str, Any]) -> str | dict[str, Any]:
    if isinstance(sound, str):
        return sound
    if not sound.get("critical"):
        return str(sound["name"])  # the dictionary form exists for critical alerts only
    out: dict[str, Any] = {"critical": 1, "name": sound["name"]}
    if sound.get("volume") is not None:
        out["volume"] = sound["volume"]
    return out


def build_apns(payload: Payload, ttl_s: int | None = None) -> ApnsRequest:
    """The `aps` dictionary, custom keys beside it, and the headers that must match it.

    A silent push (or push type background) is a background push: content-available 1,
    priority 5, and no alert, badge or sound in `aps`.
    """
    p, block = provider_view(payload, "apns")
    headers: Mapping[str, str] = block.get("headers") or {}
    visible = not _silent(p) and bool(
        p.get("alert") or p.get("badge") is not None or p.get("sound")
    )
    push_type = (
        headers.get("apns-push-type")
        or p.get("push_type")
        or ("alert" if visible else "background")
    )
    silent = bool(p.get("silent")) or push_type == "background"
    alert = p.get("alert")
    aps: dict[str, Any] = {}
    if not silent:
        if alert:
            aps["alert"] = {_APS_ALERT_KEYS[k]: v for k, v in alert.items() if v is not None}
        if p.get("badge") is not None:
            aps["badge"] = p["badge"]
        if p.get("sound"):
            aps["sound"] = apns_sound(p["sound"])
        if p.get("category"):
            aps["category"] = p["category"]
        if p.get("thread_id"):
            aps["thread-id"] = p["thread_id"]
    if silent or p.get("content_available"):
        aps["content-available"] = 1
    if not silent:
        # An image needs the app's notification service extension, which runs only then.
        if p.get("mutable_content") or (p.get("image") and alert):
            aps["mutable-content"] = 1
        if p.get("interruption_level"):
            aps["interruption-level"] = p["interruption_level"]
        if p.get("relevance_score") is not None:
            aps["relevance-score"] = p["relevance_score"]
    body: dict[str, Any] = {**(p.get("data") or {}), **(block.get("custom_values") or {})}
    extras = app_extras(p, silent, image=True)
    if extras:
        body[PUSHLINE_KEY] = extras
    body["aps"] = aps
    # Apple: background pushes go at priority 5 (or 1); alerts at 10 unless asked otherwise.
    if "apns-priority" in headers:
        priority = int(headers["apns-priority"])
    else:
        priority = 5 if silent or p.get("priority") == "normal" else 10
    if silent:
        priority = min(priority, 5)
    return ApnsRequest(
        body=body,
        push_type=push_type,
        priority=priority,
        time_to_live=ttl_s if ttl_s is not None else p.get("time_to_live"),
        collapse_id=headers.get("apns-collapse-id") or p.get("collapse_id"),
        topic_suffix=TOPIC_SUFFIX.get(push_type, ""),
    )


def apns_size(req: ApnsRequest) -> int:
    # Exactly the bytes aioapns sends: json.dumps with its default separators.
    return len(json.dumps(req.body, ensure_ascii=False).encode())


def apns_for_device(req: ApnsRequest, delivery_id: str) -> ApnsRequest:
    """The request with this device's notification id beside `aps` (see NOTIFICATION_ID_KEY)."""
    if NOTIFICATION_ID_KEY in req.body:  # the sender's own custom key wins
        return req
    return replace(req, body={**req.body, NOTIFICATION_ID_KEY: delivery_id})


def apns_too_large(req: ApnsRequest) -> bool:
    limit = APNS_VOIP_MAX_BYTES if req.push_type == "voip" else APNS_MAX_BYTES
    return apns_size(req) > limit


# --- FCM -------------------------------------------------------------------------------------


def fcm_data_value(value: Any) -> str:
    """FCM data values are strings: strings go as they are, anything else as its JSON text.

    So `true` arrives as "true" and 42 as "42"; the app recovers the type with one JSON
    parse (SEED-NOTES 30).
    """
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class FcmParts:
    """The provider-independent parts of an FCM v1 message, before the token is added.

    `android` holds AndroidConfig arguments, its `notification` AndroidNotification ones.
    The `apns_*` parts are only filled for iOS devices that go through FCM.
    """

    notification: dict[str, str] | None
    data: dict[str, str] | None
    android: dict[str, Any]
    apns_headers: dict[str, str]
    apns_aps: dict[str, Any]
    apns_custom: dict[str, Any] | None = None


def fcm_for_device(parts: FcmParts, delivery_id: str) -> FcmParts:
    """The parts with this device's notification id in `data` (see NOTIFICATION_ID_KEY)."""
    data = parts.data or {}
    if NOTIFICATION_ID_KEY in data:  # the sender's own data key wins
        return parts
    return replace(parts, data={**data, NOTIFICATION_ID_KEY: delivery_id})


def build_fcm(
    payload: Payload, ttl_s: int | None = None, *, ios: bool = False, now_s: int | None = None
) -> FcmParts:
    """The FCM v1 message parts. A silent push is a data-only message (no notification);
    data values are strings by `fcm_data_value`'s one rule."""
    p, block = provider_view(payload, "fcm")
    silent = _silent(p)
    alert: Mapping[str, Any] = p.get("alert") or {}
    notification = None
    if not silent:
        shown = {"title": alert.get("title"), "body": alert.get("body"), "image": p.get("image")}
        notification = {k: v for k, v in shown.items() if v} or None
    data = {k: fcm_data_value(v) for k, v in (p.get("data") or {}).items()}
    shown_text = alert.get("body") or alert.get("title")
    if block.get("alert_in_data") and shown_text and "alert" not in data:
        data["alert"] = shown_text  # the sender's own `alert` data key wins
    extras = app_extras(p, silent, image=False)
    if extras:
        data[PUSHLINE_KEY] = fcm_data_value(extras)

    android: dict[str, Any] = {
        "priority": block.get("priority") or ("normal" if p.get("priority") == "normal" else "high")
    }
    ttl = ttl_s if ttl_s is not None else p.get("time_to_live")
    if block.get("ttl") is not None:
        # The block's ttl (SAP gcm.timeToLive) is FCM's, within the Message's own life.
        ttl = block["ttl"] if ttl is None else min(block["ttl"], ttl)
    if ttl is not None:
        android["ttl"] = ttl
    if p.get("collapse_id"):
        android["collapse_key"] = p["collapse_id"]
    note = _android_notification(p, block)
    loc = alert.get("loc_key") or alert.get("title_loc_key")
    if not silent and (notification or loc) and note:
        android["notification"] = note

    apns_headers: dict[str, str] = {}
    apns_aps: dict[str, Any] = {}
    apns_custom: dict[str, Any] | None = None
    if ios:
        apns_headers, apns_aps, apns_custom = _apns_through_fcm(payload, ttl_s, now_s)
    return FcmParts(notification, data or None, android, apns_headers, apns_aps, apns_custom)


def _android_notification(p: Payload, block: Payload) -> dict[str, Any]:
    alert: Mapping[str, Any] = p.get("alert") or {}
    sound = p.get("sound")
    note: dict[str, Any] = {
        "title_loc_key": alert.get("title_loc_key"),
        "title_loc_args": alert.get("title_loc_args"),
        "body_loc_key": alert.get("loc_key"),
        "body_loc_args": alert.get("loc_args"),
        "channel_id": block.get("channel_id"),
        "sound": sound if isinstance(sound, str) or sound is None else sound["name"],
        "tag": block.get("tag"),
        "color": block.get("color"),
        "icon": block.get("icon"),
        "click_action": block.get("click_action"),
        "ticker": block.get("ticker"),
        "notification_count": p.get("badge"),
        "priority": block.get("notification_priority"),
        "vibrate_timings_millis": block.get("vibrate_timings_ms"),
        "default_vibrate_timings": block.get("vibrate"),
    }
    return {k: v for k, v in note.items() if v is not None}


def _apns_through_fcm(
    payload: Payload, ttl_s: int | None, now_s: int | None
) -> tuple[dict[str, str], dict[str, Any], dict[str, Any] | None]:
    """The `apns` block of an FCM message for an iOS device: the same headers and `aps` as
    a direct APNs push. FCM builds the alert from `notification` unless it needs more
    (subtitle, loc keys); data travels in FCM's `data`, so only custom values go here."""
    req = build_apns(payload, ttl_s)
    headers = {"apns-push-type": req.push_type, "apns-priority": str(req.priority)}
    if req.collapse_id:
        headers["apns-collapse-id"] = req.collapse_id
    if req.time_to_live is not None and now_s is not None:
        headers["apns-expiration"] = str(now_s + req.time_to_live)
    aps = dict(req.body["aps"])
    alert = aps.get("alert") or {}
    if not set(alert) - {"title", "body"}:
        aps.pop("alert", None)
    _, block = provider_view(payload, "apns")
    custom = dict(block.get("custom_values") or {}) or None
    return headers, aps, custom


def fcm_message_size(message_json: dict[str, Any]) -> int:
    return len(json.dumps(message_json, ensure_ascii=False, separators=(",", ":")).encode())


# --- Web Push --------------------------------------------------------------------------------

#: What a push service must accept (RFC 8030 §7.2): 4096 bytes of encrypted body.
WEBPUSH_MAX_BYTES = 4096
#: aes128gcm in one record (RFC 8188, RFC 8291 §4): the header (salt 16, record size 4,
#: key id length 1, the sender's public key 65), the padding delimiter and the AEAD tag.
WEBPUSH_OVERHEAD = 16 + 4 + 1 + 65 + 1 + 16
#: RFC 8030 makes TTL mandatory; without one asked for, the longest FCM keeps a message.
WEBPUSH_DEFAULT_TTL_S = 2_419_200
#: RFC 8030 §5.4: a Topic is at most 32 characters of the base64url alphabet.
_WEBPUSH_TOPIC = re.compile(r"^[A-Za-z0-9_\-]{1,32}$")


@dataclass(frozen=True)
class WebPushRequest:
    """What one subscription gets: the JSON its service worker reads (encrypted on the way)
    and the RFC 8030 headers."""

    body: dict[str, Any]
    ttl: int
    urgency: str
    topic: str | None


def webpush_topic(collapse_id: str | None) -> str | None:
    """The Topic header for a collapse id: itself when it fits RFC 8030's alphabet and
    length, else a stable 32-character digest of it (the same id, the same topic)."""
    if not collapse_id:
        return None
    if _WEBPUSH_TOPIC.match(collapse_id):
        return collapse_id
    digest = hashlib.sha256(collapse_id.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:32]


def build_webpush(payload: Payload, ttl_s: int | None = None) -> WebPushRequest:
    """The service-worker payload (README "Web Push payload") and its headers.

    Shown fields as the Notifications API names them (`showNotification(title, options)`):
    title, body, icon, image, badge (the `badge_icon` URL), tag (the collapse id), actions,
    requireInteraction, renotify; the app's `data`; Pushline's extras under PUSHLINE_KEY.
    A silent push shows nothing: `silent: true`, no title or body (its alert, if any, in
    the extras, as for the other providers).
    """
    p, block = provider_view(payload, "webpush")
    silent = _silent(p)
    alert: Mapping[str, Any] = p.get("alert") or {}
    body: dict[str, Any] = {}
    if silent:
        body["silent"] = True
    else:
        shown = {
            "title": alert.get("title"),
            "body": alert.get("body"),
            "icon": block.get("icon"),
            "image": p.get("image"),
            "badge": block.get("badge_icon"),
            "tag": p.get("collapse_id"),
            "actions": block.get("actions"),
            "requireInteraction": block.get("require_interaction"),
            "renotify": block.get("renotify"),
        }
        body.update({k: v for k, v in shown.items() if v is not None})
    if p.get("data"):
        body["data"] = dict(p["data"])
    extras = app_extras(p, silent, image=False)
    if extras:
        body[PUSHLINE_KEY] = extras
    ttl = ttl_s if ttl_s is not None else p.get("time_to_live")
    if block.get("ttl") is not None:
        ttl = block["ttl"] if ttl is None else min(block["ttl"], ttl)
    urgency = block.get("urgency") or ("normal" if p.get("priority") == "normal" else "high")
    return WebPushRequest(
        body=body,
        ttl=WEBPUSH_DEFAULT_TTL_S if ttl is None else ttl,
        urgency=urgency,
        topic=webpush_topic(p.get("collapse_id")),
    )


def webpush_for_device(req: WebPushRequest, delivery_id: str) -> WebPushRequest:
    """The request with this device's notification id (see NOTIFICATION_ID_KEY)."""
    return replace(req, body={**req.body, NOTIFICATION_ID_KEY: delivery_id})


def webpush_plaintext(req: WebPushRequest) -> bytes:
    """Exactly the bytes that are encrypted: compact JSON, UTF-8."""
    return json.dumps(req.body, ensure_ascii=False, separators=(",", ":")).encode()


def webpush_encrypted_size(plaintext_bytes: int) -> int:
    """The size of the aes128gcm body for a plaintext of this many bytes (one record)."""
    return plaintext_bytes + WEBPUSH_OVERHEAD


def webpush_too_large(req: WebPushRequest) -> bool:
    return webpush_encrypted_size(len(webpush_plaintext(req))) > WEBPUSH_MAX_BYTES


# --- Huawei Push Kit -------------------------------------------------------------------------

#: Push Kit refuses a message body over 4 KB (result code 80300008); measured like FCM's, on
#: the whole `message` object, token included, as compact JSON.
HMS_MAX_BYTES = 4096
_HMS_CLICK_OPEN_APP = {"type": 3}  # Push Kit requires a click action; 3 opens the app


@dataclass(frozen=True)
class HmsRequest:
    """A Push Kit message before its token: the `android` block and the app's data, which
    Push Kit carries as ONE string (the data object's compact JSON, so types survive)."""

    android: dict[str, Any]
    data: dict[str, Any]


def build_hms(payload: Payload, ttl_s: int | None = None) -> HmsRequest:
    """The Push Kit message parts (README "Huawei Push Kit"). A silent push is a data message
    (no notification); priority is `android.urgency`; the collapse id is the notification's
    tag (a newer notification with the same tag replaces the older on the device)."""
    p, block = provider_view(payload, "hms")
    silent = _silent(p)
    urgency = block.get("urgency") or ("normal" if p.get("priority") == "normal" else "high")
    android: dict[str, Any] = {"urgency": urgency.upper()}
    ttl = ttl_s if ttl_s is not None else p.get("time_to_live")
    if block.get("ttl") is not None:
        ttl = block["ttl"] if ttl is None else min(block["ttl"], ttl)
    if ttl is not None:
        android["ttl"] = f"{min(ttl, HMS_TTL_MAX_S)}s"
    for key in ("category", "collapse_key", "bi_tag"):
        if block.get(key) is not None:
            android[key] = block[key]
    if not silent:
        note = _hms_notification(p, block)
        if note is not None:
            android["notification"] = note
    data: dict[str, Any] = dict(p.get("data") or {})
    extras = app_extras(p, silent, image=False)
    if extras:
        data[PUSHLINE_KEY] = extras
    return HmsRequest(android=android, data=data)


def _hms_notification(p: Payload, block: Payload) -> dict[str, Any] | None:
    alert: Mapping[str, Any] = p.get("alert") or {}
    if not alert:
        return None
    # Push Kit needs both a title and a body: an alert with one shows it in both places.
    text = alert.get("title") or alert.get("body") or alert.get("subtitle")
    sound = p.get("sound")
    sound_name = sound if isinstance(sound, str) or sound is None else sound["name"]
    if block.get("click_url"):
        click: dict[str, Any] = {"type": 2, "url": block["click_url"]}
    elif block.get("click_intent"):
        click = {"type": 1, "intent": block["click_intent"]}
    else:
        click = dict(_HMS_CLICK_OPEN_APP)
    image = p.get("image")
    note: dict[str, Any] = {
        "title": alert.get("title") or text,
        "body": alert.get("body") or text,
        "title_loc_key": alert.get("title_loc_key"),
        "title_loc_args": alert.get("title_loc_args"),
        "body_loc_key": alert.get("loc_key"),
        "body_loc_args": alert.get("loc_args"),
        "image": image if isinstance(image, str) and image.startswith("https://") else None,
        "channel_id": block.get("channel_id"),
        "icon": block.get("icon"),
        "color": block.get("color"),
        "tag": block.get("tag") or p.get("collapse_id"),
        "importance": block["importance"].upper() if block.get("importance") else None,
        "default_sound": sound_name == "default" if sound_name else None,
        "sound": sound_name if sound_name and sound_name != "default" else None,
        "click_action": click,
    }
    return {k: v for k, v in note.items() if v is not None}


def hms_for_device(req: HmsRequest, delivery_id: str) -> HmsRequest:
    """The request with this device's notification id in its data (see NOTIFICATION_ID_KEY)."""
    if NOTIFICATION_ID_KEY in req.data:  # the sender's own data key wins
        return req
    return replace(req, data={**req.data, NOTIFICATION_ID_KEY: delivery_id})


def hms_message(token: str, req: HmsRequest) -> dict[str, Any]:
    """Push Kit's `message` object for one device (one token per request, so each device's
    answer is its own)."""
    message: dict[str, Any] = {"android": req.android, "token": [token]}
    if req.data:
        message["data"] = json.dumps(req.data, ensure_ascii=False, separators=(",", ":"))
    return message


def hms_body(token: str, req: HmsRequest) -> bytes:
    """Exactly the bytes POSTed to messages:send."""
    body = {"validate_only": False, "message": hms_message(token, req)}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def hms_size(token: str, req: HmsRequest) -> int:
    message = hms_message(token, req)
    return len(json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode())


def hms_too_large(token: str, req: HmsRequest) -> bool:
    return hms_size(token, req) > HMS_MAX_BYTES
