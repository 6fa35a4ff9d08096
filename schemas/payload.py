"""The notification payload of the native API: fields, limits, locale variants, overrides.

One payload serves every provider. Its layers, lowest first, for one device:

1. the default fields of the push;
2. the default's best locale variant (`localized`, chosen by `pick_locale`);
3. the user's bulk override (SAP bulk), a partial payload;
4. that override's own best locale variant;
5. for one provider, the content fields written in its block (`apns` / `fcm` /
   `webpush` / `hms`), which replace the common ones for that provider only (SAP:
   "common parameters ... can be overridden by provider-specifics").

Every layer replaces whole fields: a field a layer does not name keeps the value below it,
a field it names is taken as written (an `alert` is not merged title by title). Message
options (priority, time to live, expiration) belong to the push alone, never to a layer:
they decide the lane and when retries stop, which are per Message.

Limits are the SAP seed's, answered 400 naming the field and the limit (SEED-NOTES 6, 7):
they count characters. Provider byte limits are checked on the final provider payload by
the worker (code 9).

The helpers at the end map the seed systems' payload fields (SAP `gcm`, Backendless
headers, Infobip notificationOptions) onto this shape; the dialect routes call them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Limits from the SAP seed; the API answers 400 naming the field and the limit.
ALERT_MAX = 2048
SOUND_MAX = 256
DATA_MAX = 2000
PRIORITY_MAX = 128
COLLAPSE_ID_MAX_BYTES = 64  # apns-collapse-id
TTL_MAX_S = 2_419_200  # FCM's 28 days; APNs has no documented maximum
URL_MAX = 2048
TEXT_MAX = 255  # category, thread id, channel, tag… (identifiers, not prose)

#: The key beside `aps` (APNs) and in `data` (FCM) that carries Pushline's own app-side
#: features: in-app (mirrored) display, web view URL, inbox topic, and the alert of a
#: silent push. Reserved so it can never clash with the app's own data.
PUSHLINE_KEY = "pushline"
#: Data keys no provider would deliver: APNs owns `aps`; FCM refuses `from`,
#: `message_type`, `notification` and keys starting with `google` or `gcm`.
RESERVED_DATA_KEYS = frozenset({"aps", "from", "message_type", "notification", PUSHLINE_KEY})
RESERVED_DATA_PREFIXES = ("google", "gcm")
CONTENT_WORDS = "alert, badge, sound, data, content_available, silent"
#: The per-provider blocks of a payload layer.
PROVIDER_BLOCKS = ("apns", "fcm", "webpush", "hms")


class Strict(BaseModel):
    # Unknown fields are errors: a typo must not silently drop part of a notification.
    model_config = ConfigDict(extra="forbid")


Text = Annotated[str, Field(min_length=1, max_length=TEXT_MAX)]
Url = Annotated[str, Field(max_length=URL_MAX, pattern=r"^https?://\S+$")]


class Alert(Strict):
    """What the user reads. `loc_*` name strings in the app's bundle (APNs and Android)."""

    title: str | None = None
    subtitle: str | None = None  # APNs only
    body: str | None = None
    title_loc_key: Text | None = None
    title_loc_args: list[Annotated[str, Field(max_length=TEXT_MAX)]] | None = None
    loc_key: Text | None = None
    loc_args: list[Annotated[str, Field(max_length=TEXT_MAX)]] | None = None

    @model_validator(mode="after")
    def _within_limit(self) -> Alert:
        size = sum(len(p or "") for p in (self.title, self.subtitle, self.body))
        if size > ALERT_MAX:
            raise ValueError(f"alert must be at most {ALERT_MAX} characters in all (got {size})")
        if not any((self.title, self.subtitle, self.body, self.title_loc_key, self.loc_key)):
            raise ValueError("alert needs a title, subtitle, body or loc key")
        return self


class CriticalSound(Strict):
    """APNs critical alert sound (needs Apple's entitlement); a plain sound elsewhere."""

    critical: bool = True
    name: Annotated[str, Field(min_length=1, max_length=SOUND_MAX)]
    volume: Annotated[float, Field(ge=0, le=1)] | None = None


