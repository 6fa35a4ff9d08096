"""Every way a push names its devices: the native API's targets, as models and as rules.

The models validate and normalise; `schemas.audience` turns a target into one SQL condition.
The Infobip filter language (`$and` / `$or`) is compiled here into a small tree that both the
SQL compiler and the pure evaluator `matches` walk, so the two cannot drift apart.

How a filter reads (SEED-NOTES 20, and Pushline's reading of nesting):
- A group is an object with `$and` and/or `$or`, each a non-empty list. A list item is either
  a condition naming exactly one attribute (`{"platform": "iOS"}`) or a nested group.
- All conditions of a group, from both of its lists, are pooled: conditions on the **same**
  attribute are alternatives, conditions on **different** attributes must all hold. That is
  the one rule that gives every seed sample its stated meaning.
- A nested group under `$and` must hold as well; of the nested groups under `$or`, at least
  one must hold. So an OR across different attributes is written as nested groups:
  `{"$or": [{"$and": [{"platform": "iOS"}]}, {"$and": [{"deviceSecure": true}]}]}`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)

#: Names (users, ids, devices, destinations) one target may list: keeps SQL IN lists bounded.
MAX_NAMES = 10_000
MAX_TOPICS = 1_000
MAX_FILTER_DEPTH = 8
MAX_FILTER_CONDITIONS = 1_000

Name = Annotated[str, Field(min_length=1, max_length=255)]
# Form factors are enum-like ("phone", "tablet"): matched case-insensitively, so ASCII only.
FormFactor = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,31}$")]


class _Strict(BaseModel):
    # Unknown fields are errors: a misspelt filter must never widen an audience silently.
    model_config = ConfigDict(extra="forbid")


def _within(kind: str, *lists: list[str], limit: int = MAX_NAMES) -> None:
    if sum(len(x) for x in lists) > limit:
        raise ValueError(f"{kind} target lists at most {limit} names")


# --- SAP: device, users, bulk, application, topic, group, capability --------------------------


class DeviceTarget(_Strict):
    """One device: its registration id, or (SAP push to device) username plus device id."""

    type: Literal["device"]
    registration_id: Name | None = None
    username: Name | None = None
    device_id: Name | None = None

    @model_validator(mode="after")
    def _one_way(self) -> DeviceTarget:
        pair = self.username is not None or self.device_id is not None
        if self.registration_id is not None and pair:
            raise ValueError("device target takes registration_id, or username with device_id")
        if self.registration_id is None and (self.username is None or self.device_id is None):
            raise ValueError("device target needs registration_id, or username and device_id")
        return self


class UsersTarget(_Strict):
    """Every device of the users named by username or global user id (a union)."""

    type: Literal["users"]
    usernames: list[Name] = []
    global_user_ids: list[Name] = []

    @model_validator(mode="after")
    def _some_user(self) -> UsersTarget:
        if not self.usernames and not self.global_user_ids:
            raise ValueError("users target needs at least one of usernames, global_user_ids")
        _within("users", self.usernames, self.global_user_ids)
        return self


class BulkEntry(_Strict):
    """One recipient of a bulk push and the payload fields that override the default."""

    user: Name | None = None
    user_uuid: Name | None = None
    # Plain data: merged field by field over the push's payload at send time.
    payload: dict[str, Any] = {}

    @model_validator(mode="after")
    def _names_someone(self) -> BulkEntry:
        if self.user is None and self.user_uuid is None:
            raise ValueError("bulk entry needs user or user_uuid")
        return self


class BulkTarget(_Strict):
    """SAP bulk: the recipients are the users listed (SEED-NOTES 10); each device once."""

    type: Literal["bulk"]
    entries: list[BulkEntry]

    @field_validator("entries")
    @classmethod
    def _distinct(cls, entries: list[BulkEntry]) -> list[BulkEntry]:
        if not entries:
            raise ValueError("bulk target needs at least one entry")
        if len(entries) > MAX_NAMES:
            raise ValueError(f"bulk target lists at most {MAX_NAMES} entries")
        # A person listed twice would make "which override wins" a guess: refuse it.
        for field in ("user", "user_uuid"):
            seen: set[str] = set()
            for i, e in enumerate(entries):
                name = getattr(e, field)
                if name is not None and name in seen:
                    raise ValueError(f"entries[{i}].{field} {name!r} is listed twice")
                if name is not None:
                    seen.add(name)
        return entries


class ApplicationTarget(_Strict):
    type: Literal["application"]


class TopicTarget(_Strict):
    """Subscribers of any listed topic, optionally only those of the users named."""

    type: Literal["topic"]
    topics: list[Name] = []
    usernames: list[Name] = []
    global_user_ids: list[Name] = []

    @model_validator(mode="after")
    def _has_topics(self) -> TopicTarget:
        # SEED-NOTES 11: topics are not validated, but the list is mandatory.
        if not self.topics:
            raise ValueError("topic target needs topics: a list of at least one topic")
        _within("topic", self.topics, limit=MAX_TOPICS)
        _within("topic", self.usernames, self.global_user_ids)
        return self


class GroupTarget(_Strict):
    type: Literal["group"]
    push_group: Name


def _one_or_many(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


FormFactors = Annotated[list[FormFactor], BeforeValidator(_one_or_many)]  # "phone" or a list


class CapabilityUser(_Strict):
    """SAP's per-user entry: a username, form factors, or both."""

    user: Name | None = None
    form_factor: FormFactors | None = None

    @model_validator(mode="after")
    def _says_something(self) -> CapabilityUser:
        if self.user is None and not self.form_factor:
            raise ValueError("capability user entry needs user or form_factor")
        return self


