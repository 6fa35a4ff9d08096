"""Microbizz (`microbizz-push-messages.txt`): the app's Envelope calls and Microbizz's push,
as pure models and translations onto the native Registration / Message.

The Envelope (Microbizz's API wrapper, `{contract, username, password, imei, pushtoken,
haltonerror, commands: [...]}`) reports the device: `imei` is its id, an IMEI or a phone
number, kept as an opaque string (SEED-NOTES 28); `pushtoken` is `iOS:<token>` or
`android:<token>`, split at the first colon only. GetMessagesByLastChange and
GetMBMessagesByLastChange may carry the token themselves (SEED-NOTES 31).

A push from Microbizz is a title, a body and the typed data structure of the seed's table.
`destination` decides how it is shown:
- `sync` with an empty title: a silent push (APNs content-available, FCM data-only);
- `sync` with a title, `notification`, `newmessage`: shown, with a sound when `sound` is
  true and (Android) vibration when `vibrate` is true;
- none or empty: shown, and the phone vibrates (iOS vibrates with the default sound, it has
  no vibrate-only notification; Android with the default vibration pattern).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

PLATFORMS = ("iOS", "android")
COMMANDS = ("GetMobileAppSettings", "GetMessagesByLastChange", "GetMBMessagesByLastChange")
#: The commands whose own parameters may carry the push token (the seed).
TOKEN_COMMANDS = ("GetMessagesByLastChange", "GetMBMessagesByLastChange")
Destination = Literal["sync", "notification", "newmessage", ""]
ModCode = Literal["todo", "tools", "person", "customer"]
#: Data fields the app reads as text; every other field is a number or a boolean.
TEXT_FIELDS = ("destination", "usertext", "modcode")


class MicrobizzError(ValueError):
    """Bad input: the field (as the caller wrote it) and the rule it broke."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field, self.rule = field, rule


# --- push tokens ------------------------------------------------------------------------------


def split_push_token(raw: str, field: str = "pushtoken") -> tuple[str, str]:
    """`iOS:<token>` / `android:<token>` → (platform, token), split at the first colon:
    FCM tokens contain colons of their own (the seed's example has one)."""
    head, sep, token = raw.partition(":")
    if not sep:
        raise MicrobizzError(field, "write the token as 'iOS:<token>' or 'android:<token>'")
    if head not in PLATFORMS:
        hint = next((p for p in PLATFORMS if p.lower() == head.lower()), None)
        rule = (
            f"platform must be written '{hint}', not '{head}'"
            if hint
            else (f"unknown platform '{head}': the token starts with 'iOS:' or 'android:'")
        )
        raise MicrobizzError(field, rule)
    if not token:
        raise MicrobizzError(field, f"the token after '{head}:' is empty")
    return head, token


# --- the Envelope -----------------------------------------------------------------------------


class _Lenient(BaseModel):
    # Microbizz's Envelope and commands carry more than a push service reads (credentials,
    # dates, read/unread lists): unknown keys are accepted and left alone.
    model_config = ConfigDict(extra="allow")


class Command(_Lenient):
    command: Annotated[str, Field(min_length=1, max_length=100)]
    pushtoken: Annotated[str, Field(max_length=4200)] | None = None


class Envelope(_Lenient):
    contract: int | str | None = None
    username: Annotated[str, Field(max_length=255)] | None = None
    password: str | None = None  # Microbizz's; never read nor stored by Pushline
    haltonerror: Literal[0, 1] | bool = 0
    imei: Annotated[str, Field(max_length=255)] | None = None
    pushtoken: Annotated[str, Field(max_length=4200)] | None = None
    commands: list[Command] = []


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def parse_envelope(body: Any) -> Envelope:
    if not isinstance(body, dict):
        raise MicrobizzError("body", "the Envelope is a JSON object")
    try:
        return Envelope.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise MicrobizzError(_loc(err["loc"]), err["msg"]) from None


def reported_token(env: Envelope) -> tuple[str, str] | None:
    """The push token the call reports, as (field it came from, value), or None.

    The commands' own `pushtoken` is the more specific, so the last one given wins over
    the Envelope's; every token given is checked, so a bad one is refused even if unused.
    An empty string means "no token yet" (an app before its first token).
    """
    given: list[tuple[str, str]] = []
    if env.pushtoken:
        given.append(("pushtoken", env.pushtoken))
    for i, cmd in enumerate(env.commands):
        if cmd.pushtoken and cmd.command in TOKEN_COMMANDS:
            given.append((f"commands[{i}].pushtoken", cmd.pushtoken))
    for field, value in given:
        split_push_token(value, field)
    return given[-1] if given else None


def command_result(cmd: Command) -> dict[str, Any]:
    """What one command answers. The settings and message lists belong to Microbizz, not
    to a push service: they are answered empty, in their documented shape."""
    if cmd.command == "GetMobileAppSettings":
        return {"status": 1, "settings": {}}
    if cmd.command == "GetMessagesByLastChange":
        return {"status": 1, "messages": [], "confirmed": []}
    if cmd.command == "GetMBMessagesByLastChange":
        return {"status": 1, "messages": []}
    return {
        "status": 0,
        "msg": f"unknown command '{cmd.command}': Pushline serves " + ", ".join(COMMANDS),
    }


