"""Configuration, read once from the environment (and `.env`)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PUSHLINE_", env_file=".env", extra="ignore")

    # The two settings a service needs to enqueue; named as everybody names them.
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", validation_alias=AliasChoices("REDIS_URL", "PUSHLINE_REDIS_URL")
    )
    # The embedded default is where `pushline up` and `pushline demo` keep their state.
    database_url: str = Field(
        "sqlite:///.pushline/pushline.db",
        validation_alias=AliasChoices("DATABASE_URL", "PUSHLINE_DATABASE_URL"),
    )

    # Prefix of every Celery key in Redis, so several Pushlines (or test runs) can share one
    # Redis database without taking each other's tasks.
    redis_key_prefix: str = ""

    # Where the providers are. Defaults are Apple's and Google's; the demo and the tests
    # point these at the simulators.
    apns_host: str = "api.push.apple.com"
    apns_sandbox_host: str = "api.sandbox.push.apple.com"
    apns_port: int = 443
    apns_ca_file: str | None = None
    fcm_url: str = "https://fcm.googleapis.com/v1/projects/{0}/messages:send"
    # CA bundle trusted for the FCM endpoint and the service account's token_uri instead of
    # the system's (the simulators' CA in the demo and the tests).
    fcm_ca_file: str | None = None

    # Web Push: endpoints are the subscriptions' own URLs; this CA bundle is trusted for
    # them instead of the system's (the simulators' CA in the demo and the tests).
    webpush_ca_file: str | None = None
    # How long a VAPID token says it is valid (RFC 8292: at most 24 h); it is reused per
    # push-service origin until a tenth of that is left.
    webpush_vapid_ttl_s: int = 12 * 3600

    # Huawei Push Kit: the OAuth 2.0 token endpoint and the push API's base URL (sends go to
    # {hms_push_url}/v1/{app id}/messages:send); Huawei's by default. The CA bundle is
    # trusted for both instead of the system's (the simulators' CA in the demo and tests).
    hms_token_url: str = "https://oauth-login.cloud.huawei.com/oauth2/v3/token"
    hms_push_url: str = "https://push-api.cloud.huawei.com"
    hms_ca_file: str | None = None

    # Delivery shape: see DESIGN.md §5 for why a chunk carries hundreds of deliveries.
    fanout_page_size: int = 2000
    chunk_size: int = 500
    send_concurrency: int = 100
    send_timeout_s: float = 10.0
    lease_s: int = 120
    # A target of one device or one person is resolved when the push is accepted and its
    # Deliveries go straight to a deliver task (no fan-out task), as long as it matches at
    # most this many registrations; larger ones take the fan-out path.
    inline_max_deliveries: int = 100
    # The API gathers the Deliveries of pushes accepted within this many milliseconds into
    # one deliver task per lane: many Messages share one task's cost (DESIGN.md §5). The
    # linger starts at the floor and doubles, up to the ceiling, while deliver tasks wait
    # in the queue (workers behind: fewer, larger tasks cost them less per push); it halves
    # back while the queue is empty.
    publish_linger_ms: float = 5.0
    publish_linger_max_ms: float = 30.0
    visibility_timeout_s: int = 3600
    max_attempts: int = 5
    retry_base_s: float = 1.0
    retry_cap_s: float = 300.0

    # Provider lanes (app, provider): a shared token bucket, and a shared pause when the
    # provider says the whole project is over quota. Per-app columns override the defaults.
    fcm_rate_per_minute: int = 600_000  # FCM's default project quota
    apns_rate_per_minute: int | None = None  # Apple publishes no quota
    webpush_rate_per_minute: int | None = None  # push services publish none either
    hms_rate_per_minute: int | None = None  # Huawei's QPS quota is per app, set by Huawei
    fcm_quota_pause_s: float = 60.0  # Google asks for at least a minute after QUOTA_EXCEEDED

    # One-device / one-user pushes at high priority get their own queue (see queueing.py).
    priority_lane: bool = True

    # Schedules and the recovery sweep (the scheduler process).
    scheduler_tick_s: float = 1.0
    repeat_every_min_s: int = 60
    sweep_interval_s: float = 15.0
    sweep_grace_s: float = 180.0  # no progress for this long: the broker lost the work

    # Outbound webhooks (CM-shaped events): their own queue, bounded retries with backoff.
    webhook_timeout_s: float = 10.0
    webhook_max_attempts: int = 10
    webhook_retry_base_s: float | None = None  # None: retry_base_s, as deliveries
    webhook_retry_cap_s: float = 600.0  # below visibility_timeout_s: Redis would redeliver
    webhook_batch_size: int = 500  # event documents per POST (a chunk's outcomes in one)
    webhook_cache_s: float = 5.0  # how long an app's subscriptions are remembered

    log_level: str = "INFO"
    # Celery task events (for Flower): off by default, each task then costs three more
    # messages on Redis.
    task_events: bool = False
    # One structlog line per API request (method, masked path, status, ms).
    access_log: bool = True
    # Where a worker or the scheduler serves /metrics and /health (0: not served). Each
    # process on a host needs its own port; the shipped deployments set it.
    metrics_port: int = 0
    # Messages and Deliveries older than this are deleted by the scheduler (0: kept forever).
    retention_days: int = 30
    log_json: bool | None = None  # None: JSON unless stdout is a terminal
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    # API processes `pushline api` runs (uvicorn workers); one per core is the usual choice.
    api_workers: int = 1

    # How long an SAP push route waits for its Deliveries' outcomes before answering with
    # what is known (the rest reported queued, code -1 / 11).
    sap_wait_s: float = 5.0


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