class CapabilityTarget(_Strict):
    """Devices registered with a capability (matched by name, SEED-NOTES 14)."""

    type: Literal["capability"]
    capability: Name
    usernames: list[Name] = []
    form_factor: FormFactors | None = None
    users: list[CapabilityUser] = []

    @model_validator(mode="after")
    def _bounded(self) -> CapabilityTarget:
        if self.form_factor is not None and not self.form_factor:
            raise ValueError("form_factor, when given, lists at least one form factor")
        if len(self.usernames) + len(self.users) > MAX_NAMES:
            raise ValueError(f"capability target lists at most {MAX_NAMES} users")
        return self


# --- Backendless: broadcast by OS mask, singlecast to device ids ----------------------------

OS_IOS, OS_ANDROID, OS_WP, OS_ALL = 1, 2, 4, 7
_OS_NAMES = {"IOS": OS_IOS, "ANDROID": OS_ANDROID, "WP": OS_WP, "ALL": OS_ALL}


def parse_os_mask(value: Any) -> int:
    """Backendless `pushBroadcast`: the mask 1-7, a name, names joined by `|`, or a list."""
    if isinstance(value, bool):
        raise ValueError("mask must be 1-7 or IOS, ANDROID, WP, ALL")
    if isinstance(value, int):
        mask = value
    else:
        if isinstance(value, str):
            names: list[Any] = re.split(r"[|,]", value)
        elif isinstance(value, list) and value:
            names = value
        else:
            raise ValueError("mask must be 1-7, a name (IOS, ANDROID, WP, ALL) or a list of names")
        mask = 0
        for name in names:
            bit = _OS_NAMES.get(name.strip().upper()) if isinstance(name, str) else None
            if bit is None:
                raise ValueError(f"unknown OS {name!r}: use IOS, ANDROID, WP or ALL (or 1-7)")
            mask |= bit
    if not OS_IOS <= mask <= OS_ALL:
        raise ValueError(
            f"mask must be between 1 and 7 (IOS=1, ANDROID=2, WP=4, ALL=7), not {mask}"
        )
    if mask == OS_WP:
        # SEED-NOTES 15: a clear answer, never a 5xx; mixed masks simply skip WP.
        raise ValueError(
            "WP (Windows Phone) is not a supported platform: Pushline delivers to iOS and "
            "Android; use IOS, ANDROID or ALL"
        )
    return mask


def mask_platforms(mask: int) -> tuple[str, ...]:
    """Registration platforms a mask reaches: IOS is iOS and iPadOS; WP reaches nothing."""
    platforms: tuple[str, ...] = ()
    if mask & OS_IOS:
        platforms += ("ios", "ipados")
    if mask & OS_ANDROID:
        platforms += ("android",)
    return platforms


class OsMaskTarget(_Strict):
    """Backendless broadcast; `channel` narrows it to the subscribers of that channel."""

    type: Literal["os_mask"]
    mask: Annotated[int, BeforeValidator(parse_os_mask)]
    channel: Name | None = None


