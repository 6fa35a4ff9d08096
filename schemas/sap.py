"""SAP Mobile Services' push API in Pushline's terms: request and response shapes, and the
pure translations between them and the native model.

- SAP bodies → a native `PushRequest` (target + payload); errors name SAP's own fields
  (`notification.notification.alert`, `userNotifications.0.user`), never the native ones.
- Delivery rows → `pushResults`; a Delivery id is SAP's `notificationId` and the
  registration id its `target`.
- The HTTP status of a push (SEED-NOTES 9), the notification status document and the
  registration documents.

Shapes per route (SEED-NOTES 2): v1 routes (device, application, group) take a flat
notification `{"alert": …}`; v2 routes (users, topic, bulk) take
`{"notification": {"notification": default, "notifications": {locale: …}}}`; capability
takes `{"users": [...], "notification": {flat}}`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.api import ErrorDetail, PushRequest
from schemas.codes import CODE_MEANINGS, DeliveryStatus, ResultCode
from schemas.payload import PayloadError, check_push, gcm_to_fcm

Name = Annotated[str, Field(min_length=1, max_length=255)]
RouteKind = Literal["device", "users", "bulk", "application", "topic", "group", "capability"]


class SapInputError(ValueError):
    """A request the SAP surface refuses (400): the SAP field path and the rule broken."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field, self.rule = field, rule


class _Sap(BaseModel):
    # Unknown fields are errors, named as SAP names them: a typo must not drop a field.
    model_config = ConfigDict(extra="forbid", populate_by_name=False)


# --- request bodies ------------------------------------------------------------------------


class SapCustomSound(_Sap):
    critical: bool = True
    name: str
    volume: float | None = None


class SapApns(_Sap):
    """The `apns` block: APNs-only fields (SAP's Java library names them so)."""

    category: str | None = None
    custom_values: str | dict[str, Any] | None = Field(None, alias="customValues")
    content_available: bool | None = Field(None, alias="contentAvailable")
    mutable_content: bool | None = Field(None, alias="mutableContent")
    thread_id: str | None = Field(None, alias="threadId")
    sound: str | None = None
    custom_sound: SapCustomSound | None = Field(None, alias="customSound")
    push_type: str | None = Field(None, alias="pushType")
    interruption_level: str | None = Field(None, alias="interruptionLevel")
    alert_body: str | None = Field(None, alias="alertBody")
    alert_title: str | None = Field(None, alias="alertTitle")
    alert_subtitle: str | None = Field(None, alias="alertSubtitle")
    localized_alert_key: str | None = Field(None, alias="localizedAlertKey")
    localized_alert_arguments: list[str] | None = Field(None, alias="localizedAlertArguments")
    localized_alert_title_key: str | None = Field(None, alias="localizedAlertTitleKey")
    localized_alert_title_arguments: list[str] | None = Field(
        None, alias="localizedAlertTitleArguments"
    )


class SapNotification(_Sap):
    """A flat notification: the v1 body, a v2 default or locale variant."""

    alert: str | None = None
    badge: int | None = None
    sound: str | None = None
    data: str | dict[str, Any] | None = None  # the seed's serialized form, or an object
    priority: str | None = None
    apns: SapApns | None = None
    gcm: dict[str, Any] | None = None


class SapLocalized(_Sap):
    """v2: a default notification and variants per locale (SEED-NOTES 5)."""

    notification: SapNotification | None = None
    notifications: dict[str, SapNotification] | None = None


class SapUsersPush(_Sap):
    users: list[Name] = []
    user_uuids: list[Name] = Field([], alias="userUUIDs")
    notification: SapLocalized


class SapTopicPush(SapUsersPush):
    topics: list[Name] | None = None


class SapBulkEntry(_Sap):
    user: Name | None = None
    user_uuid: Name | None = Field(None, alias="userUUID")
    notification: SapLocalized | None = None


class SapBulkPush(_Sap):
    notification: SapLocalized | None = None  # the optional template (SEED-NOTES 10)
    user_notifications: list[SapBulkEntry] = Field(alias="userNotifications")


class SapCapabilityUser(_Sap):
    user: Name | None = None
    form_factor: list[str] | str | None = Field(None, alias="formFactor")


class SapCapabilityPush(_Sap):
    users: list[SapCapabilityUser] = []
    notification: SapNotification


class SapEngagement(_Sap):
    """What the app reports for a notification it got."""

    status: str


class SapCapability(_Sap):
    name: Name
    category: Name | None = None
    value: Annotated[str, Field(max_length=1000)] | None = None


