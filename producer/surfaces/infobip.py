"""Infobip's mobile push API, translated onto the native Message model.

Routes (paths as Infobip's API has them, so a client changes only the base URL and key):
- `POST /push/2/message/single`: send one push to `destinations`. Answers 200 with the
  `bulkId` (the Message id) and, once fan-out has written the Deliveries (a few seconds at
  most, woken by the worker's progress announcement on Redis), one entry per device with its
  `messageId` (the Delivery id) and status. When fan-out takes longer, or reaches more than
  MAX_LISTED devices, the answer lists the destinations as PENDING_ACCEPTED without message
  ids, and `GET /push/1/reports?bulkId=` gives them.
- `GET /push/1/statistics?bulkId=`: the bulk's statistics, counted in SQL from the Deliveries.
- `GET /push/1/reports?bulkId=|messageId=`: per-device reports (read, never consumed).
- `POST /mobile/1/deliveryreports` (`dlrIds`) and `POST /mobile/2/messages/seen`
  (`messages[].messageId`): devices report delivered (RECEIVED) and seen (CONSUMED); with
  `externalUserId` and `"inbox": true`, inbox messages are marked seen.
- `POST|GET /push/1/inbox/topics`: the app's inbox topics (Infobip creates them in its web
  interface; Pushline names the route in Infobip's style). A push's `inboxTopic` must be
  one of them, exactly.
- `GET /mobile/1/user/{externalUserId}/inbox/{platform}/messages`: a person's inbox (the
  path Infobip's SDKs call), newest first.

Keys: `Authorization: App <key>`, `X-API-Key` or Basic. Role push_single for one REGISTRATION
destination, push_multiple otherwise; `from` (and `applicationCode`) is the app's id or name.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError
from sqlalchemy import Engine, and_, case, func, literal, or_, select
from sqlmodel import Session, col
from starlette.concurrency import run_in_threadpool

from producer import inbox
from producer.accept import accept_push
from producer.accept import parse_push as parse_native
from producer.auth import authenticate
from producer.bodies import invalid, json_body, read_json
from producer.engagement import report_engagement
from producer.errors import Conflict, InvalidRequest, NotFound, PushlineError
from schemas import infobip as ib
from schemas.codes import CODE_MEANINGS, DeliveryStatus, MessageState
from schemas.queueing import progress_channel
from schemas.settings import Settings
from schemas.tables import App, Delivery, Message, Registration, utcnow

#: How long the send route waits for fan-out before answering per destination.
ANSWER_WAIT_S = 5.0
#: Devices listed in a send answer; a bigger audience is answered per destination.
MAX_LISTED = 1000
REPORTS_LIMIT_MAX = 1000

_SERVICE_IDS = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "TOO_MANY_REQUESTS",
    500: "GENERAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}

ERROR_MODEL = ib.InfobipError


def owns(path: str) -> bool:
    return path.startswith(("/push/", "/mobile/"))


def error_response(exc: PushlineError) -> JSONResponse:
    """Infobip's error document; `validationErrors` names each field with its rule."""
    service: dict[str, Any] = {
        "messageId": _SERVICE_IDS.get(exc.status, "GENERAL_ERROR"),
        "text": exc.message,
    }
    if exc.details:
        errors: dict[str, list[str]] = {}
        for d in exc.details:
            errors.setdefault(d["field"], []).append(d["rule"])
        service["validationErrors"] = errors
    return JSONResponse(
        status_code=exc.status, content={"requestError": {"serviceException": service}}
    )


def _app_codes(engine: Engine, app_id: str) -> tuple[str, str]:
    with Session(engine) as s:
        app = s.get(App, app_id)
    if app is None:  # the key outlived its app
        raise NotFound("application not found")
    return app.id, app.name


def _check_code(engine: Engine, app_id: str, field: str, code: str) -> None:
    if code not in _app_codes(engine, app_id):
        raise invalid(field, "must be this API key's application code: the app's id or name")


def _own_message(s: Session, app_id: str, bulk_id: str) -> Message:
    msg = s.get(Message, bulk_id)
    if msg is None or msg.app_id != app_id:  # another app's bulk is as unknown as a wrong id
        raise NotFound(f"bulkId {bulk_id} not found")
    return msg


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)  # SQLite returns naive UTC


def _when(at: datetime | None) -> str | None:
    """Infobip's time format, yyyy-MM-dd'T'HH:mm:ss.SSSZ, in UTC."""
    if at is None:
        return None
    at = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}+0000"