class DeviceIdsTarget(_Strict):
    """Backendless singlecast: the registrations with these device ids."""

    type: Literal["device_ids"]
    device_ids: list[Name]

    @field_validator("device_ids")
    @classmethod
    def _some(cls, ids: list[str]) -> list[str]:
        if not ids:
            raise ValueError("device_ids must list at least one device id")
        if len(ids) > MAX_NAMES:
            raise ValueError(f"device_ids lists at most {MAX_NAMES} ids")
        return ids


# --- Infobip: destinations and the $and / $or filter ---------------------------------------


def phone_digits(number: str) -> str:
    """Phones compare by digits, ignoring `+` and a leading `00` (SEED-NOTES 21).

    The same rule as the registration API's normalisation, so a destination and a stored
    number always agree.
    """
    digits = "".join(ch for ch in number if ch.isdigit())
    if number.strip().startswith("00"):
        digits = digits[2:]
    if len(digits) < 3:
        raise ValueError(f"phone number {number!r} must be international, at least 3 digits")
    return digits


def _email(value: str) -> str:
    if "@" not in value:
        raise ValueError(f"email {value!r} must contain @")
    return value.lower()  # registrations store e-mail addresses lower-cased


Kind = Literal["text", "platform", "language", "flag", "phone", "email", "custom"]


@dataclass(frozen=True, slots=True)
class Attribute:
    """An attribute a filter condition may name, and the Registration column it reads."""

    name: str  # as the seed spells it, or the custom attribute's key
    column: str  # the Registration attribute; "custom_attributes" for custom keys
    kind: Kind


#: The seed's device attributes, plus the person attributes its own samples use in $and.
ATTRIBUTES: dict[str, Attribute] = {
    a.name: a
    for a in (
        Attribute("platform", "platform", "platform"),
        Attribute("sdkVersion", "sdk_version", "text"),
        Attribute("osVersion", "os_version", "text"),
        Attribute("deviceManufacturer", "device_manufacturer", "text"),
        Attribute("deviceModel", "device_model", "text"),
        Attribute("applicationVersion", "app_version", "text"),
        Attribute("osLanguage", "locale", "language"),
        Attribute("deviceSecure", "device_secure", "flag"),
        Attribute("notificationsEnabled", "notifications_enabled", "flag"),
        Attribute("externalUserId", "external_user_id", "text"),
        Attribute("phoneNumber", "phone_number", "phone"),
        Attribute("email", "email", "email"),
        Attribute("pushRegistrationId", "id", "text"),
    )
}
_ATTRIBUTES_FOLDED = {name.lower(): name for name in ATTRIBUTES}
# Infobip says "Android or iOS"; an iPad reports iOS there, so iOS covers iPadOS too.
_PLATFORMS = {"ios": ("ios", "ipados"), "ipados": ("ipados",), "android": ("android",)}
_LANGUAGE = re.compile(r"^[A-Za-z]{1,8}(?:[-_][A-Za-z0-9]{1,8})*$")

Scalar = str | bool | int | float


@dataclass(frozen=True, slots=True)
class Condition:
    """Conditions on one attribute: the values are alternatives (SEED-NOTES 20)."""

    attribute: Attribute
    values: tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class FilterNode:
    """One group: every condition and `$and` child must hold, and one `$or` child if any."""

    conditions: tuple[Condition, ...]
    all_of: tuple[FilterNode, ...]
    any_of: tuple[FilterNode, ...]


def normalise_language(tag: str) -> str:
    """`en_US`, `EN-us` and `en-US` are one language tag (SEED-NOTES 5)."""
    return tag.replace("_", "-").lower()


def _leaf_values(attr: Attribute, value: Any, where: str) -> list[Scalar]:
    """Validate one condition's value; returns the normalised values it stands for."""
    kind = attr.kind
    if kind == "flag":
        if not isinstance(value, bool):
            raise ValueError(f"{where}: {attr.name} is true or false, not {value!r}")
        return [value]
    if kind == "custom":
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{where}: {attr.name} must be a finite number")
        if isinstance(value, str) and len(value) > 1000:
            raise ValueError(f"{where}: {attr.name} must be at most 1000 characters")
        if not isinstance(value, str | bool | int | float):
            raise ValueError(
                f"{where}: custom attribute {attr.name!r} is compared with a string, a number "
                f"or a boolean, not {value!r}"
            )
        return [value]
    if not isinstance(value, str) or not value or len(value) > 320:
        raise ValueError(f"{where}: {attr.name} must be a non-empty string, not {value!r}")
    if kind == "platform":
        platforms = _PLATFORMS.get(value.lower())
        if platforms is None:
            raise ValueError(f"{where}: platform must be iOS or Android (or iPadOS), not {value!r}")
        return list(platforms)
    if kind == "language":
        if not _LANGUAGE.match(value):
            raise ValueError(f"{where}: osLanguage must be a language tag like en or de-DE")
        return [normalise_language(value)]
    try:
        if kind == "phone":
            return [phone_digits(value)]
        if kind == "email":
            return [_email(value)]
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return [value]