class SapRegistrationBody(_Sap):
    """A device's push registration, as the seed's example payload, plus the user: SAP
    reads it from the device's login, Pushline's API key carries none (`username`, and
    `userUUID` for the Global User ID). Without `pushToken` the device is registered
    without one (its notifications end with code 5 until it sends one). For `w3cpushapi`
    the pushToken is the browser's PushSubscription (its JSON text, as
    `JSON.stringify(subscription)` gives it, or the object itself)."""

    # A string, or for a browser a PushSubscription object: checked per `{os}` when
    # translated, so each rule names pushToken and not a union member.
    push_token: Any = Field(None, alias="pushToken")
    username: Name | None = None
    user_uuid: Name | None = Field(None, alias="userUUID")
    push_group: Name | None = Field(None, alias="pushGroup")
    time_zone: Annotated[str, Field(max_length=64)] | None = Field(None, alias="timeZone")
    form_factor: Annotated[str, Field(max_length=32)] | None = Field(None, alias="formFactor")
    capabilities: list[SapCapability] | None = None
    user_locale: Annotated[str, Field(max_length=64)] | None = Field(None, alias="userLocale")
    device_model: Name | None = Field(None, alias="deviceModel")


#: SAP's operating-system identifiers (its "Native Push Provider" table) → native platform.
SAP_OS = {"ios": "ios", "android": "android", "w3cpushapi": "web"}
#: Registration fields in SAP's words, for 400s raised by the native rules.
SAP_REGISTRATION_FIELDS = {
    "token": "pushToken",
    "keys": "pushToken.keys",
    "platform": "os",
    "provider": "os",
    "device_id": "deviceId",
    "global_user_id": "userUUID",
    "push_group": "pushGroup",
    "time_zone": "timeZone",
    "form_factor": "formFactor",
    "locale": "userLocale",
    "device_model": "deviceModel",
}


def translate_registration(os: str, device_id: str | None, body: Any) -> dict[str, Any]:
    """An SAP registration (path `{os}`, `{deviceId}` and body) as a native registration."""
    platform = SAP_OS.get(os.lower())
    if platform is None:
        raise SapInputError("os", f"one of {', '.join(SAP_OS)}, not {os!r}")
    reg = _model(SapRegistrationBody, body)
    native: dict[str, Any] = {
        **_push_token(platform, reg.push_token),
        "platform": platform,
        "device_id": device_id,
        "username": reg.username,
        "global_user_id": reg.user_uuid,
        "push_group": reg.push_group,
        "time_zone": reg.time_zone,
        "form_factor": reg.form_factor,
        "locale": reg.user_locale,
        "device_model": reg.device_model,
    }
    if reg.capabilities is not None:
        native["capabilities"] = [c.model_dump(exclude_none=True) for c in reg.capabilities]
    return {k: v for k, v in native.items() if v is not None}


def _push_token(platform: str, token: Any) -> dict[str, Any]:
    """The native token (and a browser's keys) of SAP's pushToken; none without one."""
    if token is None:
        return {}
    if platform == "web":
        return _w3c_subscription(token)
    if not isinstance(token, str) or not 1 <= len(token) <= 4096:
        rule = "the device's push token: a string of 1 to 4096 characters"
        raise SapInputError("pushToken", rule)
    return {"token": token}


def _w3c_subscription(token: Any) -> dict[str, Any]:
    """A PushSubscription's endpoint becomes the token; its keys travel beside it."""
    rule = 'the PushSubscription, {"endpoint": …, "keys": {"p256dh": …, "auth": …}}'
    if isinstance(token, str):
        try:
            token = json.loads(token)
        except ValueError:
            raise SapInputError("pushToken", rule) from None
    if not isinstance(token, Mapping) or not isinstance(token.get("endpoint"), str):
        raise SapInputError("pushToken", rule)
    keys = token.get("keys")
    if not isinstance(keys, Mapping):
        raise SapInputError("pushToken.keys", rule)
    return {"token": token["endpoint"], "keys": dict(keys)}


# --- SAP body → native PushRequest --------------------------------------------------------

