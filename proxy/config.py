"""The proxy's settings: one frozen struct, filled from the command line and the environment.

Every setting can also be given as an environment variable named
``DURABLE_PROXY_<NAME>`` (for example ``DURABLE_PROXY_DB=/var/lib/proxy.db``);
a command-line flag wins over the environment. docs/operations.md lists them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from .retry import RetryPolicy

ENV_PREFIX = "DURABLE_PROXY_"


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    #: The journal: a SQLite file (created if missing) or a ``postgresql://`` URL.
    db: str = "durable-proxy.db"
    #: This proxy's name among the instances sharing a PostgreSQL database. A stable name lets a
    #: restarted instance take its own invocations back at once instead of waiting for their leases.
    #: Empty: a new random name per start.
    instance_id: str = ""
    #: PostgreSQL: an instance that has not renewed the lease of a running invocation for this long
    #: is presumed dead, and another instance takes the invocation over.
    lease_ms: int = 10_000
    #: PostgreSQL: connections in this instance's pool.
    db_pool_size: int = 16
    #: SQLite durability: FULL survives power loss, NORMAL only process crashes.
    sqlite_synchronous: str = "FULL"
    host: str = "127.0.0.1"
    port: int = 8080
    admin_host: str = "127.0.0.1"
    admin_port: int = 9070
    #: Where handlers report their steps (a dedicated listener on ``host``; 0 picks a free port).
    callback_port: int = 9071
    #: Base URL handlers use to reach this proxy's callbacks; defaults to http://host:callback_port.
    advertised_url: str | None = None
    #: Largest request body the ingress and the callback endpoint accept.
    max_body_bytes: int = 32 * 1024 * 1024
    #: Largest journal entry (a step's result, a call's input...) and largest handler output.
    max_entry_bytes: int = 8 * 1024 * 1024
    #: Largest journal of one invocation, in bytes and in entries.
    max_journal_bytes: int = 128 * 1024 * 1024
    max_journal_entries: int = 50_000
    #: An attempt with no journal activity for this long is abandoned and retried.
    inactivity_timeout_ms: int = 60_000
    #: An attempt running longer than this is abandoned and retried, activity or not.
    abort_timeout_ms: int = 600_000
    connect_timeout_ms: int = 5_000
    #: How many attempts may be in flight at once.
    max_concurrent_attempts: int = 1_000
    #: How long an instance that refused a connection is passed over.
    unhealthy_endpoint_ms: int = 5_000
    retry_initial_interval_ms: int = 100
    retry_factor: float = 2.0
    retry_max_interval_ms: int = 30_000
    retry_max_attempts: int = 30
    #: After the retry policy's last attempt: ``pause`` the invocation (it waits, unfinished, for an
    #: operator to resume, cancel or kill it) or ``fail`` it with its last error.
    on_max_attempts: Literal["fail", "pause"] = "pause"
    #: Key that signs every request to handler endpoints (they verify it with ``DURABLE_SIGNING_KEYS``).
    signing_key: str | None = None
    #: When set, ingress clients must send ``Authorization: Bearer <token>``.
    ingress_token: str | None = None
    #: When set, admin clients must send ``Authorization: Bearer <token>``; required off loopback.
    admin_token: str | None = None
    #: How long a finished workflow keeps its state, promises and result before it is purged.
    workflow_retention_ms: int = 24 * 3_600_000
    #: How often finished workflows past their retention are purged.
    purge_interval_ms: int = 60_000
    #: Log lines on stderr: ``text`` for people, ``json`` (one object per line) for log pipelines.
    log_format: Literal["text", "json"] = "text"

    def __post_init__(self) -> None:
        if self.sqlite_synchronous not in ("FULL", "NORMAL"):
            raise ValueError("sqlite_synchronous must be FULL or NORMAL")
        for name in (
            "max_body_bytes",
            "max_entry_bytes",
            "max_journal_bytes",
            "max_journal_entries",
            "inactivity_timeout_ms",
            "abort_timeout_ms",
            "connect_timeout_ms",
            "workflow_retention_ms",
            "purge_interval_ms",
            "lease_ms",
            "db_pool_size",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("port", "admin_port", "callback_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ValueError(f"{name} must be between 0 and 65535")
        if self.max_concurrent_attempts < 1:
            raise ValueError("max_concurrent_attempts must be at least 1")
        self.retry_policy()  # validates the retry settings
        if self.signing_key is not None and len(self.signing_key.encode()) < 16:
            raise ValueError("signing_key must be at least 16 bytes long")
        if not _is_loopback(self.admin_host) and not self.admin_token:
            raise ValueError(
                f"the admin API would listen on {self.admin_host} without a token: "
                "set admin_token (--admin-token / DURABLE_PROXY_ADMIN_TOKEN) or keep it on loopback"
            )

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            initial_interval_ms=self.retry_initial_interval_ms,
            factor=self.retry_factor,
            max_interval_ms=self.retry_max_interval_ms,
            max_attempts=self.retry_max_attempts,
        )

    def callback_base(self, bound_port: int | None = None) -> str:
        if self.advertised_url:
            return self.advertised_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{bound_port if bound_port is not None else self.callback_port}"

    def __repr__(self) -> str:  # never print secrets in logs or errors
        hidden = {"signing_key", "ingress_token", "admin_token"}
        fields = ", ".join(
            f"{f}={'***' if f in hidden and getattr(self, f) else repr(getattr(self, f))}"
            for f in self.__struct_fields__
        )
        return f"Settings({fields})"

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``environ`` (``DURABLE_PROXY_*``), then ``overrides`` (None values ignored)."""
        environ = os.environ if environ is None else environ
        fields = {f.name: f for f in msgspec.structs.fields(cls)}
        raw: dict[str, Any] = {}
        for name in fields:
            value = environ.get(ENV_PREFIX + name.upper())
            if value is not None:
                raw[name] = value
        for name, value in (overrides or {}).items():
            if value is not None:
                raw[name] = value
        try:
            return msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid setting: {exc}") from None