def _attribute(key: Any, where: str) -> Attribute:
    if not isinstance(key, str) or not key:
        raise ValueError(f"{where}: attribute names are non-empty strings")
    if key in ATTRIBUTES:
        return ATTRIBUTES[key]
    folded = _ATTRIBUTES_FOLDED.get(key.lower())
    if folded is not None:
        # Custom keys match exactly (SEED-NOTES 23), so "osversion" would quietly be a
        # custom attribute nobody has; refuse the near-miss instead.
        raise ValueError(f"{where}: write {folded!r}: attribute names are case-sensitive")
    if len(key) > 255 or any(ch in key for ch in '"\\') or not key.isprintable():
        raise ValueError(f"{where}: custom attribute key {key!r} is not usable (quote, control)")
    return Attribute(key, "custom_attributes", "custom")


def _distinct(values: list[Scalar]) -> tuple[Scalar, ...]:
    # By type as well as value: True == 1 in Python, but not as a custom attribute.
    seen: dict[tuple[type, Scalar], Scalar] = {}
    for v in values:
        seen.setdefault((bool if isinstance(v, bool) else type(v), v), v)
    return tuple(seen.values())


def compile_filter(raw: Any, where: str = "filter") -> FilterNode:
    """Validate a `$and` / `$or` filter and compile it; ValueError names the path and rule."""
    count = [0]
    return _group(raw, where, 1, count)


def _group(raw: Any, where: str, depth: int, count: list[int]) -> FilterNode:
    if depth > MAX_FILTER_DEPTH:
        raise ValueError(f"{where}: filters nest at most {MAX_FILTER_DEPTH} levels")
    if not isinstance(raw, Mapping) or not raw:
        raise ValueError(f"{where}: a group is an object with $and and/or $or")
    for key in raw:
        if key not in ("$and", "$or"):
            raise ValueError(
                f"{where}: a group takes only $and and $or, not {key!r}; put each condition "
                "in its own object inside them"
            )
    values: dict[Attribute, list[Scalar]] = {}
    nested: dict[str, list[FilterNode]] = {"$and": [], "$or": []}
    for op in ("$and", "$or"):
        if op not in raw:
            continue
        items = raw[op]
        if not isinstance(items, list) or not items:
            raise ValueError(f"{where}.{op}: must be a non-empty list")
        for i, item in enumerate(items):
            here = f"{where}.{op}[{i}]"
            if not isinstance(item, Mapping):
                raise ValueError(f"{here}: each item is an object")
            if any(isinstance(k, str) and k.startswith("$") for k in item):
                nested[op].append(_group(item, here, depth + 1, count))
                continue
            if len(item) != 1:
                raise ValueError(
                    f"{here}: a condition names exactly one attribute, like "
                    '{"platform": "iOS"}; combine conditions with $and / $or'
                )
            [(key, value)] = item.items()
            attr = _attribute(key, here)
            values.setdefault(attr, []).extend(_leaf_values(attr, value, here))
            count[0] += 1
            if count[0] > MAX_FILTER_CONDITIONS:
                raise ValueError(
                    f"{where}: a filter has at most {MAX_FILTER_CONDITIONS} conditions"
                )
    return FilterNode(
        conditions=tuple(Condition(a, _distinct(v)) for a, v in values.items()),
        all_of=tuple(nested["$and"]),
        any_of=tuple(nested["$or"]),
    )


def _get(registration: Any, name: str) -> Any:
    if isinstance(registration, Mapping):
        return registration.get(name)
    return getattr(registration, name, None)


def _custom_equal(stored: Any, wanted: Scalar) -> bool:
    # Typed equality, as the SQL does it: a string never equals a number or a boolean.
    if isinstance(wanted, bool) or isinstance(stored, bool):
        return isinstance(wanted, bool) and isinstance(stored, bool) and stored is wanted
    if isinstance(wanted, str) or isinstance(stored, str):
        return isinstance(wanted, str) and isinstance(stored, str) and stored == wanted
    if isinstance(stored, int | float):
        return float(stored) == float(wanted)  # numbers compare as double precision
    return False


