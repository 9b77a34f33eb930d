"""The journal store: the one interface every storage backend implements.

The store speaks domain verbs; callers never build SQL. Every verb that writes
is one transaction, and every write made on behalf of an attempt is fenced: it
lands only if the invocation is ``running`` and its current attempt number is
the one the caller holds. An attempt that was abandoned (timed out, its handler
crashed, the proxy restarted) can therefore never write again.

Invocation lifecycle::

    pending ──claim──▶ running ──complete──▶ completed
       ▲                 │  └────fail─────▶ failed
       │                 └──backoff──▶ backing_off ──claim──▶ running ...
       └──── abandon_running (proxy start) ◀── running
"""

from __future__ import annotations

import abc
from typing import Literal

import msgspec

InvocationStatus = Literal["pending", "running", "backing_off", "completed", "failed"]
ACTIVE_STATUSES: tuple[InvocationStatus, ...] = ("pending", "running", "backing_off")
TERMINAL_STATUSES: tuple[InvocationStatus, ...] = ("completed", "failed")


class StoredFailure(msgspec.Struct, frozen=True, kw_only=True):
    code: int
    message: str


class NewInvocation(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    service: str
    handler: str
    input: bytes
    deployment_id: str
    key: str | None = None
    idempotency_key: str | None = None
    headers: dict[str, str] = {}


class Invocation(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    service: str
    handler: str
    key: str | None
    status: InvocationStatus
    input: bytes
    headers: dict[str, str]
    deployment_id: str
    idempotency_key: str | None
    attempt: int
    journal_len: int
    output: bytes | None
    failure: StoredFailure | None
    last_failure: StoredFailure | None
    next_run_at_ms: int | None
    created_at_ms: int
    modified_at_ms: int
    completed_at_ms: int | None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES


class JournalRow(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    kind: str
    name: str
    attempt: int
    entry: bytes
    created_at_ms: int


class AttemptRow(msgspec.Struct, frozen=True, kw_only=True):
    attempt: int
    endpoint: str | None
    started_at_ms: int
    ended_at_ms: int | None
    outcome: str | None
    failure: StoredFailure | None


class Claim(msgspec.Struct, frozen=True, kw_only=True):
    """What an attempt starts from: the invocation (with its new attempt number) and its journal."""

    invocation: Invocation
    journal: list[JournalRow]


AppendOutcome = Literal["appended", "duplicate", "fenced", "gap", "conflict", "not_found"]


class Created(msgspec.Struct, frozen=True, kw_only=True):
    invocation: Invocation
    #: False when an invocation with the same idempotency key already existed.
    created: bool


class Deployment(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    manifest: bytes
    endpoints: list[str]
    created_at_ms: int


class ServiceRow(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    deployment_id: str
    manifest: bytes
    modified_at_ms: int


class IdempotencyConflict(Exception):
    """The idempotency key is already bound to an invocation with a different request."""

    def __init__(self, existing: Invocation) -> None:
        super().__init__(f"idempotency key already used by {existing.id} with a different request")
        self.existing = existing


class JournalStore(abc.ABC):
    """Durable state of the proxy. See the module docstring for the fencing rule."""

    __slots__ = ()

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, migrate the schema to the latest version, check integrity."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def secret(self) -> bytes:
        """A random key made once per database, for signing attempt tokens."""

    # ---------------------------------------------------------------- invocations

    @abc.abstractmethod
    async def create_invocation(self, new: NewInvocation, now_ms: int) -> Created:
        """Insert a ``pending`` invocation, or return the one holding the same idempotency key.

        The idempotency key is scoped to (service, handler, key). A repeat with a
        different input raises ``IdempotencyConflict``.
        """

    @abc.abstractmethod
    async def get_invocation(self, invocation_id: str) -> Invocation | None: ...

    @abc.abstractmethod
    async def get_journal(self, invocation_id: str) -> list[JournalRow]: ...

    @abc.abstractmethod
    async def get_attempts(self, invocation_id: str) -> list[AttemptRow]: ...

    @abc.abstractmethod
    async def claim(self, invocation_id: str, endpoint: str | None, now_ms: int) -> Claim | None:
        """Start a new attempt: ``pending``/``backing_off`` -> ``running``, attempt + 1.

        Returns None when the invocation is not claimable (running, finished or unknown).
        """

    @abc.abstractmethod
    async def append(
        self, invocation_id: str, attempt: int, index: int, kind: str, name: str, entry: bytes, now_ms: int
    ) -> AppendOutcome:
        """Append one journal entry for the given attempt.

        ``appended``: written now. ``duplicate``: this exact entry is already at
        ``index`` (a retried append whose ack was lost). ``fenced``: the attempt is
        not the current running one. ``gap``: ``index`` is past the end of the
        journal. ``conflict``: a different entry is already at ``index``.
        """

    @abc.abstractmethod
    async def complete(self, invocation_id: str, attempt: int, output: bytes, now_ms: int) -> bool:
        """``running`` -> ``completed`` with ``output``; False if fenced."""

    @abc.abstractmethod
    async def fail(
        self,
        invocation_id: str,
        attempt: int,
        failure: StoredFailure,
        now_ms: int,
        *,
        attempt_failure: StoredFailure | None = None,
    ) -> bool:
        """``running`` -> ``failed``; False if fenced.

        ``attempt_failure``, when given, is what the attempt itself failed with
        (recorded on the attempt and as the last failure), while ``failure`` is
        how the invocation ends (e.g. "gave up after 30 attempts").
        """

    @abc.abstractmethod
    async def backoff(
        self, invocation_id: str, attempt: int, failure: StoredFailure, next_run_at_ms: int, now_ms: int
    ) -> bool:
        """``running`` -> ``backing_off`` until ``next_run_at_ms``; False if fenced."""

    @abc.abstractmethod
    async def abandon_running(self, now_ms: int) -> int:
        """On proxy start: every ``running`` invocation -> ``pending`` (fences the old attempts)."""

    @abc.abstractmethod
    async def list_active(self) -> list[tuple[str, int | None]]:
        """(id, next_run_at_ms) of every pending or backing-off invocation."""

    @abc.abstractmethod
    async def list_invocations(self, *, status: InvocationStatus | None = None, limit: int = 100) -> list[Invocation]:
        """Most recent first."""

    # ---------------------------------------------------------------- deployments

    @abc.abstractmethod
    async def register_deployment(self, deployment_id: str, uri: str, manifest: bytes, now_ms: int) -> Deployment:
        """Record ``uri`` as an endpoint of a deployment serving ``manifest``.

        An endpoint whose manifest equals an existing deployment's joins that
        deployment (instances of one deployment); otherwise ``deployment_id`` is
        created. The services in the manifest then point at that deployment.
        """

    @abc.abstractmethod
    async def remove_endpoint(self, uri: str) -> bool: ...

    @abc.abstractmethod
    async def list_deployments(self) -> list[Deployment]: ...

    @abc.abstractmethod
    async def get_deployment(self, deployment_id: str) -> Deployment | None: ...

    @abc.abstractmethod
    async def list_services(self) -> list[ServiceRow]: ...