_RECIPIENT_COLUMNS = (
    col(Registration.external_user_id),
    col(Registration.phone_number),
    col(Registration.email),
)


def _recipient(
    registration_id: str, ext: str | None, phone: str | None, email: str | None
) -> dict[str, str]:
    return ib.recipient(
        registration_id, {"externalUserId": ext, "phoneNumber": phone, "email": email}
    )


def _send_answer(
    engine: Engine, message_id: str, destinations: list[dict[str, Any]]
) -> dict[str, Any]:
    """Per device when fan-out is done and small enough, else per destination."""
    with Session(engine) as s:
        msg = s.get(Message, message_id)
        if msg is None:  # removed meanwhile (nothing matched and an operator cleaned up)
            return _per_destination(message_id, destinations, ib.NO_DESTINATION.document())
        if msg.state == MessageState.FAILED:
            status = ib.NO_DESTINATION.document()
            return _per_destination(message_id, destinations, status)
        if msg.state == MessageState.ACCEPTED or msg.total > MAX_LISTED:
            return _per_destination(message_id, destinations, ib.ACCEPTED.document())
        rows = s.execute(
            select(
                col(Delivery.id),
                col(Delivery.registration_id),
                col(Delivery.status),
                col(Delivery.code),
                col(Delivery.provider_message),
                *_RECIPIENT_COLUMNS,
            )
            .outerjoin(Registration, col(Registration.id) == col(Delivery.registration_id))
            .where(col(Delivery.message_id) == message_id)
            .order_by(col(Delivery.id))
        ).all()
    return {
        "bulkId": message_id,
        "messages": [
            {
                "to": _recipient(reg_id, ext, phone, email),
                "messageId": delivery_id,
                "status": ib.status_of(status, code, text).document(),
            }
            for delivery_id, reg_id, status, code, text, ext, phone, email in rows
        ],
    }


def _per_destination(
    message_id: str, destinations: list[dict[str, Any]], status: dict[str, Any]
) -> dict[str, Any]:
    return {
        "bulkId": message_id,
        "messages": [{"to": ib.destination_echo(d), "status": status} for d in destinations],
    }


def _message_state(engine: Engine, message_id: str) -> str:
    with Session(engine) as s:
        msg = s.get(Message, message_id)
    return msg.state if msg is not None else MessageState.FAILED


def _statistics(engine: Engine, app_id: str, bulk_id: str) -> dict[str, Any]:
    with Session(engine) as s:
        msg = _own_message(s, app_id, bulk_id)
        # Sent, never reported delivered, and the validity period is over: expired too.
        lapsed = msg.expires_at is not None and _aware(msg.expires_at) <= utcnow()
        unreported = and_(col(Delivery.status) == DeliveryStatus.SENT, literal(lapsed))
        too_late = col(Delivery.provider_message).like("expired%")
        expired = case((or_(too_late, unreported), 1), else_=0)
        rows = s.execute(
            select(col(Delivery.status), col(Delivery.code), expired, func.count())
            .where(col(Delivery.message_id) == bulk_id)
            .group_by(col(Delivery.status), col(Delivery.code), expired)
        ).all()
    return ib.statistics((status, code, bool(flag), n) for status, code, flag, n in rows)


