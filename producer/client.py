"""A typed HTTP client for services that reach Pushline through its REST API."""

from __future__ import annotations

from typing import Any

import httpx

from producer.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    PushlineError,
    Unauthorized,
    Unavailable,
)
from schemas.api import (
    AudienceOut,
    DeliveryOut,
    DeliveryPage,
    MessageAccepted,
    MessagePage,
    MessageStatus,
    MessageTimeline,
    PushRequest,
    RegistrationIn,
    RegistrationOut,
    RegistrationPage,
)

_ERRORS: dict[int, type[PushlineError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    503: Unavailable,
}


class PushlineClient:
    """`PushlineClient("http://127.0.0.1:8080", api_key="pl_…")`; raises PushlineError kinds."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 10.0) -> None:
        self._http = httpx.Client(
            base_url=base_url, headers={"X-API-Key": api_key}, timeout=timeout
        )

    def __enter__(self) -> PushlineClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, url: str, **kw: Any) -> Any:
        try:
            r = self._http.request(method, url, **kw)
        except httpx.TransportError as exc:
            raise Unavailable(f"Pushline is unreachable: {exc}") from exc
        if r.status_code >= 400:
            try:
                body = r.json()
                message, details = body.get("message", r.text), body.get("details", [])
            except ValueError:
                message, details = r.text, []
            raise _ERRORS.get(r.status_code, PushlineError)(message, details)
        return r.json() if r.content else None

    # registrations
    def register(self, registration: RegistrationIn | dict[str, Any]) -> RegistrationOut:
        body = RegistrationIn.model_validate(registration).model_dump(exclude_none=True)
        return RegistrationOut.model_validate(self._call("POST", "/v1/registrations", json=body))

    def registration(self, registration_id: str) -> RegistrationOut:
        return RegistrationOut.model_validate(
            self._call("GET", f"/v1/registrations/{registration_id}")
        )

    def registrations(
        self, *, username: str | None = None, cursor: str | None = None, limit: int = 100
    ) -> RegistrationPage:
        params = {k: v for k, v in (("username", username), ("cursor", cursor)) if v}
        params["limit"] = str(limit)
        return RegistrationPage.model_validate(
            self._call("GET", "/v1/registrations", params=params)
        )

    def unregister(self, registration_id: str) -> None:
        self._call("DELETE", f"/v1/registrations/{registration_id}")

    # push and status
    def push(self, request: PushRequest | dict[str, Any]) -> MessageAccepted:
        body = PushRequest.model_validate(request).model_dump(mode="json", exclude_none=True)
        return MessageAccepted.model_validate(self._call("POST", "/v1/messages", json=body))

    def audience(self, target: dict[str, Any]) -> AudienceOut:
        """How many active devices a target reaches, without sending."""
        return AudienceOut.model_validate(
            self._call("POST", "/v1/audience", json={"target": target})
        )

    def messages(
        self,
        *,
        state: str | None = None,
        label: str | None = None,
        since: str | None = None,
        until: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> MessagePage:
        """The app's Messages newest first (times as ISO 8601)."""
        given = (("state", state), ("label", label), ("since", since), ("until", until))
        params = {k: v for k, v in (*given, ("cursor", cursor)) if v}
        params["limit"] = str(limit)
        return MessagePage.model_validate(self._call("GET", "/v1/messages", params=params))

    def cancel(self, message_id: str) -> MessageStatus:
        """Stop a Message in flight; what was not sent yet ends CANCELLED."""
        return MessageStatus.model_validate(self._call("POST", f"/v1/messages/{message_id}/cancel"))

    def timeline(self, message_id: str) -> MessageTimeline:
        return MessageTimeline.model_validate(
            self._call("GET", f"/v1/messages/{message_id}/timeline")
        )

    def message(self, message_id: str) -> MessageStatus:
        return MessageStatus.model_validate(self._call("GET", f"/v1/messages/{message_id}"))

    def deliveries(
        self,
        message_id: str,
        *,
        status: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> DeliveryPage:
        params = {k: v for k, v in (("status", status), ("cursor", cursor)) if v}
        params["limit"] = str(limit)
        return DeliveryPage.model_validate(
            self._call("GET", f"/v1/messages/{message_id}/deliveries", params=params)
        )

    def delivery(self, delivery_id: str) -> DeliveryOut:
        return DeliveryOut.model_validate(self._call("GET", f"/v1/deliveries/{delivery_id}"))
