"""The SQL tables. Times are timezone-aware UTC (SQLModel stores and returns them so)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    ColumnElement,
    Index,
    Table,
    Text,
    UniqueConstraint,
    literal_column,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from schemas.ids import uuid7_str


def utcnow() -> datetime:
    return datetime.now(UTC)


def table(model: type[SQLModel]) -> Table:
    """The Core table of a model, for bulk statements that bypass the ORM."""
    t: Table = model.__table__  # type: ignore[attr-defined]
    return t


def new_id() -> str:
    """A row's id: time-ordered, so inserts land at the end of each index (schemas.ids)."""
    return uuid7_str()


NOTHING_MATCHED = "no active registration matched the target"
# The rows the partial indexes hold (written as SQL: the same text in the migration).
OPEN_MESSAGES = "state IN ('accepted', 'dispatched')"
QUEUED_DELIVERIES = "status = 'QUEUED'"
# QUEUED as a literal in SQL, not a bound value: only then can the planner (SQLite's, and
# PostgreSQL's generic plans) prove a query is within the partial indexes.
QUEUED: ColumnElement[str] = literal_column("'QUEUED'")


def delivery_rows(
    message_id: str, app_id: str, page: Sequence[tuple[str, str]], now: datetime
) -> list[dict[str, Any]]:
    """New QUEUED Delivery rows for (registration id, provider) pairs, for a bulk insert."""
    return [
        {
            "id": new_id(),
            "message_id": message_id,
            "registration_id": rid,
            "app_id": app_id,
            "provider": provider,
            "status": "QUEUED",
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }
        for rid, provider in page
    ]


class App(SQLModel, table=True):
    __tablename__ = "app"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    name: str = Field(unique=True, max_length=200)
    # APNs: token auth (.p8) or certificate auth (PEM with key).
    apns_key_pem: str | None = Field(default=None, sa_column=Column(Text))
    apns_key_id: str | None = Field(default=None, max_length=20)
    apns_team_id: str | None = Field(default=None, max_length=20)
    apns_cert_pem: str | None = Field(default=None, sa_column=Column(Text))
    apns_topic: str | None = Field(default=None, max_length=255)
    apns_sandbox: bool = False
    # FCM: the service account JSON as Google issues it.
    fcm_service_account: str | None = Field(default=None, sa_column=Column(Text))
    fcm_project_id: str | None = Field(default=None, max_length=100)
    # Web Push: the app's VAPID key pair (P-256 private key, PKCS#8 PEM; the public key is
    # derived from it) and the contact the push services may write to (`sub`: mailto: or
    # https:).
    webpush_private_key_pem: str | None = Field(default=None, sa_column=Column(Text))
    webpush_subject: str | None = Field(default=None, max_length=255)
    # Huawei Push Kit: the app id and client secret from AppGallery Connect (OAuth 2.0
    # client credentials); the secret is never shown after it is stored.
    hms_app_id: str | None = Field(default=None, max_length=64)
    hms_client_secret: str | None = Field(default=None, max_length=255)
    # Sending rate per provider lane, shared by every worker (None: the setting's default).
    apns_rate_per_minute: int | None = None
    fcm_rate_per_minute: int | None = None
    webpush_rate_per_minute: int | None = None
    hms_rate_per_minute: int | None = None
    # The zone of devices that name none (IANA), and quiet hours for its campaigns
    # ({"start": "22:00", "end": "08:00"}, local to each device), see schemas/localtime.py.
    timezone: str = Field(default="UTC", max_length=64)
    quiet_hours: dict[str, str] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_key"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    # None: an operator key, bound to no app; it administers every app (/v1/apps) and
    # nothing else (producer/auth.py).
    app_id: str | None = Field(default=None, foreign_key="app.id", index=True, max_length=36)
    key_hash: str = Field(unique=True, max_length=64)  # sha256 hex; the key itself is never kept
    prefix: str = Field(max_length=12)  # shown in listings so operators can tell keys apart
    roles: str = Field(max_length=200)  # comma-separated Role values
    # SAP's Basic authentication: the service key's alias is the user name, the key the password.
    alias: str | None = Field(default=None, max_length=100)
    # Requests per minute this key may make (None: no quota); over it, 429 with Retry-After.
    requests_per_minute: int | None = None
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None
    # Set when the key was rotated with an overlap: the old secret works until then.
    expires_at: datetime | None = None
    # When a request last used the key, to within a minute (written at most that often).
    last_used_at: datetime | None = None