#: Native field names as SAP writes them, for error paths.
_SAP_NAMES = {
    "custom_values": "customValues",
    "content_available": "contentAvailable",
    "mutable_content": "mutableContent",
    "thread_id": "threadId",
    "push_type": "pushType",
    "interruption_level": "interruptionLevel",
    "fcm": "gcm",
    "ttl": "timeToLive",
    "usernames": "users",
    "global_user_ids": "userUUIDs",
    "entries": "userNotifications",
    "user_uuid": "userUUID",
    "form_factor": "formFactor",
    "push_group": "group",
}
_APNS_ALERT_NAMES = {
    "title": "alertTitle",
    "subtitle": "alertSubtitle",
    "body": "alertBody",
    "loc_key": "localizedAlertKey",
    "loc_args": "localizedAlertArguments",
    "title_loc_key": "localizedAlertTitleKey",
    "title_loc_args": "localizedAlertTitleArguments",
}
_LOCALE_FIELDS = ("alert", "badge", "sound", "data")
V2_SHAPE = (
    'required: v2 routes take {"notification": {"notification": {"alert": ...}, '
    '"notifications": {"<locale>": {...}}}}; a flat notification is for v1 routes'
)


def _loc(parts: Iterable[Any]) -> str:
    return ".".join(str(p) for p in parts)


