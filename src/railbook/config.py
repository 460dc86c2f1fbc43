"""Settings: environment variables with the RAILBOOK_ prefix; every one has a safe embedded default."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAILBOOK_", env_file=None, extra="ignore")

    # Stores. No REDIS_URL means the in-process allocator, queue and caches (embedded mode).
    database_url: str = "sqlite+aiosqlite:///railbook.db"
    redis_url: str | None = None
    # True: ``redis_url`` names one node of a Redis Cluster; the client discovers the rest.
    redis_cluster: bool = False
    data_dir: Path = Path(".")
    # PostgreSQL connections of one process: the engine's pool keeps this many and may open as many
    # again under load; the accept path's own pool holds up to twice this many.
    db_pool_size: int = Field(default=10, ge=1, le=200)

    # Accounts.
    admin_mobile: str | None = None
    admin_password: str | None = None
    jwt_secret: str | None = None  # unset: generated once and kept in the database
    access_token_seconds: int = 3600 * 2
    argon2_time_cost: int = 2
    argon2_memory_cost: int = 19456

    # Sales.
    sale_days_ahead: int = Field(default=15, ge=1, le=120)
    pay_deadline_seconds: int = Field(default=1800, ge=5)
    max_passengers_per_member: int = 15
    sale_tokens_per_train_day: int = Field(default=2000, ge=1)
    # Online sale of a journey stops this long before the train leaves the boarding station.
    sale_cutoff_minutes: int = Field(default=5, ge=0, le=24 * 60)
    # The shortest change between two trains that a transfer search offers.
    transfer_min_minutes: int = Field(default=30, ge=0, le=6 * 60)

    # Protection.
    rate_limits: str = "on"  # "off" disables per-client limits and captcha (load tests)
    member_orders_per_minute: int = 20
    ip_requests_per_second: int = 200
    # Requests one server process works on at once; the next ones wait their turn (first come, first
    # served) for at most ``queue_wait_seconds``, then are answered 503 SERVER_BUSY with Retry-After.
    # Under a crowd this keeps a turn of the event loop short, so a transaction holds its pooled
    # connection for milliseconds, not for as long as a thousand other requests take their turns.
    # Health, readiness and metrics never wait. 0: no bound.
    max_in_flight: int = Field(default=128, ge=0)
    queue_wait_seconds: float = Field(default=10.0, gt=0, le=60)
    # Anti-bot (API.md "Anti-bot"): failed logins in a window before a login needs a captcha, per
    # mobile and per client address; orders of one member in a minute before each further order
    # needs one; how long a captcha can be answered. RATE_LIMITS=off turns these challenges off.
    login_failures_per_mobile: int = Field(default=5, ge=1)
    login_failures_per_address: int = Field(default=20, ge=1)
    login_failure_window_seconds: int = Field(default=900, ge=1)
    captcha_orders_per_minute: int = Field(default=10, ge=1)
    captcha_ttl_seconds: int = Field(default=300, ge=10)

    # Workers.
    worker_batch_size: int = 300
    worker_block_ms: int = 200
    # A partial read waits this long for more before committing: under a crowd a batch then carries
    # tens of orders for one transaction, where committing every read as it comes costs a round of
    # fixed work (transaction, settle, acknowledgement) per handful of orders. 0 commits at once.
    worker_linger_ms: int = Field(default=50, ge=0, le=1000)
    # Published outbox events and consumers' processed-event records are deleted after this many days.
    event_retention_days: int = Field(default=7, ge=1)
    # ``railbook worker`` lowers its CPU priority by this much: on a host it shares with the API, a
    # crowd's orders are answered first and committed right after (the drain takes well under a
    # second); alone on a host it changes nothing. 0 keeps the normal priority.
    worker_nice: int = Field(default=10, ge=0, le=19)

    # Server.
    host: str = "127.0.0.1"
    port: int = 8000
    # API processes of ``railbook serve`` in distributed mode; unset: one per core.
    workers: int | None = Field(default=None, ge=1)
    # On SIGTERM a server process finishes its requests in flight (the committer its batch) for at most
    # this long before they are cut off.
    shutdown_grace_seconds: int = Field(default=30, ge=1)
    # Logs: one line per event on stderr, every line of a request carrying its ``request_id``. JSON
    # lines (for collectors) by default in distributed mode, readable console lines when embedded;
    # ``LOG_JSON=true|false`` chooses either way.
    log_level: str = "info"
    log_json: bool | None = None
    # Distributed ``serve``: where its processes keep their metric samples for /metrics to sum
    # (unset: a fresh temporary directory; ``PROMETHEUS_MULTIPROC_DIR``, when set, wins).
    metrics_dir: Path | None = None
    load_sample_data: bool = True

    @cached_property
    def embedded(self) -> bool:
        return not self.redis_url

    @cached_property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def json_logs(self) -> bool:
        """JSON log lines: as set, else outside the embedded mode."""
        return self.log_json if self.log_json is not None else not self.embedded

    @property
    def rate_limits_on(self) -> bool:
        return self.rate_limits.lower() not in {"off", "0", "false", "no"}