class Registration(SQLModel, table=True):
    __tablename__ = "registration"
    __table_args__ = (
        # Not unique: two users on one shared device are two registrations (SAP).
        Index("ix_registration_app_token", "app_id", "token"),
        Index("ix_registration_app_device", "app_id", "device_id"),
        Index("ix_registration_app_username", "app_id", "username"),
        Index("ix_registration_app_global_user", "app_id", "global_user_id"),
        Index("ix_registration_app_active_id", "app_id", "active", "id"),
        Index("ix_registration_app_external_user", "app_id", "external_user_id"),
        Index("ix_registration_app_phone", "app_id", "phone_number"),
        Index("ix_registration_app_email", "app_id", "email"),
        Index("ix_registration_app_group", "app_id", "push_group"),
        Index("ix_registration_app_zone", "app_id", "time_zone", "id"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    app_id: str = Field(foreign_key="app.id", max_length=36)
    provider: str = Field(max_length=8)
    # None: an installation known before its push token (CM events); deliveries end code 5.
    token: str | None = Field(default=None, max_length=4096)
    platform: str = Field(max_length=16)
    # Web Push: the token is the subscription's endpoint; these are its keys (base64url):
    # the browser's P-256 public key and its 16-byte authentication secret (RFC 8291).
    webpush_p256dh: str | None = Field(default=None, max_length=100)
    webpush_auth: str | None = Field(default=None, max_length=40)
    device_id: str | None = Field(default=None, max_length=255)
    username: str | None = Field(default=None, max_length=255)
    global_user_id: str | None = Field(default=None, max_length=255)
    locale: str | None = Field(default=None, max_length=64)  # SAP userLocale
    external_user_id: str | None = Field(default=None, max_length=255)
    phone_number: str | None = Field(default=None, max_length=32)  # digits only, international
    email: str | None = Field(default=None, max_length=320)  # lower-cased
    push_group: str | None = Field(default=None, max_length=255)
    preferred_languages: list[str] | None = Field(default=None, sa_column=Column(JSON))
    time_zone: str | None = Field(default=None, max_length=64)
    form_factor: str | None = Field(default=None, max_length=32)
    device_model: str | None = Field(default=None, max_length=255)
    device_manufacturer: str | None = Field(default=None, max_length=255)
    os_version: str | None = Field(default=None, max_length=64)
    sdk_version: str | None = Field(default=None, max_length=64)
    app_version: str | None = Field(default=None, max_length=64)
    device_secure: bool | None = None
    notifications_enabled: bool = True  # CM pushAuthorization; Infobip notificationsEnabled
    primary_device: bool = False
    custom_attributes: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    # CM's clientId (the app's identifier on the installation), as its events said.
    client_id: str | None = Field(default=None, max_length=255)
    active: bool = True
    # Why and when the provider retired this token (codes 6 and 7); never sent to again.
    deactivated_code: int | None = None
    deactivated_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class RegistrationTopic(SQLModel, table=True):
    """A registration's subscription to a topic (SAP topics, Backendless channels)."""

    __tablename__ = "registration_topic"
    __table_args__ = (
        Index("ix_registration_topic_app_topic", "app_id", "topic", "registration_id"),
    )

    registration_id: str = Field(
        foreign_key="registration.id", primary_key=True, max_length=36, ondelete="CASCADE"
    )
    topic: str = Field(primary_key=True, max_length=255)
    app_id: str = Field(max_length=36)


class RegistrationGlobalUser(SQLModel, table=True):
    """Every Global User ID a registration has had (SAP keeps the history, and a producer
    may still push to an old one)."""

    __tablename__ = "registration_global_user"
    __table_args__ = (
        Index(
            "ix_registration_global_user_app_guid", "app_id", "global_user_id", "registration_id"
        ),
    )

    registration_id: str = Field(
        foreign_key="registration.id", primary_key=True, max_length=36, ondelete="CASCADE"
    )
    global_user_id: str = Field(primary_key=True, max_length=255)
    app_id: str = Field(max_length=36)
    created_at: datetime = Field(default_factory=utcnow)


class RegistrationCapability(SQLModel, table=True):
    """A capability the app reported for a device (SAP: name, category, value)."""

    __tablename__ = "registration_capability"
    __table_args__ = (
        Index("ix_registration_capability_app_name", "app_id", "name", "registration_id"),
    )

    registration_id: str = Field(
        foreign_key="registration.id", primary_key=True, max_length=36, ondelete="CASCADE"
    )
    name: str = Field(primary_key=True, max_length=255)
    app_id: str = Field(max_length=36)
    category: str | None = Field(default=None, max_length=255)
    value: str | None = Field(default=None, max_length=1000)


class Message(SQLModel, table=True):
    __tablename__ = "message"
    __table_args__ = (
        # One Message per idempotency key of an app. On PostgreSQL the index holds keyed
        # Messages only (migration 0016), so a push without a key writes nothing to it.
        Index(
            "uq_message_app_idempotency",
            "app_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        # One Message per run of a Schedule: two schedulers can never publish a run twice.
        Index(
            "uq_message_schedule_run",
            "schedule_id",
            "run_at",
            unique=True,
            postgresql_where=text("schedule_id IS NOT NULL"),
        ),
        # The recovery sweep looks for unfinished Messages only: finished ones leave this
        # index, so it stays small and closing a Message adds nothing to it.
        Index(
            "ix_message_open",
            "state",
            "created_at",
            postgresql_where=text(OPEN_MESSAGES),
            sqlite_where=text(OPEN_MESSAGES),
        ),
        # GET /v1/messages: an app's Messages newest first, in keyset pages (and by app).
        Index("ix_message_app_created", "app_id", "created_at", "id"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    app_id: str = Field(foreign_key="app.id", max_length=36)
    target: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    state: str = Field(default="accepted", max_length=16)
    code: int | None = None  # message-level result, e.g. 2 when nothing matched
    detail: str | None = Field(default=None, max_length=500)
    total: int = 0  # Deliveries written so far
    fanout_cursor: str | None = Field(default=None, max_length=36)  # last registration id done
    expires_at: datetime | None = None  # time to live, as an instant
    lane: str = Field(default="bulk", max_length=16)  # "priority": one device or user, high
    idempotency_key: str | None = Field(default=None, max_length=255)
    request_hash: str | None = Field(default=None, max_length=64)  # to tell a replay from a clash
    schedule_id: str | None = Field(default=None, max_length=36)  # uq_message_schedule_run
    run_at: datetime | None = None  # the Schedule's due time this Message publishes
    # Campaigns: a name and labels to find it by (labels: a JSON list of strings).
    name: str | None = Field(default=None, max_length=200)
    labels: list[str] | None = Field(default=None, sa_column=Column(JSON))
    # Throttle (campaign lane only): spread over this long; at most this many a minute (the
    # fan-out turns deliver_over_s into max_per_minute once it has counted the audience).
    deliver_over_s: int | None = None
    max_per_minute: int | None = None
    # Campaign lane: local hours its deliveries wait out (else the app's quiet hours).
    quiet_hours: dict[str, str] | None = Field(default=None, sa_column=Column(JSON))
    # A local-time run: {"at": "09:00", "day": "2026-12-24", "missed": "next_day"}; its
    # devices are fanned out per MessageRelease, each when its zone reaches `at`.
    local_time: dict[str, str] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)
    dispatched_at: datetime | None = None
    completed_at: datetime | None = None


class Schedule(SQLModel, table=True):
    """When a push is published: once at a time, every N seconds until an expiry, or on cron."""

    __tablename__ = "schedule"
    __table_args__ = (Index("ix_schedule_state_next", "state", "next_run_at"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    app_id: str = Field(foreign_key="app.id", index=True, max_length=36)
    target: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    lane: str = Field(default="bulk", max_length=16)
    kind: str = Field(max_length=8)  # once | repeat | cron
    publish_at: datetime | None = None
    repeat_every_s: int | None = None
    repeat_expires_at: datetime | None = None
    cron: str | None = Field(default=None, max_length=120)
    timezone: str = Field(default="UTC", max_length=64)
    # The campaign options each run's Message carries (name, labels…), as the request gave them.
    campaign: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    # Each run at this local time per device: {"at": "09:00", "date": None, "missed": …}.
    local_time: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    state: str = Field(default="scheduled", max_length=12)  # scheduled|paused|cancelled|finished
    next_run_at: datetime | None = None
    runs: int = 0
    last_run_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class MessageRelease(SQLModel, table=True):
    """One group of a local-time run's devices: the zones (as registrations store them;
    null: none) whose local time falls at `release_at`. The scheduler releases a due group
    and the fan-out writes its Deliveries then; `skipped` groups (their time had passed,
    missed "skip") never are."""

    __tablename__ = "message_release"
    __table_args__ = (Index("ix_message_release_due", "state", "release_at"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    message_id: str = Field(foreign_key="message.id", index=True, max_length=36, ondelete="CASCADE")
    release_at: datetime | None = None
    zones: list[str | None] = Field(sa_column=Column(JSON, nullable=False))
    devices: int = 0  # when the run started
    # waiting | released (due) | fanning (a fan-out task took it) | done | skipped | cancelled
    state: str = Field(default="waiting", max_length=10)
    released_at: datetime | None = None


class Delivery(SQLModel, table=True):
    __tablename__ = "delivery"
    __table_args__ = (
        UniqueConstraint("message_id", "registration_id", name="uq_delivery_message_registration"),
        Index("ix_delivery_message_id", "message_id", "id"),
        # Only QUEUED rows are looked up by status (is a Message done, what did the broker
        # lose, how old is the oldest). A Delivery leaves these when it is recorded, so the
        # write that records it adds entries to three indexes, not five.
        Index(
            "ix_delivery_queued_message",
            "message_id",
            postgresql_where=text(QUEUED_DELIVERIES),
            sqlite_where=text(QUEUED_DELIVERIES),
        ),
        Index(
            "ix_delivery_queued_updated",
            "updated_at",
            postgresql_where=text(QUEUED_DELIVERIES),
            sqlite_where=text(QUEUED_DELIVERIES),
        ),
        # Room in each page, so the claim updates a row in place (HOT): migration 0018.
        {"postgresql_with": {"fillfactor": 50}},
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    # A key SQLAlchemy orders its writes by; PostgreSQL no longer checks it row by row
    # (migration 0017 says why that is safe).
    message_id: str = Field(foreign_key="message.id", max_length=36)
    registration_id: str = Field(max_length=36)
    app_id: str = Field(max_length=36)
    provider: str = Field(max_length=8)
    status: str = Field(default="QUEUED", max_length=12)
    code: int | None = None
    provider_message: str | None = Field(default=None, max_length=500)
    provider_ref: str | None = Field(default=None, max_length=255)  # apns-id / FCM message name
    attempts: int = 0
    lease_until: datetime | None = None  # a deliver task owns this row until then
    # The process holding the lease (host:pid, as attempts name it): once it stops beating,
    # the scheduler releases its leases (schemas/liveness.py).
    leased_by: str | None = Field(default=None, max_length=255)
    next_attempt_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    sent_at: datetime | None = None
    # What the app reports afterwards (SAP RECEIVED / CONSUMED / CONFIRMED, CM events).
    received_at: datetime | None = None
    consumed_at: datetime | None = None
    confirmed_at: datetime | None = None
    deleted_at: datetime | None = None  # CM MessageDelete: recorded, no status change
    dismissed_at: datetime | None = None  # CM MessageDismissed: swiped away (also RECEIVED)
    # Each attempt with an answer: {at, code, answer, ms, worker}. Bounded by max_attempts
    # (an attempt lost with a killed worker has no answer, so leaves no entry).
    history: list[dict[str, Any]] | None = Field(
        default=None, sa_column=Column(JSON().with_variant(JSONB(), "postgresql"))
    )


class Webhook(SQLModel, table=True):
    """A URL an app subscribed to receive CM-shaped events on (installations, engagement,
    delivery outcomes), signed with its secret."""

    __tablename__ = "webhook"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    app_id: str = Field(foreign_key="app.id", index=True, max_length=36)
    url: str = Field(max_length=2000)
    secret: str = Field(max_length=200)
    events: str = Field(default="*", max_length=1000)  # comma-separated event types, * for all
    created_at: datetime = Field(default_factory=utcnow)
    disabled_at: datetime | None = None


class WebhookPost(SQLModel, table=True):
    """One POST of a batch of events to a webhook, kept for one id's story (`pushline
    trace`); its subjects are the Messages and Deliveries the batch told of."""

    __tablename__ = "webhook_post"
    __table_args__ = (Index("ix_webhook_post_at", "at"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    webhook_id: str = Field(max_length=36)
    batch_id: str = Field(max_length=64)
    attempt: int
    outcome: str = Field(max_length=16)  # delivered | retrying | gave_up | dropped
    events: int
    error: str | None = Field(default=None, max_length=200)
    at: datetime = Field(default_factory=utcnow)


class WebhookPostSubject(SQLModel, table=True):
    __tablename__ = "webhook_post_subject"
    __table_args__ = (Index("ix_webhook_post_subject_subject", "subject_id"),)

    post_id: str = Field(primary_key=True, max_length=36)
    subject_id: str = Field(primary_key=True, max_length=36)  # a Message or a Delivery id


class InboxTopic(SQLModel, table=True):
    """An inbox topic of an app (Infobip's inboxTopic): a push may name only one that
    exists, written exactly so (case sensitive)."""

    __tablename__ = "inbox_topic"

    app_id: str = Field(foreign_key="app.id", primary_key=True, max_length=36, ondelete="CASCADE")
    name: str = Field(primary_key=True, max_length=255)
    created_at: datetime = Field(default_factory=utcnow)


class InboxMessage(SQLModel, table=True):
    """A push saved to one person's inbox (by external user id) under its topic: one per
    person and Message, however many devices the person has. Its content is the Message's;
    it goes with the Message (retention)."""

    __tablename__ = "inbox_message"
    __table_args__ = (
        UniqueConstraint("message_id", "external_user_id", name="uq_inbox_message_person"),
        Index("ix_inbox_message_person", "app_id", "external_user_id", "created_at", "id"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    app_id: str = Field(max_length=36)
    message_id: str = Field(foreign_key="message.id", max_length=36, ondelete="CASCADE")
    external_user_id: str = Field(max_length=255)
    topic: str = Field(max_length=255)
    created_at: datetime = Field(default_factory=utcnow)
    seen_at: datetime | None = None


class UserToken(SQLModel, table=True):
    """A Backendless `user-token` Pushline issued: whose it is and where it may publish
    (`publish`: all | some | none; `channels` for some). Only its hash is kept."""

    __tablename__ = "user_token"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    app_id: str = Field(foreign_key="app.id", index=True, max_length=36, ondelete="CASCADE")
    token_hash: str = Field(unique=True, max_length=64)
    user: str = Field(max_length=255)
    publish: str = Field(max_length=8)
    channels: list[str] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None
