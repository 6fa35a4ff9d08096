"""What the operator console (/console) reads, as the API answers it under /v1/console."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from schemas.api import DeliveryOut, DeliveryPage, MessageStatus


class ConsoleMessage(MessageStatus):
    """A Message with its live counts by status and code (the console draws them as a bar)."""

    lane: str
    target_type: str


class ConsoleMessages(BaseModel):
    items: list[ConsoleMessage]
    next_cursor: str | None


class ConsoleMessageDetail(BaseModel):
    message: MessageStatus
    deliveries: DeliveryPage


class StoryEvent(BaseModel):
    at: datetime
    what: str
    subject: str
    detail: str


class ConsoleDelivery(BaseModel):
    """A Delivery with its attempts (`delivery.history`) and its whole story, oldest first."""

    delivery: DeliveryOut
    story: list[StoryEvent]


class ConsoleOverview(BaseModel):
    """The last hour, minute by minute (oldest first, the current minute last): Deliveries
    QUEUED at each minute's end per lane, and Deliveries sent in each minute; and the tasks
    waiting in each queue now."""

    minutes: list[datetime]
    queued: dict[str, list[int]]
    sent: list[int]
    queues: dict[str, int | None]  # None: Redis did not answer