class InApp(Strict):
    """Infobip's mirrored push: the app also shows the notification inside itself."""

    style: Literal["MODAL", "BANNER"] = "BANNER"
    expires_in_s: Annotated[int, Field(ge=1, le=TTL_MAX_S)] | None = None
    dismiss_title: Annotated[str, Field(min_length=1, max_length=TEXT_MAX)] | None = None
    open_title: Annotated[str, Field(min_length=1, max_length=TEXT_MAX)] | None = None
    on_tap_action: Annotated[str, Field(min_length=1, max_length=URL_MAX)] | None = None

    @field_validator("style", mode="before")
    @classmethod
    def _style_any_case(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v  # SEED-NOTES 23

    @model_validator(mode="after")
    def _buttons_on_modal(self) -> InApp:
        if self.style != "MODAL" and (self.dismiss_title or self.open_title):
            raise ValueError("in_app buttons (dismiss_title, open_title) need style MODAL")
        return self


PushType = Literal[
    "alert",
    "background",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "liveactivity",
    "location",
    "pushtotalk",
]
InterruptionLevel = Literal["passive", "active", "time-sensitive", "critical"]


def _json_object(v: Any, name: str) -> Any:
    # SAP sends `data` (and apns.customValues) as an escaped JSON string as well as an object.
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError as exc:
            raise ValueError(f"{name} must be a JSON object or its serialized form: {exc}") from exc
        if not isinstance(v, dict):
            raise ValueError(f"{name} must be a JSON object")
    return v


def _check_custom(v: dict[str, Any] | None, name: str, reserved: frozenset[str]) -> None:
    if v is None:
        return
    size = len(json.dumps(v, separators=(",", ":"), ensure_ascii=False))
    if size > DATA_MAX:
        raise ValueError(f"{name} must be at most {DATA_MAX} characters serialized (got {size})")
    for key in v:
        if key in reserved or (name == "data" and key.lower().startswith(RESERVED_DATA_PREFIXES)):
            raise ValueError(f"{name} key {key!r} is reserved by a provider or by Pushline")


class Content(Strict):
    """The fields a notification shows or carries; every layer may set any of them."""

    alert: Alert | None = None  # or a string: the body
    badge: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None  # 0 clears the badge
    sound: str | CriticalSound | None = None
    data: dict[str, Any] | None = None
    collapse_id: str | None = None
    thread_id: Text | None = None
    category: Text | None = None
    content_available: bool | None = None  # wake the app (APNs content-available)
    silent: bool | None = None  # nothing shown: APNs background push, FCM data-only
    mutable_content: bool | None = None
    image: Url | None = None  # Infobip contentUrl
    push_type: PushType | None = None
    interruption_level: InterruptionLevel | None = None
    relevance_score: Annotated[float, Field(ge=0, le=1)] | None = None
    web_view_url: Url | None = None
    inbox_topic: Text | None = None  # matched exactly (SEED-NOTES 23)
    in_app: InApp | None = None
    # Options the app's SDK reads under its service's own names (Infobip's
    # notificationOptions), delivered as written under `pushline.notificationOptions`.
    app_options: dict[str, Any] | None = None

    @field_validator("alert", mode="before")
    @classmethod
    def _alert_from_text(cls, v: Any) -> Any:
        # A bare string is the body, as in APNs' own "alert": "text" form.
        if isinstance(v, str):
            if len(v) > ALERT_MAX:
                raise ValueError(f"alert must be at most {ALERT_MAX} characters (got {len(v)})")
            return {"body": v}
        return v

    @field_validator("sound", mode="before")
    @classmethod
    def _sound(cls, v: Any) -> Any:
        # Checked here so an error names `sound`, not a member of the str | dict union.
        if isinstance(v, str):
            if not v or len(v) > SOUND_MAX:
                raise ValueError(f"sound must be 1 to {SOUND_MAX} characters (got {len(v)})")
            return v
        if isinstance(v, Mapping):
            try:
                return CriticalSound.model_validate(v)
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err["loc"])
                raise ValueError(f"sound.{where}: {err['msg']}" if where else err["msg"]) from None
        return v

    @field_validator("data", mode="before")
    @classmethod
    def _data_object(cls, v: Any) -> Any:
        return _json_object(v, "data")

    @field_validator("data")
    @classmethod
    def _data_limit(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        _check_custom(v, "data", RESERVED_DATA_KEYS)
        return v

    @field_validator("collapse_id")
    @classmethod
    def _collapse_limit(cls, v: str | None) -> str | None:
        if v is not None and len(v.encode()) > COLLAPSE_ID_MAX_BYTES:
            raise ValueError(f"collapse_id must be at most {COLLAPSE_ID_MAX_BYTES} bytes")
        return v

    @model_validator(mode="after")
    def _silent_is_not_alert(self) -> Content:
        if self.silent and self.push_type == "alert":
            raise ValueError("a silent push cannot have push_type alert")
        return self


ApnsHeader = Literal["apns-priority", "apns-push-type", "apns-collapse-id"]


class ApnsOptions(Content):
    """APNs only: any content field (replacing the common one), header overrides, and
    custom keys placed beside `aps` (SAP `apns.customValues`)."""

    headers: dict[ApnsHeader, str] | None = None
    custom_values: dict[str, Any] | None = None

    @field_validator("custom_values", mode="before")
    @classmethod
    def _custom_object(cls, v: Any) -> Any:
        return _json_object(v, "custom_values")

    @field_validator("custom_values")
    @classmethod
    def _custom_limit(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        _check_custom(v, "custom_values", frozenset({"aps", PUSHLINE_KEY}))
        return v

    @field_validator("headers")
    @classmethod
    def _header_values(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for name, value in (v or {}).items():
            if name == "apns-priority" and value not in ("10", "5", "1"):
                raise ValueError("apns-priority must be 10, 5 or 1")
            if name == "apns-push-type" and value not in get_args(PushType):
                raise ValueError(f"apns-push-type {value!r} is not an APNs push type")
            if name == "apns-collapse-id" and len(value.encode()) > COLLAPSE_ID_MAX_BYTES:
                raise ValueError(f"apns-collapse-id must be at most {COLLAPSE_ID_MAX_BYTES} bytes")
        return v


class FcmOptions(Content):
    """FCM only: any content field (replacing the common one) and Android options."""

    ttl: Annotated[int, Field(ge=0, le=TTL_MAX_S)] | None = None  # SAP gcm.timeToLive
    priority: Literal["high", "normal"] | None = None  # android message priority
    notification_priority: Literal["min", "low", "default", "high", "max"] | None = None
    channel_id: Text | None = None
    vibrate: bool | None = None  # Infobip vibrationEnabled: default pattern on / off
    vibrate_timings_ms: list[Annotated[int, Field(ge=0, le=60_000)]] | None = None
    color: Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$")] | None = None
    icon: Text | None = None
    click_action: Text | None = None
    tag: Text | None = None
    ticker: Annotated[str, Field(min_length=1, max_length=ALERT_MAX)] | None = None
    # SAP: "The alert is included in the data" (SAP's Android SDK reads `data.alert`).
    alert_in_data: bool | None = None


class WebPushAction(Strict):
    """A button of a browser notification (the Notifications API's NotificationAction)."""

    action: Text
    title: Annotated[str, Field(min_length=1, max_length=TEXT_MAX)]
    icon: Url | None = None


class WebPushOptions(Content):
    """Web Push only: any content field (replacing the common one) and what only a
    browser notification has. `badge_icon` is the small monochrome image browsers call
    `badge` (the common `badge` is a count, which browsers do not show)."""

    icon: Url | None = None
    badge_icon: Url | None = None
    actions: Annotated[list[WebPushAction], Field(max_length=4)] | None = None
    require_interaction: bool | None = None
    renotify: bool | None = None
    ttl: Annotated[int, Field(ge=0, le=TTL_MAX_S)] | None = None  # RFC 8030 TTL, seconds
    urgency: Literal["very-low", "low", "normal", "high"] | None = None  # else from priority


#: Push Kit keeps a message for an offline device at most 15 days.
HMS_TTL_MAX_S = 15 * 24 * 3600


class HmsOptions(Content):
    """Huawei Push Kit only: any content field (replacing the common one) and what only
    Push Kit's `android` block has. `collapse_key` is Push Kit's offline cache group
    (-1: keep every offline message; 0..100: keep the latest of the group)."""

    ttl: Annotated[int, Field(ge=0, le=HMS_TTL_MAX_S)] | None = None  # seconds
    urgency: Literal["high", "normal"] | None = None  # else from priority
    category: Annotated[str, Field(pattern=r"^[A-Z_]{1,32}$")] | None = None  # e.g. IM, WORK
    collapse_key: Annotated[int, Field(ge=-1, le=100)] | None = None
    bi_tag: Text | None = None
    channel_id: Text | None = None
    icon: Text | None = None
    color: Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$")] | None = None
    tag: Text | None = None  # else the collapse id: a newer notification replaces the older
    importance: Literal["low", "normal", "high"] | None = None
    click_url: Url | None = None  # tapping opens this URL; else it opens the app
    click_intent: Annotated[str, Field(min_length=1, max_length=URL_MAX)] | None = None


_LOCALE = re.compile(r"^[A-Za-z]{1,8}(?:[-_][A-Za-z0-9]{1,8})*$")


def normalise_locale(tag: str) -> str:
    """`en_US`, `EN-us` and `en-US` are one locale (SEED-NOTES 5)."""
    return tag.replace("_", "-").lower()


def pick_locale(available: Sequence[str] | Mapping[str, Any], locale: str | None) -> str | None:
    """The key of the best variant for a device locale, or None for the default.

    The SAP fallback chain: try the whole tag, then drop trailing parts one at a time
    (de-DE-bay → de-DE → de). Never a sibling (de-AT for de-DE) or a more specific key (de-DE
    for de). Keys and locale compare with `_` = `-` and case ignored.
    """
    if not locale or not available:
        return None
    keys = {normalise_locale(k): k for k in available}
    parts = normalise_locale(locale.strip()).split("-")
    for n in range(len(parts), 0, -1):
        found = keys.get("-".join(parts[:n]))
        if found is not None:
            return found
    return None


def device_locale(locale: str | None, preferred_languages: Sequence[str] | None) -> str | None:
    """The registration's locale (SAP userLocale), else its first preferred language."""
    if locale:
        return locale
    return next((lang for lang in preferred_languages or () if lang), None)


class PayloadOverride(Content):
    """A layer above the default: a bulk entry's payload (all fields optional)."""

    apns: ApnsOptions | None = None
    fcm: FcmOptions | None = None
    webpush: WebPushOptions | None = None
    hms: HmsOptions | None = None
    localized: dict[str, Content] | None = None

    @field_validator("localized")
    @classmethod
    def _locale_keys(cls, v: dict[str, Content] | None) -> dict[str, Content] | None:
        seen: dict[str, str] = {}
        for key in v or {}:
            if not _LOCALE.match(key):
                raise ValueError(f"localized key {key!r} is not a locale like de, de-DE, en_US")
            other = seen.setdefault(normalise_locale(key), key)
            if other != key:
                raise ValueError(f"localized keys {other!r} and {key!r} are the same locale")
        return v


class Payload(PayloadOverride):
    """A push's payload: the default layer plus the message options."""

    priority: Literal["high", "normal"] = "high"
    time_to_live: Annotated[int, Field(ge=0, le=TTL_MAX_S)] | None = None  # seconds
    expiration: datetime | None = None  # an absolute end instead of time_to_live

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, v: Any) -> Any:
        if isinstance(v, str):
            if len(v) > PRIORITY_MAX:
                raise ValueError(f"priority must be at most {PRIORITY_MAX} characters")
            v = v.lower()
            if v not in ("high", "normal"):
                raise ValueError("priority must be 'high' or 'normal'")
        return v

    @field_validator("expiration")
    @classmethod
    def _expiration(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return v
        v = v if v.tzinfo else v.replace(tzinfo=UTC)
        if v <= datetime.now(UTC):
            raise ValueError("expiration must be in the future")
        return v

    @model_validator(mode="after")
    def _one_end(self) -> Payload:
        if self.time_to_live is not None and self.expiration is not None:
            raise ValueError("give time_to_live or expiration, not both")
        return self


def stored(model: BaseModel) -> dict[str, Any]:
    """How a payload (or a layer) is stored on a Message: JSON values, unset fields left out."""
    return model.model_dump(mode="json", exclude_none=True)


def _filled(v: Any) -> bool:
    return v is not None and v is not False and v != {}


def has_content(layers: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a payload built from these stored layers carries anything to deliver."""
    keys = ("alert", "badge", "sound", "data", "content_available", "silent")
    for layer in layers:
        blocks = (layer.get(p) or {} for p in PROVIDER_BLOCKS)
        for scope in (layer, *blocks):
            # `is not False`, not `not in (...)`: a badge of 0 (clear it) is content.
            if any(_filled(scope.get(k)) for k in keys):
                return True
        if (layer.get("apns") or {}).get("custom_values"):
            return True
    return False


class PayloadError(ValueError):
    """A payload rule broken across fields or layers: the field path and the rule."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field, self.rule = field, rule


def check_push(
    payload: Payload, target: Mapping[str, Any], default: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Validate what the models cannot see alone; returns the target with bulk entries'
    payloads validated and stored normalised (so the worker merges like with like).
    `default`: stored(payload), when the caller has it already.

    The default payload may be empty only for a bulk push whose every entry fills it
    (SEED-NOTES 10: the top-level notification is an optional template).
    """
    default = stored(payload) if default is None else default
    for key, variant in (payload.localized or {}).items():
        if variant.inbox_topic is not None:
            where = f"payload.localized.{key}.inbox_topic"
            raise PayloadError(where, "the inbox topic belongs to the whole push, not a variant")
    if target.get("type") != "bulk":
        if not has_content([default]):
            raise PayloadError("payload", f"payload must carry at least one of {CONTENT_WORDS}")
        return dict(target)
    entries = []
    for i, entry in enumerate(target.get("entries") or []):
        where = f"target.entries.{i}.payload"
        try:
            layer = stored(PayloadOverride.model_validate(entry.get("payload") or {}))
        except ValidationError as exc:
            err = exc.errors()[0]
            path = ".".join(str(p) for p in err["loc"])
            raise PayloadError(f"{where}.{path}" if path else where, err["msg"]) from None
        if not has_content([default, layer]):
            raise PayloadError(
                where, f"this user's payload (with the default) needs one of {CONTENT_WORDS}"
            )
        if "inbox_topic" in layer or any(
            "inbox_topic" in v for v in (layer.get("localized") or {}).values()
        ):
            rule = "the inbox topic belongs to the whole push, not one user's payload"
            raise PayloadError(f"{where}.inbox_topic", rule)
        entries.append({**entry, "payload": layer})
    return {**target, "entries": entries}


# --- the seed systems' payload fields ---------------------------------------------------------


def gcm_to_fcm(gcm: Mapping[str, Any]) -> dict[str, Any]:
    """SAP's legacy `gcm` block as the native `fcm` block (SEED-NOTES 14).

    `timeToLive` is the FCM time to live; `delayWhileIdle` was retired by Google and is
    ignored. Other keys are not part of the seed: an error, never silently dropped.
    """
    out: dict[str, Any] = {}
    for key, value in gcm.items():
        if key == "timeToLive":
            out["ttl"] = value
        elif key != "delayWhileIdle":
            raise ValueError(f"gcm.{key} is not supported (only timeToLive, delayWhileIdle)")
    return out


#: Backendless publish headers that shape the notification; every other header is app data.
BACKENDLESS_HEADERS = (
    "ios-alert",
    "ios-badge",
    "ios-sound",
    "android-ticker-text",
    "android-content-title",
    "android-content-text",
)


def backendless_payload(message: str | None, headers: Mapping[str, str]) -> dict[str, Any]:
    """A Backendless publish (`message` + `headers`) as a native payload.

    - `message` is the common alert body (both platforms);
    - `ios-alert`, `ios-badge`, `ios-sound` apply to iOS only: the `apns` block;
    - `android-content-title` / `-text` are the Android title and body and
      `android-ticker-text` the ticker: the `fcm` block (the body falls back to `message`);
    - any other header is delivered to the app as data, as Backendless does.
    """
    payload: dict[str, Any] = {}
    if message:
        payload["alert"] = {"body": message}
    apns: dict[str, Any] = {}
    fcm: dict[str, Any] = {}
    if headers.get("ios-alert"):
        apns["alert"] = {"body": headers["ios-alert"]}
    if headers.get("ios-badge") not in (None, ""):
        try:
            apns["badge"] = int(headers["ios-badge"])
        except ValueError:
            raise ValueError(
                f"ios-badge must be a whole number, not {headers['ios-badge']!r}"
            ) from None
    if headers.get("ios-sound"):
        apns["sound"] = headers["ios-sound"]
    title, text = headers.get("android-content-title"), headers.get("android-content-text")
    if title or text:
        android_alert = {"title": title, "body": text or message}
        fcm["alert"] = {k: v for k, v in android_alert.items() if v}
    if headers.get("android-ticker-text"):
        fcm["ticker"] = headers["android-ticker-text"]
    data = {k: v for k, v in headers.items() if k not in BACKENDLESS_HEADERS}
    if data:
        payload["data"] = data
    if apns:
        payload["apns"] = apns
    if fcm:
        payload["fcm"] = fcm
    return payload


def infobip_payload(
    text: str | None,
    options: Mapping[str, Any] | None = None,
    custom_payload: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An Infobip push (`text`, `notificationOptions`, `customPayload`) as a native payload.

    soundEnabled (default true) with soundName plays that sound, without it "default";
    vibrationEnabled is Android only (`fcm.vibrate`); contentUrl is the image; isSilent a
    silent push; inAppStyle / showMirroredPush and the mirroredPush* options are `in_app`
    (expiration in minutes or hours, SEED-NOTES 23); customPayload is the app's data.
    """
    o = dict(options or {})
    payload: dict[str, Any] = {}
    alert = {"title": o.get("title"), "body": text}
    if any(alert.values()):
        payload["alert"] = {k: v for k, v in alert.items() if v}
    if o.get("soundEnabled", True):
        payload["sound"] = o.get("soundName") or "default"
    simple = {
        "contentUrl": "image",
        "category": "category",
        "isSilent": "silent",
        "webViewUrl": "web_view_url",
        "inboxTopic": "inbox_topic",
    }
    for name, field in simple.items():
        if o.get(name) is not None:
            payload[field] = o[name]
    if o.get("badge") is not None:
        payload["apns"] = {"badge": o["badge"]}  # "Badge counter (iOS only)"
    if "vibrationEnabled" in o:
        payload["fcm"] = {"vibrate": bool(o["vibrationEnabled"])}  # "(Android only)"
    style = o.get("mirroredPushStyle") or o.get("inAppStyle")
    if o.get("showMirroredPush") or style:
        in_app: dict[str, Any] = {"style": style or "BANNER"}
        period = o.get("mirroredPushExpirationPeriod")
        if period is not None:
            unit = str(o.get("mirroredPushExpirationTimeUnit") or "MINUTES").upper()
            if unit not in ("MINUTES", "HOURS"):
                raise ValueError("mirroredPushExpirationTimeUnit must be MINUTES or HOURS")
            in_app["expires_in_s"] = int(period) * (3600 if unit == "HOURS" else 60)
        for name, field in (
            ("mirroredPushDismissTitle", "dismiss_title"),
            ("mirroredPushOpenTitle", "open_title"),
            ("onTapButtonAction", "on_tap_action"),
        ):
            if o.get(name) is not None:
                in_app[field] = o[name]
        payload["in_app"] = in_app
    if custom_payload:
        payload["data"] = dict(custom_payload)
    payload["app_options"] = infobip_device_options(o)
    return payload


#: Infobip's documented defaults, which its SDKs apply when an option is absent.
INFOBIP_OPTION_DEFAULTS = {"vibrationEnabled": True, "soundEnabled": True}


def infobip_device_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The notificationOptions as Infobip's SDKs read them on the device: every option
    given, under its own name, and the documented defaults of those not given. A silent
    push keeps its `text` too (`pushline.alert`), for the app to show itself."""
    given = {k: v for k, v in options.items() if v is not None}
    return {**INFOBIP_OPTION_DEFAULTS, **given}
