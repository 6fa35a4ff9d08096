"""Which registrations a target means, as one SQL condition (resolution stays in the database).

Every kind compiles to a condition over `registration`, with EXISTS subqueries for topics and
capabilities, so a device subscribed to several listed topics is still one row. The fan-out
pages through it by registration id, never holding an audience in memory. The same
expressions run on PostgreSQL and SQLite.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, String, and_, case, false, func, literal, or_, select, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlmodel import col

from schemas.tables import (
    Registration,
    RegistrationCapability,
    RegistrationGlobalUser,
    RegistrationTopic,
)
from schemas.targets import (
    AnyTarget,
    ApplicationTarget,
    BulkTarget,
    CapabilityTarget,
    Condition,
    Destination,
    DestinationsTarget,
    DeviceIdsTarget,
    DeviceTarget,
    FilterNode,
    GroupTarget,
    OsMaskTarget,
    Scalar,
    TopicTarget,
    UsersTarget,
    compile_filter,
    mask_platforms,
    parse_target,
    primary_only,
)


def target_condition(
    target: Mapping[str, Any] | AnyTarget, *, after: str | None = None, page: bool = False
) -> ColumnElement[bool]:
    """The condition a target puts on `registration` (ValueError when the target is invalid).

    By default the condition is page-independent: the fan-out builds it once and adds the
    keyset cursor itself. With `page=True` it is for the one page after `after`, and the
    cursor is pushed into the topic and capability subqueries as well (see `page_audience`).
    """
    t = parse_target(target)
    sub = _Subqueries(after=after, page=page)
    if isinstance(t, DeviceTarget):
        if t.registration_id is not None:
            return col(Registration.id) == t.registration_id
        return and_(
            col(Registration.username) == t.username, col(Registration.device_id) == t.device_id
        )
    if isinstance(t, UsersTarget):
        return _people(t.usernames, t.global_user_ids)
    if isinstance(t, BulkTarget):
        users = [e.user for e in t.entries if e.user is not None]
        uuids = [e.user_uuid for e in t.entries if e.user_uuid is not None]
        return _people(users, uuids)
    if isinstance(t, ApplicationTarget):
        return true()
    if isinstance(t, TopicTarget):
        subscribed = sub.subscribed(t.topics)
        if t.usernames or t.global_user_ids:
            return and_(subscribed, _people(t.usernames, t.global_user_ids))
        return subscribed
    if isinstance(t, GroupTarget):
        return col(Registration.push_group) == t.push_group
    if isinstance(t, CapabilityTarget):
        return _capability(t, sub)
    if isinstance(t, OsMaskTarget):
        on_os = col(Registration.platform).in_(mask_platforms(t.mask))
        return and_(on_os, sub.subscribed([t.channel])) if t.channel else on_os
    if isinstance(t, DeviceIdsTarget):
        return col(Registration.device_id).in_(sorted(set(t.device_ids)))
    if isinstance(t, DestinationsTarget):
        return _destinations(t)
    raise ValueError(f"unknown target type {t.type!r}")  # pragma: no cover - union is closed


def audience(app_id: str, target: Mapping[str, Any] | AnyTarget) -> ColumnElement[bool]:
    """Active registrations of the app that the target names (any page: add the cursor)."""
    return and_(
        col(Registration.app_id) == app_id,
        col(Registration.active) == True,  # noqa: E712  (SQL comparison)
        target_condition(target),
    )


def page_audience(
    app_id: str, target: Mapping[str, Any] | AnyTarget, after: str | None
) -> ColumnElement[bool]:
    """`audience` for the page after `after` only, with the cursor inside the subqueries.

    PostgreSQL cannot carry `registration.id > cursor` into a semi-join on its own, so a
    page-independent topic condition must keep the planner from joining (see
    `_Subqueries`); this one lets it join or start from the topic index, each page
    bounded, which is much faster for rare topics. Build it per page.
    """
    parts = [
        col(Registration.app_id) == app_id,
        col(Registration.active) == True,  # noqa: E712  (SQL comparison)
        target_condition(target, after=after, page=True),
    ]
    if after is not None:
        parts.append(col(Registration.id) > after)
    return and_(*parts)


# --- SAP kinds -------------------------------------------------------------------------------


def _people(usernames: Sequence[str], global_user_ids: Sequence[str]) -> ColumnElement[bool]:
    """Devices of any listed username or global user id (a union, SEED-NOTES 10)."""
    parts: list[ColumnElement[bool]] = []
    if usernames:
        parts.append(col(Registration.username).in_(sorted(set(usernames))))
    if global_user_ids:
        guids = sorted(set(global_user_ids))
        parts.append(col(Registration.global_user_id).in_(guids))
        # SAP: an old Global User ID of a registration still reaches it.
        parts.append(
            select(literal(1))
            .where(
                col(RegistrationGlobalUser.registration_id) == col(Registration.id),
                col(RegistrationGlobalUser.app_id) == col(Registration.app_id),
                col(RegistrationGlobalUser.global_user_id).in_(guids),
            )
            .exists()
        )
    return or_(*parts) if parts else false()


@dataclass(frozen=True, slots=True)
class _Subqueries:
    """EXISTS over registration_topic / registration_capability, shaped for paging.

    EXISTS, not a join: a device on two of the listed topics is still one recipient.
    A page-independent condition gets `OFFSET 0`, which keeps PostgreSQL from turning the
    EXISTS into a merge semi-join: that join would read the subscriptions from the first
    registration id on every page (quadratic over a million devices, measured at 305 s);
    as a per-row probe of the subscription's primary key each page costs only its rows.
    A page condition instead bounds the subquery by the cursor and leaves the plan free.
    """

    after: str | None
    page: bool

    def _exists(self, owner: Any, *where: ColumnElement[bool]) -> ColumnElement[bool]:
        q = select(literal(1)).where(
            col(owner.registration_id) == col(Registration.id),
            col(owner.app_id) == col(Registration.app_id),
            *where,
        )
        if self.after is not None:
            q = q.where(col(owner.registration_id) > self.after)
        if not self.page:
            q = q.offset(0)
        return q.exists()

    def subscribed(self, topics: Sequence[str | None]) -> ColumnElement[bool]:
        listed = sorted({t for t in topics if t is not None})
        return self._exists(RegistrationTopic, col(RegistrationTopic.topic).in_(listed))

    def capable(self, name: str) -> ColumnElement[bool]:
        return self._exists(RegistrationCapability, col(RegistrationCapability.name) == name)


def _form_factor_in(form_factors: Sequence[str]) -> ColumnElement[bool]:
    # Form factors are enum-like ("phone", "Phone"): compared case-insensitively.
    return func.lower(col(Registration.form_factor)).in_(sorted({f.lower() for f in form_factors}))


def _capability(t: CapabilityTarget, sub: _Subqueries) -> ColumnElement[bool]:
    parts: list[ColumnElement[bool]] = [sub.capable(t.capability)]
    if t.form_factor:
        parts.append(_form_factor_in(t.form_factor))
    who: list[ColumnElement[bool]] = []
    if t.usernames:
        who.append(col(Registration.username).in_(sorted(set(t.usernames))))
    for u in t.users:  # SAP: each entry a user, form factors, or both
        entry: list[ColumnElement[bool]] = []
        if u.user is not None:
            entry.append(col(Registration.username) == u.user)
        if u.form_factor:
            entry.append(_form_factor_in(u.form_factor))
        who.append(and_(*entry))
    if who:
        parts.append(or_(*who))
    return and_(*parts)


# --- Infobip destinations --------------------------------------------------------------------

_DESTINATION_COLUMN = {
    "REGISTRATION": Registration.id,
    "EXTERNAL_USER_ID": Registration.external_user_id,
    "PHONE_NUMBER": Registration.phone_number,
    "EMAIL": Registration.email,
}


def _destinations(t: DestinationsTarget) -> ColumnElement[bool]:
    # Single-address destinations of one type and one primary setting share an IN list, so
    # ten thousand external user ids are one indexed condition, not ten thousand ORs.
    addressed: dict[tuple[str, bool], list[str]] = defaultdict(list)
    parts: list[ColumnElement[bool]] = []
    for d in t.destinations:
        primary = primary_only(d, t)
        if d.type == "MULTIPLE":
            parts.append(_primary(filter_condition(_filter_of(d)), primary))
        else:
            assert d.value is not None  # the model guarantees it
            addressed[(d.type, primary)].append(d.value)
    for (kind, primary), values in sorted(addressed.items()):
        column = col(_DESTINATION_COLUMN[kind])
        parts.append(_primary(column.in_(sorted(set(values))), primary))
    chosen = or_(*parts)
    if t.include_notifications_disabled_devices:
        return chosen
    # SEED-NOTES 22: devices with notifications disabled are skipped unless asked for.
    return and_(chosen, col(Registration.notifications_enabled) == True)  # noqa: E712


def _primary(condition: ColumnElement[bool], primary: bool) -> ColumnElement[bool]:
    if not primary:
        return condition
    return and_(condition, col(Registration.primary_device) == True)  # noqa: E712


def _filter_of(d: Destination) -> FilterNode:
    assert d.filter is not None  # the model guarantees it for MULTIPLE
    return compile_filter(d.filter)


def filter_condition(node: FilterNode | Mapping[str, Any]) -> ColumnElement[bool]:
    """A `$and` / `$or` filter as SQL; `schemas.targets.matches` is its pure twin."""
    if not isinstance(node, FilterNode):
        node = compile_filter(node)
    parts = [_condition(c) for c in node.conditions]
    parts += [filter_condition(child) for child in node.all_of]
    if node.any_of:
        parts.append(or_(*[filter_condition(child) for child in node.any_of]))
    return and_(*parts)


def _condition(c: Condition) -> ColumnElement[bool]:
    attr = c.attribute
    if attr.kind == "custom":
        return _custom(attr.name, c.values)
    column = getattr(Registration, attr.column)
    if attr.kind == "language":
        # en_US, EN-us and en-US are one tag; "de" reaches de, de-DE and de-DE-bay.
        tag = func.lower(func.replace(column, "_", "-"))
        alternatives: list[ColumnElement[bool]] = []
        for v in c.values:
            alternatives += [tag == v, tag.startswith(f"{v}-", autoescape=True)]
        return or_(*alternatives)
    return col(column).in_(list(c.values))


# --- custom attributes: typed equality on both databases -------------------------------------

_STRING_KINDS = ("string", "text")  # json_typeof (PostgreSQL), json_type (SQLite)
_NUMBER_KINDS = ("number", "integer", "real")


class _json_kind(FunctionElement[str]):
    """The JSON type name of custom_attributes[key]; each database spells its own."""

    type = String()
    name = "json_kind"
    inherit_cache = True


@compiles(_json_kind, "postgresql")
def _json_kind_pg(element: _json_kind, compiler: SQLCompiler, **kw: Any) -> str:
    column, key, _path = list(element.clauses)
    return (
        f"json_typeof({compiler.process(column, **kw)} -> "
        f"CAST({compiler.process(key, **kw)} AS TEXT))"
    )


@compiles(_json_kind, "sqlite")
def _json_kind_sqlite(element: _json_kind, compiler: SQLCompiler, **kw: Any) -> str:
    column, _key, path = list(element.clauses)
    return f"json_type({compiler.process(column, **kw)}, {compiler.process(path, **kw)})"


def _custom(key: str, values: Sequence[Scalar]) -> ColumnElement[bool]:
    """custom_attributes[key] equals one of the values, type and all.

    The JSON type is checked first: PostgreSQL would fail casting "gold" to a number, and
    SQLite would read it as 0; a string never equals a number or a boolean.
    """
    attrs = col(Registration.custom_attributes)
    # The key's quoting matches SQLAlchemy's own SQLite JSON path; keys with quotes are
    # refused when the filter is validated.
    kind = _json_kind(attrs, literal(key, String()), literal(f'$."{key}"', String()))
    value = attrs[key]
    parts: list[ColumnElement[bool]] = []
    strings = [v for v in values if isinstance(v, str)]
    if strings:
        parts.append(and_(kind.in_(_STRING_KINDS), value.as_string().in_(strings)))
    for flag in sorted({v for v in values if isinstance(v, bool)}):
        # SQLite names the boolean itself; PostgreSQL says "boolean" and ->> gives its text.
        word = "true" if flag else "false"
        parts.append(or_(kind == word, and_(kind == "boolean", value.as_string() == word)))
    numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if numbers:
        as_number = case((kind.in_(_NUMBER_KINDS), value.as_float()), else_=None)
        parts.append(as_number.in_(numbers))
    return or_(*parts)
