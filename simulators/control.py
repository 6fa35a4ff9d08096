"""A small typed client for the simulators' /control API (sync, over httpx)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import httpx


class SimulatorControl:
    """Drive a simulator: script outcomes, configure faults, read counts and captures.

    `base_url` is the control base: the APNs simulator's control port, or the FCM app itself.
    """

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> SimulatorControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        resp = self._client.post(path, json=body or {})
        if resp.status_code >= 400:
            raise ValueError(f"{path}: {resp.status_code} {resp.text}")
        return resp.json()

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        resp = self._client.get(path, params=params)
        resp.raise_for_status()
        return resp.json()

    def health(self) -> bool:
        return bool(self._get("/control/health").get("ok"))

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Poll /control/health until it answers; raises TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.health():
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"simulator at {self.base_url} not ready after {timeout}s")
            time.sleep(0.05)

    def reset(self) -> None:
        self._post("/control/reset")

    def script(
        self,
        token: str | None = None,
        token_prefix: str | None = None,
        responses: Iterable[str] = (),
        then: str | None = None,
    ) -> None:
        body: dict[str, Any] = {"responses": list(responses), "then": then}
        if token is not None:
            body["token"] = token
        if token_prefix is not None:
            body["token_prefix"] = token_prefix
        self._post("/control/script", body)

    def configure(self, **kw: Any) -> dict[str, Any]:
        """Update latency_ms, outage, error_rate, error_reason, retry_after, quota_per_minute,
        quota_window_s, device_rate_per_minute, capture_requests; returns the whole
        configuration."""
        result: dict[str, Any] = self._post("/control/config", kw)
        return result

    def refuse_connections(
        self, *, for_s: float | None = None, attempts: int | None = None
    ) -> dict[str, Any]:
        """Refuse new provider connections (each reset before TLS, the live ones dropped):
        for `for_s` seconds, for the next `attempts`, or, with neither, until
        `stop_refusing()`. Returns the refusal's state."""
        if for_s is not None and attempts is not None:
            raise ValueError("give for_s or attempts, not both")
        body: dict[str, Any] = (
            {"for_s": for_s}
            if for_s is not None
            else {"attempts": attempts}
            if attempts is not None
            else {"until_lifted": True}
        )
        result: dict[str, Any] = self._post("/control/refuse", body)
        return result

    def stop_refusing(self) -> dict[str, Any]:
        result: dict[str, Any] = self._post("/control/refuse", {"until_lifted": False})
        return result

    def refusal(self) -> dict[str, Any]:
        result: dict[str, Any] = self._get("/control/refuse")
        return result

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._get("/control/stats")
        return result

    def requests(self, token: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._get("/control/requests", {"token": token})
        return result

    def register_apns_key(
        self,
        key_id: str,
        team_id: str,
        *,
        public_key_pem: str | None = None,
        private_key_pem: str | None = None,
        topics: Iterable[str] | None = None,
    ) -> None:
        body: dict[str, Any] = {"key_id": key_id, "team_id": team_id}
        if public_key_pem is not None:
            body["public_key_pem"] = public_key_pem
        if private_key_pem is not None:
            body["private_key_pem"] = private_key_pem
        if topics is not None:
            body["topics"] = list(topics)
        self._post("/control/keys", body)

    def register_service_account(
        self,
        client_email: str,
        private_key_id: str,
        project_id: str,
        *,
        public_key_pem: str | None = None,
        private_key_pem: str | None = None,
    ) -> None:
        body: dict[str, Any] = {
            "client_email": client_email,
            "private_key_id": private_key_id,
            "project_id": project_id,
        }
        if public_key_pem is not None:
            body["public_key_pem"] = public_key_pem
        if private_key_pem is not None:
            body["private_key_pem"] = private_key_pem
        self._post("/control/service-accounts", body)

    def subscribe_webpush(self, application_server_key: str) -> dict[str, Any]:
        """A browser's pushManager.subscribe(): {endpoint, expirationTime, keys{p256dh, auth}}."""
        result: dict[str, Any] = self._post(
            "/control/subscriptions", {"application_server_key": application_server_key}
        )
        return result

    def unsubscribe_webpush(self, endpoint: str) -> None:
        """The browser drops the subscription: pushes to it are 410 Gone from now on."""
        self._post("/control/unsubscribe", {"endpoint": endpoint})

    def register_hms_app(
        self, app_id: str, client_secret: str, *, token_ttl_s: int | None = None
    ) -> None:
        """A Huawei app the Push Kit simulator issues access tokens for."""
        body: dict[str, Any] = {"app_id": app_id, "client_secret": client_secret}
        if token_ttl_s is not None:
            body["token_ttl_s"] = token_ttl_s
        self._post("/control/hms-apps", body)

    def expire_hms_tokens(self) -> None:
        """Every Push Kit access token issued so far is expired (80200003) from now on."""
        self._post("/control/access-tokens/expire")

    def refuse_tls(self, refuse: bool = True) -> None:
        """Reset every provider connection as it is accepted until called with False (the
        control routes stay up): `refuse_connections()` until lifted."""
        if refuse:
            self.refuse_connections()
        else:
            self.stop_refusing()