def envelope_results(env: Envelope) -> list[dict[str, Any]]:
    """One result per command, in order; with `haltonerror` 1 nothing runs after an error."""
    results: list[dict[str, Any]] = []
    for cmd in env.commands:
        result = command_result(cmd)
        results.append(result)
        if result["status"] == 0 and env.haltonerror:
            break
    return results


# --- Microbizz's push -------------------------------------------------------------------------

Id = Annotated[StrictInt, Field(ge=0)]


class PushData(BaseModel):
    """The seed's data structure, typed as its table says. Unknown fields are refused: a
    misspelt `threadid` would otherwise reach the app as a field it never reads."""

    model_config = ConfigDict(extra="forbid")

    destination: Destination | None = None
    vibrate: StrictBool | None = None
    sound: StrictBool | None = None
    userid: Id | None = None
    usertext: Annotated[str, Field(max_length=255)] | None = None
    confirmation: Literal[0, 1, 2] | None = None  # 0 no, 1 requested, 2 confirmed
    modcode: ModCode | None = None
    objid: Id | None = None
    id: Id | None = None
    threadid: Id | None = None
    messageid: Id | None = None


#: What each destination needs for the app to do what the seed says it does.
REQUIRED = {
    "newmessage": ("threadid", "messageid"),  # "read the relevant thread and display it"
    "notification": ("modcode", "objid"),  # "read the threads for the object"
}


class PushTo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    imei: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    user: Annotated[str, Field(min_length=1, max_length=255)] | None = None


class MicrobizzPush(BaseModel):
    """`POST /microbizz/push`: to a device (`imei`: IMEI or phone number) or a Microbizz user
    (the Envelope's `username`), exactly one of the two."""

    model_config = ConfigDict(extra="forbid")

    imei: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    user: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    title: Annotated[str, Field(max_length=1000)] = ""
    body: Annotated[str, Field(max_length=1000)] = ""
    data: PushData = PushData()


def parse_push(body: Any) -> MicrobizzPush:
    if not isinstance(body, dict):
        raise MicrobizzError("body", "the push is a JSON object")
    try:
        push = MicrobizzPush.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise MicrobizzError(_loc(err["loc"]), _rule(err)) from None
    if (push.imei is None) == (push.user is None):
        raise MicrobizzError("imei", "give exactly one of imei (a device) or user")
    dest = push.data.destination or ""
    for field in REQUIRED.get(dest, ()):
        if getattr(push.data, field) is None:
            raise MicrobizzError(f"data.{field}", f"required when destination is '{dest}'")
    silent = dest == "sync" and not push.title
    if not silent and not (push.title or push.body):
        raise MicrobizzError("title", "a shown push needs a title or a body")
    return push


def _rule(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return (
            "not a field of Microbizz's push data"
            if err["loc"][0] == "data"
            else ("unknown field; a push has imei or user, title, body and data")
        )
    return str(err["msg"])


def native_push(push: MicrobizzPush) -> dict[str, Any]:
    """The native push request: the target, and a payload whose `data` is the seed's
    structure exactly as given (APNs keeps its JSON types beside `aps`; FCM carries each
    value as a string, non-strings as their JSON text: SEED-NOTES 30)."""
    target: dict[str, Any] = (
        {"type": "device_ids", "device_ids": [push.imei]}
        if push.imei is not None
        else {"type": "users", "usernames": [push.user]}
    )
    return {"target": target, "payload": native_payload(push)}


def native_payload(push: MicrobizzPush) -> dict[str, Any]:
    data = push.data.model_dump(exclude_none=True)
    dest = push.data.destination or ""
    alert = {k: v for k, v in (("title", push.title), ("body", push.body)) if v}
    payload: dict[str, Any] = {"data": data} if data else {}
    if dest == "sync" and not push.title:
        # "Synchronize ... as soon as possible": wake the app, show nothing. A body, if
        # any, still reaches the app (Pushline's `pushline.alert`).
        payload["silent"] = True
        if alert:
            payload["alert"] = alert
        return payload
    payload["alert"] = alert
    if dest:
        # vibrate / sound apply "only if destination is set".
        if push.data.sound:
            payload["sound"] = "default"
        if push.data.vibrate is not None:
            payload["fcm"] = {"vibrate": push.data.vibrate}
    else:
        # "Display the message for the user, and the phone should vibrate."
        payload["apns"] = {"sound": "default"}  # iOS vibrates with the alert sound
        payload["fcm"] = {"vibrate": True}
    return payload


class PushAnswer(BaseModel):
    status: Literal[1] = 1
    messageid: str
    statusurl: str


class EnvelopeAnswer(BaseModel):
    status: Literal[0, 1]
    results: list[dict[str, Any]]
    registration: dict[str, Any] | None = None


EXAMPLE_TOKEN = (
    "android:ePqP4to:APA91bUoDCXP2yOIjAKsmCpyzXSyTaym9r_P4LRFH_ZDX0KhBSb0n4iLN1zwqygkqiTHciQq"
    "AFyyjbrNY8lJdmKP2eIubNENWjIZIa7h3GIj6jSQOUzX6kQ-9nildyFHzgHq2rn64XXiKD9Q"
)
