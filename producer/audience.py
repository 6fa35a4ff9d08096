"""Estimating reach: how many active devices a target names, counted in SQL, nothing sent."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine, and_, func, select
from sqlmodel import Session, col

from producer.accept import validation_details
from producer.errors import InvalidRequest
from schemas.api import AudienceGroup, AudienceOut, AudienceRequest
from schemas.audience import target_condition
from schemas.tables import Registration


def parse_audience(body: dict[str, Any]) -> AudienceRequest:
    """The same target models (and so the same rules) as `POST /v1/messages`."""
    try:
        return AudienceRequest.model_validate(body)
    except ValidationError as exc:
        details = validation_details(exc)
        raise InvalidRequest(f"{details[0]['field']}: {details[0]['rule']}", details) from exc


def count_audience(engine: Engine, app_id: str, request: AudienceRequest) -> AudienceOut:
    """One grouped count over the condition the fan-out pages through.

    The condition is built as for one page with no cursor (`page=True`): the planner may
    then join the topic and capability subqueries or start from their indexes, which a
    single count over the whole audience wants.
    """
    who = and_(
        col(Registration.app_id) == app_id,
        col(Registration.active) == True,  # noqa: E712  (SQL comparison)
        target_condition(request.target, page=True),
    )
    q = (
        select(col(Registration.provider), col(Registration.platform), func.count())
        .where(who)
        .group_by(col(Registration.provider), col(Registration.platform))
    )
    with Session(engine) as s:
        rows = [(p, pl, int(n)) for p, pl, n in s.execute(q).all()]
    return summarise(rows)


def summarise(rows: list[tuple[str, str, int]]) -> AudienceOut:
    by_provider: dict[str, int] = {}
    by_platform: dict[str, int] = {}
    for provider, platform, n in rows:
        by_provider[provider] = by_provider.get(provider, 0) + n
        by_platform[platform] = by_platform.get(platform, 0) + n
    return AudienceOut(
        total=sum(n for _, _, n in rows),
        by_provider=by_provider,
        by_platform=by_platform,
        groups=[AudienceGroup(provider=p, platform=pl, devices=n) for p, pl, n in sorted(rows)],
    )