def condition_holds(condition: Condition, registration: Any) -> bool:
    attr = condition.attribute
    if attr.kind == "custom":
        custom = _get(registration, "custom_attributes")
        if not isinstance(custom, Mapping) or attr.name not in custom:
            return False
        stored = custom[attr.name]
        return any(_custom_equal(stored, v) for v in condition.values)
    stored = _get(registration, attr.column)
    if stored is None:
        return False  # as in SQL: a missing attribute matches no value
    if attr.kind == "language":
        tag = normalise_language(str(stored))
        return any(tag == v or tag.startswith(f"{v}-") for v in condition.values)
    if attr.kind == "flag":
        return any(bool(stored) is v for v in condition.values)
    return stored in condition.values


def matches(filter: Mapping[str, Any] | FilterNode, registration: Any) -> bool:
    """Does a registration (a Registration or a mapping of its attributes) match the filter?

    The pure twin of the SQL the worker runs; a property test keeps the two in agreement.
    """
    node = filter if isinstance(filter, FilterNode) else compile_filter(filter)
    return _holds(node, registration)


def _holds(node: FilterNode, registration: Any) -> bool:
    return (
        all(condition_holds(c, registration) for c in node.conditions)
        and all(_holds(child, registration) for child in node.all_of)
        and (not node.any_of or any(_holds(child, registration) for child in node.any_of))
    )


DestinationType = Literal["REGISTRATION", "EXTERNAL_USER_ID", "PHONE_NUMBER", "EMAIL", "MULTIPLE"]
#: Where the seed puts the address of each single-recipient destination type.
DESTINATION_FIELDS: dict[str, str] = {
    "REGISTRATION": "pushRegistrationId",
    "EXTERNAL_USER_ID": "externalUserId",
    "PHONE_NUMBER": "phoneNumber",
    "EMAIL": "email",
}
_FIELD_TYPES = {field: kind for kind, field in DESTINATION_FIELDS.items()}
_TYPE_SPELLINGS = {
    re.sub("[^A-Z]", "", kind): kind for kind in [*DESTINATION_FIELDS, "MULTIPLE"]
} | {"PUSHREGISTRATIONID": "REGISTRATION"}


def _destination_type(kind: Any) -> Any:
    # Enum values match case-insensitively (SEED-NOTES 23); PHONE_NUMBER and phoneNumber
    # are the same type (SEED-NOTES 21).
    if not isinstance(kind, str):
        return kind
    return _TYPE_SPELLINGS.get(re.sub("[^A-Z]", "", kind.upper()), kind)