def _reports(
    engine: Engine,
    app_id: str,
    bulk_id: str | None,
    message_id: str | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    q = (
        select(Delivery, *_RECIPIENT_COLUMNS)
        .outerjoin(Registration, col(Registration.id) == col(Delivery.registration_id))
        .where(col(Delivery.app_id) == app_id)
    )
    with Session(engine) as s:
        if bulk_id is not None:
            _own_message(s, app_id, bulk_id)
            q = q.where(col(Delivery.message_id) == bulk_id)
        if message_id is not None:
            q = q.where(col(Delivery.id) == message_id)
        if cursor is not None:
            q = q.where(col(Delivery.id) > cursor)
        rows = s.execute(q.order_by(col(Delivery.id)).limit(limit + 1)).all()
    if message_id is not None and not rows:
        raise NotFound(f"messageId {message_id} not found")
    results = []
    for d, ext, phone, email in rows[:limit]:
        final = d.status != DeliveryStatus.QUEUED
        done = d.received_at or (d.updated_at if d.status == DeliveryStatus.ERROR else None)
        results.append(
            {
                "bulkId": d.message_id,
                "messageId": d.id,
                "to": _recipient(d.registration_id, ext, phone, email),
                "sentAt": _when(d.sent_at),
                "doneAt": _when(done) if final else None,
                "seenAt": _when(d.consumed_at),
                "messageCount": 1,
                "status": ib.status_of(d.status, d.code, d.provider_message).document(),
                "error": ib.error_of(d.status, d.code, d.provider_message or _meaning(d.code)),
            }
        )
    nxt = rows[limit - 1][0].id if len(rows) > limit else None
    return {"results": results, "nextCursor": nxt}


def _meaning(code: int | None) -> str | None:
    return CODE_MEANINGS.get(code) if code is not None else None


def _engage(
    engine: Engine, app_id: str, reports: list[tuple[str, datetime]], status: str
) -> dict[str, Any]:
    """Every id is checked before any is recorded: one bad id changes nothing."""
    ids = list(dict.fromkeys(mid for mid, _ in reports))
    with Session(engine) as s:
        found = {
            d_id: d_status
            for d_id, d_status in s.execute(
                select(col(Delivery.id), col(Delivery.status)).where(
                    col(Delivery.id).in_(ids), col(Delivery.app_id) == app_id
                )
            ).all()
        }
    for mid in ids:
        if mid not in found:
            raise NotFound(f"messageId {mid} not found")
        if found[mid] in (DeliveryStatus.QUEUED, DeliveryStatus.ERROR):
            raise Conflict(
                f"messageId {mid} is {found[mid]}: only a sent notification can be reported"
            )
    results = []
    for mid, at in reports:
        row = report_engagement(engine, app_id, mid, status, at)
        doc = ib.status_of(row.status, row.code, row.provider_message).document()
        results.append({"messageId": mid, "status": doc})
    return {"results": results}


def _body_model(model: type[BaseModel], body: Any) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "body"
        rule = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        raise invalid(field, rule) from None


def _one_query(request: Request, name: str, required: bool = False) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise invalid(name, "give it once")
    value = values[0].strip() if values else None
    if required and not value:
        raise invalid(name, "is required")
    if value is not None and (not value or len(value) > 200):
        raise invalid(name, "must be 1 to 200 characters")
    return value


# --- OpenAPI examples: the seed's samples (trailing commas removed, SEED-NOTES 20) -------------

_APP = "your-application-code"
_TEXT = "This PUSH message will pop up on your mobile device."
SEND_EXAMPLES: dict[str, dict[str, Any]] = {
    "registration": {
        "summary": "One non-personalized device (REGISTRATION)",
        "value": {
            "from": _APP,
            "destinations": [
                {
                    "pushRegistrationId": "DBE0B0B6-668E-491E-8EE8-2A3DB2C71CBE",
                    "type": "REGISTRATION",
                }
            ],
            "text": _TEXT,
        },
    },
    "external_user": {
        "summary": "Every device of a person (EXTERNAL_USER_ID)",
        "value": {
            "from": _APP,
            "destinations": [{"externalUserId": "customer_21234", "type": "EXTERNAL_USER_ID"}],
            "text": _TEXT,
        },
    },
    "multiple_and": {
        "summary": "MULTIPLE: two people ($and of the same attribute)",
        "value": {
            "from": _APP,
            "destinations": [
                {
                    "$and": [
                        {"externalUserId": "customer_21234"},
                        {"externalUserId": "customer_21235"},
                    ],
                    "type": "MULTIPLE",
                }
            ],
            "text": _TEXT,
        },
    },
    "multiple_ios": {
        "summary": "MULTIPLE: all iOS devices",
        "value": {
            "from": _APP,
            "destinations": [{"$or": [{"platform": "iOS"}], "type": "MULTIPLE"}],
            "text": _TEXT,
        },
    },
    "advanced_1": {
        "summary": "Advanced targeting 1: iOS devices of one phone number",
        "value": {
            "from": _APP,
            "destinations": [
                {"$and": [{"platform": "iOS"}, {"phoneNumber": "441134960001"}], "type": "MULTIPLE"}
            ],
            "text": _TEXT,
        },
    },
    "advanced_2": {
        "summary": "Advanced targeting 2: iOS, device type personal or business",
        "value": {
            "from": _APP,
            "destinations": [
                {
                    "$and": [{"platform": "iOS"}, {"DeviceType": "personal"}],
                    "$or": [{"DeviceType": "business"}],
                    "type": "MULTIPLE",
                }
            ],
            "text": _TEXT,
        },
    },
    "notification_options": {
        "summary": "Notification options and custom payload, primary devices only",
        "value": {
            "from": _APP,
            "destinations": [{"phoneNumber": "441134960001", "type": "PHONE_NUMBER"}],
            "text": _TEXT,
            "customPayload": {
                "contentUrl": "https://someurl.com/content",
                "deepLink": "myApp://some/link",
            },
            "notificationOptions": {
                "vibrationEnabled": True,
                "soundEnabled": True,
                "soundName": "sound.wav",
                "badge": 1,
                "contentUrl": "http://www.mydomain.com/images/image1.jpg",
                "category": "mm_accept_decline",
                "inAppStyle": "MODAL",
                "title": "This is some title",
            },
            "targetOnlyPrimaryDevices": True,
            "includeNotificationsDisabledDevices": True,
            "validityPeriod": 30,
            "validityPeriodTimeUnit": "MINUTES",
        },
    },
}

_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {
        "description": "Infobip's error document",
        "content": {
            "application/json": {
                "example": {
                    "requestError": {
                        "serviceException": {
                            "messageId": _SERVICE_IDS[s],
                            "text": "destinations.0.email: email 'nobody' must contain @",
                        }
                        if s == 400
                        else {"messageId": _SERVICE_IDS[s], "text": "…"}
                    }
                }
            }
        },
    }
    for s in (400, 401, 403, 404, 429)
}


