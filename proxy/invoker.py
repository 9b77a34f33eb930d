"""Runs attempts: claim an invocation, send it with its journal to a handler, record how it ended.

One attempt, start to end::

    claim (attempt n, fenced)  ->  POST /invoke with the journal  ->  appends arrive on the callback
      -> the handler answers completed | failed | retry    (or crashes, hangs, answers garbage)
      -> commit the end in one transaction                 (fenced: only attempt n may write it)
      -> wake the waiting clients, or schedule attempt n + 1 after a backoff

Whatever goes wrong with the handler (refused connection, reset, timeout, a 5xx,
a body that is not a protocol message) ends the attempt as ``retry`` with an
error an operator can read, and the next attempt goes to another instance if
there is one. After the policy's last attempt the invocation is paused (it waits,
unfinished, for an operator to resume it) or, with ``on_max_attempts = "fail"``,
ends failed with the last error: neither lost nor retried forever.

A handler that waits for something (a sleep, a call, an awakeable) answers
``suspended``: the attempt ends and holds nothing. The completion it waits for
makes the invocation ``pending`` again, and the store reports that as an
effect of the write that completed it, which schedules the next attempt.
Retry backoffs are durable timers too, so the invoker keeps no task for an
invocation that is not running.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from time import perf_counter
from typing import Any, TypeVar

import msgspec

from handler_sdk.protocol import (
    INVOKE_CONTENT_TYPE,
    PROTOCOL_VIOLATION,
    Completed,
    Completion,
    Failed,
    Failure,
    InvokeRequest,
    InvokeResponse,
    Retry,
    Suspended,
    invoke_response_decoder,
    json_encoder,
    parse_content_type_version,
)
from handler_sdk.signing import SIGNATURE_HEADER, RequestSigner

from .clock import Clock
from .config import Settings
from .crashpoints import crash_point
from .metrics import ProxyMetrics
from .outbound import HTTPError, Outbound, Response
from .registry import Registry, describe_http_error
from .retry import RetryPolicy, next_retry_at
from .store.base import Claim, CompletionRow, Effects, Invocation, JournalStore, StoredFailure, StoreUnavailable
from .tokens import TokenSigner

log = logging.getLogger("durable_proxy.invoker")
T = TypeVar("T")

#: Handlers answer with a protocol version the proxy can read (only v1 today).
_SUPPORTED_RESPONSE_VERSIONS = frozenset({1})
#: The ``outcome`` label of ``durable_attempts_total`` for each answer of a handler.
_OUTCOMES: dict[type, str] = {Completed: "completed", Failed: "failed", Suspended: "suspended", Retry: "retry"}
#: Trace context (kept from the ingress request) sent as HTTP headers too, for the handler app's HTTP instrumentation.
_TRACE_HEADERS = ("traceparent", "tracestate", "baggage")


class _Activity:
    """The running attempt of one invocation, for the inactivity watchdog."""

    __slots__ = ("abandoned", "attempt", "endpoint", "invocation", "journal_bytes", "last_ms", "last_s", "started_ms")

    def __init__(self, invocation: Invocation, attempt: int, endpoint: str, now_ms: int, journal_bytes: int) -> None:
        self.invocation = invocation
        self.journal_bytes = journal_bytes
        self.attempt = attempt
        self.endpoint = endpoint
        self.started_ms = now_ms
        self.last_ms = now_ms
        #: The last activity by the real monotonic clock (``perf_counter``), for the step metrics.
        self.last_s = perf_counter()
        #: The watchdog gave up on it.
        self.abandoned = False


class _EndpointDown(Exception):
    """The attempt could not reach its handler instance, or lost the connection to it."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class Invoker:
    def __init__(
        self,
        *,
        store: JournalStore,
        registry: Registry,
        clock: Clock,
        client: Outbound,
        settings: Settings,
        signer: TokenSigner,
        callback_base: str,
        on_effects: Callable[[Effects], None],
        on_backoff: Callable[[str, int], None],
        metrics: ProxyMetrics | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics if metrics is not None else ProxyMetrics()
        self._registry = registry
        self._clock = clock
        self._client = client
        self._settings = settings
        self._policy: RetryPolicy = settings.retry_policy()
        self._on_effects = on_effects
        self._on_backoff = on_backoff
        self._signer = signer
        self._request_signer = RequestSigner(settings.signing_key) if settings.signing_key else None
        self._callback_base = callback_base.rstrip("/")
        self._slots = asyncio.Semaphore(settings.max_concurrent_attempts)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._running: dict[str, _Activity] = {}
        #: The instance each invocation's last attempt went to: the next attempt prefers another.
        self._last_endpoint: dict[str, str] = {}
        self._closed = False
        #: Ends of attempts the store refused because another attempt had superseded them.
        self.superseded_ends = 0

    # ------------------------------------------------------------------ scheduling

    def schedule(self, invocation_id: str, *, deployment_id: str | None = None) -> None:
        """Start the next attempt of a pending invocation.

        At most one task per invocation: scheduling one that already has a task is a no-op.
        """
        if self._closed or invocation_id in self._tasks:
            return
        self._spawn(invocation_id, self._run(invocation_id, deployment_id))

    def can_start_now(self) -> bool:
        """A new attempt would start right away (a slot is free): worth claiming it when it is created."""
        return not self._closed and not self._slots.locked()

    def start_claimed(self, claim: Claim, endpoint: str) -> None:
        """Run the attempt a write just claimed (``create_invocation(..., claim_endpoint=endpoint)``)."""
        invocation_id = claim.invocation.id
        if self._closed or invocation_id in self._tasks:
            return  # the attempt stays running in the store: recovery or the watchdog of a restart fences it
        self._spawn(invocation_id, self._run(invocation_id, claim.invocation.deployment_id, (claim, endpoint)))

    def _spawn(self, invocation_id: str, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"attempt:{invocation_id}")
        self._tasks[invocation_id] = task
        task.add_done_callback(lambda t: self._task_done(invocation_id, t))

    def _task_done(self, invocation_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(invocation_id) is task:
            del self._tasks[invocation_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("attempt task of %s crashed", invocation_id, exc_info=task.exception())

    def touch(self, invocation_id: str, attempt: int, appended_bytes: int = 0, step_kind: str | None = None) -> None:
        """An append arrived (or a wait): the attempt is alive. With ``step_kind``, an entry of that
        kind was just committed: the time since the attempt's previous activity is the step's duration."""
        activity = self._running.get(invocation_id)
        if activity is not None and activity.attempt == attempt:
            activity.last_ms = self._clock.now_ms()
            activity.journal_bytes += appended_bytes
            now_s = perf_counter()
            if step_kind is not None:
                self._metrics.step_duration.labels(activity.invocation.service, step_kind).observe(
                    now_s - activity.last_s
                )
            activity.last_s = now_s

    def journal_bytes(self, invocation_id: str, attempt: int) -> int | None:
        """The size of the journal of the attempt running here, None if it does not run here."""
        activity = self._running.get(invocation_id)
        return activity.journal_bytes if activity is not None and activity.attempt == attempt else None

    def running_attempt(self, invocation_id: str) -> int | None:
        activity = self._running.get(invocation_id)
        return None if activity is None else activity.attempt

    def running_invocation(self, invocation_id: str) -> Invocation | None:
        """The invocation whose attempt runs here now, as it was claimed."""
        activity = self._running.get(invocation_id)
        return None if activity is None else activity.invocation

    def busy(self) -> bool:
        """Some invocation has a task (an attempt running, or about to start)."""
        return bool(self._tasks)

    def attempts_running(self) -> int:
        """How many attempts run here now."""
        return len(self._running)

    def abort(self, invocation_id: str) -> None:
        """Stop the running attempt of an invocation that was killed (the store already fenced it)."""
        task = self._tasks.get(invocation_id)
        if task is not None and invocation_id in self._running:
            task.cancel()

    async def close(self) -> None:
        """Stop every attempt. Their invocations stay running in the store; the next start recovers them."""
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ one attempt

    async def _run(
        self, invocation_id: str, deployment_id: str | None, claimed: tuple[Claim, str] | None = None
    ) -> None:
        """Run attempts of one invocation while it stays runnable (the first one already ``claimed``, if given)."""
        at_ms: int | None = None
        while True:
            if at_ms is not None:
                await self._clock.sleep_until(at_ms)
                at_ms = None
            async with self._slots:
                if claimed is None:
                    next_up = await self._claim_next(invocation_id, deployment_id)
                    if next_up is None:
                        return
                    if isinstance(next_up, int):
                        at_ms = next_up
                        continue
                    claimed = next_up
                (claim, endpoint), claimed = claimed, None
                deployment_id = claim.invocation.deployment_id
                crash_point("proxy.claim.after_commit")
                attempt = claim.invocation.attempt
                if attempt == 1:
                    self._metrics.invocations_started.labels(claim.invocation.service).inc()
                activity = self._running[invocation_id] = _Activity(
                    claim.invocation, attempt, endpoint, self._clock.now_ms(), sum(len(r.entry) for r in claim.journal)
                )
                try:
                    try:
                        response = await self._attempt(claim, endpoint)
                        self._registry.mark_healthy(endpoint)
                        outcome = "abandoned" if activity.abandoned else _OUTCOMES.get(type(response), "retry")
                    except _EndpointDown as down:
                        self._registry.mark_unhealthy(endpoint)
                        response = Retry(failure=down.failure)
                        outcome = "unreachable"
                finally:
                    self._running.pop(invocation_id, None)
                self._metrics.attempts.labels(claim.invocation.service, outcome).inc()
                again = await self._finish(claim, endpoint, response)
            if not again:
                self._last_endpoint.pop(invocation_id, None)
                return

    async def _attempt(self, claim: Claim, endpoint: str) -> InvokeResponse:
        invocation = claim.invocation
        request = InvokeRequest(
            invocation_id=invocation.id,
            service=invocation.service,
            handler=invocation.handler,
            key=invocation.key,
            attempt=invocation.attempt,
            token=self._signer.token(invocation.id, invocation.attempt),
            callback_url=f"{self._callback_base}/_durable/v1/invocations/{invocation.id}",
            input=msgspec.Raw(invocation.input),
            journal=[msgspec.Raw(row.entry) for row in claim.journal],
            completions=[to_completion(row) for row in claim.completions],
            headers=invocation.headers,
            random_seed=random_seed(invocation.id),
            cancelled=invocation.cancel_requested,
            state={name: msgspec.Raw(value) for name, value in claim.state.items()},
        )
        path = f"/invoke/{invocation.service}/{invocation.handler}"
        url = endpoint + path
        body = json_encoder.encode(request)
        headers = {"content-type": INVOKE_CONTENT_TYPE, "accept": INVOKE_CONTENT_TYPE}
        for name in _TRACE_HEADERS:
            if name in invocation.headers:
                headers[name] = invocation.headers[name]
        if self._request_signer is not None:
            headers[SIGNATURE_HEADER] = self._request_signer.signature("POST", path, body, self._clock.now_ms())
        post = asyncio.ensure_future(self._client.request("POST", url, body, headers))
        watchdog = asyncio.ensure_future(self._watch(invocation.id))
        try:
            done, _ = await asyncio.wait({post, watchdog}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            post.cancel()
            watchdog.cancel()
            raise
        if post not in done:
            post.cancel()
            self._running[invocation.id].abandoned = True
            return Retry(failure=watchdog.result())
        watchdog.cancel()
        try:
            response = post.result()
        except HTTPError as exc:
            raise _EndpointDown(Failure(code=503, message=f"{url}: {describe_http_error(exc)}")) from None
        return _read_response(url, response)

    async def _watch(self, invocation_id: str) -> Failure:
        """Resolve when the attempt has been silent, or has run, for too long."""
        inactivity = self._settings.inactivity_timeout_ms
        abort = self._settings.abort_timeout_ms
        while True:
            activity = self._running[invocation_id]
            deadline = min(activity.last_ms + inactivity, activity.started_ms + abort)
            if self._clock.now_ms() >= deadline:
                if activity.started_ms + abort <= self._clock.now_ms():
                    message = f"attempt {activity.attempt} ran longer than the abort timeout ({abort} ms); abandoned"
                else:
                    message = f"attempt {activity.attempt} made no progress for {inactivity} ms; abandoned"
                return Failure(code=504, message=message)
            await self._clock.sleep_until(deadline)

    async def _finish(self, claim: Claim, endpoint: str, response: InvokeResponse) -> bool:
        """Commit how the attempt ended; True when the invocation must run again right away."""
        invocation = claim.invocation
        attempt = invocation.attempt
        now = self._clock.now_ms()
        effects: Effects | None = None
        store = self._store
        if isinstance(response, Completed) and len(response.output) > self._settings.max_entry_bytes:
            response = Failed(
                failure=Failure(
                    code=413,
                    message=f"the handler's output is {len(response.output)} bytes; "
                    f"the limit is {self._settings.max_entry_bytes} (max_entry_bytes)",
                )
            )
        match response:
            case Completed(output=output):
                effects = await self._durably(
                    "completing", lambda: store.complete(invocation.id, attempt, bytes(output), now)
                )
            case Failed(failure=failure):
                stored = StoredFailure(code=_code(failure.code), message=failure.message)
                effects = await self._durably("failing", lambda: store.fail(invocation.id, attempt, stored, now))
            case Suspended(waiting_on=waiting_on):
                outcome = await self._durably(
                    "suspending", lambda: store.suspend(invocation.id, attempt, waiting_on, now)
                )
                if outcome != "fenced":
                    return outcome == "resume"
            case Retry(failure=failure, retry_after_ms=retry_after_ms):
                self._log_failure(invocation.id, attempt, failure)
                self._last_endpoint[invocation.id] = endpoint
                # The policy counts consecutive failed attempts: those since the last suspension or resume.
                tries = invocation.attempts_since_resume
                next_at = next_retry_at(self._policy, tries, now, retry_after_ms=retry_after_ms)
                last = StoredFailure(code=_code(failure.code), message=failure.message)
                if next_at is None and self._settings.on_max_attempts == "pause":
                    if await self._durably("pausing", lambda: store.pause(invocation.id, attempt, last, now)):
                        log.warning(
                            "%s is paused after %d attempts (last error: %s); fix the cause, then resume it:"
                            " durable-proxy invocations resume %s",
                            invocation.id,
                            tries,
                            failure.message,
                            invocation.id,
                            extra={"invocation_id": invocation.id, "attempt": attempt},
                        )
                        return False
                elif next_at is None:
                    stored = StoredFailure(
                        code=500, message=f"gave up after {tries} attempts; last error: {failure.message}"
                    )
                    effects = await self._durably(
                        "failing", lambda: store.fail(invocation.id, attempt, stored, now, attempt_failure=last)
                    )
                elif await self._durably(
                    "backing off", lambda: store.backoff(invocation.id, attempt, last, next_at, now)
                ):
                    self._metrics.retries.labels(invocation.service).inc()
                    self._on_backoff(invocation.id, next_at)
                    return False
        if effects is not None:
            crash_point("proxy.end.after_commit")
            duration_s = (now - invocation.created_at_ms) / 1000
            self._metrics.invocation_duration.labels(invocation.service).observe(duration_s)
            self._on_effects(effects)
            return False
        self.superseded_ends += 1
        log.warning(
            "attempt %d of %s was superseded before it ended; its end was not recorded",
            attempt,
            invocation.id,
            extra={"invocation_id": invocation.id, "attempt": attempt},
        )
        return False

    async def _claim_next(self, invocation_id: str, deployment_id: str | None) -> tuple[Claim, str] | int | None:
        """Claim the next attempt on an instance: (claim, endpoint); when no instance is up, the time
        to try again; None when the invocation is not runnable (any more)."""
        if deployment_id is None:
            invocation = await self._durably("reading", lambda: self._store.get_invocation(invocation_id))
            if invocation is None or invocation.status != "pending":
                return None
            deployment_id = invocation.deployment_id
        endpoint = self._registry.pick_endpoint(deployment_id, self._last_endpoint.get(invocation_id))
        if endpoint is None:
            log.warning("no instance of deployment %s for %s; waiting", deployment_id, invocation_id)
            return self._clock.now_ms() + self._settings.unhealthy_endpoint_ms
        claim = await self._durably(
            "claiming", lambda: self._store.claim(invocation_id, endpoint, self._clock.now_ms())
        )
        return None if claim is None else (claim, endpoint)

    async def _durably(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """Run a store operation until the store takes it: an attempt's outcome is never dropped
        because the disk was full for a while. The delay is real time (the store's), not durable time."""
        delay = 0.1
        while True:
            try:
                return await operation()
            except StoreUnavailable as exc:
                log.warning("%s failed: %s; trying again in %.1f s", what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    @staticmethod
    def _log_failure(invocation_id: str, attempt: int, failure: Failure) -> None:
        extra = {"invocation_id": invocation_id, "attempt": attempt}
        trace = f"\n{failure.stacktrace}" if failure.stacktrace else ""
        log.warning("attempt %d of %s failed: %s%s", attempt, invocation_id, failure.message, trace, extra=extra)


def _code(code: int) -> int:
    """A handler's failure code as stored: an HTTP-like 100..999, anything else becomes 500."""
    return code if 100 <= code <= 999 else 500


def random_seed(invocation_id: str) -> int:
    """The seed of ``ctx.random()``: fixed per invocation, so every attempt draws the same numbers."""
    return int.from_bytes(hashlib.sha256(invocation_id.encode()).digest()[:8], "big")


def to_completion(row: CompletionRow) -> Completion:
    failure = None if row.failure is None else Failure(code=row.failure.code, message=row.failure.message)
    result = msgspec.Raw(row.result) if row.result is not None else msgspec.Raw(b"null")
    return Completion(index=row.index, result=result, failure=failure)


def _read_response(url: str, response: Response) -> InvokeResponse:
    """The handler's answer, or a ``Retry`` that says what was wrong with it."""
    status = response.status
    if status != 200:
        detail = response.text[:500] if response.body else "(empty body)"
        code = PROTOCOL_VIOLATION if status in (400, 404, 415) else (status if 500 <= status <= 599 else 502)
        return Retry(failure=Failure(code=code, message=f"{url} answered HTTP {status}: {detail}"))
    version = parse_content_type_version(response.headers.get("content-type"))
    if version not in _SUPPORTED_RESPONSE_VERSIONS:
        return Retry(
            failure=Failure(
                code=PROTOCOL_VIOLATION,
                message=f"{url} answered content-type '{response.headers.get('content-type')}', "
                f"expected {INVOKE_CONTENT_TYPE}",
            )
        )
    try:
        decoded: InvokeResponse = invoke_response_decoder.decode(response.body)
        return decoded
    except msgspec.DecodeError as exc:
        return Retry(
            failure=Failure(code=PROTOCOL_VIOLATION, message=f"{url} answered an invalid protocol message: {exc}")
        )
