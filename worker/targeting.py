"""Which registrations a target means, as a SQL condition (resolution stays in the database)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, false, or_, true
from sqlmodel import col

from schemas.tables import Registration


def target_condition(target: dict[str, Any]) -> ColumnElement[bool]:
    kind = target.get("type")
    if kind == "device":
        return col(Registration.id) == target["registration_id"]
    if kind == "users":
        parts = []
        if target.get("usernames"):
            parts.append(col(Registration.username).in_(target["usernames"]))
        if target.get("global_user_ids"):
            parts.append(col(Registration.global_user_id).in_(target["global_user_ids"]))
        return or_(*parts) if parts else false()
    if kind == "application":
        return true()
    raise ValueError(f"unknown target type {kind!r}")


def audience(app_id: str, target: dict[str, Any]) -> ColumnElement[bool]:
    """Active registrations of the app that the target names."""
    return and_(
        col(Registration.app_id) == app_id,
        col(Registration.active) == True,  # noqa: E712  (SQL comparison)
        target_condition(target),
    )