STATISTICS_EXAMPLE = {
    "totalSent": 4,
    "delivered": 3,
    "seen": 2,
    "errors": {"registration": 1, "expired": 0, "cloud": 0},
    "delivery": {"rate": 0.75},
}


def router(settings: Settings, engine: Engine) -> APIRouter:
    api = APIRouter(tags=["infobip"])
    # One client per API process; connections are made in the server's event loop.
    events = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=2.0)

    async def wait_for_fan_out(message_id: str) -> None:
        """Until fan-out has written every Delivery, or ANSWER_WAIT_S. The worker announces
        each recorded chunk and a failed fan-out; SQL is read once per announcement."""
        try:
            pubsub = events.pubsub(ignore_subscribe_messages=True)
            await pubsub.subscribe(progress_channel(settings, message_id))
        except (RedisError, OSError):
            return  # best effort: the answer then lists the destinations as pending
        deadline = utcnow() + timedelta(seconds=ANSWER_WAIT_S)
        try:
            while True:
                # Checked after subscribing, so an announcement made before cannot be missed.
                state = await run_in_threadpool(_message_state, engine, message_id)
                left = (deadline - utcnow()).total_seconds()
                if state != MessageState.ACCEPTED or left <= 0:
                    return
                await pubsub.get_message(timeout=left)
        except (RedisError, OSError):
            return
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    @api.post(
        "/push/2/message/single",
        response_model=ib.SendAnswer,
        response_model_exclude_none=True,
        responses=_ERRORS,
        openapi_extra=json_body(ib.InfobipPush, SEND_EXAMPLES),
        summary="Infobip: send a push notification to destinations",
    )
    async def send(request: Request) -> dict[str, Any]:
        """`from` is the app's id or name. Destinations: REGISTRATION (`pushRegistrationId`,
        a Pushline registration id), EXTERNAL_USER_ID, PHONE_NUMBER, EMAIL, or MULTIPLE with
        `$and` / `$or` (conditions on the same attribute are alternatives, on different
        attributes all must hold). `validityPeriod` (hours unless `validityPeriodTimeUnit`
        says SECONDS or MINUTES; 30 s to 72 h, default 48 h) is the time to live.

        The answer's `bulkId` is the Message id; each `messageId` a Delivery id, which devices
        report delivered / seen against (`/mobile/1/deliveryreports`, `/mobile/2/messages/seen`).
        """
        who = authenticate(request)
        try:
            push = ib.parse_push(await read_json(request))
            native = ib.to_native(push)
            who.require(ib.required_role(native["target"]))
        except ib.TranslationError as exc:
            raise invalid(exc.field, exc.rule) from exc
        await run_in_threadpool(_check_code, engine, who.app_id, "from", push.from_)
        try:
            parsed = parse_native(native)
        except InvalidRequest as exc:
            # Named as the caller wrote it: `payload.data` is their `customPayload`.
            first = exc.details[0] if exc.details else {"field": "body", "rule": exc.message}
            raise invalid(ib.infobip_field(first["field"]), first["rule"]) from exc
        try:
            accepted = await run_in_threadpool(
                accept_push, who.app_id, parsed, settings=settings, engine=engine
            )
        except InvalidRequest as exc:  # an unknown inboxTopic, named as the caller wrote it
            first = exc.details[0] if exc.details else {"field": "body", "rule": exc.message}
            raise invalid(ib.infobip_field(first["field"]), first["rule"]) from exc
        await wait_for_fan_out(accepted.message_id)
        return await run_in_threadpool(_send_answer, engine, accepted.message_id, push.destinations)

    @api.get(
        "/push/1/statistics",
        response_model=ib.StatisticsOut,
        responses={
            200: {"content": {"application/json": {"example": STATISTICS_EXAMPLE}}},
            **_ERRORS,
        },
        summary="Infobip: statistics of a bulk",
    )
    def statistics(request: Request) -> dict[str, Any]:
        """`totalSent`: devices targeted; `delivered`: reported RECEIVED or later; `seen`:
        CONSUMED or later; `errors.registration`: token rejected or expired (codes 6, 7);
        `errors.expired`: the validity period ended first; `errors.cloud`: APNs / FCM failures
        (codes 4, 8, 10-14); `delivery.rate`: delivered / totalSent, 0 to 1.

        Query: `bulkId` (required), `applicationCode` (optional: the app's id or name).
        """
        who = authenticate(request)
        bulk_id = _one_query(request, "bulkId", required=True)
        code = _one_query(request, "applicationCode")
        if code is not None:
            _check_code(engine, who.app_id, "applicationCode", code)
        assert bulk_id is not None
        return _statistics(engine, who.app_id, bulk_id)

    @api.get(
        "/push/1/reports",
        response_model=ib.ReportsOut,
        responses=_ERRORS,
        summary="Infobip: per-device reports of a bulk or a message",
    )
    def reports(request: Request) -> dict[str, Any]:
        """One report per device: `messageId`, `to`, `status`, `error` (`id` is Pushline's
        result code). Query `bulkId` or `messageId`, `limit` (1-1000, default 50) and
        `cursor` (the previous page's `nextCursor`). Reports are read, never consumed."""
        who = authenticate(request)
        bulk_id = _one_query(request, "bulkId")
        message_id = _one_query(request, "messageId")
        if bulk_id is None and message_id is None:
            raise invalid("bulkId", "give bulkId or messageId")
        raw_limit = _one_query(request, "limit") or "50"
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= REPORTS_LIMIT_MAX:
            raise invalid("limit", f"must be a whole number from 1 to {REPORTS_LIMIT_MAX}")
        cursor = _one_query(request, "cursor")
        return _reports(engine, who.app_id, bulk_id, message_id, int(raw_limit), cursor)

    @api.post(
        "/mobile/1/deliveryreports",
        response_model=ib.EngagementAnswer,
        responses=_ERRORS,
        summary="Infobip SDK: messages delivered to the device (RECEIVED)",
        openapi_extra=json_body(
            ib.DeliveryReports,
            {"delivered": {"value": {"dlrIds": ["<messageId from the send answer>"]}}},
        ),
    )
    async def delivered(request: Request) -> dict[str, Any]:
        """Each `dlrIds` entry is a `messageId` (Delivery id): it becomes RECEIVED. Statuses
        never move backwards; an unknown id is 404, a failed or unsent one 409, and then none
        of the ids is recorded."""
        who = authenticate(request)
        body = _body_model(ib.DeliveryReports, await read_json(request))
        now = utcnow()
        reports = [(mid, now) for mid in body.dlrIds]
        return await run_in_threadpool(
            _engage, engine, who.app_id, reports, DeliveryStatus.RECEIVED
        )

    @api.post(
        "/mobile/2/messages/seen",
        response_model=ib.EngagementAnswer,
        response_model_exclude_none=True,
        responses=_ERRORS,
        summary="Infobip SDK: messages the user saw (CONSUMED)",
        openapi_extra=json_body(
            ib.SeenReports,
            {
                "seen": {
                    "value": {"messages": [{"messageId": "<messageId>", "timestampDelta": 1500}]}
                }
            },
        ),
    )
    async def seen(request: Request) -> dict[str, Any]:
        """Each message becomes CONSUMED (seen), `timestampDelta` milliseconds ago. A message
        with `"inbox": true` is an inbox message of `externalUserId` (its `messageId` from
        the inbox list): it is marked seen there. Every id is checked before any is
        recorded."""
        who = authenticate(request)
        body = _body_model(ib.SeenReports, await read_json(request))
        now = utcnow()
        reports = [
            (m.messageId, now - timedelta(milliseconds=m.timestampDelta), m.inbox)
            for m in body.messages
        ]
        return await run_in_threadpool(_seen, engine, who.app_id, body.externalUserId, reports)

    @api.post(
        "/push/1/inbox/topics",
        status_code=201,
        response_model=ib.InboxTopicOut,
        responses={**_ERRORS, 409: {**_ERRORS[400], "description": "the topic exists"}},
        summary="Pushline (Infobip style): create an inbox topic",
        openapi_extra=json_body(ib.InboxTopicIn, {"topic": {"value": {"name": "promotions"}}}),
    )
    async def create_topic(request: Request) -> dict[str, Any]:
        """Role `admin`. The name is kept exactly as written: pushes must name it so
        (`notificationOptions.inboxTopic`). The same name again is a 409."""
        who = authenticate(request)
        who.require("admin")
        body = _body_model(ib.InboxTopicIn, await read_json(request))
        topic = await run_in_threadpool(inbox.create_topic, engine, who.app_id, body.name)
        return {"name": topic.name, "createdAt": _when(topic.created_at)}

    @api.get(
        "/push/1/inbox/topics",
        response_model=ib.InboxTopicsOut,
        responses=_ERRORS,
        summary="Pushline (Infobip style): the app's inbox topics",
    )
    def topics(request: Request) -> dict[str, Any]:
        who = authenticate(request)
        return {
            "topics": [
                {"name": t.name, "createdAt": _when(t.created_at)}
                for t in inbox.list_topics(engine, who.app_id)
            ]
        }

    @api.get(
        "/mobile/1/user/{externalUserId}/inbox/{platform}/messages",
        response_model=ib.InboxOut,
        responses=_ERRORS,
        summary="Infobip SDK: a person's inbox, newest first",
    )
    def person_inbox(request: Request, externalUserId: str, platform: str) -> dict[str, Any]:
        """The inbox of the person with this external user id: `platform` is `gcm`, `apns`
        or `hms`, as Infobip's SDKs write it (the inbox is the same). Query `topic` (exact)
        and `limit` (1-1000, default 50). `countTotal` and `countUnread` count the whole
        inbox (of that topic)."""
        who = authenticate(request)
        if platform not in INBOX_PLATFORMS:
            raise NotFound(f"platform {platform!r}: one of {', '.join(INBOX_PLATFORMS)}")
        topic = _one_query(request, "topic")
        raw_limit = _one_query(request, "limit") or "50"
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= inbox.INBOX_LIMIT_MAX:
            raise invalid("limit", f"must be a whole number from 1 to {inbox.INBOX_LIMIT_MAX}")
        found = inbox.person_inbox(engine, who.app_id, externalUserId, topic, int(raw_limit))
        return {
            "countTotal": found.total,
            "countUnread": found.unread,
            "messages": found.messages,
        }

    return api


#: The platform segment of the SDK's inbox path.
INBOX_PLATFORMS = ("gcm", "apns", "hms")


def _seen(
    engine: Engine,
    app_id: str,
    person: str | None,
    reports: list[tuple[str, datetime, bool]],
) -> dict[str, Any]:
    """Delivery ids become CONSUMED; inbox ids are marked seen in the person's inbox.
    Nothing is recorded unless every id is known."""
    boxed = [(mid, at) for mid, at, in_inbox in reports if in_inbox]
    plain = [(mid, at) for mid, at, in_inbox in reports if not in_inbox]
    if boxed and person is None:
        raise invalid("externalUserId", "required when a message is reported with inbox: true")
    if boxed:
        assert person is not None
        inbox.check_inbox_ids(engine, app_id, person, [mid for mid, _ in boxed])
    answer = _engage(engine, app_id, plain, DeliveryStatus.CONSUMED) if plain else {"results": []}
    if boxed:
        assert person is not None
        inbox.mark_seen(engine, app_id, person, boxed)
        answer["results"] += [{"messageId": mid, "inbox": True} for mid, _ in boxed]
    return answer
