"""Building provider payloads from a normalised Message payload (pure functions)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

APNS_MAX_BYTES = 4096
APNS_VOIP_MAX_BYTES = 5120
FCM_MAX_BYTES = 4096


@dataclass(frozen=True)
class ApnsRequest:
    body: dict[str, Any]
    push_type: str
    priority: int
    time_to_live: int | None
    collapse_id: str | None


def build_apns(payload: dict[str, Any]) -> ApnsRequest:
    """The `aps` dictionary, custom keys beside it, and the headers that must match it."""
    aps: dict[str, Any] = {}
    alert = payload.get("alert")
    if alert:
        aps["alert"] = {k: v for k, v in alert.items() if v is not None}
    if "badge" in payload:
        aps["badge"] = payload["badge"]
    if payload.get("sound"):
        aps["sound"] = payload["sound"]
    if payload.get("category"):
        aps["category"] = payload["category"]
    if payload.get("thread_id"):
        aps["thread-id"] = payload["thread_id"]
    if payload.get("content_available"):
        aps["content-available"] = 1
    if payload.get("mutable_content"):
        aps["mutable-content"] = 1
    silent = not alert and "badge" not in payload and not payload.get("sound")
    push_type = payload.get("push_type") or ("background" if silent else "alert")
    # Apple: background pushes must go at priority 5; alerts at 10 unless asked otherwise.
    priority = 5 if push_type == "background" or payload.get("priority") == "normal" else 10
    body: dict[str, Any] = dict(payload.get("data") or {})
    body["aps"] = aps
    return ApnsRequest(
        body=body,
        push_type=push_type,
        priority=priority,
        time_to_live=payload.get("time_to_live"),
        collapse_id=payload.get("collapse_id"),
    )


def apns_size(req: ApnsRequest) -> int:
    return len(json.dumps(req.body, ensure_ascii=False, separators=(",", ":")).encode())


def apns_too_large(req: ApnsRequest) -> bool:
    limit = APNS_VOIP_MAX_BYTES if req.push_type == "voip" else APNS_MAX_BYTES
    return apns_size(req) > limit


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
    """The provider-independent parts of an FCM v1 message, before the token is added."""

    notification: dict[str, str] | None
    data: dict[str, str] | None
    android: dict[str, Any]
    apns_headers: dict[str, str]
    apns_aps: dict[str, Any]


def build_fcm(payload: dict[str, Any]) -> FcmParts:
    alert = payload.get("alert") or {}
    notification = {k: alert[k] for k in ("title", "body") if alert.get(k)} or None
    data = {k: fcm_data_value(v) for k, v in (payload.get("data") or {}).items()} or None
    android: dict[str, Any] = {
        "priority": "high" if payload.get("priority") != "normal" else "normal"
    }
    if payload.get("time_to_live") is not None:
        android["ttl"] = payload["time_to_live"]
    if payload.get("collapse_id"):
        android["collapse_key"] = payload["collapse_id"]
    android_notification: dict[str, Any] = {}
    if payload.get("sound"):
        android_notification["sound"] = payload["sound"]
    if payload.get("badge") is not None:
        android_notification["notification_count"] = payload["badge"]
    if notification and android_notification:
        android["notification"] = android_notification
    aps: dict[str, Any] = {}
    if payload.get("badge") is not None:
        aps["badge"] = payload["badge"]
    if payload.get("sound"):
        aps["sound"] = payload["sound"]
    if payload.get("content_available"):
        aps["content-available"] = 1
    return FcmParts(notification, data, android, {}, aps)


def fcm_message_size(message_json: dict[str, Any]) -> int:
    return len(json.dumps(message_json, ensure_ascii=False, separators=(",", ":")).encode())