class Destination(_Strict):
    """One Infobip destination, in the seed's shape or the native one (`value`, `filter`)."""

    type: DestinationType
    value: Annotated[str, Field(min_length=1, max_length=320)] | None = None
    filter: dict[str, Any] | None = None
    target_only_primary_devices: bool | None = None  # None: the target's setting applies

    @model_validator(mode="before")
    @classmethod
    def _from_seed_shape(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        d = dict(data)
        d["type"] = _destination_type(d.get("type"))
        for field, kind in _FIELD_TYPES.items():
            if field not in d:
                continue
            if d["type"] != kind:
                raise ValueError(
                    f"{field} addresses a {kind} destination, not {d['type']}; inside MULTIPLE "
                    "write it as a condition in $and / $or"
                )
            if d.get("value") is not None:
                raise ValueError(f"give {field} or value, not both")
            d["value"] = d.pop(field)
        operators = {op: d.pop(op) for op in ("$and", "$or") if op in d}
        if operators:
            if d.get("filter") is not None:
                raise ValueError("give $and / $or or filter, not both")
            d["filter"] = operators
        if "targetOnlyPrimaryDevices" in d:
            if "target_only_primary_devices" in d:
                raise ValueError("give targetOnlyPrimaryDevices once")
            d["target_only_primary_devices"] = d.pop("targetOnlyPrimaryDevices")
        return d

    @model_validator(mode="after")
    def _complete(self) -> Destination:
        if self.type == "MULTIPLE":
            if self.value is not None:
                raise ValueError("a MULTIPLE destination takes $and / $or, not a value")
            if self.filter is None:
                raise ValueError("a MULTIPLE destination needs $and or $or")
            compile_filter(self.filter)
            return self
        field = DESTINATION_FIELDS[self.type]
        if self.filter is not None:
            raise ValueError(f"$and / $or belong to MULTIPLE destinations, not {self.type}")
        if self.value is None:
            raise ValueError(f"a {self.type} destination needs {field}")
        if self.type == "PHONE_NUMBER":
            self.value = phone_digits(self.value)
        elif self.type == "EMAIL":
            self.value = _email(self.value)
        return self


class DestinationsTarget(_Strict):
    """Infobip destinations: a union of recipients, all devices of a person by default."""

    type: Literal["destinations"]
    destinations: list[Destination]
    target_only_primary_devices: bool = Field(
        default=False,
        validation_alias=AliasChoices("target_only_primary_devices", "targetOnlyPrimaryDevices"),
    )
    include_notifications_disabled_devices: bool = Field(
        default=False,
        validation_alias=AliasChoices(
            "include_notifications_disabled_devices", "includeNotificationsDisabledDevices"
        ),
    )

    @field_validator("destinations")
    @classmethod
    def _some(cls, destinations: list[Destination]) -> list[Destination]:
        if not destinations:
            raise ValueError("destinations must list at least one destination")
        if len(destinations) > MAX_NAMES:
            raise ValueError(f"destinations lists at most {MAX_NAMES} destinations")
        return destinations


def primary_only(destination: Destination, target: DestinationsTarget) -> bool:
    """Whether only primary devices count (SEED-NOTES 22: the destination's flag wins).

    A REGISTRATION names one installation outright, so the flag never narrows it.
    """
    if destination.type == "REGISTRATION":
        return False
    if destination.target_only_primary_devices is not None:
        return destination.target_only_primary_devices
    return target.target_only_primary_devices


# --- the union -------------------------------------------------------------------------------

AnyTarget = (
    DeviceTarget
    | UsersTarget
    | BulkTarget
    | ApplicationTarget
    | TopicTarget
    | GroupTarget
    | CapabilityTarget
    | OsMaskTarget
    | DeviceIdsTarget
    | DestinationsTarget
)
Target = Annotated[AnyTarget, Field(discriminator="type")]

#: Which role a target needs (the SAP seed's roles, SEED-NOTES 12).
TARGET_ROLE: dict[str, str] = {
    "device": "push_single",
    "device_ids": "push_multiple",  # may name many devices
    "users": "push_multiple",
    "bulk": "push_multiple",
    "topic": "push_multiple",
    "group": "push_multiple",
    "capability": "push_multiple",
    "destinations": "push_multiple",
    "application": "push_all",
    "os_mask": "push_all",
}

_TARGET: TypeAdapter[AnyTarget] = TypeAdapter(Target)


def parse_target(target: Mapping[str, Any] | AnyTarget) -> AnyTarget:
    """A stored target (the `model_dump()` of a model) as its model; ValidationError if bad."""
    if isinstance(target, BaseModel):
        return target
    return _TARGET.validate_python(target)


def bulk_override(
    target: Mapping[str, Any], username: str | None, global_user_ids: Collection[str] = ()
) -> dict[str, Any] | None:
    """The payload fields a bulk target sets for this registration's user, or None.

    An entry applies when its `user` is the registration's username or its `user_uuid` any
    Global User ID the registration has had (its current one and its history: SAP lets a
    producer address an old one, and the entry's notification must follow it). Should a
    user and their global id each have an entry, both apply, in the order listed (a later
    field wins).
    """
    if target.get("type") != "bulk":
        return None
    merged: dict[str, Any] | None = None
    for entry in target.get("entries") or []:
        user, uuid = entry.get("user"), entry.get("user_uuid")
        if (username is not None and user == username) or (
            uuid is not None and uuid in global_user_ids
        ):
            merged = {**(merged or {}), **(entry.get("payload") or {})}
    return merged


def is_transactional(target: Mapping[str, Any]) -> bool:
    """True when a target names one device or one person (the priority lane's rule)."""
    kind = target.get("type")
    if kind == "device":
        return True
    if kind == "users":
        return len(target.get("usernames") or []) + len(target.get("global_user_ids") or []) == 1
    if kind == "device_ids":
        return len(target.get("device_ids") or []) == 1
    if kind == "bulk":
        return len(target.get("entries") or []) == 1
    if kind == "destinations":
        dests = target.get("destinations") or []
        return len(dests) == 1 and dests[0].get("type") in DESTINATION_FIELDS
    return False