def _model(model: type[_Sap], body: Any, where: str = "") -> Any:
    """Validate `body` as `model`; a SapInputError names the first SAP field that failed."""
    if not isinstance(body, Mapping):
        raise SapInputError(where or "body", "must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        path = _loc(p for p in (where, *err["loc"]) if p != "")
        raise SapInputError(path or "body", _rule(err["msg"])) from None


def _apns(apns: SapApns) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("category", "custom_values", "content_available", "mutable_content"):
        if getattr(apns, name) is not None:
            out[name] = getattr(apns, name)
    if apns.thread_id is not None:
        out["thread_id"] = apns.thread_id
    if apns.custom_sound is not None:
        out["sound"] = apns.custom_sound.model_dump(exclude_none=True)
    elif apns.sound is not None:
        out["sound"] = apns.sound
    if apns.push_type is not None:
        out["push_type"] = apns.push_type.lower()  # SAP's enum is upper case
    if apns.interruption_level is not None:
        out["interruption_level"] = apns.interruption_level.lower().replace("_", "-")
    alert = {
        native: getattr(apns, _snake(sap))
        for native, sap in _APNS_ALERT_NAMES.items()
        if getattr(apns, _snake(sap)) is not None
    }
    if alert:
        out["alert"] = alert
    return out


def _snake(camel: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)


def _flat(
    n: SapNotification, where: str, *, layer: Literal["push", "override", "variant"]
) -> dict[str, Any]:
    """A flat SAP notification as a native payload layer."""
    out: dict[str, Any] = {}
    for name in _LOCALE_FIELDS:
        if getattr(n, name) is not None:
            out[name] = getattr(n, name)
    extra = {"priority": n.priority, "apns": n.apns, "gcm": n.gcm}
    given = [k for k, v in extra.items() if v is not None]
    if layer == "variant" and given:
        raise SapInputError(
            _loc(p for p in (where, given[0]) if p),
            "a locale variant carries alert, badge, sound and data; give apns, gcm and "
            "priority in the default notification",
        )
    if layer == "override" and n.priority is not None:
        raise SapInputError(
            _loc(p for p in (where, "priority") if p),
            "priority belongs to the whole push: give it in the top-level notification",
        )
    if n.priority is not None:
        out["priority"] = n.priority
    if n.apns is not None:
        out["apns"] = _apns(n.apns)
    if n.gcm is not None:
        try:
            out["fcm"] = gcm_to_fcm(n.gcm)
        except ValueError as exc:
            raise SapInputError(_loc(p for p in (where, "gcm") if p), str(exc)) from None
    return out


def _localized(
    body: SapLocalized | None, where: str, *, required: bool, layer: Literal["push", "override"]
) -> dict[str, Any]:
    """`{"notification": default, "notifications": {locale: variant}}` as a native layer."""
    inner = f"{where}.notification"
    if body is None or body.notification is None:
        if required or (body is not None and body.notifications):
            raise SapInputError(inner, V2_SHAPE)
        return {}
    out = _flat(body.notification, inner, layer=layer)
    if body.notifications:
        out["localized"] = {
            locale: _flat(variant, f"{where}.notifications.{locale}", layer="variant")
            for locale, variant in body.notifications.items()
        }
    return out


def _v2_notification(raw: Mapping[str, Any], where: str) -> None:
    """A flat body on a v2 route names `notification.notification` (SEED-NOTES 2)."""
    value = raw.get("notification")
    flat = isinstance(value, Mapping) and not ({"notification", "notifications"} & set(value))
    if value is None or flat:
        raise SapInputError(f"{where}.notification", V2_SHAPE)


def translate(kind: RouteKind, body: Any, path: Mapping[str, str]) -> PushRequest:
    """An SAP push body (and the route's path values) as a validated native PushRequest."""
    if not isinstance(body, Mapping):
        raise SapInputError("body", "must be a JSON object")
    target: dict[str, Any]
    payload_at = ""
    if kind in ("device", "application", "group"):
        payload = _flat(_model(SapNotification, body), "", layer="push")
        if kind == "device":
            target = {"type": "device", "username": path["username"], "device_id": path["device"]}
        elif kind == "group":
            target = {"type": "group", "push_group": path["group"]}
        else:
            target = {"type": "application"}
    elif kind in ("users", "topic"):
        _v2_notification(body, "notification")
        req = _model(SapTopicPush if kind == "topic" else SapUsersPush, body)
        payload = _localized(req.notification, "notification", required=True, layer="push")
        payload_at = "notification.notification"
        target = {"type": kind, "usernames": req.users, "global_user_ids": req.user_uuids}
        if kind == "topic":
            if not req.topics:
                raise SapInputError("topics", "required: a list of at least one topic")
            target["topics"] = req.topics
        elif not req.users and not req.user_uuids:
            raise SapInputError("users", "give users or userUUIDs: at least one user")
    elif kind == "bulk":
        raw_entries = body.get("userNotifications")
        if body.get("notification") is not None:
            _v2_notification(body, "notification")
        for i, raw_entry in enumerate(raw_entries if isinstance(raw_entries, list) else []):
            if isinstance(raw_entry, Mapping) and raw_entry.get("notification") is not None:
                _v2_notification(raw_entry, f"userNotifications.{i}.notification")
        req = _model(SapBulkPush, body)
        payload = _localized(req.notification, "notification", required=False, layer="push")
        payload_at = "notification.notification"
        if not req.user_notifications:
            raise SapInputError("userNotifications", "required: at least one user notification")
        entries = []
        for i, entry in enumerate(req.user_notifications):
            where = f"userNotifications.{i}"
            if entry.user is None and entry.user_uuid is None:
                raise SapInputError(where, "give user or userUUID")
            layer = _localized(
                entry.notification, f"{where}.notification", required=False, layer="override"
            )
            entries.append({"user": entry.user, "user_uuid": entry.user_uuid, "payload": layer})
        target = {"type": "bulk", "entries": entries}
    else:  # capability
        req = _model(SapCapabilityPush, body)
        payload = _flat(req.notification, "notification", layer="push")
        payload_at = "notification"
        target = {
            "type": "capability",
            "capability": path["capability"],
            "users": [
                {"user": u.user, "form_factor": u.form_factor}
                for u in req.users
                if u.user is not None or u.form_factor
            ],
        }
    _alert_in_data(payload)
    for entry in target.get("entries") or []:
        if "fcm" in entry["payload"]:  # a layer's fcm block replaces the default's whole
            _alert_in_data(entry["payload"])
    return _native({"target": target, "payload": payload}, payload_at)


def _alert_in_data(layer: dict[str, Any]) -> None:
    """SAP on Android: "The alert is included in the data"."""
    layer["fcm"] = {**(layer.get("fcm") or {}), "alert_in_data": True}


def sap_field(native: str, payload_at: str) -> str:
    """A native error path (`payload.apns.custom_values`) in SAP's words."""
    parts = native.split(".")
    base = payload_at
    if parts[0] == "payload":
        rest = parts[1:]
    elif parts[:2] == ["target", "entries"] and len(parts) >= 4 and parts[3] == "payload":
        base, rest = f"userNotifications.{parts[2]}.notification.notification", parts[4:]
    elif parts[0] == "target":
        return _loc(_SAP_NAMES.get(p, p) for p in parts[1:] if p != "type") or "body"
    else:
        return native
    if rest and rest[0] == "localized":
        base = base.rsplit(".", 1)[0] + ".notifications" if "." in base else "notifications"
        rest = rest[1:]
    if len(rest) >= 3 and rest[0] == "apns" and rest[1] == "alert":
        rest = ["apns", _APNS_ALERT_NAMES.get(rest[2], rest[2]), *rest[3:]]
    if rest[:1] == ["alert"]:
        rest = ["alert"]  # SAP's alert is one text; the native body/title split is ours
    return _loc(p for p in (base, *(_SAP_NAMES.get(p, p) for p in rest)) if p)


def _native(raw: dict[str, Any], payload_at: str) -> PushRequest:
    try:
        request = PushRequest.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        # A target union reports its member (`target.users.usernames`): drop the tag.
        loc = [str(p) for p in err["loc"]]
        if len(loc) > 1 and loc[0] == "target":
            loc = ["target", *loc[2:]]
        raise SapInputError(sap_field(_loc(loc), payload_at) or "body", _rule(err["msg"])) from None
    try:
        check_push(request.payload, request.target.model_dump())
    except PayloadError as exc:
        field = sap_field(exc.field, payload_at)
        if exc.field in ("payload", "") or exc.field.endswith(".payload"):
            rule = "a notification needs at least one of alert, badge, sound, data"
            raise SapInputError(field or "body", rule) from None
        raise SapInputError(field or "body", exc.rule) from None
    return request


def _rule(msg: str) -> str:
    return msg.removeprefix("Value error, ")


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The columns of a Delivery that SAP's answers show."""

    id: str
    registration_id: str
    provider: str
    status: str
    code: int | None
    provider_message: str | None
    provider_ref: str | None = None
    app_id: str | None = None


#: Codes that mean the provider (or the data) refused the notification: do not resend as is.
REJECTED_CODES = frozenset({1, 2, 4, 5, 6, 7, 8, 9, 10})


#: Provider answers retried under their own name: the producer must slow down, and "11"
#: (a recoverable I/O problem) would hide why.
RETRIED_AS_IS = frozenset({ResultCode.TOO_MANY_FOR_DEVICE, ResultCode.QUOTA_EXCEEDED})


def reported_code(status: str, code: int | None) -> int:
    """The SAP code of a Delivery: its result, or while still QUEUED the provider's last
    answer: -1 nothing heard yet, 8 (APNs TooManyRequests) and 14 (FCM QUOTA_EXCEEDED) as
    they are, 11 for any other recoverable answer being retried."""
    if status == DeliveryStatus.QUEUED:
        if code in (None, -1):
            return ResultCode.QUEUED_COMMUNICATION_FAILED
        return code if code in RETRIED_AS_IS else ResultCode.RECOVERABLE_IO
    if status == DeliveryStatus.CANCELLED:
        # SAP has no code for it; 3 says "not handed to the provider", and the status
        # (CANCELLED) tells it apart from a queueing failure.
        return ResultCode.NOT_QUEUED
    if code is None:  # engagement statuses always follow a send
        return ResultCode.SENT
    return code


def result_message(status: str, code: int | None, provider_message: str | None) -> str:
    sap = reported_code(status, code)
    if sap == ResultCode.SENT:
        return "success"
    if status == DeliveryStatus.QUEUED and code is None:
        return "queued: not yet answered by the push provider"
    return provider_message or CODE_MEANINGS.get(sap, "unknown")


def push_result(d: DeliveryResult) -> dict[str, Any]:
    return {
        "target": d.registration_id,
        "notificationId": d.id,
        "code": reported_code(d.status, d.code),
        "message": result_message(d.status, d.code, d.provider_message),
    }


def push_response(results: Iterable[DeliveryResult]) -> dict[str, Any]:
    return {"status": None, "pushResults": [push_result(d) for d in results]}


def push_http_status(
    kind: RouteKind, failed: bool, counts: Mapping[tuple[str, int | None], int]
) -> int:
    """SEED-NOTES 9, from the Message's state and its Deliveries' (status, code) counts.

    404: nothing matched. 200: something was sent or queued (202 for push to device when its
    one target is still queued, or when fan-out has not written any Delivery yet). 422: every
    target was rejected. When nothing was sent because the providers could not be reached
    (codes 3, 12-14), 200: the seed's 200 says "review the push results", and those codes
    tell the caller to retry later; a 5xx would hide the per-target results.
    """
    if failed:
        return 404
    total = sum(counts.values())
    if total == 0:
        return 202  # accepted, not fanned out within the wait: outcome unknown yet
    queued = sum(n for (status, _), n in counts.items() if status == DeliveryStatus.QUEUED)
    errors = {code: n for (status, code), n in counts.items() if status == DeliveryStatus.ERROR}
    if sum(errors.values()) == total:
        return 422 if all(code in REJECTED_CODES for code in errors) else 200
    if kind == "device" and queued == total:
        return 202
    return 200


# --- notification status and registrations ---------------------------------------------------

_NOTIFICATION_TYPES = {"apns": "ios", "fcm": "android", "webpush": "w3cpushapi"}


def notification_status(d: DeliveryResult) -> dict[str, Any]:
    """The seed's status document for one notification (Delivery)."""
    sap = reported_code(d.status, d.code)
    info = None if sap == ResultCode.SENT else result_message(d.status, d.code, d.provider_message)
    return {
        "status": {"code": sap, "notification": None, "parameters": None},
        "statusDetails": {
            "notificationId": d.id,
            "providerReference": d.provider_ref,
            "applicationId": None,
            "notificationType": _NOTIFICATION_TYPES.get(d.provider, d.provider),
            "status": d.status,
            "statusInfo": info,
            "caller": "push",
        },
    }


def sap_registration(reg: Any) -> dict[str, Any]:
    """A native registration (RegistrationOut or row) as SAP's registration document."""
    return {
        "id": reg.id,
        "device": reg.device_id,
        "deviceModel": reg.device_model,
        "formFactor": reg.form_factor,
        "pushGroup": reg.push_group,
        "pushProvider": _NOTIFICATION_TYPES.get(reg.provider, reg.provider),
        "userLocale": reg.locale,
        "username": reg.username,
    }


# --- the seed's examples (OpenAPI docs and tests use the same bodies) ------------------------

EXAMPLE_DEVICE: dict[str, Any] = {
    "alert": "Hello World",
    "sound": "default",
    "apns": {"category": "immediate-action", "customValues": '{"order" : "4711-2314"}'},
    "gcm": {"delayWhileIdle": True, "timeToLive": 123456},
}
EXAMPLE_FLAT: dict[str, Any] = {"alert": "Hello World"}
EXAMPLE_USERS: dict[str, Any] = {
    "users": ["user1"],
    "userUUIDs": ["userUUIDs1"],
    "notification": {
        "notification": {"alert": "Hello!"},
        "notifications": {"en_US": {"alert": "Howdie!"}, "de": {"alert": "Guten Tag!"}},
    },
}
EXAMPLE_TOPIC: dict[str, Any] = {**EXAMPLE_USERS, "topics": ["topic1"]}
EXAMPLE_BULK: dict[str, Any] = {
    "notification": {"notification": {"alert": "generic alert"}},
    "userNotifications": [
        {
            "userUUID": "global-user-id",
            "user": "user1",
            "notification": {"notification": {"alert": "user alert"}},
        }
    ],
}
EXAMPLE_CAPABILITY: dict[str, Any] = {
    "users": [{"formFactor": ["phone"], "user": "user1"}],
    "notification": {"alert": "Hello World"},
}
EXAMPLE_REGISTRATION: dict[str, Any] = {
    "pushToken": "*****",
    "pushGroup": "all",
    "timeZone": "MESZ",
    "formFactor": "phone",
    "capabilities": [
        {"name": "capability1", "category": "push", "value": "true"},
        {"name": "capability2", "category": "push", "value": "true"},
    ],
    "userLocale": "en",
    "deviceModel": "iPhone",
}
EXAMPLE_RESPONSE: dict[str, Any] = {
    "status": None,
    "pushResults": [
        {
            "target": "E436658F-A580-4BD5-B9EB-B4BFE8FF2888",
            "notificationId": "79e89d34-045e-4df1-8339-ab30fc5f8fc5",
            "code": 10,
            "message": "The payload was rejected by APNs: DeviceTokenNotForTopic",
        },
        {
            "target": "AC477C60-FDEF-4006-8B0C-201BBE7CD1F9",
            "notificationId": "176a345c-04b1-4ef3-8474-b7d5b4011c1d",
            "code": 0,
            "message": "success",
        },
    ],
}
EXAMPLES: dict[RouteKind, dict[str, Any]] = {
    "device": EXAMPLE_DEVICE,
    "users": EXAMPLE_USERS,
    "bulk": EXAMPLE_BULK,
    "application": EXAMPLE_FLAT,
    "topic": EXAMPLE_TOPIC,
    "group": EXAMPLE_FLAT,
    "capability": EXAMPLE_CAPABILITY,
}
SCHEMAS: dict[RouteKind, type[_Sap]] = {
    "device": SapNotification,
    "users": SapUsersPush,
    "bulk": SapBulkPush,
    "application": SapNotification,
    "topic": SapTopicPush,
    "group": SapNotification,
    "capability": SapCapabilityPush,
}


class SapError(BaseModel):
    """Every SAP error: the shape SAP's Spring services answer with, plus the fields that
    broke a rule (the seed shows no error body)."""

    status: int
    error: str  # the HTTP reason phrase
    message: str
    details: list[ErrorDetail] = []
